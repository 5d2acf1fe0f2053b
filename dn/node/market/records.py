"""What a miner keeps of the tasks it worked on, so a validator can judge them later
(DESIGN.md section 7): the ticket, the input, the claimed tokens and, for a checker, the per-token
values it committed to.

A checker's attestation commits to values it does not publish; if it cannot show them when a
validator asks, within the dispute window, it is treated as not having computed them and slashed
(`no-values`, `no-record`). So they are written to SQLite (`miner_tasks.db` in the node's folder)
before the attestation is returned, and survive a restart.

How long. A record is kept while a validator may still vote on its task: up to `keep_until` =
L + W, where L = min(expiry, ref_height + `ticket_window_blocks`) is the last block that can
settle the ticket (`backstop.last_valid_height`) and W = min(`dispute_window_blocks`,
`unbonding_blocks`) the dispute window after the settlement (`disputes.dispute_window`). It is
forgotten once the node's final height, which no reorganisation goes below, is past that
(`forget`). Nothing else removes a record: a limit on the count (this store once kept the newest
20,000) lets anyone who sends enough free tasks push an honest checker's values out before its
task is judged, and get it slashed.

How much. The records kept are bounded in bytes per consumer (the ticket's signer,
`consumer_bytes`) and in all (`total_bytes`). A task whose record, as large as its ticket lets it
grow (`record_bound`), would not fit is refused before any work (`room`: TaskError
`records-full`), and `put` refuses a record that would take either over its bound; the miner
then signs no attestation, so there is nothing to settle and nothing to judge. Refused, rather
than making room by dropping the consumer's own oldest records: those back tasks that may still
be disputed, and a consumer could flood to erase the record of its own paid task, get both
honest miners slashed for `no-record` and be refunded. So one consumer's junk fills its own
budget only, and another consumer's records stay; many consumers' junk (fresh keys cost nothing)
can fill the store and make the miner refuse new tasks until their windows pass, but never
remove a record a validator may still ask for.

A checker also keeps what `task.settle` needs (table `unsettled`) until the chain shows the task
settled, so it can settle it itself if the gateway does not (`dn.node.market.backstop`). It holds
one only for a task whose record it keeps (`hold` refuses others), and lets it go at the
ticket's last valid height at the latest, so the settlements held are bounded by the records'
budgets (a few KB each against a record's bound) and in time.

Only a validator may read a record, since it holds the consumer's prompt: the request carries the
validator's address and its signature over `RECORD_DOMAIN`, the chain id and the task id
(`sign_request`, `request_ok`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import sqlite_utils

from dn.chain.disputes import dispute_window
from dn.chain.genesis import Genesis
from dn.encoding import canonical
from dn.errors import TaskError
from dn.wallet.keys import Keypair, verify

RECORD_DOMAIN = b"dn-record-request-v1"
# A record holds at most a 64,000-character input and max_tokens (<= 65,536) tokens with their
# values, a few MB; a typical one (a short prompt, 256 tokens) about 10 KB.
CONSUMER_BYTES = 64 * 1024 * 1024  # one consumer's records within their windows
TOTAL_BYTES = 1024 * 1024 * 1024  # everyone's
# A token in a record: its id ("151935, ") and its values ("[151935, 151935, 99999, -99999], ").
PER_TOKEN_BYTES = 48


def _request_bytes(chain_id: str, task: str, validator: str) -> bytes:
    return RECORD_DOMAIN + canonical({"chain_id": chain_id, "task": task, "validator": validator})


def sign_request(chain_id: str, task: str, keypair: Keypair) -> dict[str, str]:
    """The body of a validator's request for the record of `task`."""
    sig = keypair.sign(_request_bytes(chain_id, task, keypair.address)).hex()
    return {"validator": keypair.address, "sig": sig}


def request_ok(chain_id: str, task: str, body: Any, validators: list[str]) -> bool:
    """Whether `body` is a request for `task` signed by one of `validators`."""
    if not isinstance(body, dict):
        return False
    who, sig = body.get("validator"), body.get("sig")
    if not isinstance(who, str) or not isinstance(sig, str) or who not in validators:
        return False
    try:
        raw = bytes.fromhex(sig)
    except ValueError:
        return False
    return verify(who, _request_bytes(chain_id, task, who), raw)


def record_bound(ticket: dict[str, Any], task_input: dict[str, Any]) -> int:
    """About the most bytes the record of a task can take: its ticket and input, and for each
    of `max_tokens` tokens its id and a row of values (`PER_TOKEN_BYTES`)."""
    empty = {"ticket": ticket, "input": task_input, "tokens": [], "values": []}
    return len(json.dumps(empty).encode()) + PER_TOKEN_BYTES * int(ticket.get("max_tokens", 0))


class TaskRecords:
    """The miner's records, one per task (a miner is never both roles of one task), each kept
    until its task's dispute window has closed, bounded in bytes per consumer and in all.

    `ticket_window` and `dispute_window` are the chain's `ticket_window_blocks` and
    `disputes.dispute_window` (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        *,
        ticket_window: int,
        dispute_window: int,
        consumer_bytes: int = CONSUMER_BYTES,
        total_bytes: int = TOTAL_BYTES,
    ) -> None:
        self.path = path
        self.ticket_window = ticket_window
        self.dispute_window = dispute_window
        self.consumer_bytes = consumer_bytes
        self.total_bytes = total_bytes
        self._lock = threading.Lock()
        conn = sqlite3.connect(str(path), check_same_thread=False)  # used under self._lock
        self._db = sqlite_utils.Database(conn)
        self._db.conn.execute("PRAGMA journal_mode=WAL")
        self._db.conn.execute("PRAGMA synchronous=FULL")
        columns = {
            "task": str,
            "role": str,
            "record": str,
            "at": float,
            "consumer": str,
            "bytes": int,
            "keep_until": int,
        }
        self._db.table("records").create(columns, pk="task", if_not_exists=True)
        self._migrate(columns)
        self._db.conn.execute(
            "CREATE INDEX IF NOT EXISTS records_keep_until ON records (keep_until)"
        )
        self._db.table("unsettled").create(
            {"task": str, "payload": str, "settle_at": int, "last_valid": int, "tries": int},
            pk="task",
            if_not_exists=True,
        )
        # Bytes kept, by consumer and in all: read once, then kept up to date by every write
        # (one process owns the file).
        self._used: dict[str, int] = {}
        self._all = 0
        for consumer, size in self._db.conn.execute(
            "SELECT consumer, SUM(bytes) FROM records GROUP BY consumer"
        ):
            self._add(consumer, int(size))

    @classmethod
    def for_chain(cls, path: Path, genesis: Genesis, **bounds: int) -> TaskRecords:
        """The records of a miner on the chain of `genesis`, with that chain's windows."""
        return cls(
            path,
            ticket_window=genesis.param("ticket_window_blocks"),
            dispute_window=dispute_window(genesis),
            **bounds,
        )

    def _migrate(self, columns: dict[str, type]) -> None:
        """A store from before the dispute-window rule (task, role, record, at): add the columns
        and fill them from each record's ticket."""
        table = self._db.table("records")
        have = {column.name for column in table.columns}
        missing = [name for name in columns if name not in have]
        if not missing:
            return
        with self._db.conn:
            for name in missing:
                table.add_column(name, columns[name])
            for task, record in self._db.conn.execute("SELECT task, record FROM records"):
                ticket = json.loads(record).get("ticket") or {}
                self._db.conn.execute(
                    "UPDATE records SET consumer = ?, bytes = ?, keep_until = ? WHERE task = ?",
                    (
                        str(ticket.get("consumer", "")),
                        len(record.encode()),
                        self.keep_until(ticket),
                        task,
                    ),
                )

    def keep_until(self, ticket: dict[str, Any]) -> int:
        """The last height at which a validator may vote on the task of `ticket`: the last
        block that can settle it plus the dispute window (0 for a ticket without heights)."""
        try:
            last = min(int(ticket["expiry"]), int(ticket["ref_height"]) + self.ticket_window)
        except (KeyError, TypeError, ValueError):
            return 0
        return last + self.dispute_window

    def used(self, consumer: str | None = None) -> int:
        """Bytes of records kept: one consumer's, or everyone's."""
        with self._lock:
            return self._used.get(consumer, 0) if consumer is not None else self._all

    def _full(self, consumer: str, size: int) -> str | None:
        """Why a record of `size` bytes for `consumer` does not fit, or None."""
        mine = self._used.get(consumer, 0)
        if mine + size > self.consumer_bytes:
            return (
                f"this miner keeps {mine:,} bytes of this consumer's task records, which a "
                f"validator may still ask for (at most {self.consumer_bytes:,})"
            )
        if self._all + size > self.total_bytes:
            return (
                f"this miner keeps {self._all:,} bytes of task records that a validator may still "
                f"ask for (at most {self.total_bytes:,})"
            )
        return None

    def room(self, ticket: dict[str, Any], task_input: dict[str, Any]) -> None:
        """Refuse the task of `ticket` (TaskError `records-full`), before any work, when its
        record, at the size `record_bound` allows it, would not fit its consumer's bound or the
        store's."""
        size = record_bound(ticket, task_input)
        with self._lock:
            why = self._full(str(ticket.get("consumer", "")), size)
        if why is not None:
            raise TaskError(why, reason="records-full")

    def put(
        self,
        task: str,
        role: str,
        *,
        ticket: dict[str, Any],
        task_input: dict[str, Any],
        tokens: list[int],
        values: list[list[int]] | None = None,
    ) -> None:
        """Keep the record of `task` until its dispute window closes; TaskError `records-full`
        (and nothing kept) if it would take its consumer or the store over its bound."""
        record = {"ticket": ticket, "input": task_input, "tokens": tokens, "values": values}
        text = json.dumps(record)
        consumer, size = str(ticket.get("consumer", "")), len(text.encode())
        row = {
            "task": task,
            "role": role,
            "record": text,
            "at": time.time(),
            "consumer": consumer,
            "bytes": size,
            "keep_until": self.keep_until(ticket),
        }
        with self._lock:
            old = self._db.conn.execute(
                "SELECT consumer, bytes FROM records WHERE task = ?", (task,)
            ).fetchone()
            if old is not None:  # the same task again: its old record makes room
                self._add(old[0], -old[1])
            why = self._full(consumer, size)
            if why is not None:
                if old is not None:
                    self._add(old[0], old[1])
                raise TaskError(why, reason="records-full")
            with self._db.conn:
                self._db.table("records").upsert(row, pk="task")
            self._add(consumer, size)

    def _add(self, consumer: str, size: int) -> None:
        self._all += size
        left = self._used.get(consumer, 0) + size
        if left:
            self._used[consumer] = left
        else:
            self._used.pop(consumer, None)

    def forget(self, final: int) -> int:
        """Drop the records no validator can ask for any more: those whose `keep_until` is below
        the final height `final`. Returns how many."""
        with self._lock:
            gone = list(
                self._db.conn.execute(
                    "SELECT consumer, SUM(bytes), COUNT(*) FROM records WHERE keep_until < ? "
                    "GROUP BY consumer",
                    (final,),
                )
            )
            if not gone:
                return 0
            with self._db.conn:
                self._db.conn.execute("DELETE FROM records WHERE keep_until < ?", (final,))
            for consumer, size, _ in gone:
                self._add(consumer, -int(size))
            return sum(int(n) for _, _, n in gone)

    def get(self, task: str) -> dict[str, Any] | None:
        with self._lock:
            rows = list(self._db["records"].rows_where("task = ?", [task]))
        if not rows:
            return None
        return {"task": task, "role": rows[0]["role"], **json.loads(rows[0]["record"])}

    def count(self) -> int:
        with self._lock:
            return int(self._db.conn.execute("SELECT count(*) FROM records").fetchone()[0])

    # --- settlements held for the backstop ----------------------------------------------------

    def hold(self, task: str, payload: dict[str, Any], *, settle_at: int, last_valid: int) -> None:
        """Keep the `task.settle` payload of `task`: to send from height `settle_at` on, if it
        is still unsettled, while a block up to `last_valid` can take it."""
        row = {
            "task": task,
            "payload": json.dumps(payload),
            "settle_at": settle_at,
            "last_valid": last_valid,
            "tries": 0,
        }
        with self._lock, self._db.conn:
            kept = self._db.conn.execute("SELECT 1 FROM records WHERE task = ?", (task,))
            if kept.fetchone() is None:  # what bounds this table: see the module docstring
                raise TaskError(f"no record of task {task[:12]}… to settle", reason="no-record")
            self._db.table("unsettled").upsert(row, pk="task")

    def held(self) -> list[dict[str, Any]]:
        """Every held settlement, by task id: task, payload, settle_at, last_valid, tries."""
        with self._lock:
            rows = list(self._db["unsettled"].rows_where(order_by="task"))
        return [{**row, "payload": json.loads(row["payload"])} for row in rows]

    def held_count(self) -> int:
        with self._lock:
            return int(self._db.conn.execute("SELECT count(*) FROM unsettled").fetchone()[0])

    def tried(self, task: str) -> None:
        with self._lock, self._db.conn:
            self._db.conn.execute("UPDATE unsettled SET tries = tries + 1 WHERE task = ?", (task,))

    def release(self, task: str) -> None:
        """Forget a held settlement (settled, or past saving)."""
        with self._lock, self._db.conn:
            self._db.conn.execute("DELETE FROM unsettled WHERE task = ?", (task,))

    def close(self) -> None:
        with self._lock:
            self._db.conn.close()
