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
side: the consumer waits at most a ticket window). The table lives in memory and is bounded by
the work a miner can accept within one ticket window; a restarted miner starts it empty.

Withdrawing cannot undo a check that passed: a withdrawal stops backing tickets at once but
leaves the escrow only `escrow_unlock_blocks` later, after every ticket accepted before it can
have settled (dn/chain/escrow.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dn.chain import escrow
from dn.chain.ledger import TASK, StateReader
from dn.errors import TaskError
from dn.node.market.backstop import last_valid_height


@dataclass(frozen=True)
class _Open:
    consumer: str
    max_price: int
    last_valid: int


class Exposure:
    def __init__(self, window: int) -> None:
        self.window = window  # the chain's ticket_window_blocks
        self._open: dict[str, _Open] = {}

    def open_for(self, consumer: str, *, besides: str = "") -> int:
        """The `max_price` of the consumer's accepted, unsettled tickets (but task `besides`)."""
        return sum(
            o.max_price
            for task, o in self._open.items()
            if o.consumer == consumer and task != besides
        )

    def prune(self, state: StateReader, height: int) -> None:
        """Forget the tickets the chain settled and those no block can settle any more."""
        for task, found in list(self._open.items()):
            if found.last_valid < height + 1 or state.get(TASK + task) is not None:
                del self._open[task]

    def admit(self, state: StateReader, height: int, task: str, ticket: dict[str, Any]) -> None:
        """Count `ticket` (task id `task`) against its consumer's escrow, or raise TaskError
        `escrow-short` when the escrow available at `height` cannot back it too."""
        self.prune(state, height)
        consumer, price = str(ticket["consumer"]), int(ticket["max_price"])
        why = escrow.short_of(
            escrow.available(state, consumer), price, self.open_for(consumer, besides=task)
        )
        if why is not None:
            raise TaskError(why, reason="escrow-short")
        self._open[task] = _Open(consumer, price, last_valid_height(ticket, self.window))
