"""The state machine: `apply_block(state, parent, block, genesis) -> changes`. No I/O, no clock.

State is a flat map from string keys to JSON values (never mutated in place, only replaced):

    acct:<address>   {"balance": units, "nonce": n}
    supply           {"genesis": units, "emitted": units, "burned": units}
    signers          [address, …]  the latest proposers (only with two or more validators)

Later kinds add their own prefixes (model:, stake:, miner:, validator:, task:, …); the store keeps
any key, so adding rules never reshapes it.

`state_root` of a block is the hash of its parent's state root and the sorted list of every key the
block changed with its new value; the genesis root hashes the whole genesis state. So the root
commits, by induction, to the full state, costs O(changes) per block, and two nodes whose states
differ anywhere disagree on it from that block on.

The order of checks mirrors the spec: a block's header is checked against its parent, then every
transaction is applied in order on an overlay, then the computed roots are compared with the
header; any failure raises InvalidBlock and leaves nothing changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from dn.chain import consensus
from dn.chain.genesis import Genesis
from dn.chain.types import Block, Header, Tx, txs_root
from dn.encoding import hash_hex
from dn.errors import InvalidBlock, InvalidTx
from dn.wallet.keys import Keypair

ACCT = "acct:"
SUPPLY = "supply"
SIGNERS = "signers"  # proposers of the latest blocks, for the floor(n/2)+1 signing rule
BPS = 10_000
# Kinds whose state rules exist today; the others parse but are refused until their issue lands.
ENABLED_KINDS = frozenset({"transfer"})


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
    if tx.kind not in ENABLED_KINDS:
        raise InvalidTx(f"'{tx.kind}' transactions are not enabled yet", reason="kind-disabled")
    if not tx.signature_valid:
        raise InvalidTx("signature does not match the sender", reason="bad-signature")
    if tx.fee < genesis.param("min_fee"):
        raise InvalidTx(
            f"fee {tx.fee} is below the minimum of {genesis.param('min_fee')} units",
            reason="fee-too-low",
        )


def apply_tx(state: Overlay, tx: Tx, genesis: Genesis, proposer: str) -> None:
    """Apply one transaction to `state`, or raise InvalidTx and change nothing."""
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
    amount = tx.payload["amount"] if tx.kind == "transfer" else 0
    if sender["balance"] < tx.fee + amount:
        raise InvalidTx(
            f"balance {sender['balance']} cannot pay fee {tx.fee} + amount {amount}",
            reason="insufficient-funds",
        )
    state.set(
        ACCT + tx.sender,
        {"balance": sender["balance"] - tx.fee - amount, "nonce": sender["nonce"] + 1},
    )
    if tx.kind == "transfer":
        _credit(state, tx.payload["to"], amount)
    burned = tx.fee * genesis.param("fee_burn_share") // BPS
    _burn(state, burned)
    _credit(state, proposer, tx.fee - burned)


# --- blocks ---------------------------------------------------------------------------------


def expected_difficulty(genesis: Genesis, height: int, proposer: str) -> int:
    """2 for the in-turn proposer `validators[height % n]`, 1 for any other validator."""
    return consensus.difficulty(genesis.validators, height, proposer)


def _check_signer(state: StateReader, proposer: str, genesis: Genesis) -> list[str]:
    recent = state.get(SIGNERS) or []
    n = len(genesis.validators)
    if not consensus.may_sign(recent, proposer, n):
        raise InvalidBlock(
            f"{proposer} signed one of the last {consensus.recent_window(n)} blocks",
            reason="signed-recently",
        )
    return list(recent)


def _record_signer(state: Overlay, recent: list[str], proposer: str, genesis: Genesis) -> None:
    n = len(genesis.validators)
    if consensus.recent_window(n):
        state.set(SIGNERS, consensus.remember(recent, proposer, n))


def check_header(
    header: Header, parent: Header, parent_hash: str, genesis: Genesis, now_ms: int | None
) -> None:
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
    if header.proposer not in genesis.validators:
        raise InvalidBlock(f"{header.proposer} is not a validator", reason="not-validator")
    if header.difficulty != expected_difficulty(genesis, header.height, header.proposer):
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
    check_header(header, parent, parent_hash, genesis, now_ms)
    if not block.signature_valid:
        raise InvalidBlock("block signature does not match the proposer", reason="bad-signature")
    recent = _check_signer(state, header.proposer, genesis)
    if len(block.txs) > genesis.param("max_block_txs"):
        raise InvalidBlock("too many transactions in the block", reason="too-many-txs")
    if txs_root(list(block.txs)) != header.txs_root:
        raise InvalidBlock("txs_root does not match the transactions", reason="bad-txs-root")
    overlay = Overlay(state)
    seen: set[str] = set()
    for i, tx in enumerate(block.txs):
        if tx.id in seen:
            raise InvalidBlock(f"tx {i} appears twice", reason="duplicate-tx")
        seen.add(tx.id)
        try:
            apply_tx(overlay, tx, genesis, header.proposer)
        except InvalidTx as exc:
            raise InvalidBlock(f"tx {i} ({tx.id[:12]}): {exc.message}", reason="bad-tx") from None
    _record_signer(overlay, recent, header.proposer, genesis)
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
    recent = _check_signer(state, keypair.address, genesis)
    overlay = Overlay(state)
    included: list[Tx] = []
    rejected: list[tuple[Tx, InvalidTx]] = []
    limit = genesis.param("max_block_txs")
    for tx in candidates:
        if len(included) >= limit:
            break
        trial = Overlay(overlay)
        try:
            apply_tx(trial, tx, genesis, keypair.address)
        except InvalidTx as exc:
            rejected.append((tx, exc))
            continue
        overlay.merge(trial)
        included.append(tx)
    _record_signer(overlay, recent, keypair.address, genesis)
    height = parent.height + 1
    header = Header(
        chain_id=genesis.chain_id,
        height=height,
        prev=parent_hash,
        time=max(time_ms, parent.time + 1),
        proposer=keypair.address,
        txs_root=txs_root(included),
        state_root=state_root(parent.state_root, overlay.changes),
        difficulty=expected_difficulty(genesis, height, keypair.address),
    )
    return Applied(Block.seal(header, included, keypair), overlay.changes), rejected


# --- invariants -----------------------------------------------------------------------------


def supply_report(items: Iterable[tuple[str, Any]]) -> dict[str, int]:
    """Sum the state's holdings and compare with what genesis and emission created."""
    balances = 0
    supply = {"genesis": 0, "emitted": 0, "burned": 0}
    for key, value in items:
        if key.startswith(ACCT):
            balances += value["balance"]
        elif key == SUPPLY:
            supply = value
    held = balances + supply["burned"]
    created = supply["genesis"] + supply["emitted"]
    return {"balances": balances, "burned": supply["burned"], "held": held, "created": created}


def supply_holds(items: Iterable[tuple[str, Any]]) -> bool:
    report = supply_report(items)
    return report["held"] == report["created"]
