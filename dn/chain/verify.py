"""`dn chain verify`: replay a store from genesis and check everything it claims.

Every canonical block is re-checked by the same `apply_block` that accepts blocks from peers (links,
heights, times, proposer, signatures of the block and of every transaction, txs_root, state_root),
and its stored hash is recomputed from its header and signature (the tip's too: no later block
links to it), then the replayed state is compared with the stored one and the supply invariant is
checked. Given the node's genesis file, the genesis stored in the database must be that one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dn.chain.genesis import Genesis
from dn.chain.ledger import DictState
from dn.chain.state import apply_block, genesis_block, genesis_state, supply_report
from dn.chain.store import Store
from dn.chain.types import Block
from dn.errors import DNError


def verify_store(
    store: Store,
    progress: Callable[[int, int], None] | None = None,
    *,
    genesis: Genesis | None = None,
) -> dict[str, Any]:
    """Replay `store`; safe on a running node's store: it reads one snapshot (a WAL read
    transaction), so blocks the node appends meanwhile are not half-seen. `genesis` (the node's
    genesis file) must be the one the store holds."""
    store.conn.execute("BEGIN")
    try:
        return _verify(store, progress, genesis)
    finally:
        store.conn.execute("COMMIT")


def _verify(
    store: Store, progress: Callable[[int, int], None] | None, expected: Genesis | None
) -> dict[str, Any]:
    genesis = store.genesis
    tip = store.tip()
    report: dict[str, Any] = {
        "ok": False,
        "chain_id": genesis.chain_id,
        "height": tip.height,
        "tip": tip.hash,
        "blocks": 0,
        "txs": 0,
        "problems": [],
    }
    problems: list[str] = report["problems"]
    if expected is not None and expected.hash != genesis.hash:
        problems.append(
            f"the store holds genesis {genesis.hash[:12]}…, not the genesis file's "
            f"{expected.hash[:12]}…"
        )
        return report
    integrity = store.integrity_check()
    if integrity != "ok":
        problems.append(f"SQLite integrity check: {integrity}")
    state = DictState(genesis_state(genesis))
    parent = genesis_block(genesis)
    stored_zero = store.block(0)
    if stored_zero is None or stored_zero.hash != parent.hash:
        problems.append("block 0 does not match the genesis file")
        return report
    for block in store.iter_canonical(1):
        if Block.hash_of(block.header, block.sig) != block.hash:
            problems.append(
                f"block {block.height}: its stored hash {block.hash[:12]}… is not the hash of "
                "its header and signature"
            )
            return report
        try:
            applied = apply_block(state, parent.header, parent.hash, block, genesis)
        except DNError as exc:
            problems.append(f"block {block.height} ({block.hash[:12]}): {exc.message}")
            return report
        state.update(applied.changes)
        report["blocks"] += 1
        report["txs"] += len(block.txs)
        parent = block
        if progress is not None:
            progress(block.height, tip.height)
    if parent.hash != tip.hash:
        problems.append("the canonical index does not end at the tip")
    if state.data != store.load_state():
        problems.append("the stored state differs from the state replayed from genesis")
    supply = supply_report(state.items())
    report["supply"] = supply
    if supply["held"] != supply["created"]:
        problems.append(
            f"supply invariant broken: balances + bonds + unbonding + pools + stakes + burned = "
            f"{supply['held']}, "
            f"genesis + emitted = {supply['created']}"
        )
    report["state_root"] = parent.header.state_root
    report["ok"] = not problems
    return report
