"""A miner's check of the consumer's escrow before it works (dn/node/market/exposure.py): the
escrow available must cover this ticket's `max_price` plus the consumer's other tickets this
miner accepted and the chain has not settled (THREATS.md, "Prepaid escrow for queries")."""

from __future__ import annotations

import itertools
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


SLOTS = itertools.count()


def ticket(
    consumer: str, max_price: int, ref: int = 1, expiry: int = 8, slot: int | None = None
) -> dict[str, Any]:
    """A ticket of a slot of `consumer`'s book at `ref` (a fresh slot unless `slot` says)."""
    nonce = next(SLOTS) if slot is None else slot
    return {
        "consumer": consumer,
        "max_price": max_price,
        "ref_height": ref,
        "nonce": nonce,
        "expiry": expiry,
    }


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


def test_one_slot_one_open_task() -> None:
    """Attack: a consumer signs two tickets (two prompts) on one slot of its book. The slot
    draws the same two miners for both, and only one of them can settle (`slot-used`), so the
    other's miners would work for nothing; a miner takes the second only once the first is
    settled or can no longer settle."""
    exposure = Exposure(WINDOW)
    st = state(alice=(100, 0), bob=(100, 0))
    exposure.admit(st, 1, "t1", ticket(ALICE, 10, slot=3))
    exposure.admit(st, 1, "t1", ticket(ALICE, 10, slot=3))  # the same task again: fine
    with pytest.raises(TaskError) as caught:
        exposure.admit(st, 1, "t2", ticket(ALICE, 10, slot=3))
    assert caught.value.reason == "slot-taken"
    exposure.admit(st, 1, "t3", ticket(ALICE, 10, slot=4))  # another slot
    exposure.admit(st, 1, "t4", ticket(BOB, 10, slot=3))  # another consumer's book
    exposure.admit(st, 1, "t5", ticket(ALICE, 10, ref=2, slot=3))  # another book
    st.update({TASK + "t1": {"status": "confirmed"}})  # the chain settled t1 (slot used there)
    exposure.admit(st, 2, "t2", ticket(ALICE, 10, slot=3))
