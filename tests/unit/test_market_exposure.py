"""A miner's check of the consumer's escrow before it works (dn/node/market/exposure.py): the
escrow available must cover this ticket's `max_price` plus the consumer's other tickets this
miner accepted and the chain has not settled (THREATS.md, "Prepaid escrow for queries")."""

from __future__ import annotations

from typing import Any

import pytest

from dn.chain.escrow import ESCROW
from dn.chain.ledger import TASK, DictState
from dn.errors import TaskError
from dn.node.market.exposure import Exposure

WINDOW = 10
ALICE, BOB = "alice", "bob"  # the tracker compares consumers; it never parses addresses


def state(**escrows: tuple[int, int]) -> DictState:
    """Escrows as (amount, unlocking) by consumer."""
    return DictState(
        {
            ESCROW + who: {"amount": amount, "unlocking": unlocking, "unlock_at": 99}
            for who, (amount, unlocking) in escrows.items()
        }
    )


def ticket(consumer: str, max_price: int, ref: int = 1, expiry: int = 8) -> dict[str, Any]:
    return {"consumer": consumer, "max_price": max_price, "ref_height": ref, "expiry": expiry}


def refused(exposure: Exposure, st: DictState, height: int, task: str, t: dict[str, Any]) -> str:
    with pytest.raises(TaskError) as caught:
        exposure.admit(st, height, task, t)
    assert caught.value.reason == "escrow-short"
    return caught.value.message


def test_no_escrow_no_work() -> None:
    message = refused(Exposure(WINDOW), state(), 1, "t1", ticket(ALICE, 1))
    assert "escrow has 0 units available" in message and "dn escrow deposit" in message


def test_the_unlocking_part_backs_nothing_new() -> None:
    exposure = Exposure(WINDOW)
    st = state(alice=(100, 60))
    refused(exposure, st, 1, "t1", ticket(ALICE, 41))
    exposure.admit(st, 1, "t1", ticket(ALICE, 40))


def test_other_open_tickets_of_the_same_consumer_count() -> None:
    exposure = Exposure(WINDOW)
    st = state(alice=(100, 0), bob=(100, 0))
    exposure.admit(st, 1, "t1", ticket(ALICE, 60))
    message = refused(exposure, st, 1, "t2", ticket(ALICE, 41))
    assert "plus 60 units of its other open tickets" in message
    exposure.admit(st, 1, "t2", ticket(ALICE, 40))
    exposure.admit(st, 1, "t3", ticket(BOB, 100))  # another consumer's escrow is its own
    exposure.admit(st, 1, "t1", ticket(ALICE, 60))  # the same task again is not counted twice


def test_settled_and_expired_tickets_stop_counting() -> None:
    exposure = Exposure(WINDOW)
    st = state(alice=(100, 0))
    exposure.admit(st, 1, "t1", ticket(ALICE, 100, expiry=5))
    exposure.admit(st, 1, "t0", ticket(BOB, 0, expiry=50))
    refused(exposure, st, 2, "t2", ticket(ALICE, 1))
    st.update({TASK + "t1": {"status": "confirmed"}})  # the chain settled it
    exposure.admit(st, 2, "t2", ticket(ALICE, 100, expiry=5))
    refused(exposure, st, 4, "t3", ticket(ALICE, 1, expiry=9))
    # past t2's last valid height (its expiry, 5) no block can settle it: it no longer counts
    exposure.admit(st, 5, "t3", ticket(ALICE, 100, ref=5, expiry=9))
    assert exposure.open_for(ALICE) == 100 and exposure.open_for(BOB) == 0
