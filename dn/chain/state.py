"""The state machine: `apply_block(state, parent, block, genesis) -> changes`. No I/O, no clock.

State is a flat map from string keys to JSON values (never mutated in place, only replaced;
None deletes a key):

    acct:<address>          {"balance": units, "nonce": n}
    supply                  {"genesis": units, "emitted": units, "burned": units}
    signers                 [address, …]  the latest proposers (only while the signing rule
                            counts two or more validators)
    model:<sha256>          {"creator", "name", "domain", "price", "license", "size",
                             "kind": "chat" | "base", "height", "retired": bool,
                             "retired_at": height (once retired),
                             "tasks": confirmed tasks, "tokens": paid tokens,
                             "rejected": rejected tasks}
    model-name:<name>       the sha256 of the live (not retired) model holding that name
    model-name-key:<key>    the same, under the name's key (models.name_key: no case, no extra
                            spaces), which no two live models share
    miner:<address>         {"bond": units still bonded, "url", "models": [sha256, …] sorted,
                             "since": height of this registration, "exited": height | null,
                             "slashed": units lost to verdicts (once slashed)}
    serving:<sha256>        [{"miner", "from", "until"}, …] who served a model when (tasks.py)
    unlock:<height>         [{"address", "amount", "what": "bond" | "validator-bond" | "stake"},
                            …] bonds and unstaked funds released at the start of that block
    pool:validators         {"balance": units} the validators' share of paid queries
    task:<task id>          {"model", "consumer", "generator", "checker", "tokens", "paid",
                             "status": "confirmed" | "rejected", "height", "output_hash",
                             "commitment", "votes" (validators' `task.verdict`s) and
                             "verdict" (once a quorum of them agreed: disputes.py)}
    stake:<target>:<address> {"amount": units} staked by that address on a model (sha256) or
                            a validator (address); written by `stake` / `unstake` (staking.py)
    backers:<target>        [address, …] sorted: who holds a stake on the target; a model's
                            backers share its query fees pro rata to their stakes
    escrow:<address>        {"amount", "unlocking", "unlock_at", "reserved"}: a consumer's
                            prepaid query escrow, `reserved` what its ticket books hold of it
                            (absent: 0); escrow-due:<height> lists the unlocks due then
                            (escrow.py)
    powr:<epoch>:…          commitments, reveals, per-model task statistics and the result of
                            each PoWR epoch (powr_rules.py)

Later kinds add their own prefixes (validator:, validators-probation, downtime:, …; see
validators.py and jailing.py); the store keeps any key, so adding rules never reshapes it.

`state_root` of a block is the hash of its parent's state root and the sorted list of every key the
block changed with its new value; the genesis root hashes the whole genesis state. So the root
commits, by induction, to the full state, costs O(changes) per block, and two nodes whose states
differ anywhere disagree on it from that block on.

The order of checks mirrors the spec: a block's header is checked against its parent (the proposer
against the set and the signing rule, which counts the members off probation: validators.py),
bonds that finish unbonding at its height are released (and escrow withdrawals that finish
unlocking: escrow.py), then every transaction is applied in
order on an overlay, then the block's signer is recorded (and a missed turn: jailing.py), then
the computed roots are compared with the header; any failure raises InvalidBlock and leaves
nothing changed. A transaction pays its fee and bumps its sender's nonce, then its kind's
rule (one function per kind, named in `RULES`: `transfer` here; `model.register` and
`model.retire` in models.py; `miner.register` and `miner.exit` in miners.py; `task.settle` in
market.py; `stake` and `unstake` in staking.py; `validator.bond` and `validator.unbond` in
validators.py; `escrow.deposit` and `escrow.withdraw` in escrow.py; `task.verdict` in
disputes.py; `powr.commit` and `powr.reveal` in powr_rules.py) checks and applies the payload;
any failure raises InvalidTx and leaves nothing changed. The keys and the account operations they
share are in ledger.py. At the first block of each PoWR epoch
(epochs.py), after the unlocks and before the transactions, the previous epoch is closed and its
emission paid, members that missed too many turns are jailed (jailing.py), and the set changes
for the new epoch are made (`begin_block`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from dn.chain import (
    books,
    consensus,
    disputes,
    escrow,
    jailing,
    market,
    miners,
    models,
    powr_rules,
    staking,
    validators,
)
from dn.chain.epochs import Epoch
from dn.chain.genesis import Genesis
from dn.chain.ledger import (
    ACCT,
    MINER,
    POOL,
    SIGNERS,
    SUPPLY,
    UNLOCK,
    Overlay,
    StateReader,
    account,
    burn,
    credit,
    debit,
)
from dn.chain.staking import STAKE
from dn.chain.types import Block, Header, Tx, txs_root
from dn.encoding import BPS, hash_hex
from dn.errors import InvalidBlock, InvalidTx
from dn.wallet.keys import Keypair

# --- genesis and roots ----------------------------------------------------------------------


def genesis_state(genesis: Genesis) -> dict[str, Any]:
    state: dict[str, Any] = {
        ACCT + address: {"balance": amount, "nonce": 0}
        for address, amount in genesis.allocations.items()
    }
    for address, amount in genesis.escrows.items():
        state[escrow.ESCROW + address] = {"amount": amount, "unlocking": 0, "unlock_at": None}
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
    burn(trial, burned)
    credit(trial, proposer, tx.fee - burned)
    state.merge(trial)


Rule = Callable[[Overlay, Tx, Genesis, int], None]


def _transfer(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    amount = tx.payload["amount"]
    debit(state, tx.sender, amount, f"amount {amount} after fee {tx.fee}")
    credit(state, tx.payload["to"], amount)


def begin_block(state: Overlay, height: int, genesis: Genesis, parent_hash: str) -> None:
    """What happens at the start of block `height`, before its transactions: the bonds and
    stakes whose unbonding ends there are paid out (only the entries due are read), and so are
    the escrow withdrawals that finish unlocking there (`escrow.release_due`); then, at the
    first block of an epoch, the previous PoWR epoch is closed and its emission credited
    (`powr_rules.close`), the members over the downtime limit are jailed (`jailing.judge`), and
    the validator set changes scheduled for the new epoch are made (`validators.begin_epoch`).
    The ticket books of the parent block get its hash `parent_hash` as their beacon, and those
    past the ticket window go, their unused slots' reservations back in their consumers'
    escrows (`books.begin`; after the unlocks, though each step keeps `reserved + unlocking ≤
    amount` in either order: escrow.py)."""
    due = state.get(UNLOCK + str(height))
    if due is not None:
        for entry in due:
            credit(state, entry["address"], entry["amount"])
        state.set(UNLOCK + str(height), None)
    escrow.release_due(state, height)
    books.begin(state, height, parent_hash, genesis)
    epoch = Epoch.closed_at(height, genesis.param("epoch_blocks"))
    if epoch is not None:
        powr_rules.close(state, epoch, genesis)
        jailing.judge(state, epoch, height, genesis)
        validators.begin_epoch(state, epoch + 1, genesis)


RULES: dict[str, Rule] = {
    "transfer": _transfer,
    "model.register": models.model_register,
    "model.retire": models.model_retire,
    "stake": staking.stake,
    "unstake": staking.unstake,
    "miner.register": miners.miner_register,
    "miner.exit": miners.miner_exit,
    "validator.bond": validators.bond,
    "validator.unbond": validators.unbond,
    "task.settle": market.task_settle,
    "task.book": books.book,
    "escrow.deposit": escrow.deposit,
    "escrow.withdraw": escrow.withdraw,
    "task.verdict": disputes.task_verdict,
    "powr.commit": powr_rules.commit,
    "powr.reveal": powr_rules.reveal,
}


# --- blocks ---------------------------------------------------------------------------------


def expected_difficulty(members: list[str], height: int, proposer: str) -> int:
    """2 for the in-turn proposer `members[height % n]`, 1 for any other validator."""
    return consensus.difficulty(members, height, proposer)


def _check_signer(state: StateReader, proposer: str, genesis: Genesis) -> None:
    """The recent-signer rule over the members it counts (`validators.signing`)."""
    n = len(validators.signing(state, genesis))
    if not consensus.may_sign(state.get(SIGNERS) or [], proposer, n):
        raise InvalidBlock(
            f"{proposer} signed one of the last {consensus.recent_window(n)} blocks",
            reason="signed-recently",
        )


def _record_signer(
    state: Overlay, parent: StateReader, height: int, proposer: str, genesis: Genesis
) -> None:
    """After the block's transactions: its proposer leaves probation and joins the recent
    signers, and the in-turn validator's missed turn, if it missed one, is counted. The list
    keeps as many signers as the rule needs before this block and after it (a joiner's first
    block makes it count from the next block on)."""
    validators.signed(state, proposer)
    n = max(len(validators.signing(parent, genesis)), len(validators.signing(state, genesis)))
    if consensus.recent_window(n):
        state.set(SIGNERS, consensus.remember(parent.get(SIGNERS) or [], proposer, n))
    jailing.observe(state, parent, height, proposer, genesis)


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
    _check_signer(state, header.proposer, genesis)
    if len(block.txs) > genesis.param("max_block_txs"):
        raise InvalidBlock("too many transactions in the block", reason="too-many-txs")
    if txs_root(list(block.txs)) != header.txs_root:
        raise InvalidBlock("txs_root does not match the transactions", reason="bad-txs-root")
    overlay = Overlay(state)
    begin_block(overlay, header.height, genesis, parent_hash)
    seen: set[str] = set()
    for i, tx in enumerate(block.txs):
        if tx.id in seen:
            raise InvalidBlock(f"tx {i} appears twice", reason="duplicate-tx")
        seen.add(tx.id)
        try:
            apply_tx(overlay, tx, genesis, header.proposer, height=header.height)
        except InvalidTx as exc:
            raise InvalidBlock(f"tx {i} ({tx.id[:12]}): {exc.message}", reason="bad-tx") from None
    _record_signer(overlay, state, header.height, header.proposer, genesis)
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
    _check_signer(state, keypair.address, genesis)
    height = parent.height + 1
    overlay = Overlay(state)
    begin_block(overlay, height, genesis, parent_hash)
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
    _record_signer(overlay, state, height, keypair.address, genesis)
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


_HOLDINGS = ("balances", "bonds", "unbonding", "pools", "stakes", "escrows")


def _holding(key: str, value: Any) -> tuple[str, int] | None:
    """Which holding a state entry adds to, and how much (None: it holds no units)."""
    if value is None:
        return None
    if key.startswith(ACCT):
        return "balances", value["balance"]
    if key.startswith(MINER) or key.startswith(validators.VALIDATOR):
        return "bonds", value["bond"]
    if key.startswith(UNLOCK):
        return "unbonding", sum(entry["amount"] for entry in value)
    if key.startswith(POOL):
        return "pools", value["balance"]
    if key.startswith(STAKE):
        return "stakes", value["amount"]
    if key.startswith(escrow.ESCROW):
        return "escrows", value["amount"]
    return None


class SupplyTally:
    """The supply report kept up to date from each block's state changes, so reading it costs
    nothing however large the state grows (`supply_report` sums the whole state instead)."""

    def __init__(self, items: Iterable[tuple[str, Any]]) -> None:
        self.totals = dict.fromkeys(_HOLDINGS, 0)
        self.supply = {"genesis": 0, "emitted": 0, "burned": 0}
        for key, value in items:
            self._add(key, value, 1)

    def _add(self, key: str, value: Any, sign: int) -> None:
        if key == SUPPLY:
            if sign > 0:
                self.supply = dict(value)
            return
        found = _holding(key, value)
        if found is not None:
            self.totals[found[0]] += sign * found[1]

    def apply(self, state: StateReader, changes: dict[str, Any]) -> None:
        """Take in `changes` (key -> new value, None for removed) before they are written over
        `state`."""
        for key, value in changes.items():
            self._add(key, state.get(key), -1)
            self._add(key, value, 1)

    def report(self) -> dict[str, int]:
        held = sum(self.totals.values()) + self.supply["burned"]
        created = self.supply["genesis"] + self.supply["emitted"]
        return {**self.totals, "burned": self.supply["burned"], "held": held, "created": created}


def supply_report(items: Iterable[tuple[str, Any]]) -> dict[str, int]:
    """Sum the state's holdings and compare with what genesis and emission created.

    Every unit is in exactly one place: an account balance, a miner's or validator's bond, a bond
    unbonding under `unlock:`, a pool (`pool:validators`), a stake, a query escrow (unlocking
    units included), or burned. So the invariant is
    balances + bonds + unbonding + pools + stakes + escrows + burned == genesis + emitted."""
    return SupplyTally(items).report()


def supply_holds(items: Iterable[tuple[str, Any]]) -> bool:
    report = supply_report(items)
    return report["held"] == report["created"]
