"""The state machine: `apply_block(state, parent, block, genesis) -> changes`. No I/O, no clock.

State is a flat map from string keys to JSON values (never mutated in place, only replaced;
None deletes a key):

    acct:<address>          {"balance": units, "nonce": n}
    supply                  {"genesis": units, "emitted": units, "burned": units}
    signers                 [address, …]  the latest proposers (only with two or more validators)
    model:<sha256>          {"creator", "name", "domain", "price", "license", "size", "height",
                             "retired": bool, "retired_at": height (once retired),
                             "tasks": confirmed tasks, "tokens": paid tokens,
                             "rejected": rejected tasks}
    model-name:<name>       the sha256 of the live (not retired) model holding that name
    miner:<address>         {"bond": units still bonded, "url", "models": [sha256, …] sorted,
                             "since": height of this registration, "exited": height | null,
                             "slashed": units lost to verdicts (once slashed)}
    serving:<sha256>        [{"miner", "from", "until"}, …] who served a model when (tasks.py)
    unlock:<height>         [{"address", "amount", "what": "bond" | "stake"}, …] bonds and
                            unstaked funds released at the start of that block
    pool:validators         {"balance": units} the validators' share of paid queries
    task:<task id>          {"model", "consumer", "generator", "checker", "tokens", "paid",
                             "status": "confirmed" | "rejected", "height", "output_hash",
                             "commitment", "verdict" (once a validator ruled: disputes.py)}
    stake:<target>:<address> {"amount": units} staked by that address on a model (sha256) or
                            a validator (address); written by `stake` / `unstake` (staking.py)
    backers:<target>        [address, …] sorted: who holds a stake on the target; a model's
                            backers share its query fees pro rata to their stakes
    powr:<epoch>:…          commitments, reveals, per-model task statistics and the result of
                            each PoWR epoch (powr_rules.py)

Later kinds add their own prefixes (validator:, …); the store keeps any key, so adding rules never
reshapes it.

`state_root` of a block is the hash of its parent's state root and the sorted list of every key the
block changed with its new value; the genesis root hashes the whole genesis state. So the root
commits, by induction, to the full state, costs O(changes) per block, and two nodes whose states
differ anywhere disagree on it from that block on.

The order of checks mirrors the spec: a block's header is checked against its parent, bonds that
finish unbonding at its height are released, then every transaction is applied in order on an
overlay, then the computed roots are compared with the header; any failure raises InvalidBlock and
leaves nothing changed. A transaction pays its fee and bumps its sender's nonce, then its kind's
rule (one function per kind, below; `stake` and `unstake` in staking.py, `powr.commit` and
`powr.reveal` in powr_rules.py) checks and applies the payload; any failure raises InvalidTx and
leaves nothing changed. At the first block of each PoWR epoch, after the unlocks and before the
transactions, the previous epoch is closed and its emission paid (`begin_block`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from dn.chain import consensus, disputes, powr_rules, staking, validators
from dn.chain.economics import split_fee
from dn.chain.genesis import BPS, Genesis
from dn.chain.tasks import (
    CONFIRMED,
    REJECTED,
    SERVING,
    check_attestations,
    eligible_miners,
    price_of,
    select_miners,
    serving_changed,
    task_id,
    verify_ticket,
)
from dn.chain.types import Block, Header, Tx, txs_root
from dn.encoding import hash_hex
from dn.errors import InvalidBlock, InvalidTx, TaskError
from dn.wallet.keys import Keypair

ACCT = "acct:"
SUPPLY = "supply"
SIGNERS = "signers"  # proposers of the latest blocks, for the floor(n/2)+1 signing rule
MODEL = "model:"
MODEL_NAME = "model-name:"
MINER = "miner:"
UNLOCK = "unlock:"
POOL = "pool:"
POOL_VALIDATORS = "pool:validators"
TASK = "task:"
BACKERS = staking.BACKERS
STAKE = staking.STAKE


class StateReader(Protocol):
    def get(self, key: str) -> Any: ...


class Overlay:
    """Writes collected on top of a read-only base; `changes` is what a block did."""

    def __init__(self, base: StateReader) -> None:
        self.base = base
        self.changes: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        if key in self.changes:
            return self.changes[key]
        return self.base.get(key)

    def set(self, key: str, value: Any) -> None:
        self.changes[key] = value

    def merge(self, child: Overlay) -> None:
        self.changes.update(child.changes)


class DictState:
    """A whole state in memory."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data: dict[str, Any] = data if data is not None else {}

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def update(self, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(self.data.items())


# --- genesis and roots ----------------------------------------------------------------------


def genesis_state(genesis: Genesis) -> dict[str, Any]:
    state: dict[str, Any] = {
        ACCT + address: {"balance": amount, "nonce": 0}
        for address, amount in genesis.allocations.items()
    }
    state[SUPPLY] = {"genesis": genesis.supply, "emitted": 0, "burned": 0}
    return state


def state_root(prev_root: str, changes: dict[str, Any]) -> str:
    return hash_hex({"prev": prev_root, "changes": sorted(changes.items())})


def genesis_header(genesis: Genesis) -> Header:
    return Header(
        chain_id=genesis.chain_id,
        height=0,
        prev=genesis.hash,
        time=genesis.time,
        proposer="",
        txs_root=genesis.empty_txs_root,
        state_root=state_root(genesis.hash, genesis_state(genesis)),
        difficulty=0,
    )


def genesis_block(genesis: Genesis) -> Block:
    header = genesis_header(genesis)
    return Block(header, b"", (), Block.hash_of(header, b""))


# --- accounts -------------------------------------------------------------------------------


def account(state: StateReader, address: str) -> dict[str, int]:
    found = state.get(ACCT + address)
    return found if found is not None else {"balance": 0, "nonce": 0}


def _credit(state: Overlay, address: str, amount: int) -> None:
    acct = account(state, address)
    state.set(ACCT + address, {"balance": acct["balance"] + amount, "nonce": acct["nonce"]})


def _debit(
    state: Overlay, address: str, amount: int, what: str, reason: str = "insufficient-funds"
) -> None:
    acct = account(state, address)
    if acct["balance"] < amount:
        raise InvalidTx(f"balance {acct['balance']} cannot pay {what}", reason=reason)
    state.set(ACCT + address, {"balance": acct["balance"] - amount, "nonce": acct["nonce"]})


def _burn(state: Overlay, amount: int) -> None:
    supply = state.get(SUPPLY)
    state.set(SUPPLY, {**supply, "burned": supply["burned"] + amount})


# --- transactions ---------------------------------------------------------------------------


def check_tx(tx: Tx, genesis: Genesis) -> None:
    """The checks that need no state (ABCI CheckTx's stateless half)."""
    if tx.chain_id != genesis.chain_id:
        raise InvalidTx(
            f"transaction is for chain {tx.chain_id!r}, this is {genesis.chain_id!r}",
            reason="wrong-chain-id",
        )
    if not tx.signature_valid:
        raise InvalidTx("signature does not match the sender", reason="bad-signature")
    if tx.fee < genesis.param("min_fee"):
        raise InvalidTx(
            f"fee {tx.fee} is below the minimum of {genesis.param('min_fee')} units",
            reason="fee-too-low",
        )


def apply_tx(state: Overlay, tx: Tx, genesis: Genesis, proposer: str, *, height: int) -> None:
    """Apply one transaction of the block at `height` to `state`, or raise InvalidTx and change
    nothing."""
    check_tx(tx, genesis)
    sender = account(state, tx.sender)
    if tx.nonce < sender["nonce"]:
        raise InvalidTx(
            f"nonce {tx.nonce} was already used (next is {sender['nonce']})", reason="nonce-too-low"
        )
    if tx.nonce > sender["nonce"]:
        raise InvalidTx(
            f"nonce {tx.nonce} leaves a gap (next is {sender['nonce']})", reason="nonce-gap"
        )
    if sender["balance"] < tx.fee:
        raise InvalidTx(
            f"balance {sender['balance']} cannot pay fee {tx.fee}", reason="insufficient-funds"
        )
    trial = Overlay(state)
    trial.set(ACCT + tx.sender, {"balance": sender["balance"] - tx.fee, "nonce": tx.nonce + 1})
    RULES[tx.kind](trial, tx, genesis, height)
    burned = tx.fee * genesis.param("fee_burn_share") // BPS
    _burn(trial, burned)
    _credit(trial, proposer, tx.fee - burned)
    state.merge(trial)


Rule = Callable[[Overlay, Tx, Genesis, int], None]


def _transfer(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    amount = tx.payload["amount"]
    _debit(state, tx.sender, amount, f"amount {amount} after fee {tx.fee}")
    _credit(state, tx.payload["to"], amount)


# --- models ---------------------------------------------------------------------------------


def _live_model(state: StateReader, sha: str, retired_reason: str) -> dict[str, Any]:
    found = state.get(MODEL + sha)
    if found is None:
        raise InvalidTx(f"no model {sha[:12]}… is registered", reason="unknown-model")
    if found["retired"]:
        raise InvalidTx(f"model {found['name']!r} is retired", reason=retired_reason)
    return dict(found)


def _model_register(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    p = tx.payload
    if state.get(MODEL + p["model"]) is not None:
        raise InvalidTx(f"model {p['model'][:12]}… is registered already", reason="model-exists")
    if state.get(MODEL_NAME + p["name"]) is not None:
        raise InvalidTx(f"another live model is named {p['name']!r}", reason="name-taken")
    state.set(
        MODEL + p["model"],
        {
            "creator": tx.sender,
            "name": p["name"],
            "domain": p["domain"],
            "price": p["price"],
            "license": p["license"],
            "size": p["size"],
            "height": height,
            "retired": False,
            "tasks": 0,
            "tokens": 0,
            "rejected": 0,
        },
    )
    state.set(MODEL_NAME + p["name"], p["model"])


def _model_retire(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    sha = tx.payload["model"]
    found = state.get(MODEL + sha)
    if found is None:
        raise InvalidTx(f"no model {sha[:12]}… is registered", reason="unknown-model")
    if found["creator"] != tx.sender:
        raise InvalidTx("only the model's creator may retire it", reason="not-creator")
    if found["retired"]:
        raise InvalidTx(f"model {found['name']!r} is retired already", reason="already-retired")
    state.set(MODEL + sha, {**found, "retired": True, "retired_at": height})
    if state.get(MODEL_NAME + found["name"]) == sha:
        state.set(MODEL_NAME + found["name"], None)  # the name is free for a new model


# --- miners ---------------------------------------------------------------------------------


def _set_serving(
    state: Overlay, model: str, miner: str, height: int, genesis: Genesis, *, serving: bool
) -> None:
    key = SERVING + model
    window = genesis.param("ticket_window_blocks")
    intervals = serving_changed(state.get(key) or [], miner, height, window, serving=serving)
    state.set(key, intervals or None)


def _miner_register(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    """Register, or update a live registration: `bond` is the total bond wanted (at least
    `miner_min_bond`, never less than the miner already holds); the difference moves from the
    sender's balance. `url` and `models` replace the old ones, from this block on."""
    p = tx.payload
    bond = p["bond"]
    if bond < genesis.param("miner_min_bond"):
        raise InvalidTx(
            f"bond {bond} is below the minimum of {genesis.param('miner_min_bond')} units",
            reason="bond-too-low",
        )
    models = sorted(set(p["models"]))
    for sha in models:
        _live_model(state, sha, retired_reason="model-retired")
    current = state.get(MINER + tx.sender)
    live = current is not None and current["exited"] is None
    held = current["bond"] if live else 0
    if bond < held:
        raise InvalidTx(
            f"bond {bond} is less than the {held} units already bonded; a bond only shrinks "
            "by exiting",
            reason="bond-decrease",
        )
    if bond > held:
        _debit(state, tx.sender, bond - held, f"bond {bond - held} after fee {tx.fee}")
    before = set(current["models"]) if live else set()
    for sha in sorted(before - set(models)):
        _set_serving(state, sha, tx.sender, height, genesis, serving=False)
    for sha in sorted(set(models) - before):
        _set_serving(state, sha, tx.sender, height, genesis, serving=True)
    state.set(
        MINER + tx.sender,
        {
            "bond": bond,
            "url": p["url"],
            "models": models,
            "since": current["since"] if live else height,
            "exited": None,
        },
    )


def _miner_exit(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    """Stop serving now; the bond comes back at the start of block `height + unbonding_blocks`
    (until then it stays slashable, and counted in the supply, under `unlock:`)."""
    current = state.get(MINER + tx.sender)
    if current is None or current["exited"] is not None:
        raise InvalidTx("the sender is not a registered miner", reason="not-miner")
    exit_miner(state, tx.sender, height, genesis)


def exit_miner(state: Overlay, address: str, height: int, genesis: Genesis) -> None:
    """Take a live miner out of service in block `height` (its `miner.exit`, or a slash that left
    its bond below the minimum): it stops serving, and its bond unbonds (`what`: "bond", so a
    verdict can still find and slash it)."""
    current = state.get(MINER + address)
    for sha in current["models"]:
        _set_serving(state, sha, address, height, genesis, serving=False)
    key = UNLOCK + str(height + genesis.param("unbonding_blocks"))
    entry = {"address": address, "amount": current["bond"], "what": "bond"}
    state.set(key, [*(state.get(key) or []), entry])
    state.set(MINER + address, {**current, "bond": 0, "exited": height})


def begin_block(state: Overlay, height: int, genesis: Genesis) -> None:
    """What happens at the start of block `height`, before its transactions: the bonds and
    stakes whose unbonding ends there are paid out (only the entries due are read); then, at the
    first block of an epoch, the previous PoWR epoch is closed and its emission credited
    (`powr_rules.close`), and the validator set changes scheduled for the new epoch are made
    (`validators.begin_epoch`)."""
    due = state.get(UNLOCK + str(height))
    if due is not None:
        for entry in due:
            _credit(state, entry["address"], entry["amount"])
        state.set(UNLOCK + str(height), None)
    epoch = powr_rules.Epoch.closed_at(height, genesis.param("epoch_blocks"))
    if epoch is not None:
        powr_rules.close(state, epoch, genesis)
        validators.begin_epoch(state, epoch + 1, genesis)


# --- paid queries ---------------------------------------------------------------------------


def backers_of(state: StateReader, model: str) -> dict[str, int]:
    """A model's backers and their stakes (`backers:<model>` lists them, `stake:<model>:<addr>`
    holds each; both written by `stake` and `unstake`)."""
    backers: dict[str, int] = {}
    for address in state.get(BACKERS + model) or []:
        stake = state.get(f"{STAKE}{model}:{address}")
        if stake is not None and stake["amount"] > 0:
            backers[address] = stake["amount"]
    return backers


def _task_settle(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    """Pay for one answer (DESIGN.md section 7). Anyone may send it; the sender pays only the
    fee, the ticket's consumer pays `price_of(model price, tokens)`, split by `split_fee`."""
    ticket, gen, chk = tx.payload["ticket"], tx.payload["generator"], tx.payload["checker"]
    chain_id = genesis.chain_id
    verify_ticket(chain_id, ticket)
    sha = ticket["model"]
    model = state.get(MODEL + sha)
    if model is None:
        raise InvalidTx(f"no model {sha[:12]}… is registered", reason="unknown-model")
    # Retiring stops new tasks; a ticket made before it still settles, so the miners who did
    # the work are paid.
    if model["retired"] and ticket["ref_height"] >= model.get("retired_at", 0):
        raise InvalidTx(f"model {model['name']!r} is retired", reason="model-retired")
    model = dict(model)
    ref, oldest = ticket["ref_height"], max(0, height - genesis.param("ticket_window_blocks"))
    if not oldest <= ref < height:
        raise InvalidTx(
            f"ticket refers to height {ref}; block {height} takes {oldest} to {height - 1}",
            reason="stale-ticket",
        )
    if ticket["expiry"] < height:
        raise InvalidTx(f"ticket expired at height {ticket['expiry']}", reason="expired-ticket")
    task = task_id(chain_id, ticket)
    if state.get(TASK + task) is not None:
        raise InvalidTx(f"task {task[:12]}… is settled already", reason="task-settled")
    check_attestations(chain_id, task, gen, chk, ticket["max_tokens"])
    try:
        chosen = select_miners(eligible_miners(state, sha, ref), task)
    except TaskError as exc:
        raise InvalidTx(f"no valid miner pair: {exc.message}", reason="wrong-miners") from None
    if (gen["miner"], chk["miner"]) != chosen:
        raise InvalidTx(
            "the generator and checker are not the miners this ticket selects",
            reason="wrong-miners",
        )
    tokens, confirmed = gen["tokens"], chk["verdict"] == CONFIRMED
    paid = price_of(model["price"], tokens) if confirmed else 0
    if paid > ticket["max_price"]:
        raise InvalidTx(
            f"{tokens} tokens cost {paid} units, above the ticket's max_price "
            f"{ticket['max_price']}",
            reason="over-max-price",
        )
    if confirmed:
        _debit(state, ticket["consumer"], paid, f"{paid} units", reason="consumer-cannot-pay")
        _pay(
            state,
            model["creator"],
            gen["miner"],
            chk["miner"],
            split_fee(paid, genesis, backers_of(state, sha)),
        )
        model.update(tasks=model["tasks"] + 1, tokens=model["tokens"] + tokens)
    else:
        model.update(rejected=model["rejected"] + 1)  # validators rule on it (a later issue)
    state.set(MODEL + sha, model)
    powr_rules.record_task(state, genesis, height, sha, gen["miner"], tokens, confirmed=confirmed)
    state.set(
        TASK + task,
        {
            "model": sha,
            "consumer": ticket["consumer"],
            "generator": gen["miner"],
            "checker": chk["miner"],
            "tokens": tokens,
            "paid": paid,
            "status": CONFIRMED if confirmed else REJECTED,
            "height": height,
            "output_hash": chk["output_hash"],
            "commitment": chk["commitment"],
        },
    )


def _pay(
    state: Overlay, creator: str, generator: str, checker: str, shares: dict[str, Any]
) -> None:
    """Credit each part of a split (a zero part writes nothing)."""
    payees = [(creator, shares["creator"]), (generator, shares["generator"])]
    payees += [(checker, shares["checker"]), *shares["backers"].items()]
    for address, amount in payees:
        if amount:
            _credit(state, address, amount)
    if shares["validators"]:
        pool = state.get(POOL_VALIDATORS) or {"balance": 0}
        state.set(POOL_VALIDATORS, {"balance": pool["balance"] + shares["validators"]})
    if shares["burn"]:
        _burn(state, shares["burn"])


RULES: dict[str, Rule] = {
    "transfer": _transfer,
    "model.register": _model_register,
    "model.retire": _model_retire,
    "stake": staking.stake,
    "unstake": staking.unstake,
    "miner.register": _miner_register,
    "miner.exit": _miner_exit,
    "validator.bond": validators.bond,
    "validator.unbond": validators.unbond,
    "task.settle": _task_settle,
    "task.verdict": disputes.task_verdict,
    "powr.commit": powr_rules.commit,
    "powr.reveal": powr_rules.reveal,
}


# --- blocks ---------------------------------------------------------------------------------


def expected_difficulty(members: list[str], height: int, proposer: str) -> int:
    """2 for the in-turn proposer `members[height % n]`, 1 for any other validator."""
    return consensus.difficulty(members, height, proposer)


def _check_signer(state: StateReader, proposer: str, n: int) -> list[str]:
    recent = state.get(SIGNERS) or []
    if not consensus.may_sign(recent, proposer, n):
        raise InvalidBlock(
            f"{proposer} signed one of the last {consensus.recent_window(n)} blocks",
            reason="signed-recently",
        )
    return list(recent)


def _record_signer(state: Overlay, recent: list[str], proposer: str, n: int) -> None:
    if consensus.recent_window(n):
        state.set(SIGNERS, consensus.remember(recent, proposer, n))


def check_header(
    header: Header,
    parent: Header,
    parent_hash: str,
    genesis: Genesis,
    now_ms: int | None,
    members: list[str],
) -> None:
    """The header against its parent; `members` is the validator set in the parent's state."""
    if header.chain_id != genesis.chain_id:
        raise InvalidBlock(f"block is for chain {header.chain_id!r}", reason="wrong-chain-id")
    if header.prev != parent_hash:
        raise InvalidBlock("block does not follow its parent", reason="bad-prev")
    if header.height != parent.height + 1:
        raise InvalidBlock(
            f"height {header.height} does not follow {parent.height}", reason="bad-height"
        )
    if header.time <= parent.time:
        raise InvalidBlock("block time is not after its parent's", reason="bad-time")
    if now_ms is not None and header.time > now_ms + genesis.param("max_future_ms"):
        raise InvalidBlock("block time is too far in the future", reason="future-block")
    if header.proposer not in members:
        raise InvalidBlock(f"{header.proposer} is not a validator", reason="not-validator")
    if header.difficulty != expected_difficulty(members, header.height, header.proposer):
        raise InvalidBlock("wrong difficulty for this proposer", reason="bad-difficulty")


@dataclass(frozen=True)
class Applied:
    block: Block
    changes: dict[str, Any]


def apply_block(
    state: StateReader,
    parent: Header,
    parent_hash: str,
    block: Block,
    genesis: Genesis,
    *,
    now_ms: int | None = None,
) -> Applied:
    """Check `block` against its parent and the state after it; return the changes it makes."""
    header = block.header
    members = validators.active(state, genesis)
    check_header(header, parent, parent_hash, genesis, now_ms, members)
    if not block.signature_valid:
        raise InvalidBlock("block signature does not match the proposer", reason="bad-signature")
    recent = _check_signer(state, header.proposer, len(members))
    if len(block.txs) > genesis.param("max_block_txs"):
        raise InvalidBlock("too many transactions in the block", reason="too-many-txs")
    if txs_root(list(block.txs)) != header.txs_root:
        raise InvalidBlock("txs_root does not match the transactions", reason="bad-txs-root")
    overlay = Overlay(state)
    begin_block(overlay, header.height, genesis)
    seen: set[str] = set()
    for i, tx in enumerate(block.txs):
        if tx.id in seen:
            raise InvalidBlock(f"tx {i} appears twice", reason="duplicate-tx")
        seen.add(tx.id)
        try:
            apply_tx(overlay, tx, genesis, header.proposer, height=header.height)
        except InvalidTx as exc:
            raise InvalidBlock(f"tx {i} ({tx.id[:12]}): {exc.message}", reason="bad-tx") from None
    _record_signer(overlay, recent, header.proposer, len(members))
    if state_root(parent.state_root, overlay.changes) != header.state_root:
        raise InvalidBlock("state_root does not match the state", reason="bad-state-root")
    return Applied(block, overlay.changes)


def build_block(
    state: StateReader,
    parent: Header,
    parent_hash: str,
    candidates: Iterable[Tx],
    keypair: Keypair,
    time_ms: int,
    genesis: Genesis,
) -> tuple[Applied, list[tuple[Tx, InvalidTx]]]:
    """Make the next block from `candidates` (in order), leaving out those that no longer apply."""
    members = validators.active(state, genesis)
    if keypair.address not in members:
        raise InvalidBlock(f"{keypair.address} is not a validator", reason="not-validator")
    recent = _check_signer(state, keypair.address, len(members))
    height = parent.height + 1
    overlay = Overlay(state)
    begin_block(overlay, height, genesis)
    included: list[Tx] = []
    rejected: list[tuple[Tx, InvalidTx]] = []
    limit = genesis.param("max_block_txs")
    for tx in candidates:
        if len(included) >= limit:
            break
        trial = Overlay(overlay)
        try:
            apply_tx(trial, tx, genesis, keypair.address, height=height)
        except InvalidTx as exc:
            rejected.append((tx, exc))
            continue
        overlay.merge(trial)
        included.append(tx)
    _record_signer(overlay, recent, keypair.address, len(members))
    header = Header(
        chain_id=genesis.chain_id,
        height=height,
        prev=parent_hash,
        time=max(time_ms, parent.time + 1),
        proposer=keypair.address,
        txs_root=txs_root(included),
        state_root=state_root(parent.state_root, overlay.changes),
        difficulty=expected_difficulty(members, height, keypair.address),
    )
    return Applied(Block.seal(header, included, keypair), overlay.changes), rejected


# --- invariants -----------------------------------------------------------------------------


def supply_report(items: Iterable[tuple[str, Any]]) -> dict[str, int]:
    """Sum the state's holdings and compare with what genesis and emission created.

    Every unit is in exactly one place: an account balance, a miner's or validator's bond, a bond
    unbonding
    under `unlock:`, a pool (`pool:validators`), a stake, or burned. So the invariant is
    balances + bonds + unbonding + pools + stakes + burned == genesis + emitted."""
    totals = {"balances": 0, "bonds": 0, "unbonding": 0, "pools": 0, "stakes": 0}
    supply = {"genesis": 0, "emitted": 0, "burned": 0}
    for key, value in items:
        if key.startswith(ACCT):
            totals["balances"] += value["balance"]
        elif key.startswith(MINER) or key.startswith(validators.VALIDATOR):
            totals["bonds"] += value["bond"]
        elif key.startswith(UNLOCK):
            totals["unbonding"] += sum(entry["amount"] for entry in value)
        elif key.startswith(POOL):
            totals["pools"] += value["balance"]
        elif key.startswith(STAKE):
            totals["stakes"] += value["amount"]
        elif key == SUPPLY:
            supply = value
    held = sum(totals.values()) + supply["burned"]
    created = supply["genesis"] + supply["emitted"]
    return {**totals, "burned": supply["burned"], "held": held, "created": created}


def supply_holds(items: Iterable[tuple[str, Any]]) -> bool:
    report = supply_report(items)
    return report["held"] == report["created"]
