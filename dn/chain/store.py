"""The chain store: the only module that speaks SQLite (through sqlite-utils).

One file per node, WAL journal, `synchronous=FULL`. Tables:

    meta(key, value)                    genesis document, chain id, schema migrations applied
    blocks(hash, height, prev, ...)     every block ever accepted, side chains too: append-only
    txs(block_hash, idx, id, raw)       the transactions of each block: append-only
    canonical(height, hash)             the chosen chain, an index over blocks
    state(key, value)                   the state at the canonical tip
    state_undo(block_hash, key, old)    the value each block replaced, for reorgs: append-only
    mempool(id, raw)                    accepted transactions not yet in a block, by rowid

Triggers refuse UPDATE and DELETE on the append-only tables. A block, its transactions, its state
changes, its undo records and the mempool clean-up commit in one SQLite transaction, so after any
crash the node reopens at its last committed block.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from dn.chain.genesis import Genesis
from dn.chain.state import genesis_block, genesis_state
from dn.chain.types import Block, Header, Tx
from dn.encoding import canonical
from dn.errors import GenesisError, StoreError

APPEND_ONLY = ("blocks", "txs", "state_undo")


def _m001_initial(db: sqlite_utils.Database) -> None:
    db.table("meta").create({"key": str, "value": str}, pk="key")
    db.table("blocks").create(
        {
            "hash": str,
            "height": int,
            "prev": str,
            "header": str,
            "sig": str,
            "total_difficulty": int,
            "received": int,
        },
        pk="hash",
    )
    db.table("blocks").create_index(["height"])
    db.table("blocks").create_index(["prev"])
    db.table("txs").create(
        {"block_hash": str, "idx": int, "id": str, "sender": str, "raw": str},
        pk=("block_hash", "idx"),
    )
    db.table("txs").create_index(["id"])
    db.table("txs").create_index(["sender"])
    db.table("canonical").create({"height": int, "hash": str}, pk="height")
    db.table("state").create({"key": str, "value": str}, pk="key")
    db.table("state_undo").create(
        {"block_hash": str, "key": str, "old": str}, not_null={"block_hash"}
    )
    db.table("state_undo").create_index(["block_hash"])
    db.table("mempool").create({"id": str, "raw": str}, pk="id")  # rowid = arrival order
    for table in APPEND_ONLY:
        _append_only(db, table)


def _append_only(db: sqlite_utils.Database, table: str) -> None:
    for op in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} are append-only'); END"
        )


def _m002_side_chains(db: sqlite_utils.Database) -> None:
    # Side-chain blocks are stored before they are ever canonical, with their undo records;
    # `applied` marks the blocks whose undo records exist (all of them, before this migration).
    db.table("applied").create({"block_hash": str}, pk="block_hash")
    db.execute("INSERT INTO applied(block_hash) SELECT hash FROM blocks")
    _append_only(db, "applied")


# Named, recorded schema migrations: append to this list, never edit an entry that shipped.
MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = [
    ("001_initial", _m001_initial),
    ("002_side_chains", _m002_side_chains),
]


@dataclass(frozen=True)
class TxRecord:
    tx: Tx
    block_hash: str
    height: int
    index: int


def _dumps(value: Any) -> str:
    return canonical(value).decode("utf-8")


class Store:
    def __init__(self, path: Path, conn: sqlite3.Connection, genesis: Genesis) -> None:
        self.path = path
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        self.genesis = genesis

    # --- opening ---------------------------------------------------------------------------

    @staticmethod
    def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
        try:
            if readonly:
                conn = sqlite3.connect(
                    f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
                )
            else:
                conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open chain store {path}: {exc}") from None
        return conn

    @classmethod
    def create(cls, path: Path, genesis: Genesis) -> Store:
        if path.exists():
            raise StoreError(f"a chain store exists already at {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = cls._connect(path, readonly=False)
        store = cls(path, conn, genesis)
        store._migrate()
        block = genesis_block(genesis)
        with store._transaction():
            store.db.table("meta").insert_all(
                [
                    {"key": "genesis", "value": _dumps(genesis.doc)},
                    {"key": "chain_id", "value": genesis.chain_id},
                ]
            )
            store._insert_block(block, total_difficulty=0)
            conn.execute("INSERT INTO canonical(height, hash) VALUES (0, ?)", (block.hash,))
            conn.execute("INSERT INTO applied(block_hash) VALUES (?)", (block.hash,))
            conn.executemany(
                "INSERT INTO state(key, value) VALUES (?, ?)",
                [(k, _dumps(v)) for k, v in genesis_state(genesis).items()],
            )
        return store

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False, genesis: Genesis | None = None) -> Store:
        if not path.exists():
            raise StoreError(f"no chain store at {path}: run 'dn chain init' first")
        conn = cls._connect(path, readonly)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path} is not a DeepNode chain store: {exc}") from None
        if row is None:
            raise StoreError(f"{path} has no genesis")
        stored = Genesis.from_json(json.loads(row[0]))
        if genesis is not None and genesis.hash != stored.hash:
            raise GenesisError(
                f"the store at {path} belongs to chain {stored.chain_id}, not {genesis.chain_id}"
            )
        store = cls(path, conn, stored)
        if not readonly:
            store._migrate()
        return store

    def _migrate(self) -> None:
        if "migrations" not in self.db.table_names():
            self.db.table("migrations").create({"name": str, "applied": int}, pk="name")
        done = {row["name"] for row in self.db.table("migrations").rows}
        for name, step in MIGRATIONS:
            if name in done:
                continue
            with self._transaction():
                step(self.db)
                self.conn.execute(
                    "INSERT INTO migrations(name, applied) VALUES (?, strftime('%s','now'))",
                    (name,),
                )

    def close(self) -> None:
        self.conn.close()

    def _transaction(self) -> AbstractContextManager[sqlite_utils.Database]:
        return self.db.atomic()

    # --- blocks ----------------------------------------------------------------------------

    def _insert_block(self, block: Block, total_difficulty: int) -> None:
        self.conn.execute(
            "INSERT INTO blocks(hash, height, prev, header, sig, total_difficulty, received) "
            "VALUES (?, ?, ?, ?, ?, ?, strftime('%s','now'))",
            (
                block.hash,
                block.height,
                block.header.prev,
                _dumps(block.header.to_json()),
                block.sig.hex(),
                total_difficulty,
            ),
        )
        self.conn.executemany(
            "INSERT INTO txs(block_hash, idx, id, sender, raw) VALUES (?, ?, ?, ?, ?)",
            [
                (block.hash, i, tx.id, tx.sender, _dumps(tx.to_json()))
                for i, tx in enumerate(block.txs)
            ],
        )

    def commit_block(self, block: Block, changes: dict[str, Any]) -> None:
        """Append `block` on the canonical tip with its state changes, all or nothing."""
        try:
            with self._transaction():
                self._append(block, changes)
        except sqlite3.Error as exc:
            raise StoreError(f"could not store block {block.height}: {exc}") from None

    def add_side_block(
        self, block: Block, total_difficulty: int, undo: dict[str, Any | None]
    ) -> None:
        """Keep a valid block that is not on the canonical chain, with the undo records it
        would need (`undo`: each key it changes -> the value before it, None if absent)."""
        try:
            with self._transaction():
                self._insert_block(block, total_difficulty)
                self._insert_undo(block.hash, undo)
        except sqlite3.Error as exc:
            raise StoreError(f"could not store side block {block.height}: {exc}") from None

    def switch_branch(self, height: int, branch: list[tuple[Block, dict[str, Any]]]) -> list[Block]:
        """Unwind the canonical chain to `height` and append `branch` (each block with its state
        changes), in one SQLite transaction: a crash leaves the old branch or the new one."""
        try:
            with self._transaction():
                removed = self._unwind(height)
                for block, changes in branch:
                    self._append(block, changes)
        except sqlite3.Error as exc:
            raise StoreError(f"could not switch to the branch at {height}: {exc}") from None
        return removed

    def rollback_to(self, height: int) -> list[Block]:
        """Unwind the canonical chain to `height` with the undo records, all or nothing.

        Returns the blocks taken off, highest first; they stay stored (blocks are append-only)
        as a side chain, and their transactions are the caller's to return to the mempool.
        """
        try:
            with self._transaction():
                return self._unwind(height)
        except sqlite3.Error as exc:
            raise StoreError(f"could not roll back to height {height}: {exc}") from None

    def _insert_undo(self, block_hash: str, undo: dict[str, Any | None]) -> None:
        self.conn.executemany(
            "INSERT INTO state_undo(block_hash, key, old) VALUES (?, ?, ?)",
            [(block_hash, k, None if v is None else _dumps(v)) for k, v in undo.items()],
        )
        self.conn.execute("INSERT INTO applied(block_hash) VALUES (?)", (block_hash,))

    def _append(self, block: Block, changes: dict[str, Any]) -> None:
        tip_hash, tip_td = self.conn.execute(
            "SELECT b.hash, b.total_difficulty FROM canonical c JOIN blocks b ON b.hash = c.hash "
            "ORDER BY c.height DESC LIMIT 1"
        ).fetchone()
        if block.header.prev != tip_hash:
            raise StoreError("block does not extend the canonical tip")
        # A block taken off by a rollback, or kept as a side block, is stored already with its
        # undo records (its parent state is the same): only the index and the state change.
        applied = self.conn.execute(
            "SELECT 1 FROM applied WHERE block_hash = ?", (block.hash,)
        ).fetchone()
        if not applied:
            keys = list(changes)
            old: dict[str, Any | None] = dict.fromkeys(keys)
            for start in range(0, len(keys), 500):
                part = keys[start : start + 500]
                marks = ",".join("?" * len(part))
                for key, value in self.conn.execute(
                    f"SELECT key, value FROM state WHERE key IN ({marks})", part
                ):
                    old[key] = json.loads(value)
            if not self.has_block(block.hash):
                self._insert_block(block, tip_td + block.header.difficulty)
            self._insert_undo(block.hash, old)
        self.conn.execute(
            "INSERT INTO canonical(height, hash) VALUES (?, ?)", (block.height, block.hash)
        )
        self.conn.executemany(
            "INSERT INTO state(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(k, _dumps(v)) for k, v in changes.items() if v is not None],
        )
        self.conn.executemany(
            "DELETE FROM state WHERE key = ?", [(k,) for k, v in changes.items() if v is None]
        )
        self.conn.executemany("DELETE FROM mempool WHERE id = ?", [(tx.id,) for tx in block.txs])

    def _unwind(self, height: int) -> list[Block]:
        tip = self.tip()
        if not 0 <= height <= tip.height:
            raise StoreError(f"cannot roll back to height {height} (tip is {tip.height})")
        removed = list(reversed(self.blocks(height + 1, tip.height - height)))
        for block in removed:
            for key, old in self.undo_raw(block.hash):
                if old is None:
                    self.conn.execute("DELETE FROM state WHERE key = ?", (key,))
                else:
                    self.conn.execute(
                        "INSERT INTO state(key, value) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (key, old),
                    )
            self.conn.execute("DELETE FROM canonical WHERE height = ?", (block.height,))
        return removed

    def undo_raw(self, block_hash: str) -> list[tuple[str, str | None]]:
        return self.conn.execute(
            "SELECT key, old FROM state_undo WHERE block_hash = ? ORDER BY rowid DESC",
            (block_hash,),
        ).fetchall()

    def undo(self, block_hash: str) -> dict[str, Any | None]:
        """What `block_hash` changed -> the value before it (None: the key was absent)."""
        return {
            key: None if old is None else json.loads(old) for key, old in self.undo_raw(block_hash)
        }

    # --- the block tree --------------------------------------------------------------------

    def has_block(self, block_hash: str) -> bool:
        row = self.conn.execute("SELECT 1 FROM blocks WHERE hash = ?", (block_hash,)).fetchone()
        return row is not None

    def header(self, block_hash: str) -> tuple[Header, int] | None:
        """A stored block's header and total difficulty, on any branch."""
        row = self.conn.execute(
            "SELECT header, total_difficulty FROM blocks WHERE hash = ?", (block_hash,)
        ).fetchone()
        return (Header.from_json(json.loads(row[0])), int(row[1])) if row else None

    def canonical_hash(self, height: int) -> str | None:
        row = self.conn.execute("SELECT hash FROM canonical WHERE height = ?", (height,)).fetchone()
        return str(row[0]) if row else None

    def headers_at(self, height: int) -> list[tuple[str, Header]]:
        """Every stored block at `height`, on any branch."""
        return [
            (str(h), Header.from_json(json.loads(raw)))
            for h, raw in self.conn.execute(
                "SELECT hash, header FROM blocks WHERE height = ?", (height,)
            )
        ]

    def tip_total_difficulty(self) -> int:
        row = self.conn.execute(
            "SELECT b.total_difficulty FROM canonical c JOIN blocks b ON b.hash = c.hash "
            "ORDER BY c.height DESC LIMIT 1"
        ).fetchone()
        return int(row[0])

    def recent_proposers(self, count: int) -> list[tuple[int, str]]:
        """(height, proposer) of the latest `count` canonical blocks, lowest first."""
        rows = self.conn.execute(
            "SELECT c.height, b.header FROM canonical c JOIN blocks b ON b.hash = c.hash "
            "ORDER BY c.height DESC LIMIT ?",
            (count,),
        ).fetchall()
        return [(int(h), str(json.loads(raw)["proposer"])) for h, raw in reversed(rows)]

    def _block_from_row(self, row: tuple[str, str, str]) -> Block:
        block_hash, header_raw, sig_hex = row
        header = Header.from_json(json.loads(header_raw))
        txs = tuple(
            Tx.from_json(json.loads(raw))
            for (raw,) in self.conn.execute(
                "SELECT raw FROM txs WHERE block_hash = ? ORDER BY idx", (block_hash,)
            )
        )
        return Block(header, bytes.fromhex(sig_hex), txs, block_hash)

    def block(self, height_or_hash: int | str) -> Block | None:
        if isinstance(height_or_hash, int):
            row = self.conn.execute(
                "SELECT b.hash, b.header, b.sig FROM canonical c JOIN blocks b ON b.hash = c.hash "
                "WHERE c.height = ?",
                (height_or_hash,),
            ).fetchone()
        else:
            row = self.conn.execute(
                "SELECT hash, header, sig FROM blocks WHERE hash = ?", (height_or_hash,)
            ).fetchone()
        return self._block_from_row(row) if row else None

    def blocks(self, start: int, limit: int) -> list[Block]:
        rows = self.conn.execute(
            "SELECT b.hash, b.header, b.sig FROM canonical c JOIN blocks b ON b.hash = c.hash "
            "WHERE c.height >= ? ORDER BY c.height LIMIT ?",
            (start, limit),
        ).fetchall()
        return [self._block_from_row(row) for row in rows]

    def iter_canonical(self, start: int = 0) -> Iterator[Block]:
        height = start
        while True:
            batch = self.blocks(height, 200)
            if not batch:
                return
            yield from batch
            height = batch[-1].height + 1

    def tip(self) -> Block:
        row = self.conn.execute(
            "SELECT b.hash, b.header, b.sig FROM canonical c JOIN blocks b ON b.hash = c.hash "
            "ORDER BY c.height DESC LIMIT 1"
        ).fetchone()
        if row is None:
            raise StoreError(f"{self.path} has no blocks")
        return self._block_from_row(row)

    def tx(self, tx_id: str) -> TxRecord | None:
        """The canonical inclusion of a transaction, if any."""
        row = self.conn.execute(
            "SELECT t.raw, t.block_hash, c.height, t.idx FROM txs t "
            "JOIN canonical c ON c.hash = t.block_hash WHERE t.id = ?",
            (tx_id,),
        ).fetchone()
        if row is None:
            return None
        return TxRecord(Tx.from_json(json.loads(row[0])), row[1], row[2], row[3])

    def count_canonical_tx(self, tx_id: str) -> int:
        return int(
            self.conn.execute(
                "SELECT count(*) FROM txs t JOIN canonical c ON c.hash = t.block_hash "
                "WHERE t.id = ?",
                (tx_id,),
            ).fetchone()[0]
        )

    # --- state -----------------------------------------------------------------------------

    def load_state(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM state")}

    def state_get(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    # --- mempool ---------------------------------------------------------------------------

    def mempool_add(self, txs: list[Tx]) -> None:
        if not txs:
            return
        with self._transaction():
            self.conn.executemany(
                "INSERT OR IGNORE INTO mempool(id, raw) VALUES (?, ?)",
                [(tx.id, _dumps(tx.to_json())) for tx in txs],
            )

    def mempool_remove(self, ids: list[str]) -> None:
        if ids:
            with self._transaction():
                self.conn.executemany("DELETE FROM mempool WHERE id = ?", [(i,) for i in ids])

    def mempool_txs(self) -> list[Tx]:
        return [
            Tx.from_json(json.loads(raw))
            for (raw,) in self.conn.execute("SELECT raw FROM mempool ORDER BY rowid")
        ]

    # --- checks ----------------------------------------------------------------------------

    def integrity_check(self) -> str:
        return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])
