"""`dn chain explain` for the HTTP API and the address page: every credit and debit of an
address traced to its cause (dn/chain/explain.py), and the balance it adds up to over time.

The explanation replays the chain from genesis, so it runs in a worker thread on its own
read-only connection to the node's store (a WAL snapshot, as `dn chain explain` reads a running
node's store), one replay at a time, and its answer is kept for a few seconds per address: a
page that polls, or many people looking at one wallet, cost one replay.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any

from dn.chain.explain import Explanation, explain
from dn.chain.store import Store
from dn.encoding import UNITS_PER_DN, pubkey_from_address
from dn.node.http.dashboard.charts import Series, line_chart, thin
from dn.node.node import Node

FRESH_S = 10.0  # an explanation younger than this is served again, even if blocks came since
KEEP = 32  # explanations kept
CHART_POINTS = 400  # the balance chart draws at most about this many changes


class Explainer:
    """Explanations of addresses on one node's chain, replayed one at a time and kept briefly."""

    def __init__(self, node: Node, fresh_s: float = FRESH_S, keep: int = KEEP) -> None:
        self.node = node
        self.fresh_s = fresh_s
        self.keep = keep
        self._lock = asyncio.Lock()
        self._kept: OrderedDict[tuple[str, int], tuple[str, float, Explanation]] = OrderedDict()

    async def explain(self, address: str, start: int = 0) -> Explanation:
        """The explanation of `address` from height `start` (InputError for a bad address)."""
        pubkey_from_address(address)
        key = (address, start)
        async with self._lock:
            kept = self._kept.get(key)
            tip = self.node.tip.hash
            if kept is not None and (kept[0] == tip or time.monotonic() - kept[1] < self.fresh_s):
                self._kept.move_to_end(key)
                return kept[2]
            found = await asyncio.to_thread(self._replay, address, start)
            self._kept[key] = (found.tip, time.monotonic(), found)
            while len(self._kept) > self.keep:
                self._kept.popitem(last=False)
            return found

    def _replay(self, address: str, start: int) -> Explanation:
        store = Store.open(self.node.store.path, readonly=True)
        try:
            return explain(store, address, start)
        finally:
            store.close()


def balance_points(found: Explanation) -> list[tuple[int, int]]:
    """(height, balance in units after that height) at the start and after every height with
    an entry, ending at the tip."""
    balance = found.opening
    points: list[tuple[int, int]] = [(found.start, balance)] if found.start else []
    for entry in found.entries:
        balance += entry.amount
        if points and points[-1][0] == entry.height:
            points[-1] = (entry.height, balance)
        else:
            points.append((entry.height, balance))
    if not points or points[-1][0] != found.height:
        points.append((found.height, balance))
    return points


def balance_chart(found: Explanation) -> str:
    """A staircase of the balance in DN; the axis spans what the balance did, not from zero, so
    a reward on a large balance still shows."""
    points = thin([(float(h), b / UNITS_PER_DN) for h, b in balance_points(found)], CHART_POINTS)
    values = [b for _, b in points]
    return line_chart(
        [Series("balance", tuple(points))],
        title="Balance over time (DN)",
        x_label="block height",
        y_label="DN",
        y_range=(min(values), max(values)),
        step=True,
        fmt=lambda dn: f"{dn:.9f}".rstrip("0").rstrip(".") + " DN",
        empty="no balance changes yet",
    )


def ledger_rows(found: Explanation) -> list[dict[str, Any]]:
    """The entries for the page's table, each with the balance after it."""
    balance = found.opening
    rows = []
    for entry in found.entries:
        balance += entry.amount
        rows.append({**entry.to_json(), "balance_after": balance})
    return rows
