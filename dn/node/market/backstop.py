"""The miners' backstop for payment (DESIGN.md section 7): "the miners hold the signed ticket and
submit it themselves if the gateway does not".

The checker is the one miner that ends a task holding all that `task.settle` needs: the
consumer's ticket, the generator's attestation (which it has just verified against the tokens it
checked) and its own. It keeps them with its task records (SQLite, so they survive a restart).
The gateway sends the settlement at once; if the chain still shows none halfway from the end of
the task to the last height at which the ticket can settle, the checker sends it itself and pays
the fee. So a consumer who takes the answer and never settles pays for it all the same, and a
rejected answer still comes before the validators. A ticket settles once: whichever of the two
settlements comes second is refused before it reaches a block, and costs nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from dn.chain.ledger import TASK
from dn.node.market.records import TaskRecords
from dn.node.node import Node
from dn.wallet.keys import Keypair

log = logging.getLogger("dn.backstop")
SETTLE_TRIES = 3  # sent and then lost (a reorg dropped it) at most this often
RETRY_REASONS = frozenset({"mempool-full"})  # refusals that may pass later


def last_valid_height(ticket: dict[str, Any], window: int) -> int:
    """The last block height that can take a settlement of `ticket`: it must not have expired,
    and its reference height must be within `ticket_window_blocks` (as `task_settle` rules)."""
    return min(int(ticket["expiry"]), int(ticket["ref_height"]) + window)


def settle_height(done_height: int, last_valid: int) -> int:
    """When the checker settles a task the gateway left unsettled: halfway from the task's end
    to the last height that can take it, so the gateway has the first half and the checker's
    own transaction still has time to reach a block."""
    return done_height + max(1, (last_valid - done_height) // 2)


class Backstop:
    def __init__(self, node: Node, wallet: Keypair, records: TaskRecords) -> None:
        self.node = node
        self.wallet = wallet
        self.records = records
        self._sent: dict[str, str] = {}  # task -> our pending task.settle

    def hold(self, task: str, ticket: Any, generator: Any, checker: Any) -> None:
        """Keep what settles `task` (called by the checker before it returns its attestation)."""
        last = last_valid_height(ticket, self.node.genesis.param("ticket_window_blocks"))
        self.records.hold(
            task,
            {"ticket": ticket, "generator": generator, "checker": checker},
            settle_at=settle_height(self.node.tip.height, last),
            last_valid=last,
        )

    def pending(self) -> int:
        return self.records.held_count()

    def step(self) -> list[str]:
        """Settle the held tasks that are due; forget those settled or past saving. Returns the
        ids of the transactions sent."""
        height = self.node.tip.height
        sent: list[str] = []
        for row in self.records.held():
            task = row["task"]
            if self.node.state.get(TASK + task) is not None:
                self.records.release(task)
                self._sent.pop(task, None)
                continue
            ours = self._sent.get(task)
            if ours and self.node.mempool.get(ours) is not None:
                continue  # ours is on its way to a block
            if height >= row["last_valid"] or row["tries"] >= SETTLE_TRIES:
                log.warning("task %s was never settled and no longer can be", task[:12])
                self.records.release(task)
                self._sent.pop(task, None)
                continue
            if height < row["settle_at"]:
                continue
            tx = self.node.own_tx(self.wallet, "task.settle", row["payload"])
            result = self.node.submit([tx.to_json()])[0]
            if result["accepted"]:
                self.records.tried(task)
                self._sent[task] = tx.id
                sent.append(tx.id)
                log.info("settled task %s for its gateway (tx %s)", task[:12], tx.id[:12])
            elif result.get("reason") not in RETRY_REASONS:
                # Settled already (perhaps by a transaction still pending), or never can be.
                log.info("not settling task %s: %s", task[:12], result.get("message"))
                self.records.release(task)
                self._sent.pop(task, None)
        return sent
