"""A settled task as `dn chain task` shows it, with the state of a contest: the validators' votes
while no ruling has a quorum, and until when votes are taken (dn/chain/disputes.py)."""

from __future__ import annotations

from typing import Any

from dn.chain.disputes import dispute_window
from dn.chain.genesis import Genesis
from dn.client.http import NodeClient


def contest(record: dict[str, Any], genesis: Genesis, height: int) -> dict[str, Any] | None:
    """The contest on a settled task `record` (a `task:` record) at chain height `height`: None
    when nobody voted or a ruling applied; else each voter's faults (`{}`: nobody at fault), the
    share of the voice a ruling needs, the last block that takes a vote, and whether it is open.
    """
    votes = record.get("votes") or {}
    if not votes or record.get("verdict") is not None:
        return None
    last = int(record["height"]) + dispute_window(genesis)
    return {
        "votes": {voter: dict(vote["faults"]) for voter, vote in sorted(votes.items())},
        "quorum_bps": genesis.param("dispute_quorum_bps"),
        "open_until": last,
        "open": height + 1 <= last,  # a vote sent now lands in the next block at the earliest
    }


def show_task(client: NodeClient, task_id: str) -> dict[str, Any]:
    """The task's record, with `contest` (see `contest`) where votes await a quorum."""
    record = client.task(task_id)
    state = contest(record, Genesis.from_json(client.genesis()), client.status()["height"])
    return {**record, "contest": state} if state is not None else record
