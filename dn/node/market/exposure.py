"""What a miner is owed and not yet paid, by consumer: the tickets it accepted that have not
settled (THREATS.md, "Prepaid escrow for queries").

A miner serves a ticket only if the consumer's escrow available for new tickets
(`dn.chain.escrow.available`, at this miner's tip) covers the ticket's `max_price` plus the
`max_price` of every other ticket of that consumer this miner accepted and the chain has not
settled yet; else it refuses before any work with TaskError `escrow-short`. A consumer with a
small escrow and many tickets in flight is therefore refused by each miner once that miner's own
share of them would outrun the escrow, and no honest miner works for a ticket the escrow could
not pay. A ticket counts from the moment the miner accepts it (either role) until the chain shows
its task settled, or the last height that could settle it (`backstop.last_valid_height`) has
passed; one that failed before any attestation keeps counting until then too (the cautious
side: the consumer waits at most a ticket window). The table is bounded by the work a miner can
accept within one ticket window.

The table is kept in SQLite, `exposure.sqlite` in the node's folder (mode 0600, WAL, each
admission committed with `synchronous=FULL` before the miner starts work), so a restarted miner
still counts the tickets it accepted before: a consumer cannot overcommit its escrow at a miner
by having it restart. Only the miner process writes it. `Exposure(window)` without a path keeps
the table in memory (tests, tools).

Withdrawing cannot undo a check that passed: a withdrawal stops backing tickets at once but
leaves the escrow only `escrow_unlock_blocks` later, after every ticket accepted before it can
have settled (dn/chain/escrow.py).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dn.chain import escrow
from dn.chain.ledger import TASK, StateReader
from dn.errors import TaskError
from dn.node.market.backstop import last_valid_height

if TYPE_CHECKING:
    from dn.chain.genesis import Genesis

FILE_NAME = "exposure.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS open_tickets (
    task TEXT PRIMARY KEY,
    consumer TEXT NOT NULL,
    max_price INTEGER NOT NULL,
    last_valid INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS open_tickets_consumer ON open_tickets (consumer);
CREATE INDEX IF NOT EXISTS open_tickets_last_valid ON open_tickets (last_valid);
CREATE TABLE IF NOT EXISTS open_slots (
    slot TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    last_valid INTEGER NOT NULL
);
"""


class Exposure:
    """A miner's accepted, unsettled tickets by consumer (see the module docstring), in the
    SQLite file at `path`, or in memory without one."""

    def __init__(self, window: int, path: Path | None = None) -> None:
        self.window = window  # the chain's ticket_window_blocks
        self.path = path
        if path is not None and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._lock = threading.Lock()
        # autocommit; `admit` writes in one explicit transaction
        self.db = sqlite3.connect(
            ":memory:" if path is None else path,
            timeout=10,
            isolation_level=None,
            check_same_thread=False,  # used under self._lock
        )
        if path is not None:
            self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)

    @classmethod
    def for_chain(cls, folder: Path, genesis: Genesis) -> Exposure:
        """The table of the miner whose node folder is `folder`, on the chain of `genesis`."""
        return cls(genesis.param("ticket_window_blocks"), folder / FILE_NAME)

    def close(self) -> None:
        self.db.close()

    def open_for(self, consumer: str, *, besides: str = "") -> int:
        """The `max_price` of the consumer's accepted, unsettled tickets (but task `besides`)."""
        with self._lock:
            return self._open_for(consumer, besides)

    def prune(self, state: StateReader, height: int) -> None:
        """Forget the tickets the chain settled and those no block can settle any more."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self._prune(state, height)
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def admit(self, state: StateReader, height: int, task: str, ticket: dict[str, Any]) -> None:
        """Count `ticket` (task id `task`) against its consumer's escrow, or raise TaskError
        `escrow-short` when the escrow available at `height` cannot back it too, `slot-taken`
        when another open ticket here uses the same slot of the consumer's book (only one of
        them could settle: dn/chain/books.py)."""
        consumer, price = str(ticket["consumer"]), int(ticket["max_price"])
        slot = f"{consumer}:{ticket['ref_height']}:{ticket['nonce']}"
        last_valid = last_valid_height(ticket, self.window)
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self._prune(state, height)
                row = self.db.execute("SELECT task FROM open_slots WHERE slot = ?", (slot,))
                taken = row.fetchone()
                if taken is not None and taken[0] != task:
                    raise TaskError(
                        f"slot {ticket['nonce']} of this consumer's book in block "
                        f"{ticket['ref_height']} is in use by another task here",
                        reason="slot-taken",
                    )
                why = escrow.short_of(
                    escrow.available(state, consumer), price, self._open_for(consumer, task)
                )
                if why is not None:
                    raise TaskError(why, reason="escrow-short")
                self.db.execute(
                    "INSERT OR REPLACE INTO open_tickets (task, consumer, max_price, last_valid) "
                    "VALUES (?, ?, ?, ?)",
                    (task, consumer, price, last_valid),
                )
                self.db.execute(
                    "INSERT OR REPLACE INTO open_slots (slot, task, last_valid) VALUES (?, ?, ?)",
                    (slot, task, last_valid),
                )
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    # --- under the lock --------------------------------------------------------------------

    def _open_for(self, consumer: str, besides: str) -> int:
        rows = self.db.execute(
            "SELECT max_price FROM open_tickets WHERE consumer = ? AND task != ?",
            (consumer, besides),
        )
        return sum(int(row[0]) for row in rows)  # in Python: amounts reach 2^63, SQLite's limit

    def _prune(self, state: StateReader, height: int) -> None:
        for table in ("open_tickets", "open_slots"):
            self.db.execute(f"DELETE FROM {table} WHERE last_valid < ?", (height + 1,))  # noqa: S608
        tasks = [row[0] for row in self.db.execute("SELECT task FROM open_tickets")]
        settled = [(task,) for task in tasks if state.get(TASK + task) is not None]
        self.db.executemany("DELETE FROM open_tickets WHERE task = ?", settled)
        self.db.executemany("DELETE FROM open_slots WHERE task = ?", settled)
