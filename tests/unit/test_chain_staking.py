"""Staking on the pure state machine (DESIGN.md section 4): `stake` and `unstake` on models
(backers) and validators (delegation), unbonding through `unlock:`, and backers paid from
`task.settle`.

Every invalid case asserts the exact rejection reason, from apply_tx and from the mempool, and
that nothing changed; every committed block checks the supply invariant (`Chain.commit`).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dn.chain.genesis import PARAMS
from dn.chain.ledger import DictState
from dn.chain.staking import backers_of, stakes_of
from dn.chain.state import apply_block, build_block, genesis_state, supply_holds, supply_report
from dn.chain.types import Block, Tx
from dn.errors import InvalidTx
from dn.wallet.keys import Keypair
from tests.unit.test_chain_models import (
    CREATOR,
    DN,
    GEMMA,
    M1,
    M2,
    M3,
    OTHER,
    POOR,
    SMOL,
    UNBONDING,
    Chain,
    model_sha,
    new_chain,
)
from tests.unit.test_chain_state import V, assert_rejected
from tests.unit.test_chain_tasks import PRICE, paid_settle

STRANGER = Keypair.from_seed(b"stranger".ljust(32, b".")).address  # not a validator


def stake(chain: Chain, kp: Keypair, target: str, amount: int, **kw: Any) -> Tx:
    return chain.send(kp, "stake", {"target": target, "amount": amount}, **kw)


def unstake(chain: Chain, kp: Keypair, target: str, amount: int, **kw: Any) -> Tx:
    return chain.send(kp, "unstake", {"target": target, "amount": amount}, **kw)


def staked(chain: Chain, target: str, kp: Keypair) -> int | None:
    found = chain.state.get(f"stake:{target}:{kp.address}")
    return None if found is None else int(found["amount"])


@pytest.fixture
def chain() -> Chain:
    """SMOL registered by CREATOR (height 1), GEMMA by OTHER (height 1) and retired (height 2)."""
    return with_models(new_chain())


def with_models(chain: Chain) -> Chain:
    chain.commit([chain.register_model(), chain.register_model(OTHER, sha=GEMMA, name="gemma")])
    chain.commit([chain.send(OTHER, "model.retire", {"model": GEMMA})])
    return chain


def test_stake_min_is_a_genesis_param_with_a_default() -> None:
    assert PARAMS["stake_min"] == (DN, 1, 2**63 - 1)
    assert new_chain().genesis.param("stake_min") == DN
    assert new_chain(stake_min=5).genesis.param("stake_min") == 5


# --- stake ----------------------------------------------------------------------------------


def test_stake_on_a_model_moves_funds_into_the_stake(chain: Chain) -> None:
    before = chain.balance(OTHER)
    first = stake(chain, OTHER, SMOL, 3 * DN)
    chain.commit([first])
    assert chain.balance(OTHER) == before - 3 * DN - first.fee
    assert staked(chain, SMOL, OTHER) == 3 * DN
    assert chain.state.get("backers:" + SMOL) == [OTHER.address]
    chain.commit([stake(chain, OTHER, SMOL, DN), stake(chain, CREATOR, SMOL, 2 * DN)])
    assert staked(chain, SMOL, OTHER) == 4 * DN  # a second stake adds up
    assert chain.state.get("backers:" + SMOL) == sorted([OTHER.address, CREATOR.address])
    assert backers_of(chain.state, SMOL) == {OTHER.address: 4 * DN, CREATOR.address: 2 * DN}
    report = supply_report(chain.state.items())
    assert report["stakes"] == 6 * DN and report["held"] == report["created"]


def test_delegate_to_a_validator(chain: Chain) -> None:
    before = chain.balance(M1)
    tx = stake(chain, M1, V.address, 7 * DN)
    chain.commit([tx])
    assert chain.balance(M1) == before - 7 * DN - tx.fee
    assert staked(chain, V.address, M1) == 7 * DN
    assert chain.state.get("backers:" + V.address) == [M1.address]
    assert stakes_of(chain.state.items(), target=V.address) == [
        {"target": V.address, "backer": M1.address, "amount": 7 * DN}
    ]


@pytest.mark.parametrize(
    ("target", "amount", "sender", "reason"),
    [
        pytest.param(model_sha("nope"), 2 * DN, OTHER, "unknown-model", id="unknown-model"),
        pytest.param(GEMMA, 2 * DN, OTHER, "model-retired", id="retired"),
        pytest.param(STRANGER, 2 * DN, OTHER, "not-validator", id="not-validator"),
        pytest.param(M2.address, 2 * DN, OTHER, "not-validator", id="a-miner-is-no-validator"),
        pytest.param(SMOL, DN - 1, OTHER, "stake-too-low", id="too-low"),
        pytest.param(V.address, DN - 1, OTHER, "stake-too-low", id="too-low-validator"),
        pytest.param(SMOL, DN, POOR, "insufficient-funds", id="fee-plus-stake"),
        pytest.param(SMOL, 100 * DN, OTHER, "insufficient-funds", id="everything"),
    ],
)
def test_stake_refused(
    chain: Chain, target: str, amount: int, sender: Keypair, reason: str
) -> None:
    assert_rejected(chain, stake(chain, sender, target, amount), reason)


def test_stake_checks_target_then_amount_then_funds(chain: Chain) -> None:
    assert_rejected(chain, stake(chain, POOR, GEMMA, 1), "model-retired")
    assert_rejected(chain, stake(chain, POOR, SMOL, 1), "stake-too-low")


def test_the_whole_balance_can_be_staked() -> None:
    exact = new_chain(stake_min=1000)
    exact.commit([exact.register_model()])
    everything = DN - exact.min_fee  # POOR holds 1 DN
    exact.commit([stake(exact, POOR, SMOL, everything)])
    assert exact.balance(POOR) == 0 and staked(exact, SMOL, POOR) == everything


def test_a_malformed_target_never_reaches_the_rules(chain: Chain) -> None:
    for target in (STRANGER[:-1] + ("q" if STRANGER[-1] != "q" else "p"), "SMOL", SMOL.upper()):
        with pytest.raises(InvalidTx) as caught:
            stake(chain, OTHER, target, DN)
        assert caught.value.reason == "bad-payload"
    with pytest.raises(InvalidTx) as caught:
        stake(chain, OTHER, SMOL, 0)
    assert caught.value.reason == "bad-payload"


# --- unstake --------------------------------------------------------------------------------


@pytest.fixture
def backed(chain: Chain) -> Chain:
    """OTHER stakes 5 DN on SMOL and 2 DN on V, at height 3."""
    chain.commit(
        [
            stake(chain, OTHER, SMOL, 5 * DN),
            stake(chain, OTHER, V.address, 2 * DN, nonce=chain.nonce(OTHER) + 1),
        ]
    )
    return chain


@pytest.mark.parametrize(
    ("sender", "target", "amount", "reason"),
    [
        pytest.param(M1, SMOL, DN, "no-stake", id="never-staked"),
        pytest.param(OTHER, model_sha("nope"), DN, "no-stake", id="unknown-target"),
        pytest.param(OTHER, SMOL, 5 * DN + 1, "insufficient-stake", id="more-than-staked"),
        pytest.param(OTHER, SMOL, 4 * DN + 1, "stake-too-low", id="leaves-too-little"),
        pytest.param(OTHER, V.address, DN + 1, "stake-too-low", id="leaves-too-little-validator"),
    ],
)
def test_unstake_refused(
    backed: Chain, sender: Keypair, target: str, amount: int, reason: str
) -> None:
    assert_rejected(backed, unstake(backed, sender, target, amount), reason)


def test_unstake_releases_the_funds_exactly_after_unbonding(backed: Chain) -> None:
    before = backed.balance(OTHER)
    tx = unstake(backed, OTHER, SMOL, 2 * DN)
    backed.commit([tx])  # height 4
    release = 4 + UNBONDING
    assert staked(backed, SMOL, OTHER) == 3 * DN
    assert backed.state.get(f"unlock:{release}") == [
        {"address": OTHER.address, "amount": 2 * DN, "what": "stake"}
    ]
    report = supply_report(backed.state.items())
    assert (report["stakes"], report["unbonding"]) == (5 * DN, 2 * DN)
    assert backed.balance(OTHER) == before - tx.fee  # nothing credited yet
    backed.advance_to(release - 1)
    assert backed.balance(OTHER) == before - tx.fee
    backed.commit([])
    assert backed.balance(OTHER) == before - tx.fee + 2 * DN
    assert backed.state.get(f"unlock:{release}") is None
    assert supply_report(backed.state.items())["unbonding"] == 0


def test_unstaking_everything_removes_the_backer(backed: Chain) -> None:
    backed.commit([stake(backed, M1, SMOL, DN)])  # height 4
    backed.commit(
        [
            unstake(backed, OTHER, SMOL, 5 * DN),
            unstake(backed, OTHER, V.address, 2 * DN, nonce=backed.nonce(OTHER) + 1),
        ]
    )
    assert staked(backed, SMOL, OTHER) is None and staked(backed, V.address, OTHER) is None
    assert backed.state.get("backers:" + SMOL) == [M1.address]
    assert backed.state.get("backers:" + V.address) is None  # an empty list is deleted
    assert backed.state.get(f"unlock:{5 + UNBONDING}") == [
        {"address": OTHER.address, "amount": 5 * DN, "what": "stake"},
        {"address": OTHER.address, "amount": 2 * DN, "what": "stake"},
    ]
    assert_rejected(backed, unstake(backed, OTHER, SMOL, DN), "no-stake")
    before = backed.balance(OTHER)
    backed.advance_to(5 + UNBONDING)
    assert backed.balance(OTHER) == before + 7 * DN


def test_a_stake_on_a_model_retired_since_can_be_withdrawn(backed: Chain) -> None:
    backed.commit([backed.send(CREATOR, "model.retire", {"model": SMOL})])  # height 4
    assert_rejected(backed, stake(backed, OTHER, SMOL, DN), "model-retired")
    backed.commit([unstake(backed, OTHER, SMOL, 5 * DN)])
    assert staked(backed, SMOL, OTHER) is None


def test_stake_and_unstake_in_one_block(chain: Chain) -> None:
    chain.commit(
        [
            stake(chain, OTHER, SMOL, 2 * DN),
            unstake(chain, OTHER, SMOL, 2 * DN, nonce=chain.nonce(OTHER) + 1),
        ]
    )
    assert staked(chain, SMOL, OTHER) is None
    assert chain.state.get("backers:" + SMOL) is None
    assert chain.state.get(f"unlock:{3 + UNBONDING}") == [
        {"address": OTHER.address, "amount": 2 * DN, "what": "stake"}
    ]


def test_a_staking_block_round_trips(backed: Chain) -> None:
    txs = [stake(backed, M1, SMOL, DN), unstake(backed, OTHER, SMOL, DN)]
    applied, rejected = build_block(
        backed.state, backed.tip.header, backed.tip.hash, txs, V, 60_000, backed.genesis
    )
    assert rejected == []
    wire = Block.from_json(applied.block.to_json())
    fresh = DictState(copy.deepcopy(backed.state.data))
    replayed = apply_block(fresh, backed.tip.header, backed.tip.hash, wire, backed.genesis)
    assert replayed.changes == applied.changes
    fresh.update(replayed.changes)
    assert fresh.get("backers:" + SMOL) == sorted([M1.address, OTHER.address])
    assert supply_holds(fresh.items())


# --- backers are paid -----------------------------------------------------------------------


def test_staked_backers_share_a_paid_query_to_the_unit() -> None:
    """PRICE × 77 tokens = 9,506 units; the backers' 5% is 475, shared 3:4 between OTHER and
    M3: 475 × 3 // 7 = 203 and 475 × 4 // 7 = 271; the unit that rounding leaves is burned."""
    chain = new_chain()
    chain.commit([chain.register_model(price=PRICE)])  # height 1
    chain.commit([chain.register_miner(M1), chain.register_miner(M2)])  # height 2
    chain.commit([stake(chain, OTHER, SMOL, 3 * DN), stake(chain, M3, SMOL, 4 * DN)])  # height 3
    before = {kp.address: chain.balance(kp) for kp in (OTHER, M3, CREATOR)}
    burned = chain.state.get("supply")["burned"]
    tx = paid_settle(chain)  # books a slot first: block 4, the settlement block 5
    chain.commit([tx])
    assert chain.tip.height == 5

    def delta(kp: Keypair) -> int:
        return chain.balance(kp) - before[kp.address]

    assert (delta(OTHER), delta(M3)) == (203, 271)
    assert delta(CREATOR) == 2_851  # its own 30% only: the backers' share went to the backers
    fee_burn = tx.fee * 2000 // 10_000
    book_burn = 1 * chain.min_fee * 2000 // 10_000  # the book's fee: one slot at min_fee
    # The 5% burn share (475), 3 units of rounding in the other shares, 1 in the backers'.
    assert 9_506 - 2_851 - 3_327 - 1_425 - 950 - 203 - 271 == 475 + 3 + 1
    assert chain.state.get("supply")["burned"] - burned == book_burn + fee_burn + 475 + 3 + 1
    assert staked(chain, SMOL, OTHER) == 3 * DN  # stakes themselves do not move
    # M3 leaves: the next query's whole backers' share goes to OTHER.
    chain.commit([unstake(chain, M3, SMOL, 4 * DN)])
    before_other = chain.balance(OTHER)
    chain.commit([paid_settle(chain, nonce=1)])
    assert chain.balance(OTHER) - before_other == 475


def test_a_delegation_earns_nothing_between_epoch_closes(backed: Chain) -> None:
    """Validator rewards, and so delegators' shares, are paid only when a PoWR epoch closes
    (tests/unit/test_chain_powr.py `test_a_full_epoch_pays_its_emission`)."""
    before = backed.balance(OTHER)
    backed.advance_to(backed.tip.height + 3)
    assert backed.balance(OTHER) == before
    assert staked(backed, V.address, OTHER) == 2 * DN


# --- properties -----------------------------------------------------------------------------

STAKERS = (OTHER, M1, POOR)
TARGETS = (SMOL, GEMMA, V.address, STRANGER)
LEAST = DN // 2

steps = st.lists(
    st.tuples(
        st.sampled_from(("stake", "unstake")),
        st.sampled_from(STAKERS),
        st.sampled_from(TARGETS),
        st.integers(min_value=1, max_value=3 * DN),
    ),
    max_size=12,
)


@settings(max_examples=40, deadline=None)
@given(steps=steps)
def test_random_staking_keeps_supply_and_stakes_sound(
    steps: list[tuple[str, Keypair, str, int]],
) -> None:
    """Whatever sequence of stakes and unstakes is tried, each is accepted exactly when the
    rules say, stakes never go below zero or under stake_min, `backers:` lists exactly the
    holders, the supply invariant holds after every block, and all unstaked funds come back."""
    chain = with_models(new_chain(stake_min=LEAST))
    expected: dict[tuple[str, str], int] = {}
    for kind, kp, target, amount in steps:
        held = expected.get((target, kp.address), 0)
        if kind == "stake":
            ok = (
                target in (SMOL, V.address)
                and amount >= LEAST
                and chain.balance(kp) >= chain.min_fee + amount
            )
        else:
            ok = 0 < amount <= held and (held - amount == 0 or held - amount >= LEAST)
        tx = chain.send(kp, kind, {"target": target, "amount": amount})
        applied, rejected = build_block(
            chain.state,
            chain.tip.header,
            chain.tip.hash,
            [tx],
            V,
            chain.tip.header.time + 1000,
            chain.genesis,
        )
        assert (rejected == []) == ok, rejected[0][1].message if rejected else "accepted"
        chain.state.update(applied.changes)
        chain.tip = applied.block
        if ok:
            sign = 1 if kind == "stake" else -1
            expected[(target, kp.address)] = held + sign * amount
        assert supply_holds(chain.state.items())
        found = {(s["target"], s["backer"]): s["amount"] for s in stakes_of(chain.state.items())}
        assert found == {k: v for k, v in expected.items() if v}
        assert all(v >= LEAST for v in found.values())
        for target in TARGETS:
            holders = sorted(b for (t, b), v in expected.items() if t == target and v)
            assert (chain.state.get("backers:" + target) or []) == holders
    # Every unlock comes due: nothing is left unbonding.
    chain.advance_to(chain.tip.height + UNBONDING)
    assert supply_report(chain.state.items())["unbonding"] == 0
    staked_total = sum(expected.values())
    assert supply_report(chain.state.items())["stakes"] == staked_total


def test_the_genesis_state_has_no_stakes() -> None:
    chain = new_chain()
    state = DictState(genesis_state(chain.genesis))
    assert stakes_of(state.items()) == [] and supply_report(state.items())["stakes"] == 0
