"""The slots a miner is serving and the chain has not settled (THREATS.md, "Prepaid escrow for
queries"; dn/chain/books.py).

A ticket uses one slot of its consumer's book, and a slot pays for one task (`slot-used` on
chain), while every ticket on one slot draws the same two miners. A consumer who signed two
tickets (two prompts) on one slot could have both served and only one settled: the other's
miners would work for nothing. So a miner takes a ticket only if no other open ticket here uses
its slot, else it refuses before any work with TaskError `slot-taken`. A ticket counts from the
moment the miner accepts it (either role) until the chain shows its task settled, or the last
height that could settle it (`backstop.last_valid_height`) has passed.

Payment itself no longer rests on what a miner has seen: a book reserves `slots × max_price` of
its consumer's escrow on chain, so every slot's settlement is covered whatever the consumer does
at other miners (dn/chain/escrow.py, the reserve), and a miner serves a ticket only within its
slot's reservation (`over-reserve`: dn/chain/books.py).

The table is kept in SQLite, `exposure.sqlite` in the node's folder (mode 0600, WAL, each
admission committed with `synchronous=FULL` before the miner starts work), so a restarted miner
still knows the slots it is serving: a consumer cannot have a slot served twice by having the
miner restart. Only the miner process writes it. `Exposure(window)` without a path keeps the
table in memory (tests, tools).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dn.chain.ledger import TASK, StateReader
from dn.errors import TaskError
from dn.node.market.backstop import last_valid_height

if TYPE_CHECKING:
    from dn.chain.genesis import Genesis

FILE_NAME = "exposure.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS open_slots (
    slot TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    last_valid INTEGER NOT NULL
);
DROP TABLE IF EXISTS open_tickets;
"""


class Exposure:
    """A miner's accepted, unsettled tickets by slot (see the module docstring), in the SQLite
    file at `path`, or in memory without one."""

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

    def open_slots(self) -> int:
        """How many slots this miner serves that the chain has not settled."""
        with self._lock:
            return int(self.db.execute("SELECT COUNT(*) FROM open_slots").fetchone()[0])

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
        """Count `ticket` (task id `task`) on its slot, or raise TaskError `slot-taken` when
        another open ticket here uses the same slot of the consumer's book (only one of them
        could settle: dn/chain/books.py)."""
        consumer = str(ticket["consumer"])
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
                self.db.execute(
                    "INSERT OR REPLACE INTO open_slots (slot, task, last_valid) VALUES (?, ?, ?)",
                    (slot, task, last_valid),
                )
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    # --- under the lock --------------------------------------------------------------------

    def _prune(self, state: StateReader, height: int) -> None:
        self.db.execute("DELETE FROM open_slots WHERE last_valid < ?", (height + 1,))
        tasks = [row[0] for row in self.db.execute("SELECT task FROM open_slots")]
        settled = [(task,) for task in tasks if state.get(TASK + task) is not None]
        self.db.executemany("DELETE FROM open_slots WHERE task = ?", settled)
