"""`dn chain task` on a contested task (dn/client/tasks.py): the votes so far while no ruling has
a quorum, the quorum, and until which block votes are taken, read from real `task:` records of
the state machine (three validators of one voice each: test_chain_dispute_votes's market)."""

from __future__ import annotations

from dn.chain import disputes
from dn.chain.ledger import TASK
from dn.client.tasks import contest
from tests.unit.test_chain_dispute_votes import V0, V1, new_market, settled, vote


def test_votes_without_a_quorum_are_shown_until_the_window_closes() -> None:
    chain = new_market()
    task, gen, _ = settled(chain, "rejected")
    settled_at = chain.tip.height
    assert contest(chain.state.get(TASK + task), chain.genesis, chain.tip.height) is None
    chain.commit([vote(chain, V0, task, {gen.address: disputes.INVALID_ANSWER})])
    record = chain.state.get(TASK + task)
    last = settled_at + disputes.dispute_window(chain.genesis)  # the chain's rule: the window
    shown = contest(record, chain.genesis, chain.tip.height)
    assert shown == {
        "votes": {V0.address: {gen.address: disputes.INVALID_ANSWER}},
        "quorum_bps": 5_001,  # the genesis default: more than half of the voice
        "open_until": last,
        "open": True,
    }
    assert contest(record, chain.genesis, last - 1)["open"] is True  # a vote lands in `last`
    assert contest(record, chain.genesis, last)["open"] is False
    # A second vote for other faults: still no ruling, both shown.
    chain.commit([vote(chain, V1, task, {})])
    both = contest(chain.state.get(TASK + task), chain.genesis, chain.tip.height)
    assert both is not None and both["votes"] == {
        V0.address: {gen.address: disputes.INVALID_ANSWER},
        V1.address: {},
    }


def test_a_ruled_task_is_no_longer_contested() -> None:
    chain = new_market()
    task, _, _ = settled(chain, "rejected")
    chain.commit([vote(chain, V0, task, {}), vote(chain, V1, task, {})])
    record = chain.state.get(TASK + task)
    assert record["verdict"] is not None
    assert contest(record, chain.genesis, chain.tip.height) is None
