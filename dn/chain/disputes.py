"""Disputes and slashing (DESIGN.md section 7): a validator's `task.verdict` on a settled task.

Validators re-run the checker's prefill check on every rejected task and on a sample of confirmed
ones (`spot_checked`), compare what they compute with the values the checker committed to, and
say who, if anyone, was at fault (dn/node/validator/referee.py decides; this module only applies the
ruling). The state machine cannot run llama.cpp, so a ruling is a validator's word, as a block is
a validator's word; `evidence` is the commitment to the values the validator computed, so anyone
can re-run the check and hold the validator to it.

    task:<id>   gains "verdict": {"by", "height", "faults": {address: reason},
                "evidence", "slashed": {address: units}, "forfeited": {address: units},
                "refund": units}
    miner:<a>   gains "slashed": units taken from its bonds so far

Rule `task.verdict` {task, faults, evidence}, checks in order:
- the sender is a validator (`not-validator`);
- the task was settled (`unknown-task`) and has no verdict yet (`already-ruled`);
- the block is at most `dispute_window` blocks after the settlement (`dispute-closed`);
- each address at fault is the task's generator with a generator reason, or its checker with a
  checker reason (`not-party`, `unknown-fault`).

Effects, for each miner at fault: `slash_bps` of its bond is taken: of the bond it holds, or of the
bond waiting under `unlock:` if it exited since (the window never outlasts the unbonding period, so
that bond is still there). On a task that was paid, each miner at fault also forfeits its share of
the fee (as much as its balance still holds). A miner left with less than `miner_min_bond` stops
serving at once, as if it sent `miner.exit` (the rest of its bond unbonds); it may register again.
When the generator is at fault on a task that was confirmed, the consumer paid for a bad answer: it
gets the price back, out of what was slashed and forfeited; and if the task was settled in the epoch
still open, the task no longer counts as confirmed in the epoch's PoWR statistics, so its tokens
earn the generator no emission. Of what is slashed or forfeited and not refunded, `slash_pool_bps`
goes to the validator pool and the rest is burned.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from dn.chain.economics import split_fee
from dn.chain.genesis import Genesis
from dn.chain.ledger import (
    MINER,
    POOL_VALIDATORS,
    TASK,
    UNLOCK,
    Overlay,
    StateReader,
    account,
    burn,
    credit,
    debit,
)
from dn.chain.miners import exit_miner
from dn.chain.powr_rules import unrecord_task
from dn.chain.tasks import CONFIRMED
from dn.chain.types import Tx
from dn.chain.validators import active
from dn.encoding import BPS
from dn.errors import InvalidTx

# Why a miner is at fault. The generator's answer is invalid (the checker's and the validator's
# computations both reject it, or the checker's values cannot be trusted and the validator's
# reject it).
INVALID_ANSWER = "invalid-answer"
# The checker rejected an answer its own values (and the validator's) accept.
REJECTED_VALID = "rejected-valid-answer"
# The checker confirmed an answer its own values reject.
APPROVED_INVALID = "approved-invalid-answer"
# The values the checker committed to are not what the answer gives (it did not compute them,
# or made them up).
VALUES_MISMATCH = "values-mismatch"
# The checker could not show the values it committed to within the window.
NO_VALUES = "no-values"

GENERATOR_FAULTS = frozenset({INVALID_ANSWER})
CHECKER_FAULTS = frozenset({REJECTED_VALID, APPROVED_INVALID, VALUES_MISMATCH, NO_VALUES})


def dispute_window(genesis: Genesis) -> int:
    """How many blocks after its settlement a task may be ruled on: `dispute_window_blocks`, but
    never more than `unbonding_blocks`, so a miner cannot exit and take its bond back before it
    is judged."""
    return min(genesis.param("dispute_window_blocks"), genesis.param("unbonding_blocks"))


def spot_checked(task: str, genesis: Genesis) -> bool:
    """Whether validators re-check confirmed task `task`: a `spot_check_bps` share of tasks,
    chosen by the task id, so every validator agrees which without talking."""
    draw = int.from_bytes(hashlib.sha256(b"dn-spot-check" + task.encode()).digest()[:8], "big")
    return draw % BPS < genesis.param("spot_check_bps")


@dataclass
class Outcome:
    """What a verdict does (computed from the state before it; `apply` writes it)."""

    slashed: dict[str, int] = field(default_factory=dict)
    forfeited: dict[str, int] = field(default_factory=dict)  # fee shares taken back
    from_unbonding: dict[str, tuple[str, int]] = field(default_factory=dict)  # addr: (key, i)
    exits: list[str] = field(default_factory=list)  # miners forced out (bond below minimum)
    refund: int = 0
    pool: int = 0
    burn: int = 0
    unconfirm: bool = False


def _unbonding_bond(
    state: StateReader, genesis: Genesis, address: str, miner: dict[str, Any]
) -> tuple[str, int, int] | None:
    """(unlock key, index, amount) of the bond an exited miner still has waiting, if any."""

    if miner.get("exited") is None:
        return None
    key = UNLOCK + str(miner["exited"] + genesis.param("unbonding_blocks"))
    for i, entry in enumerate(state.get(key) or []):
        if entry["address"] == address and entry.get("what") == "bond":
            return key, i, int(entry["amount"])
    return None


def outcome(state: StateReader, tx: Tx, genesis: Genesis, height: int) -> Outcome:
    """Check `tx` (a `task.verdict`) against the state before it and say what it does; raise
    InvalidTx with the reason it is refused."""
    p = tx.payload
    if tx.sender not in active(state, genesis):
        raise InvalidTx("only a validator may rule on a task", reason="not-validator")
    task = state.get(TASK + p["task"])
    if task is None:
        raise InvalidTx(f"no task {p['task'][:12]}… was settled", reason="unknown-task")
    if task.get("verdict") is not None:
        raise InvalidTx(f"task {p['task'][:12]}… was ruled on already", reason="already-ruled")
    window = dispute_window(genesis)
    if height > task["height"] + window:
        raise InvalidTx(
            f"task {p['task'][:12]}… was settled at block {task['height']}; rulings are taken "
            f"for {window} blocks",
            reason="dispute-closed",
        )
    roles = {task["generator"]: GENERATOR_FAULTS, task["checker"]: CHECKER_FAULTS}
    for address, reason in p["faults"].items():
        if address not in roles:
            raise InvalidTx(f"{address} did not work on this task", reason="not-party")
        if reason not in roles[address]:
            raise InvalidTx(
                f"{reason!r} is not a fault the task's "
                f"{'generator' if address == task['generator'] else 'checker'} can commit",
                reason="unknown-fault",
            )
    out = Outcome()
    bps, minimum = genesis.param("slash_bps"), genesis.param("miner_min_bond")
    for address in sorted(p["faults"]):
        miner = state.get(MINER + address)
        if miner is None:
            continue
        if miner["exited"] is None:
            amount = miner["bond"] * bps // BPS
            if miner["bond"] - amount < minimum:
                out.exits.append(address)
        else:
            waiting = _unbonding_bond(state, genesis, address, miner)
            if waiting is None:
                continue
            key, index, held = waiting
            amount = held * bps // BPS
            out.from_unbonding[address] = (key, index)
        out.slashed[address] = amount
    if task["status"] == CONFIRMED and task["paid"]:
        shares = split_fee(task["paid"], genesis, {})
        for address in sorted(p["faults"]):
            role = "generator" if address == task["generator"] else "checker"
            taken = min(shares[role], account(state, address)["balance"])
            if taken:
                out.forfeited[address] = taken
    total = sum(out.slashed.values()) + sum(out.forfeited.values())
    if task["status"] == CONFIRMED and task["generator"] in p["faults"]:
        out.refund = min(task["paid"], total)
        out.unconfirm = True
    rest = total - out.refund
    out.pool = rest * genesis.param("slash_pool_bps") // BPS
    out.burn = rest - out.pool
    return out


def task_verdict(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    """The `task.verdict` rule (see the module docstring)."""
    result = outcome(state, tx, genesis, height)
    p = tx.payload
    task = state.get(TASK + p["task"])
    for address, amount in result.slashed.items():
        miner = dict(state.get(MINER + address))
        miner["slashed"] = miner.get("slashed", 0) + amount
        if address in result.from_unbonding:
            key, index = result.from_unbonding[address]
            entries = [dict(e) for e in state.get(key)]
            entries[index]["amount"] -= amount
            state.set(key, entries)
            state.set(MINER + address, miner)
        else:
            miner["bond"] -= amount
            state.set(MINER + address, miner)
            if address in result.exits:
                exit_miner(state, address, height, genesis)
    for address, amount in result.forfeited.items():
        debit(state, address, amount, "its forfeited share")
    if result.refund:
        credit(state, task["consumer"], result.refund)
    if result.pool:
        pool = state.get(POOL_VALIDATORS) or {"balance": 0}
        state.set(POOL_VALIDATORS, {"balance": pool["balance"] + result.pool})
    if result.burn:
        burn(state, result.burn)
    if result.unconfirm:
        unrecord_task(
            state, genesis, height, task["height"], task["model"], task["generator"], task["tokens"]
        )
    state.set(
        TASK + p["task"],
        {
            **task,
            "verdict": {
                "by": tx.sender,
                "height": height,
                "faults": dict(sorted(p["faults"].items())),
                "evidence": p["evidence"],
                "slashed": dict(sorted(result.slashed.items())),
                "forfeited": dict(sorted(result.forfeited.items())),
                "refund": result.refund,
            },
        },
    )
