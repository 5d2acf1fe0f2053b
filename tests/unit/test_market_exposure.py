"""A miner's table of the slots it serves (dn/node/market/exposure.py): a slot pays for one task
(`slot-used` on chain), so a miner takes a second ticket on a slot only once the first is
settled or can no longer settle. Payment itself is the chain's: each slot reserves its
`max_price` of the escrow (tests/unit/test_chain_reserve.py)."""

from __future__ import annotations

from typing import Any

import pytest

from dn.chain.ledger import TASK, DictState
from dn.errors import TaskError
from dn.node.market.exposure import Exposure

WINDOW = 10
ALICE, BOB = "alice", "bob"  # the table compares consumers; it never parses addresses


def ticket(consumer: str, slot: int, ref: int = 1, expiry: int = 8) -> dict[str, Any]:
    """A ticket of slot `slot` (its nonce) of `consumer`'s book at `ref`."""
    return {
        "consumer": consumer,
        "max_price": 10,
        "ref_height": ref,
        "nonce": slot,
        "expiry": expiry,
    }


def taken(exposure: Exposure, st: DictState, height: int, task: str, t: dict[str, Any]) -> str:
    with pytest.raises(TaskError) as caught:
        exposure.admit(st, height, task, t)
    assert caught.value.reason == "slot-taken"
    return caught.value.message


def test_one_slot_one_open_task() -> None:
    """Attack: a consumer signs two tickets (two prompts) on one slot of its book. The slot
    draws the same two miners for both, and only one of them can settle (`slot-used`), so the
    other's miners would work for nothing; a miner takes the second only once the first is
    settled or can no longer settle."""
    exposure = Exposure(WINDOW)
    st = DictState({})
    exposure.admit(st, 1, "t1", ticket(ALICE, 3))
    exposure.admit(st, 1, "t1", ticket(ALICE, 3))  # the same task again: fine
    assert "slot 3" in taken(exposure, st, 1, "t2", ticket(ALICE, 3))
    exposure.admit(st, 1, "t3", ticket(ALICE, 4))  # another slot
    exposure.admit(st, 1, "t4", ticket(BOB, 3))  # another consumer's book
    exposure.admit(st, 1, "t5", ticket(ALICE, 3, ref=2))  # another book
    assert exposure.open_slots() == 4
    st.update({TASK + "t1": {"status": "confirmed"}})  # the chain settled t1 (slot used there)
    exposure.admit(st, 2, "t2", ticket(ALICE, 3))
    assert exposure.open_slots() == 4  # t1 gone, t2 in


def test_a_slot_that_can_no_longer_settle_is_free_again() -> None:
    exposure = Exposure(WINDOW)
    st = DictState({})
    exposure.admit(st, 1, "t1", ticket(ALICE, 0, expiry=5))
    taken(exposure, st, 4, "t2", ticket(ALICE, 0, expiry=9))  # block 5 may still settle t1
    exposure.admit(st, 5, "t2", ticket(ALICE, 0, expiry=9))  # block 6 is past its expiry
    long = ticket(BOB, 0, ref=1, expiry=500)  # the window ends it: ref 1 + WINDOW
    exposure.admit(st, 1, "b1", long)  # (the tip is `height`: the next block may settle)
    taken(exposure, st, WINDOW, "b2", ticket(BOB, 0, ref=1, expiry=500))
    exposure.admit(st, 1 + WINDOW, "b2", ticket(BOB, 0, ref=1, expiry=500))
