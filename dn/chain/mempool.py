"""Transactions accepted but not yet in a block, ordered by sender nonce.

The mempool keeps a view of the state with every pending transaction applied, so a sender's
second transaction is checked against the balance and nonce its first one leaves. It accepts only
the next nonce of a sender (a gap is refused with its own reason rather than parked), which keeps
acceptance order a valid block order. Transactions are checked as part of the next block
(`tip_height + 1`), the height a ticket's window and expiry are judged at.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from dn.chain.genesis import Genesis
from dn.chain.ledger import Overlay, StateReader
from dn.chain.state import apply_tx, begin_block
from dn.chain.types import Tx
from dn.errors import InvalidTx

MAX_PENDING = 200_000
MAX_PENDING_PER_SENDER = 1_000  # so that one sender cannot fill the mempool for everyone


class Mempool:
    def __init__(
        self, genesis: Genesis, proposer: str, base: StateReader, *, tip_height: int
    ) -> None:
        """`base` is the state after block `tip_height`."""
        self.genesis = genesis
        self.proposer = proposer
        self.height = tip_height + 1  # the block these transactions are checked for
        self._txs: dict[str, Tx] = {}
        self._senders: Counter[str] = Counter()
        self._view = self._next_block_view(base)

    def _next_block_view(self, base: StateReader) -> Overlay:
        """`base` as the next block's transactions see it (bonds due then are paid out, and at
        an epoch's first block the previous epoch's rewards)."""
        view = Overlay(base)
        begin_block(view, self.height, self.genesis)
        return view

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, tx_id: object) -> bool:
        return tx_id in self._txs

    def get(self, tx_id: str) -> Tx | None:
        return self._txs.get(tx_id)

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
        # atomic: sets only on success
        apply_tx(self._view, tx, self.genesis, self.proposer, height=self.height)
        self._txs[tx.id] = tx
        self._senders[tx.sender] += 1

    def pending(self, limit: int | None = None) -> list[Tx]:
        txs = list(self._txs.values())
        return txs if limit is None else txs[:limit]

    def reset(self, base: StateReader, drop: Iterable[str] = (), *, tip_height: int) -> list[Tx]:
        """Rebase on the state after block `tip_height`; return the transactions that no longer
        apply."""
        self.height = tip_height + 1
        for tx_id in drop:
            self._txs.pop(tx_id, None)
        survivors, self._txs = list(self._txs.values()), {}
        self._senders.clear()
        self._view = self._next_block_view(base)
        dropped = []
        for tx in survivors:
            try:
                self.add(tx)
            except InvalidTx:
                dropped.append(tx)
        return dropped
