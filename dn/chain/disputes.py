"""Disputes and slashing (DESIGN.md section 7): validators' votes on a settled task, and the
ruling that applies once a quorum of them agrees.

Validators re-run the checker's prefill check on every rejected task and on a sample of confirmed
ones (`spot_checked`), compare what they compute with the values the checker committed to, and
say who, if anyone, was at fault (dn/node/validator/referee.py decides; this module counts the
votes and applies the ruling). The state machine cannot run llama.cpp, so a vote is a validator's
word; `evidence` is the commitment to the values it computed, so anyone can re-run the check and
hold it to them. One validator's word rules nothing: a ruling needs a quorum of the voice, and a
validator outvoted by the quorum loses part of its bond.

    task:<id>       gains "votes": {validator: {"faults": {address: reason}, "evidence",
                    "height"}} (sorted), one per validator, and, once a quorum agreed,
                    "verdict": {"by": [validators that voted for it], "height",
                    "faults": {address: reason}, "slashed": {address: units},
                    "forfeited": {address: units}, "refund": units,
                    "outvoted": {validator: units}}
    miner:<a>       gains "slashed": units taken from its bonds so far
    validator:<a>   gains "slashed": units taken from its bond so far (by verdicts and jailing)

Rule `task.verdict` {task, faults, evidence}, a vote; checks in order:
- the sender is an active validator (`not-validator`);
- the task was settled (`unknown-task`) and has no ruling yet (`already-ruled`);
- the block is at most `dispute_window` blocks after the settlement (`dispute-closed`);
- the sender is not a party to the task: its consumer, generator or checker (`party`);
- the sender has not voted on it (`already-voted`);
- each address at fault is the task's generator with a generator reason, or its checker with a
  checker reason (`not-party`, `unknown-fault`).

The vote is recorded under the task. The electorate of a task is the active set less its
parties; each member's voice is the one it has in PoWR (`powr_rules.validator_voices`: one
minimum bond for a genesis validator, its stake up to that for any other). The ruling applies in
the block of the vote after which the validators of the electorate that voted for the same
faults hold at least `dispute_quorum_bps` of the electorate's voice (more than half, so two
rulings can never both have a quorum). An empty `faults` is a vote like any other: "nobody at
fault" needs its quorum too. A window that ends without a quorum leaves the task as it was:
nobody is slashed, nothing is refunded.

Effects of the ruling, for each miner at fault: `slash_bps` of its bond is taken: of the bond it
holds, or of the bond waiting under `unlock:` if it exited since (the window never outlasts the
unbonding period, so that bond is still there). On a task that was paid, each miner at fault also
forfeits its share of the fee (as much as its balance still holds). A miner left with less than
`miner_min_bond` stops serving at once, as if it sent `miner.exit` (the rest of its bond
unbonds); it may register again. When the generator is at fault on a task that was confirmed, the
consumer paid for a bad answer: it gets the price back, out of what was slashed and forfeited;
and if the task was settled in the epoch still open, the task no longer counts as confirmed in
the epoch's PoWR statistics, so its tokens earn the generator no emission. Each validator whose
recorded vote named other faults (`outvoted`) loses `verdict_slash_bps` of the bond it holds
under `validator:` (a genesis validator that never bonded holds none and loses nothing). Of what
is slashed or forfeited and not refunded, `slash_pool_bps` goes to the validator pool and the
rest is burned.

Who may not vote. Parties are compared by address: a validator whose node key is the task's
consumer, generator or checker. An operator that votes with one key and mines or pays with
another is not seen as a party; against that, and against any validator's false word, stands the
quorum.
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
from dn.chain.powr_rules import unrecord_task, validator_stakes, validator_voices
from dn.chain.tasks import CONFIRMED
from dn.chain.types import Tx
from dn.chain.validators import VALIDATOR, active
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
# Neither miner could show the task's input and tokens within the window: the answer cannot be
# checked, and each of the two who held it is at fault.
NO_RECORD = "no-record"

GENERATOR_FAULTS = frozenset({INVALID_ANSWER, NO_RECORD})
CHECKER_FAULTS = frozenset(
    {REJECTED_VALID, APPROVED_INVALID, VALUES_MISMATCH, NO_VALUES, NO_RECORD}
)

Faults = dict[str, str]


def dispute_window(genesis: Genesis) -> int:
    """How many blocks after its settlement a task may be voted on: `dispute_window_blocks`, but
    never more than `unbonding_blocks`, so a miner cannot exit and take its bond back before it
    is judged."""
    return min(genesis.param("dispute_window_blocks"), genesis.param("unbonding_blocks"))


def spot_checked(task: str, block_hash: str, genesis: Genesis) -> bool:
    """Whether validators re-check confirmed task `task`, settled in the block `block_hash`: a
    `spot_check_bps` share of tasks, chosen by the task id and that block's hash, so every
    validator agrees which without talking, and neither the consumer who picks the ticket's
    nonce nor the miners who do the work know it beforehand (issue 11, attack 3: by the task id
    alone, a consumer ground its own wash tasks out of the sample)."""
    seed = b"dn-spot-check" + block_hash.encode() + task.encode()
    draw = int.from_bytes(hashlib.sha256(seed).digest()[:8], "big")
    return draw % BPS < genesis.param("spot_check_bps")


def parties(task: dict[str, Any]) -> set[str]:
    """Who may not vote on `task` (a `task:` record): its consumer, generator and checker."""
    return {task["consumer"], task["generator"], task["checker"]}


def electorate(state: StateReader, genesis: Genesis, task: dict[str, Any]) -> dict[str, int]:
    """The voice of each validator that may vote on `task`: the active set less the task's
    parties, each with its PoWR voice (`powr_rules.validator_voices`)."""
    excluded = parties(task)
    voices = validator_voices(validator_stakes(state, genesis), genesis)
    return {v: voice for v, voice in voices.items() if v not in excluded}


def agreed(
    votes: dict[str, dict[str, Any]], voices: dict[str, int], quorum_bps: int
) -> Faults | None:
    """The faults that voters holding at least `quorum_bps` of the `voices` voted for, if any.
    Votes of validators outside `voices` (parties, validators that left the set) count for
    nothing; a quorum above half admits one answer at most, and the sort keeps it
    deterministic whatever the quorum."""
    total = sum(voices.values())
    tally: dict[tuple[tuple[str, str], ...], int] = {}
    for voter, vote in votes.items():
        key = tuple(sorted(vote["faults"].items()))
        tally[key] = tally.get(key, 0) + voices.get(voter, 0)
    for key in sorted(tally):
        if total > 0 and tally[key] > 0 and tally[key] * BPS >= total * quorum_bps:
            return dict(key)
    return None


@dataclass
class Outcome:
    """What a vote does (computed from the state before it; `task_verdict` writes it). Until a
    quorum agrees, only the vote is recorded: `ruling` is None and every amount is zero."""

    ruling: Faults | None = None  # the faults the quorum agreed on, once it has
    by: list[str] = field(default_factory=list)  # the voters for the ruling
    slashed: dict[str, int] = field(default_factory=dict)
    forfeited: dict[str, int] = field(default_factory=dict)  # fee shares taken back
    from_unbonding: dict[str, tuple[str, int]] = field(default_factory=dict)  # addr: (key, i)
    exits: list[str] = field(default_factory=list)  # miners forced out (bond below minimum)
    outvoted: dict[str, int] = field(default_factory=dict)  # validators: units of bond taken
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


def _checked(state: StateReader, tx: Tx, genesis: Genesis, height: int) -> dict[str, Any]:
    """The task `tx` votes on, once every check in the module docstring passed."""
    p = tx.payload
    if tx.sender not in active(state, genesis):
        raise InvalidTx("only a validator may vote on a task", reason="not-validator")
    task = state.get(TASK + p["task"])
    if task is None:
        raise InvalidTx(f"no task {p['task'][:12]}… was settled", reason="unknown-task")
    if task.get("verdict") is not None:
        raise InvalidTx(f"task {p['task'][:12]}… was ruled on already", reason="already-ruled")
    window = dispute_window(genesis)
    if height > task["height"] + window:
        raise InvalidTx(
            f"task {p['task'][:12]}… was settled at block {task['height']}; votes are taken "
            f"for {window} blocks",
            reason="dispute-closed",
        )
    if tx.sender in parties(task):
        raise InvalidTx(
            "a validator may not vote on a task it paid for, generated or checked",
            reason="party",
        )
    if tx.sender in task.get("votes", {}):
        raise InvalidTx(
            f"the sender voted on task {p['task'][:12]}… already", reason="already-voted"
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
    return dict(task)


def _vote(tx: Tx, height: int) -> dict[str, Any]:
    p = tx.payload
    return {
        "faults": dict(sorted(p["faults"].items())),
        "evidence": p["evidence"],
        "height": height,
    }


def outcome(state: StateReader, tx: Tx, genesis: Genesis, height: int) -> Outcome:
    """Check `tx` (a `task.verdict`) against the state before it and say what it does; raise
    InvalidTx with the reason it is refused."""
    task = _checked(state, tx, genesis, height)
    votes = {**task.get("votes", {}), tx.sender: _vote(tx, height)}
    voices = electorate(state, genesis, task)
    ruling = agreed(votes, voices, genesis.param("dispute_quorum_bps"))
    if ruling is None:
        return Outcome()
    out = _effects(state, genesis, task, ruling)
    out.by = sorted(v for v, vote in votes.items() if vote["faults"] == ruling)
    bps = genesis.param("verdict_slash_bps")
    for voter in sorted(votes):
        record = state.get(VALIDATOR + voter)
        if votes[voter]["faults"] != ruling and record is not None:
            taken = int(record["bond"]) * bps // BPS
            if taken:
                out.outvoted[voter] = taken
    total = sum(out.slashed.values()) + sum(out.forfeited.values())
    rest = total - out.refund + sum(out.outvoted.values())
    out.pool = rest * genesis.param("slash_pool_bps") // BPS
    out.burn = rest - out.pool
    return out


def _effects(state: StateReader, genesis: Genesis, task: dict[str, Any], faults: Faults) -> Outcome:
    """The ruling's effects on the miners at fault and the consumer (the pool and burn are
    filled in by `outcome`)."""
    out = Outcome(ruling=faults)
    bps, minimum = genesis.param("slash_bps"), genesis.param("miner_min_bond")
    for address in sorted(faults):
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
        for address in sorted(faults):
            role = "generator" if address == task["generator"] else "checker"
            taken = min(shares[role], account(state, address)["balance"])
            if taken:
                out.forfeited[address] = taken
    if task["status"] == CONFIRMED and task["generator"] in faults:
        total = sum(out.slashed.values()) + sum(out.forfeited.values())
        out.refund = min(task["paid"], total)
        out.unconfirm = True
    return out


def task_verdict(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    """The `task.verdict` rule (see the module docstring)."""
    result = outcome(state, tx, genesis, height)
    p = tx.payload
    task = dict(state.get(TASK + p["task"]))
    task["votes"] = dict(sorted({**task.get("votes", {}), tx.sender: _vote(tx, height)}.items()))
    if result.ruling is not None:
        _apply(state, genesis, height, task, result)
        task["verdict"] = {
            "by": result.by,
            "height": height,
            "faults": dict(sorted(result.ruling.items())),
            "slashed": dict(sorted(result.slashed.items())),
            "forfeited": dict(sorted(result.forfeited.items())),
            "refund": result.refund,
            "outvoted": dict(sorted(result.outvoted.items())),
        }
    state.set(TASK + p["task"], task)


def _apply(
    state: Overlay, genesis: Genesis, height: int, task: dict[str, Any], result: Outcome
) -> None:
    """Write the ruling's effects (`result`, computed by `outcome`)."""
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
    for address, amount in result.outvoted.items():
        record = state.get(VALIDATOR + address)
        state.set(
            VALIDATOR + address,
            {
                **record,
                "bond": record["bond"] - amount,
                "slashed": record.get("slashed", 0) + amount,
            },
        )
    if result.refund:
        credit(state, task["consumer"], result.refund)
    if result.pool:
        pool = state.get(POOL_VALIDATORS) or {"balance": 0}
        state.set(POOL_VALIDATORS, {"balance": pool["balance"] + result.pool})
    if result.burn:
        burn(state, result.burn)
    if result.unconfirm:
        unrecord_task(
            state,
            genesis,
            height,
            task["height"],
            task["model"],
            task["generator"],
            task["tokens"],
            task.get("burned", 0),
        )
