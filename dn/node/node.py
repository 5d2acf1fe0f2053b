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
import logging
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dn import PROTOCOL_VERSION, __version__
from dn.chain import books, consensus, escrow, validators
from dn.chain.genesis import Genesis
from dn.chain.ledger import ACCT, DictState, Overlay, account
from dn.chain.mempool import Mempool
from dn.chain.state import SIGNERS, Applied, SupplyTally, apply_block, build_block
from dn.chain.store import Store
from dn.chain.types import Block, Tx
from dn.config import DEFAULT_NODE_NAME, node_dir, private_dir
from dn.encoding import pubkey_from_address
from dn.errors import DNError, InvalidBlock, InvalidTx, NotFound, StoreError
from dn.wallet.keys import Keypair

log = logging.getLogger("dn.node")


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
            try:
                doc = json.loads(self.key_file.read_text())
                keypair = Keypair.from_seed(bytes.fromhex(doc["seed"]))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise StoreError(f"{self.key_file} is damaged or unreadable: {exc}") from None
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


@dataclass
class _Branch:
    """A side branch from the canonical block at `fork_height` up to `head`, with the state
    changes of each of its blocks and the state at its head (valid while our tip stays put)."""

    tip_hash: str
    fork_height: int
    blocks: list[tuple[Block, dict[str, Any]]]
    state: Overlay

    @property
    def head(self) -> str:
        return self.blocks[-1][0].hash if self.blocks else ""


Listener = Callable[[str, Any], None]
Job = Future[tuple[Applied, list[str]]]  # a block built and stored, and the tx ids it refused


class Node:
    """A chain store, the state at its tip, a mempool and (for validators) a block producer.

    Blocks from peers may extend the tip, start or extend a side branch (stored, append-only),
    or make a side branch heavier than the canonical one, which switches to it (a reorg) unless
    that would undo a final block. `listeners` hear ("block", Block) for each block adopted and
    ("txs", [Tx]) for transactions accepted, so the network layer can pass them on.
    """

    def __init__(
        self,
        home: NodeHome,
        genesis: Genesis | None = None,
        *,
        rng: random.Random | None = None,
        key: Keypair | None = None,
    ) -> None:
        self.home = home
        self.key = key or home.key()  # `dn validate --wallet` signs blocks with the wallet
        genesis = genesis or home.genesis()
        if home.store_file.exists():
            self.store = Store.open(home.store_file, genesis=genesis)
        else:
            self.store = Store.create(home.store_file, genesis)
        self.genesis = self.store.genesis
        self.rng = rng or random.Random()
        self.listeners: list[Listener] = []
        self.state = DictState(self.store.load_state())
        self.supply = SupplyTally(self.state.items())
        self.tip = self.store.tip()
        self.tip_td = self.store.tip_total_difficulty()
        self.final = 0
        self._update_final()
        self.mempool = self._fresh_mempool()
        restored = self.store.mempool_txs()
        dropped = [tx.id for tx in restored if not self._try_add(tx)]
        self.store.mempool_remove(dropped)
        self.last_block_ms = now_ms()
        self._branch: _Branch | None = None
        self._plan: tuple[str, bool, int] | None = None  # (tip, signed at next height, delay)
        self.job: Job | None = None  # our block being made; meanwhile only `check` changes us
        self.extra_roles: list[str] = []

    def _try_add(self, tx: Tx) -> bool:
        try:
            self.mempool.add(tx)
        except InvalidTx:
            return False
        return True

    @property
    def validators(self) -> list[str]:
        """The active validator set at the tip (it changes at epoch boundaries)."""
        return validators.active(self.state, self.genesis)

    @property
    def is_validator(self) -> bool:
        return self.key.address in self.validators

    @property
    def roles(self) -> list[str]:
        """What this node does: `validator` from the chain, plus roles its service runs
        (`miner`, added to `extra_roles`)."""
        return (["validator"] if self.is_validator else []) + self.extra_roles

    def close(self) -> None:
        self.settle()
        self.store.close()

    def _emit(self, event: str, payload: Any) -> None:
        for listener in list(self.listeners):
            try:
                listener(event, payload)
            except Exception:  # noqa: BLE001 - a listener's failure is not the chain's
                log.exception("listener failed on %s", event)

    # --- transactions ----------------------------------------------------------------------

    def _fresh_mempool(self) -> Mempool:
        tip, me = self.tip, self.key.address
        return Mempool(self.genesis, me, self.state, tip_height=tip.height, tip_hash=tip.hash)

    def own_tx(self, keypair: Keypair, kind: str, payload: dict[str, Any], fee: int = 0) -> Tx:
        """A transaction this node sends for a key it holds (its miner's, validator's or
        gateway's): the next nonce after the key's pending ones, at the minimum fee or `fee`."""
        return Tx.create(
            keypair,
            chain_id=self.genesis.chain_id,
            kind=kind,
            nonce=self.mempool.pending_nonce(keypair.address),
            fee=max(fee, int(self.genesis.param("min_fee"))),
            payload=payload,
        )

    def submit(self, raws: list[Any]) -> list[dict[str, Any]]:
        """Check and queue transactions; one result per input, in order. Persisted before return."""
        results, accepted = self.check(raws)
        self.keep(accepted)
        return results

    def check(self, raws: list[Any]) -> tuple[list[dict[str, Any]], list[Tx]]:
        """Check transactions into the mempool (in memory): a result per input, and those
        accepted, which `keep` must persist and announce before they are reported accepted."""
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
        return results, accepted

    def keep(self, accepted: list[Tx], stored: bool = False) -> None:
        """Persist accepted transactions (one store transaction; `stored`: the caller did, in
        its worker thread: service.py) and tell the listeners."""
        if not stored:
            self.store.mempool_add(accepted)
        if accepted:
            self._emit("txs", accepted)

    def tx_status(self, tx_id: str) -> dict[str, Any]:
        record = self.store.tx(tx_id)
        if record is not None and record.height <= self.tip.height:  # not in a block still landing
            return {
                "id": tx_id,
                "status": "included",
                "height": record.height,
                "block": record.block_hash,
                "index": record.index,
                "confirmations": self.tip.height - record.height + 1,
                "final": record.height <= self.final,
                "tx": record.tx.to_json(),
            }
        pending = self.mempool.get(tx_id)
        if pending is not None:
            return {"id": tx_id, "status": "pending", "tx": pending.to_json()}
        raise NotFound(f"no transaction {tx_id}")

    # --- producing blocks ------------------------------------------------------------------

    def _next_plan(self) -> tuple[bool, int]:
        """For the next height: whether we signed a block there already (on any branch: a
        validator never signs two blocks at one height) and our extra out-of-turn delay."""
        if self._plan is None or self._plan[0] != self.tip.hash:
            height = self.tip.height + 1
            signed = any(h.proposer == self.key.address for _, h in self.store.headers_at(height))
            delay = 0
            if consensus.in_turn(self.validators, height) != self.key.address:
                delay = consensus.out_of_turn_delay_ms(
                    self.rng, len(self.validators), self.genesis.param("block_time_ms")
                )
            self._plan = (self.tip.hash, signed, delay)
        return self._plan[1], self._plan[2]

    def due(self, at_ms: int) -> bool:
        """Whether to propose now: it may sign the next block, work waits (transactions, a book
        not final yet: books.py) or the chain has been idle, and, out of turn, its delay passed."""
        if not self.is_validator:
            return False
        recent = self.state.get(SIGNERS) or []
        counted = len(validators.signing(self.state, self.genesis))  # not joiners on probation
        if not consensus.may_sign(recent, self.key.address, counted):
            return False
        signed, delay = self._next_plan()
        if signed:
            return False
        elapsed = at_ms - self.last_block_ms
        window = self.genesis.param("ticket_window_blocks")
        busy = len(self.mempool) or books.waiting(self.state, self.final, self.tip.height, window)
        wait = self.genesis.param("block_time_ms" if busy else "max_block_interval_ms")
        return elapsed >= wait + delay

    def produce(self, at_ms: int | None = None) -> Block:
        """Propose, store and adopt the next block on our tip."""
        self.settle()
        at = at_ms if at_ms is not None else now_ms()
        candidates = self.mempool.pending(self.genesis.param("max_block_txs"))
        applied, rejected = build_block(
            self.state, self.tip.header, self.tip.hash, candidates, self.key, at, self.genesis
        )
        self._adopt(applied.block, applied.changes, [tx.id for tx, _ in rejected])
        return applied.block

    def land(self, job: Job) -> Block:
        """Adopt `job`'s block, built and stored in a worker (service.py); once, waiting for it."""
        if self.job is job:
            self.job = None
            if job.exception() is None:
                applied, rejected = job.result()
                self._adopt(applied.block, applied.changes, rejected, stored=True)
        return job.result()[0].block

    def settle(self) -> None:
        """Land our block being made, if any (if it failed it changed nothing: its maker says)."""
        if self.job is not None and self.job.exception() is None:
            self.land(self.job)

    # --- receiving blocks ------------------------------------------------------------------

    def receive_block(self, block: Block) -> str:
        """Take a block from a peer. Returns "known", "extended" (new tip), "side" (stored on a
        side branch), "reorg" (its branch became canonical) or "orphan" (parent unknown: sync).
        Raises InvalidBlock, with the rule broken as its reason, for a block that is not valid."""
        self.settle()
        if self.store.has_block(block.hash):
            return "known"
        header = block.header
        if header.chain_id != self.genesis.chain_id:
            raise InvalidBlock(f"block is for chain {header.chain_id!r}", reason="wrong-chain-id")
        if not block.signature_valid:
            raise InvalidBlock(
                "block signature does not match the proposer", reason="bad-signature"
            )
        if not validators.known(self.state, self.genesis, header.proposer):
            # Cheap first filter; whether it was in the set at that height is checked when the
            # block is applied on its parent's state.
            raise InvalidBlock(f"{header.proposer} is not a validator", reason="not-validator")
        parent = self.store.header(header.prev)
        if parent is None:
            return "orphan"
        for other_hash, other in self.store.headers_at(header.height):
            if other.proposer == header.proposer and other_hash != block.hash:
                raise InvalidBlock(
                    f"{header.proposer} signed two blocks at height {header.height}",
                    reason="equivocation",
                )
        parent_header, parent_td = parent
        if header.prev == self.tip.hash:
            applied = apply_block(
                self.state, self.tip.header, self.tip.hash, block, self.genesis, now_ms=now_ms()
            )
            self._adopt(block, applied.changes, [])
            return "extended"
        branch = self._branch_to(header.prev)
        if branch.fork_height < self.final:
            raise InvalidBlock(
                f"block forks at height {branch.fork_height}, below final height {self.final}",
                reason="below-final",
            )
        applied = apply_block(
            branch.state, parent_header, header.prev, block, self.genesis, now_ms=now_ms()
        )
        undo = {key: branch.state.get(key) for key in applied.changes}
        td = parent_td + header.difficulty
        self.store.add_side_block(block, td, undo)
        branch.blocks.append((block, applied.changes))
        branch.state.changes.update(applied.changes)
        if consensus.prefer((td, block.hash), (self.tip_td, self.tip.hash)):
            self._switch(branch, td)
            return "reorg"
        return "side"

    def _branch_to(self, head: str) -> _Branch:
        """The side branch ending at stored block `head`, replayed on the state at its fork."""
        cached = self._branch
        if cached is not None and cached.tip_hash == self.tip.hash and cached.head == head:
            return cached
        hashes: list[str] = []
        cursor = head
        while True:
            found = self.store.header(cursor)
            if found is None:
                raise StoreError(f"block {cursor} is missing from the store")
            header = found[0]
            if self.store.canonical_hash(header.height) == cursor:
                break
            hashes.append(cursor)
            cursor = header.prev
        fork_height = header.height
        rewind: dict[str, Any] = {}
        for height in range(self.tip.height, fork_height, -1):
            canonical = self.store.canonical_hash(height)
            assert canonical is not None
            rewind.update(self.store.undo(canonical))
        branch = _Branch(self.tip.hash, fork_height, [], Overlay(self.state))
        branch.state.changes.update(rewind)
        parent = self.store.block(cursor)
        assert parent is not None
        for block_hash in reversed(hashes):
            block = self.store.block(block_hash)
            assert block is not None
            applied = apply_block(branch.state, parent.header, parent.hash, block, self.genesis)
            branch.blocks.append((block, applied.changes))
            branch.state.changes.update(applied.changes)
            parent = block
        self._branch = branch
        return branch

    def _switch(self, branch: _Branch, td: int) -> None:
        """Make `branch` canonical, in one store transaction, and give the transactions of the
        blocks it replaces back to the mempool."""
        removed = self.store.switch_branch(branch.fork_height, branch.blocks)
        log.warning(
            "reorg: %d blocks replaced by %d from height %d",
            len(removed),
            len(branch.blocks),
            branch.fork_height + 1,
        )
        self.supply.apply(self.state, branch.state.changes)
        self.state.update(branch.state.changes)  # the rewind to the fork, then the branch
        self.tip = branch.blocks[-1][0]
        self.tip_td = td
        self._branch = None
        included = {tx.id for block, _ in branch.blocks for tx in block.txs}
        abandoned = [tx for block in reversed(removed) for tx in block.txs if tx.id not in included]
        pending = self.mempool.pending()
        self.mempool = self._fresh_mempool()
        returned = [tx for tx in abandoned if self._try_add(tx)]
        kept = {tx.id for tx in pending if tx.id not in included and self._try_add(tx)}
        self.store.mempool_add(returned)
        self.store.mempool_remove([tx.id for tx in pending if tx.id not in kept])
        self.last_block_ms = now_ms()
        self._update_final()
        for block, _ in branch.blocks:
            self._emit("block", block)

    def _adopt(
        self, block: Block, changes: dict[str, Any], rejected: list[str], stored: bool = False
    ) -> None:
        if not stored:
            self.store.commit_block(block, changes)
        before = {key: self.state.get(key) for key in changes}  # so the mempool rebases by it
        self.supply.apply(self.state, changes)
        self.state.update(changes)
        self.tip = block
        self.tip_td += block.header.difficulty
        self._branch = None
        self.last_block_ms = now_ms()
        drop = [tx.id for tx in block.txs] + rejected
        dropped = self.mempool.reset(
            self.state, drop, tip_height=block.height, tip_hash=block.hash, before=before
        )
        self.store.mempool_remove(rejected + [tx.id for tx in dropped])
        self._update_final()
        self._emit("block", block)

    def _update_final(self) -> None:
        """Finality only moves up (a reorg below it is refused), so look back only as far as
        needed: widen the window until it holds the answer or reaches genesis."""
        count = 8 * len(self.validators) + 16
        while True:
            rows = self.store.recent_proposers(count)
            height = consensus.final_height(rows, self.validators)
            if height > 0 or rows[0][0] == 0:
                self.final = max(self.final, height)
                return
            count *= 4

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
            "roles": self.roles,
            "validators": self.validators,
            "height": self.tip.height,
            "tip": self.tip.hash,
            "tip_time": self.tip.header.time,
            "total_difficulty": self.tip_td,
            "final_height": self.final,
            "state_root": self.tip.header.state_root,
            "mempool": len(self.mempool),
            "supply": self.supply.report(),
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
            "escrow": escrow.summary(self.state, address),  # amount, available, unlocking
        }

    def accounts_count(self) -> int:
        return sum(1 for key, _ in self.state.items() if key.startswith(ACCT))
