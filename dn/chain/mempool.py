"""Transactions accepted but not yet in a block, ordered by sender nonce.

The mempool keeps a view of the state with every pending transaction applied, so a sender's
second transaction is checked against the balance and nonce its first one leaves. It accepts only
the next nonce of a sender (a gap is refused with its own reason rather than parked), which keeps
acceptance order a valid block order. Transactions are checked as part of the next block
(`tip_height + 1`), the height a ticket's window and expiry are judged at.

After a block the mempool is rebased on the new state (`reset`): the result is defined as
re-applying every still-pending transaction, in order, on the new state, and dropping those that
no longer apply. Doing exactly that costs ~10 µs a transaction, which behind a 10,000-transaction
block held a node's event loop for tenths of a second. So each pending transaction is kept with
the keys it read from the view and the values it wrote. Given the values the block replaced
(`before`), `reset` walks the pending sequence keeping the set of keys whose value in the new view
may differ from the old view at the same point (the *dirty* keys: those the block, the start of
the next block or a transaction left out changed). A transaction that read no dirty key and whose
kind ignores the height (`HEIGHT_FREE`) sees exactly what it saw before, so it does exactly what
it did before: its recorded writes are replayed instead of checking it again. Any other
transaction is checked again, and the dirty set follows what it does. Without `before` every
transaction is checked again (the full rebase; tests/unit/test_mempool_rebase.py compares them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from itertools import islice
from typing import Any

from dn.chain.genesis import Genesis
from dn.chain.ledger import Overlay, StateReader
from dn.chain.state import apply_tx, begin_block
from dn.chain.types import Tx
from dn.errors import InvalidTx

MAX_PENDING = 200_000
MAX_PENDING_PER_SENDER = 1_000  # so that one sender cannot fill the mempool for everyone
# Kinds whose rule does not read the block height (apply_tx's own checks never do): a rebase may
# replay what they did at the previous height. Every other kind is checked again at the new one.
HEIGHT_FREE = frozenset({"transfer"})


class _Reads:
    """A state reader that notes every key read through it."""

    __slots__ = ("base", "keys")

    def __init__(self, base: StateReader) -> None:
        self.base = base
        self.keys: set[str] = set()

    def get(self, key: str) -> Any:
        self.keys.add(key)
        return self.base.get(key)


class _Entry:
    """A pending transaction, the view keys it read and the values it wrote when last checked
    (in its place in the sequence: after the transactions before it)."""

    __slots__ = ("reads", "tx", "writes")

    def __init__(self, tx: Tx, reads: tuple[str, ...], writes: dict[str, Any]) -> None:
        self.tx = tx
        self.reads = reads
        self.writes = writes


def same(a: Any, b: Any) -> bool:
    """Equal JSON values of the same types throughout (`True == 1` in Python, not here)."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(map(same, a, b))
    return bool(a == b)


class Mempool:
    def __init__(
        self,
        genesis: Genesis,
        proposer: str,
        base: StateReader,
        *,
        tip_height: int,
        tip_hash: str,
    ) -> None:
        """`base` is the state after block `tip_height`, whose hash is `tip_hash`."""
        self.genesis = genesis
        self.proposer = proposer
        self.height = tip_height + 1  # the block these transactions are checked for
        self.tip_hash = tip_hash
        self._txs: dict[str, _Entry] = {}
        self._senders: Counter[str] = Counter()
        self._begun: dict[str, Any] = {}
        self._view = self._next_block_view(base)

    def _next_block_view(self, base: StateReader) -> Overlay:
        """`base` as the next block's transactions see it (bonds due then are paid out, and at
        an epoch's first block the previous epoch's rewards)."""
        view = Overlay(base)
        begin_block(view, self.height, self.genesis, self.tip_hash)
        self._begun = dict(view.changes)
        return view

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, tx_id: object) -> bool:
        return tx_id in self._txs

    def get(self, tx_id: str) -> Tx | None:
        entry = self._txs.get(tx_id)
        return entry.tx if entry is not None else None

    def pending_nonce(self, address: str) -> int:
        acct = self._view.get("acct:" + address)
        return int(acct["nonce"]) if acct else 0

    def add(self, tx: Tx) -> None:
        """Accept `tx` or raise InvalidTx with the rule it breaks."""
        if tx.id in self._txs:
            raise InvalidTx("transaction is already pending", reason="duplicate")
        if len(self._txs) >= MAX_PENDING:
            raise InvalidTx("the mempool is full; try again shortly", reason="mempool-full")
        if self._senders[tx.sender] >= MAX_PENDING_PER_SENDER:
            raise InvalidTx(
                f"{MAX_PENDING_PER_SENDER} transactions of this sender are pending already; "
                "try again once some are in a block",
                reason="sender-full",
            )
        self._txs[tx.id] = self._apply(tx)
        self._senders[tx.sender] += 1

    def _apply(self, tx: Tx) -> _Entry:
        """Apply `tx` on the view, noting what it read and wrote; atomic: on InvalidTx the view
        is unchanged."""
        reads = _Reads(self._view)
        trial = Overlay(reads)
        apply_tx(trial, tx, self.genesis, self.proposer, height=self.height)
        self._view.changes.update(trial.changes)
        return _Entry(tx, tuple(reads.keys), trial.changes)

    def pending(self, limit: int | None = None) -> list[Tx]:
        return [entry.tx for entry in islice(self._txs.values(), limit)]

    def reset(
        self,
        base: StateReader,
        drop: Iterable[str] = (),
        *,
        tip_height: int,
        tip_hash: str,
        before: Mapping[str, Any] | None = None,
    ) -> list[Tx]:
        """Rebase on the state after block `tip_height` (hash `tip_hash`); return the
        transactions that no longer apply. `drop`: the ids to leave out (the block's, and those
        it refused). `before`: each key the block changed -> its value before the block (None if
        absent), which lets the transactions the block cannot have affected keep what they did
        (see the module docstring); without it every transaction is checked again."""
        old_height, old_begun, entries = self.height, self._begun, self._txs
        drop = set(drop)
        self.height, self.tip_hash = tip_height + 1, tip_hash
        self._txs = {}
        self._senders.clear()
        self._view = view = self._next_block_view(base)
        dirty: set[str] | None = None
        if before is not None:

            def old_start(key: str) -> Any:  # the old view before its first transaction
                if key in old_begun:
                    return old_begun[key]
                return before[key] if key in before else base.get(key)

            keys = set(before) | set(old_begun) | set(self._begun)
            dirty = {key for key in keys if not same(view.get(key), old_start(key))}
        replay_any = old_height == self.height
        dropped: list[Tx] = []
        skipped: dict[str, Any] = {}  # written since the last look by transactions left out
        for tx_id, entry in entries.items():
            if tx_id in drop:
                if dirty is not None:
                    skipped.update(entry.writes)
                continue
            if dirty is not None and skipped:  # the old view moved on, the new one did not
                for key, value in skipped.items():
                    if same(view.get(key), value):
                        dirty.discard(key)
                    else:
                        dirty.add(key)
                skipped = {}
            tx = entry.tx
            if (
                dirty is not None
                and (replay_any or tx.kind in HEIGHT_FREE)
                and dirty.isdisjoint(entry.reads)
            ):
                view.changes.update(entry.writes)
                if dirty:
                    dirty.difference_update(entry.writes)
                kept = entry
            else:
                try:
                    kept = self._recheck(entry, dirty)
                except InvalidTx:
                    dropped.append(tx)
                    if dirty is not None:
                        skipped.update(entry.writes)
                    continue
            self._txs[tx_id] = kept
            self._senders[tx.sender] += 1
        return dropped

    def _recheck(self, entry: _Entry, dirty: set[str] | None) -> _Entry:
        """Apply `entry`'s transaction again on the new view; keep `dirty` a superset of the
        keys where the new view and the old one (which applied `entry.writes`) now differ."""
        view = self._view
        reads = _Reads(view)
        trial = Overlay(reads)
        apply_tx(trial, entry.tx, self.genesis, self.proposer, height=self.height)
        if dirty is not None:
            for key, value in trial.changes.items():
                # a key the old view did not write here: dirty if it was, or if it changes now
                if key not in entry.writes and key not in dirty and not same(value, view.get(key)):
                    dirty.add(key)
        view.changes.update(trial.changes)
        if dirty is not None:
            for key, value in entry.writes.items():
                if same(view.get(key), value):
                    dirty.discard(key)
                else:
                    dirty.add(key)
        return _Entry(entry.tx, tuple(reads.keys), trial.changes)
