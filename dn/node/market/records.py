"""What a miner keeps of the tasks it worked on, so a validator can judge them later
(DESIGN.md section 7): the ticket, the input, the claimed tokens and, for a checker, the per-token
values it committed to.

A checker's attestation commits to values it does not publish; if it cannot show them when a
validator asks, within the dispute window, it is treated as not having computed them. So they are
written to SQLite (`miner_tasks.db` in the node's folder) before the attestation is returned, and
survive a restart. The newest `keep` records are kept.

A checker also keeps what `task.settle` needs (table `unsettled`) until the chain shows the task
settled, so it can settle it itself if the gateway does not (`dn.node.market.backstop`).

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

from dn.encoding import canonical
from dn.wallet.keys import Keypair, verify

RECORD_DOMAIN = b"dn-record-request-v1"
DEFAULT_KEEP = 20_000


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


class TaskRecords:
    """The miner's records, one per task (a miner is never both roles of one task)."""

    def __init__(self, path: Path, keep: int = DEFAULT_KEEP) -> None:
        self.path = path
        self.keep = keep
        self._lock = threading.Lock()
        conn = sqlite3.connect(str(path), check_same_thread=False)  # used under self._lock
        self._db = sqlite_utils.Database(conn)
        self._db.conn.execute("PRAGMA journal_mode=WAL")
        self._db.conn.execute("PRAGMA synchronous=FULL")
        self._db.table("records").create(
            {"task": str, "role": str, "record": str, "at": float},
            pk="task",
            if_not_exists=True,
        )
        self._db.table("unsettled").create(
            {"task": str, "payload": str, "settle_at": int, "last_valid": int, "tries": int},
            pk="task",
            if_not_exists=True,
        )

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
        record = {"ticket": ticket, "input": task_input, "tokens": tokens, "values": values}
        row = {"task": task, "role": role, "record": json.dumps(record), "at": time.time()}
        with self._lock, self._db.conn:
            self._db.table("records").upsert(row, pk="task")
            self._db.conn.execute(
                "DELETE FROM records WHERE rowid NOT IN "
                "(SELECT rowid FROM records ORDER BY at DESC LIMIT ?)",
                (self.keep,),
            )

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
