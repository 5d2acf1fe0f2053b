"""A node: its key, its chain store, the state at the tip, a mempool, and block production.

This is the library behind `dn node start` and the HTTP API; it does its own I/O (the store) but
no networking. `NodeHome` is the node's folder under `$DN_HOME/nodes/NAME/`:

    node_key.json   the node's Ed25519 key (0600). Unlike wallets it is not password-sealed: a node
                    must restart unattended, like an SSH host key. It holds no funds.
    genesis.json    the chain this node is on
    chain.sqlite    the chain store
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dn import PROTOCOL_VERSION, __version__
from dn.chain.genesis import Genesis
from dn.chain.mempool import Mempool
from dn.chain.state import (
    ACCT,
    DictState,
    account,
    apply_block,
    build_block,
    genesis_state,
    supply_report,
)
from dn.chain.store import Store
from dn.chain.types import Block, Tx
from dn.config import DEFAULT_NODE_NAME, node_dir, private_dir
from dn.encoding import pubkey_from_address
from dn.errors import DNError, InvalidBlock, InvalidTx, NotFound, StoreError
from dn.wallet.keys import Keypair


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class NodeHome:
    path: Path

    @classmethod
    def named(cls, name: str = DEFAULT_NODE_NAME, base: Path | None = None) -> NodeHome:
        return cls(node_dir(name, base))

    @property
    def key_file(self) -> Path:
        return self.path / "node_key.json"

    @property
    def genesis_file(self) -> Path:
        return self.path / "genesis.json"

    @property
    def store_file(self) -> Path:
        return self.path / "chain.sqlite"

    def key(self, create: bool = True) -> Keypair:
        """The node's key, made on first use."""
        if self.key_file.exists():
            doc = json.loads(self.key_file.read_text())
            keypair = Keypair.from_seed(bytes.fromhex(doc["seed"]))
            if keypair.address != doc.get("address"):
                raise StoreError(f"{self.key_file} is damaged: its address does not match")
            return keypair
        if not create:
            raise NotFound(f"no node key at {self.key_file}")
        private_dir(self.path)
        keypair = Keypair.generate()
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"address": keypair.address, "seed": keypair.seed().hex()}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        return keypair

    def genesis(self) -> Genesis:
        return Genesis.load(self.genesis_file)


class Node:
    """A chain store, the state at its tip, a mempool and (for validators) a block producer."""

    def __init__(self, home: NodeHome, genesis: Genesis | None = None) -> None:
        self.home = home
        self.key = home.key()
        genesis = genesis or home.genesis()
        if home.store_file.exists():
            self.store = Store.open(home.store_file, genesis=genesis)
        else:
            self.store = Store.create(home.store_file, genesis)
        self.genesis = self.store.genesis
        self.state = DictState(self.store.load_state())
        self.tip = self.store.tip()
        self.mempool = Mempool(self.genesis, self.key.address, self.state)
        restored = self.store.mempool_txs()
        dropped = [tx.id for tx in restored if not self._try_add(tx)]
        self.store.mempool_remove(dropped)
        self.last_block_ms = max(self.tip.header.time, now_ms()) if self.tip.height else now_ms()

    def _try_add(self, tx: Tx) -> bool:
        try:
            self.mempool.add(tx)
        except InvalidTx:
            return False
        return True

    @property
    def is_validator(self) -> bool:
        return self.key.address in self.genesis.validators

    def close(self) -> None:
        self.store.close()

    # --- transactions ----------------------------------------------------------------------

    def submit(self, raws: list[Any]) -> list[dict[str, Any]]:
        """Check and queue transactions; one result per input, in order. Persisted before return."""
        results: list[dict[str, Any]] = []
        accepted: list[Tx] = []
        for raw in raws:
            try:
                tx = Tx.from_json(raw)
                if self.store.count_canonical_tx(tx.id):
                    raise InvalidTx("transaction is already in a block", reason="duplicate")
                self.mempool.add(tx)
            except DNError as exc:
                results.append({"accepted": False, **exc.to_json()})
                continue
            accepted.append(tx)
            results.append({"accepted": True, "id": tx.id})
        self.store.mempool_add(accepted)
        return results

    def tx_status(self, tx_id: str) -> dict[str, Any]:
        record = self.store.tx(tx_id)
        if record is not None:
            return {
                "id": tx_id,
                "status": "included",
                "height": record.height,
                "block": record.block_hash,
                "index": record.index,
                "confirmations": self.tip.height - record.height + 1,
                "tx": record.tx.to_json(),
            }
        pending = self.mempool.get(tx_id)
        if pending is not None:
            return {"id": tx_id, "status": "pending", "tx": pending.to_json()}
        raise NotFound(f"no transaction {tx_id}")

    # --- blocks ----------------------------------------------------------------------------

    def due(self, at_ms: int) -> bool:
        """Whether a validator should propose now: work waiting, or the chain has been idle."""
        if not self.is_validator:
            return False
        elapsed = at_ms - self.last_block_ms
        if len(self.mempool) and elapsed >= self.genesis.param("block_time_ms"):
            return True
        return elapsed >= self.genesis.param("max_block_interval_ms")

    def produce(self, at_ms: int | None = None) -> Block:
        """Propose, store and adopt the next block (single-validator path for now)."""
        at = at_ms if at_ms is not None else now_ms()
        candidates = self.mempool.pending(self.genesis.param("max_block_txs"))
        applied, rejected = build_block(
            self.state, self.tip.header, self.tip.hash, candidates, self.key, at, self.genesis
        )
        self._adopt(applied.block, applied.changes, [tx.id for tx, _ in rejected])
        return applied.block

    def receive_block(self, block: Block) -> None:
        """Check a block from elsewhere against our tip and adopt it."""
        if block.header.prev != self.tip.hash:
            raise InvalidBlock("block does not extend our tip", reason="not-on-tip")
        applied = apply_block(
            self.state, self.tip.header, self.tip.hash, block, self.genesis, now_ms=now_ms()
        )
        self._adopt(block, applied.changes, [])

    def _adopt(self, block: Block, changes: dict[str, Any], rejected: list[str]) -> None:
        self.store.commit_block(block, changes)
        self.state.update(changes)
        self.tip = block
        self.last_block_ms = max(block.header.time, now_ms())
        dropped = self.mempool.reset(self.state, [tx.id for tx in block.txs] + rejected)
        self.store.mempool_remove(rejected + [tx.id for tx in dropped])

    # --- views -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "network": self.genesis.network,
            "chain_id": self.genesis.chain_id,
            "genesis_hash": self.genesis.hash,
            "node_address": self.key.address,
            "validator": self.is_validator,
            "height": self.tip.height,
            "tip": self.tip.hash,
            "tip_time": self.tip.header.time,
            "state_root": self.tip.header.state_root,
            "mempool": len(self.mempool),
            "supply": supply_report(self.state.items()),
        }

    def account(self, address: str) -> dict[str, Any]:
        pubkey_from_address(address)
        acct = account(self.state, address)
        return {
            "address": address,
            "balance": acct["balance"],
            "nonce": acct["nonce"],
            "next_nonce": self.mempool.pending_nonce(address),
            "height": self.tip.height,
        }

    def accounts_count(self) -> int:
        return sum(1 for key, _ in self.state.items() if key.startswith(ACCT))


def init_dev_chain(
    home: NodeHome,
    allocations: dict[str, int],
    *,
    network: str = "devnet",
    params: dict[str, int] | None = None,
    force: bool = False,
) -> Genesis:
    """Write a dev genesis whose one validator is this node's own key."""
    if home.store_file.exists() and not force:
        raise StoreError(
            f"{home.path} already holds a chain; use another --name, or --force to start over"
        )
    key = home.key()
    genesis = Genesis.build(
        network=network,
        time_ms=now_ms(),
        validators=[key.address],
        allocations=allocations,
        params=params,
    )
    if force:
        for suffix in ("", "-wal", "-shm"):
            Path(str(home.store_file) + suffix).unlink(missing_ok=True)
    genesis.save(home.genesis_file)
    return genesis


def initial_state(genesis: Genesis) -> DictState:
    return DictState(genesis_state(genesis))
