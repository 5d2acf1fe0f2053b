"""The supply tally a node keeps per block (`SupplyTally`) always equals the supply summed over the
whole state (`supply_report`), whatever the blocks add, change or remove."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from dn.chain.ledger import ACCT, POOL, SUPPLY, UNLOCK, DictState
from dn.chain.staking import STAKE
from dn.chain.state import SupplyTally, supply_report
from dn.chain.validators import VALIDATOR

amounts = st.integers(min_value=0, max_value=10**15)
names = st.sampled_from(["a", "b", "c", "d"])


@st.composite
def entries(draw: Any) -> tuple[str, Any]:
    kind = draw(st.sampled_from(["acct", "miner", "validator", "unlock", "pool", "stake", "other"]))
    name = draw(names)
    if kind == "acct":
        return ACCT + name, {"balance": draw(amounts), "nonce": 0}
    if kind == "miner":
        return "miner:" + name, {"bond": draw(amounts)}
    if kind == "validator":
        return VALIDATOR + name, {"bond": draw(amounts)}
    if kind == "unlock":
        return UNLOCK + name, [{"amount": draw(amounts)} for _ in range(draw(st.integers(0, 3)))]
    if kind == "pool":
        return POOL + name, {"balance": draw(amounts)}
    if kind == "stake":
        return STAKE + name, {"amount": draw(amounts)}
    return "model:" + name, {"price": draw(amounts)}


def supply(draw: Any) -> dict[str, int]:
    return {"genesis": draw(amounts), "emitted": draw(amounts), "burned": draw(amounts)}


@st.composite
def states(draw: Any) -> dict[str, Any]:
    data = dict(draw(st.lists(entries(), max_size=12)))
    data[SUPPLY] = supply(draw)
    return data


@st.composite
def blocks(draw: Any) -> dict[str, Any]:
    """One block's changes: new or changed entries, removals (None), maybe a new supply."""
    changes: dict[str, Any] = dict(draw(st.lists(entries(), max_size=6)))
    for key in draw(st.lists(entries(), max_size=3)):
        changes[key[0]] = None
    if draw(st.booleans()):
        changes[SUPPLY] = supply(draw)
    return changes


@given(states(), st.lists(blocks(), max_size=8))
def test_the_tally_follows_every_change(start: dict[str, Any], chain: list[dict[str, Any]]) -> None:
    state = DictState(dict(start))
    tally = SupplyTally(state.items())
    assert tally.report() == supply_report(state.items())
    for changes in chain:
        tally.apply(state, changes)
        state.update(changes)
        assert tally.report() == supply_report(state.items())


def test_the_report_names_each_holding() -> None:
    state = {
        ACCT + "a": {"balance": 5, "nonce": 1},
        "miner:m": {"bond": 7},
        VALIDATOR + "v": {"bond": 11},
        UNLOCK + "u": [{"amount": 2}, {"amount": 3}],
        POOL + "validators": {"balance": 13},
        STAKE + "s": {"amount": 17},
        "escrow:e": {"amount": 19, "unlocking": 4, "unlock_at": 9},
        "escrow-due:9": ["e"],
        SUPPLY: {"genesis": 59, "emitted": 23, "burned": 5},
    }
    assert supply_report(state.items()) == {
        "balances": 5,
        "bonds": 18,
        "unbonding": 5,
        "pools": 13,
        "stakes": 17,
        "escrows": 19,
        "burned": 5,
        "held": 82,
        "created": 82,
    }
