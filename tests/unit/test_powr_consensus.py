"""PoWR consensus math: the score formula, the weighted median, clipping, agreement, emission and
the exact split of an epoch's rewards (dn/powr/consensus.py, emission.py, params.py).

The property tests state what a user relies on: a minority cannot move a model's score by more
than its clipped share, every unit of an epoch's emission is accounted for, and nothing depends
on the scale of stakes or the order of a mapping. The example tests pin hand-computed numbers.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dn.encoding import BPS
from dn.errors import InputError
from dn.powr.consensus import (
    EpochInputs,
    EpochResult,
    agreement,
    clip,
    close_epoch,
    demand_ppm,
    powr_score,
    success_ppm,
    weighted_median,
)
from dn.powr.emission import (
    REASON_BACKER,
    REASON_CREATOR,
    REASON_CREATOR_BACKERS,
    REASON_DELEGATOR,
    REASON_MINER,
    REASON_POOL,
    REASON_VALIDATOR,
    Credit,
    ModelEpoch,
    apportion,
    epoch_emission,
    share_pool,
    split_emission,
)
from dn.powr.params import POWR_PARAMS, PPM, EpochParams

VALIDATORS = [f"val{i}" for i in range(8)]
MODELS = [f"model{i}" for i in range(6)]
PEOPLE = [f"person{i}" for i in range(6)]

ppms = st.integers(min_value=0, max_value=PPM)
stakes_st = st.integers(min_value=1, max_value=10**12)  # times a factor <= 10**6: < 2^63
factors = st.integers(min_value=2, max_value=10**6)


# --- the score formula ------------------------------------------------------------------------


def test_score_examples() -> None:
    # 800,000 * (0.5 + 0.25 * 0.9 + 0.25 * 0.2) = 800,000 * 0.775
    assert powr_score(800_000, 900_000, 200_000) == 620_000
    assert powr_score(PPM, PPM, PPM) == PPM
    assert powr_score(PPM, 0, 0) == 500_000
    assert powr_score(0, PPM, PPM) == 0
    assert powr_score(3, 0, 0) == 1  # rounded down


def test_success_and_demand_examples() -> None:
    assert success_ppm(0, 0) == 500_000  # no tasks: neutral
    assert success_ppm(0, 1) == 333_333  # one failed task does not zero it
    assert success_ppm(1, 1) == 666_666
    assert success_ppm(8, 10) == 750_000
    assert success_ppm(1000, 1000) == 999_001
    # demand: paid-for usage against the models' pot, so it moves at most that usage
    assert demand_ppm(0, 0) == 0
    assert demand_ppm(7, 0) == 0  # no pot to move
    assert demand_ppm(1, 3) == 666_666  # 1 * 5,000 * PPM // (3 * 2,500)
    assert demand_ppm(250, 1_000) == 500_000
    assert demand_ppm(5_000, 1_000) == PPM  # capped


@pytest.mark.parametrize(
    "call",
    [
        lambda: powr_score(PPM + 1, 0, 0),
        lambda: powr_score(-1, 0, 0),
        lambda: powr_score(1, PPM + 1, 0),
        lambda: powr_score(1, 0, -1),
        lambda: powr_score(True, 0, 0),
        lambda: success_ppm(3, 2),
        lambda: success_ppm(-1, 2),
        lambda: demand_ppm(-1, 3),
        lambda: demand_ppm(1, -3),
    ],
)
def test_score_inputs_out_of_range_are_refused(call: Callable[[], int]) -> None:
    with pytest.raises(InputError):
        call()


@settings(max_examples=300, deadline=None)
@given(ppms, ppms, ppms, ppms, st.sampled_from(["q", "s", "d"]))
def test_score_never_falls_when_one_input_rises(
    q: int, s: int, d: int, other: int, which: str
) -> None:
    low = {"q": q, "s": s, "d": d}
    high = dict(low)
    low[which], high[which] = sorted((low[which], other))
    assert powr_score(low["q"], low["s"], low["d"]) <= powr_score(high["q"], high["s"], high["d"])


@settings(max_examples=200, deadline=None)
@given(ppms, ppms, ppms)
def test_score_is_zero_without_quality_and_never_above_it(q: int, s: int, d: int) -> None:
    assert powr_score(0, s, d) == 0
    assert 0 <= powr_score(q, s, d) <= q


@settings(max_examples=200, deadline=None)
@given(ppms)
def test_a_model_without_tasks_earns_from_quality(q: int) -> None:
    score = powr_score(q, success_ppm(0, 0), demand_ppm(0, 1000))
    assert score == q * 5 // 8  # q * (0.5 + 0.25 * 0.5)
    if q >= 2:
        assert score > 0


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_success_rises_with_confirmed_tasks(confirmed: int, extra: int) -> None:
    tasks = confirmed + extra
    assert success_ppm(confirmed, tasks) <= success_ppm(confirmed + 1, tasks + 1)
    assert success_ppm(confirmed, tasks + 1) <= success_ppm(confirmed, tasks)  # one more failure


# --- the weighted median ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "median"),
    [
        ([(10, 1), (20, 1)], 10),  # an even split: the lower one
        ([(10, 1), (20, 2)], 20),
        ([(10, 2), (20, 1)], 10),
        ([(30, 1), (10, 1), (20, 1)], 20),
        ([(5, 0), (10, 1)], 10),  # stake 0 does not count
        ([(7, 4), (7, 1), (1, 4)], 7),
        ([(1, 3), (2, 1), (3, 1), (4, 1)], 1),  # 3 of 6 at or below 1: half is enough
    ],
)
def test_weighted_median_examples(pairs: list[tuple[int, int]], median: int) -> None:
    assert weighted_median(pairs) == median


def test_weighted_median_needs_positive_stake() -> None:
    with pytest.raises(InputError, match="positive stake"):
        weighted_median([])
    with pytest.raises(InputError, match="positive stake"):
        weighted_median([(5, 0)])
    with pytest.raises(InputError, match="negative"):
        weighted_median([(5, 2), (6, -1)])


pairs_st = st.lists(st.tuples(ppms, st.integers(0, 10**12)), min_size=1, max_size=12).filter(
    lambda pairs: any(stake for _, stake in pairs)
)


@settings(max_examples=300, deadline=None)
@given(pairs_st, st.randoms(use_true_random=False), factors)
def test_weighted_median_is_the_lower_median_whatever_the_order_or_scale(
    pairs: list[tuple[int, int]], rnd: random.Random, factor: int
) -> None:
    median = weighted_median(pairs)
    total = sum(stake for _, stake in pairs)
    below = sum(stake for value, stake in pairs if value < median)
    at_or_below = sum(stake for value, stake in pairs if value <= median)
    assert median in {value for value, stake in pairs if stake}
    assert 2 * below < total <= 2 * at_or_below  # the defining property, lower of any tie
    shuffled = list(pairs)
    rnd.shuffle(shuffled)
    assert weighted_median(shuffled) == median
    assert weighted_median((value, stake * factor) for value, stake in pairs) == median


# --- clipping ---------------------------------------------------------------------------------

EXAMPLE_SCORES = {
    "A": {"m1": 800_000, "m2": 600_000},
    "B": {"m1": 700_000, "m2": 600_000},
    "C": {"m1": 100_000, "m2": 650_000},
}
EXAMPLE_STAKES = {"A": 3, "B": 1, "C": 1, "D": 5}


def test_clip_example() -> None:
    found = clip(EXAMPLE_SCORES, EXAMPLE_STAKES, 100_000)
    assert list(found) == ["m1", "m2"]
    m1, m2 = found["m1"], found["m2"]
    # m1: 100k (stake 1), 700k (1), 800k (3): half of 5 is first reached at 800k
    assert m1.median_ppm == 800_000
    assert [(s.validator, s.raw_ppm, s.clipped_ppm) for s in m1.scores] == [
        ("A", 800_000, 800_000),
        ("B", 700_000, 700_000),
        ("C", 100_000, 700_000),  # the outlier, clipped up to the band
    ]
    assert m1.quality_ppm == (3 * 800_000 + 700_000 + 700_000) // 5 == 760_000  # unclipped: 640k
    assert m2.median_ppm == 600_000
    assert m2.quality_ppm == (3 * 600_000 + 600_000 + 650_000) // 5 == 610_000


def test_clip_works_in_both_directions() -> None:
    stakes = {"h1": 1, "h2": 1, "h3": 1, "x": 1}
    up = clip(
        {"h1": {"m": 500_000}, "h2": {"m": 500_000}, "h3": {"m": 500_000}, "x": {"m": PPM}},
        stakes,
        50_000,
    )
    down = clip(
        {"h1": {"m": 500_000}, "h2": {"m": 500_000}, "h3": {"m": 500_000}, "x": {"m": 0}},
        stakes,
        50_000,
    )
    assert up["m"].scores[-1].clipped_ppm == 550_000
    assert up["m"].quality_ppm == 512_500
    assert down["m"].scores[-1].clipped_ppm == 450_000
    assert down["m"].quality_ppm == 487_500


def test_clip_ignores_validators_without_stake() -> None:
    scores = {"A": {"m": 400_000}, "B": {"m": 900_000}, "ghost": {"m": 0, "other": 5}}
    found = clip(scores, {"A": 1, "B": 0}, 100_000)
    assert list(found) == ["m"]
    assert [s.validator for s in found["m"].scores] == ["A"]
    assert found["m"].quality_ppm == 400_000


@settings(max_examples=300, deadline=None)
@given(st.lists(stakes_st, min_size=1, max_size=8), ppms, ppms)
def test_equal_scores_give_that_score(stakes: list[int], score: int, band: int) -> None:
    names = VALIDATORS[: len(stakes)]
    found = clip({v: {"m": score} for v in names}, dict(zip(names, stakes, strict=True)), band)
    assert found["m"].median_ppm == score
    assert found["m"].quality_ppm == score
    assert all(s.clipped_ppm == score for s in found["m"].scores)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(stakes_st, min_size=1, max_size=4),
    st.lists(st.tuples(stakes_st, ppms), min_size=1, max_size=4),
    ppms,
    ppms,
)
def test_a_minority_moves_the_score_at_most_its_clipped_share(
    honest: list[int], others: list[tuple[int, int]], h: int, band: int
) -> None:
    """The bound: when validators holding more than half of the stake reveal h, validators
    holding stake S_C of the total S move the model's quality at most ceil(S_C * band / S)
    away from h, whatever they reveal (an unclipped mean could be moved S_C * PPM / S)."""
    outsider_stake = sum(stake for stake, _ in others)
    if sum(honest) <= outsider_stake:
        honest = [*honest, outsider_stake - sum(honest) + 1]  # make the honest side a majority
    names = [f"honest{i}" for i in range(len(honest))] + [f"other{i}" for i in range(len(others))]
    stake_list = honest + [stake for stake, _ in others]
    score_list = [h] * len(honest) + [score for _, score in others]
    found = clip(
        {v: {"m": r} for v, r in zip(names, score_list, strict=True)},
        dict(zip(names, stake_list, strict=True)),
        band,
    )["m"]
    total = sum(stake_list)
    assert found.median_ppm == h
    bound = -(-outsider_stake * band // total)  # ceil
    assert abs(found.quality_ppm - h) <= bound
    # and the bound is what they get by pushing as far as they can
    if all(score == PPM for _, score in others) and h + band <= PPM:
        assert found.quality_ppm == h + outsider_stake * band // total
    if all(score == 0 for _, score in others) and h - band >= 0:
        assert found.quality_ppm == (total * h - outsider_stake * band) // total


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(stakes_st, ppms), min_size=1, max_size=10), ppms, factors)
def test_clipped_scores_stay_near_the_median(
    entries: list[tuple[int, int]], band: int, factor: int
) -> None:
    names = VALIDATORS[: len(entries)] + [f"extra{i}" for i in range(len(entries))]
    scores = {names[i]: {"m": raw} for i, (_, raw) in enumerate(entries)}
    stakes = {names[i]: stake for i, (stake, _) in enumerate(entries)}
    found = clip(scores, stakes, band)["m"]
    median = found.median_ppm
    raws = [raw for _, raw in entries]
    for s in found.scores:
        assert abs(s.clipped_ppm - median) <= band
        assert min(s.raw_ppm, median) <= s.clipped_ppm <= max(s.raw_ppm, median)
    assert abs(found.quality_ppm - median) <= band
    assert min(raws) <= found.quality_ppm <= max(raws)
    if band == 0:
        assert found.quality_ppm == median
    scaled = clip(scores, {v: stake * factor for v, stake in stakes.items()}, band)["m"]
    assert (scaled.median_ppm, scaled.quality_ppm) == (median, found.quality_ppm)
    assert [s.clipped_ppm for s in scaled.scores] == [s.clipped_ppm for s in found.scores]


# --- agreement --------------------------------------------------------------------------------


def test_agreement_example() -> None:
    found = clip(EXAMPLE_SCORES, EXAMPLE_STAKES, 100_000)
    got = agreement(EXAMPLE_SCORES, found, EXAMPLE_STAKES, 200_000)
    # A: at both medians; B: 100k off on m1 (half marks), on m2's median;
    # C: 700k off on m1 (nothing), 50k off on m2 (3/4); D revealed nothing
    assert got == {"A": PPM, "B": 750_000, "C": 375_000, "D": 0}


def test_agreement_counts_an_unscored_model_as_zero() -> None:
    scores = {"A": {"m1": 500_000, "m2": 500_000}, "B": {"m1": 500_000}}
    found = clip(scores, {"A": 1, "B": 1}, 0)
    assert agreement(scores, found, ["A", "B"], 100_000) == {"A": PPM, "B": 500_000}
    assert agreement(scores, {}, ["A", "B"], 100_000) == {"A": 0, "B": 0}


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(VALIDATORS), st.dictionaries(st.sampled_from(MODELS), ppms), min_size=1
    ),
    st.integers(1, PPM),
)
def test_agreement_is_within_bounds(scores: dict[str, dict[str, int]], span: int) -> None:
    stakes = dict.fromkeys(VALIDATORS, 1)
    found = clip(scores, stakes, 0)
    got = agreement(scores, found, stakes, span)
    assert all(0 <= value <= PPM for value in got.values())
    for v in VALIDATORS:
        if v not in scores:
            assert got[v] == 0
        elif found and all(scores[v].get(m) == c.median_ppm for m, c in found.items()):
            assert got[v] == PPM


# --- emission ---------------------------------------------------------------------------------


def test_emission_examples() -> None:
    assert epoch_emission(0, 1000, 10) == 1000
    assert epoch_emission(9, 1000, 10) == 1000
    assert epoch_emission(10, 1000, 10) == 500
    assert epoch_emission(25, 1000, 10) == 250
    assert epoch_emission(99, 1000, 10) == 1  # 1000 >> 9
    assert epoch_emission(100, 1000, 10) == 0
    assert epoch_emission(10**15, 2**63 - 1, 1) == 0
    with pytest.raises(InputError):
        epoch_emission(0, 1000, 0)
    with pytest.raises(InputError):
        epoch_emission(-1, 1000, 10)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**63 - 1), st.integers(1, 50), st.integers(0, 5000))
def test_halving_schedule(initial: int, halving: int, epoch: int) -> None:
    now = epoch_emission(epoch, initial, halving)
    assert epoch_emission(epoch + 1, initial, halving) <= now
    assert epoch_emission(epoch + halving, initial, halving) == now // 2
    assert epoch_emission(halving * initial.bit_length(), initial, halving) == 0


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 10**12), st.integers(1, 20))
def test_all_epochs_emit_less_than_twice_a_halving_period(initial: int, halving: int) -> None:
    total = sum(
        epoch_emission(e, initial, halving) for e in range(halving * (initial.bit_length() + 1))
    )
    assert initial * halving <= total < 2 * initial * halving


# --- apportioning -----------------------------------------------------------------------------


def test_apportion_examples() -> None:
    assert apportion(10, {"c": 1, "a": 1, "b": 1}) == {"a": 4, "b": 3, "c": 3}  # ties: lower key
    assert apportion(1, {"b": 1, "a": 1}) == {"a": 1, "b": 0}
    assert apportion(7, {"x": 2, "y": 5}) == {"x": 2, "y": 5}
    assert apportion(10, {"x": 1, "y": 2}) == {"x": 3, "y": 7}  # 3.33 and 6.67
    assert apportion(5, {"x": 0, "y": 3}) == {"y": 5}
    assert apportion(5, {"x": 0}) == {}
    assert apportion(0, {"x": 1}) == {"x": 0}
    with pytest.raises(InputError):
        apportion(5, {"x": -1, "y": 3})


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 2**63 - 1),
    st.dictionaries(st.sampled_from(PEOPLE), st.integers(0, 10**15), min_size=1),
    factors,
)
def test_apportion_is_exact_and_fair(total: int, weights: dict[str, int], factor: int) -> None:
    parts = apportion(total, weights)
    whole = sum(weights.values())
    if whole == 0:
        assert parts == {}
        return
    assert sum(parts.values()) == total
    assert set(parts) == {k for k, w in weights.items() if w}
    for key, part in parts.items():
        assert abs(Fraction(part) - Fraction(total * weights[key], whole)) < 1
    assert apportion(total, {k: w * factor for k, w in weights.items()}) == parts
    assert apportion(total, dict(reversed(list(weights.items())))) == parts


# --- whole epochs -----------------------------------------------------------------------------

EXAMPLE_MODELS = {
    "m1": ModelEpoch(
        creator="K1",
        tasks=10,
        confirmed=8,
        miners={"X": 400_000, "Y": 200_000},  # units their tasks burned, 600,000 in all
        backers={"P": 1},
    ),
    "m2": ModelEpoch(creator="K2"),  # no tasks, no miners served, no backers
}


def test_close_epoch_example() -> None:
    result = close_epoch(
        EpochInputs(0, EXAMPLE_SCORES, EXAMPLE_STAKES, EXAMPLE_MODELS),
        EpochParams(epoch_emission=1_000_000),
    )
    assert result.emission == 1_000_000
    # the miners' parts over the usage cap (below): m1's 39,703 and all of m2's 160,317
    assert result.unpaid == 200_020
    assert result.paid == 799_980
    assert result.missing == ("D",)
    m1, m2 = result.models
    # m1: q 760,000; its tasks burned 600,000, so usage U = 600,000 * 3,333 // 10,000 = 199,980
    # of a models' pot of 800,000: d = U * 5,000 * PPM // (800,000 * 2,500) = 499,950, and s =
    # 9/12 capped at the neutral 1/2 -> 760,000 * 0.7499875
    assert (m1.quality_ppm, m1.success_ppm, m1.demand_ppm, m1.score_ppm) == (
        760_000,
        500_000,
        499_950,
        569_990,
    )
    # m2: q 610,000; no tasks: s = 1/2, d = 0 -> 610,000 * 0.625
    assert (m2.quality_ppm, m2.success_ppm, m2.demand_ppm, m2.score_ppm) == (
        610_000,
        500_000,
        0,
        381_250,
    )
    # 800,000 for models: 479,366.3 and 320,633.7 (the leftover unit to m2), of which the
    # miners' parts over the usage cap are not minted
    assert (m1.reward + m1.capped, m2.reward + m2.capped) == (479_366, 320_634)
    assert (m1.reward, m1.capped, m2.reward, m2.capped) == (439_663, 39_703, 160_317, 160_317)
    assert [(v.address, v.agreement_ppm, v.reward) for v in result.validators] == [
        # 200,000 by stake x agreement 3,000,000 : 750,000 : 375,000 (floors 145,454, 36,363,
        # 18,181; the two leftover units to the largest remainders, C's .82 and B's .64)
        ("A", PPM, 145_454),
        ("B", 750_000, 36_364),
        ("C", 375_000, 18_182),
        ("D", 0, 0),
    ]
    assert result.credits == (
        Credit("A", 145_454, REASON_VALIDATOR),
        Credit("B", 36_364, REASON_VALIDATOR),
        Credit("C", 18_182, REASON_VALIDATOR),
        # 479,366: creator 143,809.8, miners 239,683, backers 95,873.2 -> +1 creator; the
        # miners' 239,683 capped at U = 199,980, shared 2:1 by the units their tasks burned
        Credit("K1", 143_810, REASON_CREATOR, "m1"),
        Credit("X", 133_320, REASON_MINER, "m1"),
        Credit("Y", 66_660, REASON_MINER, "m1"),
        Credit("P", 95_873, REASON_BACKER, "m1"),
        # 320,634: creator 96,190.2, miners 160,317, backers 64,126.8 -> +1 backers; nothing
        # burned for m2's tasks, so its miners' part is capped at 0; the backers' part goes to
        # the creator, who stands behind the model alone
        Credit("K2", 96_190, REASON_CREATOR, "m2"),
        Credit("K2", 64_127, REASON_CREATOR_BACKERS, "m2"),
    )
    doc = result.to_json()
    assert doc["missing"] == ["D"]
    assert doc["models"][0]["scores"][2] == {
        "validator": "C",
        "stake": 1,
        "raw_ppm": 100_000,
        "clipped_ppm": 700_000,
    }
    assert doc["credits"][-1] == {
        "address": "K2",
        "amount": 64_127,
        "reason": REASON_CREATOR_BACKERS,
        "model": "m2",
    }


def test_an_epoch_with_nobody_to_pay_leaves_it_all_unpaid() -> None:
    params = EpochParams(epoch_emission=1_000)
    nobody = close_epoch(EpochInputs(0, {}, {}, {}), params)
    assert (nobody.emission, nobody.unpaid, nobody.credits) == (1_000, 1_000, ())
    silent = close_epoch(EpochInputs(0, {}, {"A": 5}, EXAMPLE_MODELS), params)
    assert (silent.unpaid, silent.credits, silent.missing) == (1_000, (), ("A",))
    assert all(m.median_ppm is None and m.score_ppm == 0 for m in silent.models)


def test_validators_who_score_every_model_zero_do_not_take_the_models_pot() -> None:
    scores = {"A": {"m1": 0, "m2": 0}}
    result = close_epoch(
        EpochInputs(0, scores, {"A": 1}, EXAMPLE_MODELS), EpochParams(epoch_emission=1_000)
    )
    assert result.credits == (Credit("A", 200, REASON_VALIDATOR),)
    assert result.unpaid == 800


def test_reveals_from_outsiders_and_for_unknown_models_are_ignored() -> None:
    base = close_epoch(
        EpochInputs(3, EXAMPLE_SCORES, EXAMPLE_STAKES, EXAMPLE_MODELS), EpochParams()
    )
    noisy = {
        **{v: {**s, "m9": 0} for v, s in EXAMPLE_SCORES.items()},
        "outsider": {"m1": 0, "m2": 0},
    }
    assert close_epoch(EpochInputs(3, noisy, EXAMPLE_STAKES, EXAMPLE_MODELS), EpochParams()) == base


def test_emission_halves_at_the_halving_epoch() -> None:
    params = EpochParams(epoch_emission=1_000, halving_epochs=4)
    run = [
        close_epoch(EpochInputs(e, EXAMPLE_SCORES, EXAMPLE_STAKES, EXAMPLE_MODELS), params)
        for e in (3, 4)
    ]
    assert [r.emission for r in run] == [1_000, 500]
    assert [r.paid + r.unpaid for r in run] == [1_000, 500]


def test_params_are_checked_and_read_from_genesis_names() -> None:
    assert EpochParams.from_params({}) == EpochParams()
    assert EpochParams.from_params({"powr_clip_band_ppm": 7, "block_time_ms": 5}).clip_band_ppm == 7
    assert (
        EpochParams().creator_share_bps
        + EpochParams().miner_share_bps
        + EpochParams().backer_share_bps
        == BPS
    )
    with pytest.raises(InputError, match="sum to 10000"):
        EpochParams(creator_share_bps=3_001)
    with pytest.raises(InputError, match="powr_agreement_span_ppm"):
        EpochParams(agreement_span_ppm=0)
    for name, (default, low, high) in POWR_PARAMS.items():
        assert low <= default <= high, name


@st.composite
def epochs(draw: st.DrawFn) -> tuple[EpochInputs, EpochParams]:
    validators = draw(st.lists(st.sampled_from(VALIDATORS), unique=True, max_size=6))
    stakes = {v: draw(st.integers(0, 10**12)) for v in validators}
    model_ids = draw(st.lists(st.sampled_from(MODELS), unique=True, max_size=5))
    models = {}
    for model in model_ids:
        tasks = draw(st.integers(0, 50))
        models[model] = ModelEpoch(
            creator=draw(st.sampled_from(PEOPLE)),
            tasks=tasks,
            confirmed=draw(st.integers(0, tasks)),
            miners=draw(
                st.dictionaries(st.sampled_from(PEOPLE), st.integers(0, 10**12), max_size=4)
            ),
            backers=draw(
                st.dictionaries(st.sampled_from(PEOPLE), st.integers(0, 10**12), max_size=4)
            ),
        )
    revealers = draw(st.lists(st.sampled_from([*validators, "outsider"]), unique=True))
    scores = {
        v: draw(st.dictionaries(st.sampled_from([*model_ids, "unknown"]), ppms)) for v in revealers
    }
    creator = draw(st.integers(0, BPS))
    miners = draw(st.integers(0, BPS - creator))
    params = EpochParams(
        epoch_emission=draw(st.integers(0, 10**18)),
        halving_epochs=draw(st.integers(1, 50)),
        validator_share_bps=draw(st.integers(0, BPS)),
        creator_share_bps=creator,
        miner_share_bps=miners,
        backer_share_bps=BPS - creator - miners,
        clip_band_ppm=draw(ppms),
        agreement_span_ppm=draw(st.integers(1, PPM)),
        usage_cap_bps=draw(st.integers(0, POWR_PARAMS["powr_usage_cap_bps"][2])),
    )
    return EpochInputs(draw(st.integers(0, 200)), scores, stakes, models), params


def _unstaked(result: EpochResult) -> tuple[object, ...]:
    """The result without the stakes themselves (which a scaling test changes on purpose)."""
    return (
        result.emission,
        result.unpaid,
        result.credits,
        tuple((v.address, v.revealed, v.agreement_ppm, v.reward) for v in result.validators),
        tuple(
            (
                m.model,
                m.median_ppm,
                m.quality_ppm,
                m.score_ppm,
                m.reward,
                tuple((s.validator, s.raw_ppm, s.clipped_ppm) for s in m.scores),
            )
            for m in result.models
        ),
    )


@settings(max_examples=300, deadline=None)
@given(epochs())
def test_the_rewards_of_an_epoch_sum_exactly_to_its_emission(
    case: tuple[EpochInputs, EpochParams],
) -> None:
    inputs, params = case
    result = close_epoch(inputs, params)
    assert result.emission == epoch_emission(
        inputs.epoch, params.epoch_emission, params.halving_epochs
    )
    assert result.paid + result.unpaid == result.emission
    assert all(credit.amount > 0 for credit in result.credits)
    assert sum(m.reward for m in result.models) + sum(v.reward for v in result.validators) == (
        result.paid
    )
    assert all(v.reward == 0 for v in result.validators if not v.revealed)
    assert all(m.reward == 0 for m in result.models if m.score_ppm == 0)
    validator_pot = result.emission * params.validator_share_bps // BPS
    if any(v.stake * v.agreement_ppm for v in result.validators):
        assert sum(v.reward for v in result.validators) == validator_pot
    capped = sum(m.capped for m in result.models)
    if any(m.score_ppm for m in result.models):
        assert sum(m.reward for m in result.models) + capped == result.emission - validator_pot
    else:
        assert result.unpaid >= result.emission - validator_pot
    # the usage-tied part is bounded by what was burned: each model's miners get at most
    # usage_bound(burned), each within a unit of usage_bound of what its own tasks burned
    for m in result.models:
        info = inputs.models[m.model]
        bound = info.burned * params.usage_cap_bps // BPS
        mined = [c for c in result.credits if c.model == m.model and c.reason == REASON_MINER]
        assert sum(c.amount for c in mined) <= bound
        for c in mined:
            assert c.amount <= info.miners[c.address] * params.usage_cap_bps // BPS + 1


@settings(max_examples=200, deadline=None)
@given(epochs(), factors)
def test_scaling_every_stake_by_one_factor_changes_nothing(
    case: tuple[EpochInputs, EpochParams], factor: int
) -> None:
    inputs, params = case
    scaled = dataclasses.replace(
        inputs,
        validator_stakes={v: s * factor for v, s in inputs.validator_stakes.items()},
        models={
            m: dataclasses.replace(
                info,
                backers={b: s * factor for b, s in info.backers.items()},
            )
            for m, info in inputs.models.items()
        },
    )
    assert _unstaked(close_epoch(scaled, params)) == _unstaked(close_epoch(inputs, params))


V = TypeVar("V")


def _flip(mapping: Mapping[str, V]) -> dict[str, V]:
    return dict(reversed(list(mapping.items())))


@settings(max_examples=100, deadline=None)
@given(epochs())
def test_the_order_of_the_mappings_does_not_matter(case: tuple[EpochInputs, EpochParams]) -> None:
    inputs, params = case

    flipped = EpochInputs(
        inputs.epoch,
        _flip({v: _flip(scores) for v, scores in inputs.scores.items()}),
        _flip(inputs.validator_stakes),
        _flip(inputs.models),
    )
    assert close_epoch(flipped, params) == close_epoch(inputs, params)


def test_split_emission_gives_the_backers_share_without_backers_to_the_creator() -> None:
    params = EpochParams(creator_share_bps=5_000, miner_share_bps=3_000, backer_share_bps=2_000)
    models = {"m": ModelEpoch(creator="K", miners={"X": 0}, backers={"B": 0})}
    split = split_emission(1_000, {}, {"m": 1}, models, params)
    # the validator pot (no validator earned), and the miners' 240: nobody paid for a task
    assert split.unpaid == 200 + 240
    assert split.capped == {"m": 240}
    assert split.credits == (
        Credit("K", 400, REASON_CREATOR, "m"),
        Credit("K", 160, REASON_CREATOR_BACKERS, "m"),
    )


def test_the_miners_share_is_capped_by_what_usage_burned() -> None:
    """Washed tokens are worth what was burned for them: X's tasks burned 270 units and Y's 30,
    whatever tokens either claimed, so the miners' part of 1,000 is capped at 300 * 3,333 //
    10,000 = 99, shared 9:1 (89.1 and 9.9), and each miner's part at what its own tasks burned:
    X 270 * 3,333 // 10,000 = 89, Y 30 * 3,333 // 10,000 = 9 (the largest remainder would have
    given Y 10); the rest, 1,000 - 98, is not minted."""
    params = EpochParams(validator_share_bps=0)
    models = {"m": ModelEpoch(creator="K", miners={"X": 270, "Y": 30})}
    split = split_emission(2_000, {}, {"m": 1}, models, params)
    assert split.capped == {"m": 902} and split.unpaid == 902
    assert [(c.address, c.amount, c.reason) for c in split.credits] == [
        ("K", 600, REASON_CREATOR),
        ("X", 89, REASON_MINER),
        ("Y", 9, REASON_MINER),
        ("K", 400, REASON_CREATOR_BACKERS),
    ]


def test_scores_out_of_range_are_refused_even_without_stake() -> None:
    for stake in (0, 1):
        scores = {"A": {"m1": 500_000}, "Z": {"m1": PPM + 1}}
        with pytest.raises(InputError, match="score of Z for m1"):
            close_epoch(EpochInputs(0, scores, {"A": 1, "Z": stake}, EXAMPLE_MODELS), EpochParams())


def test_a_validators_reward_is_shared_with_its_delegators_pro_rata() -> None:
    """A's stake 3 is its own 1 and delegations of 1.5 and 0.5 (in units of 1,000,000): its
    145,454 go 1/3, 1/2 and 1/6 to the unit, and the totals are unchanged."""
    stakes = {**EXAMPLE_STAKES, "A": 3_000_000}
    plain = close_epoch(
        EpochInputs(0, EXAMPLE_SCORES, stakes, EXAMPLE_MODELS), EpochParams(epoch_emission=10**6)
    )
    shared = close_epoch(
        EpochInputs(
            0,
            EXAMPLE_SCORES,
            stakes,
            EXAMPLE_MODELS,
            delegations={"A": {"P1": 1_500_000, "P2": 500_000}},
        ),
        EpochParams(epoch_emission=10**6),
    )
    reward = next(v.reward for v in plain.validators if v.address == "A")
    assert [v.reward for v in shared.validators] == [v.reward for v in plain.validators]
    parts = {c.address: c for c in shared.credits if c.address in ("A", "P1", "P2")}
    assert sum(c.amount for c in parts.values()) == reward
    assert parts["P1"] == Credit("P1", parts["P1"].amount, REASON_DELEGATOR, validator="A")
    for address, share in (("A", 1 / 3), ("P1", 1 / 2), ("P2", 1 / 6)):
        assert abs(parts[address].amount - reward * share) < 1
    assert shared.paid + shared.unpaid == plain.paid + plain.unpaid == 10**6
    assert shared.unpaid == plain.unpaid


def test_the_validator_pool_is_paid_by_the_validators_weights() -> None:
    inputs = EpochInputs(0, EXAMPLE_SCORES, EXAMPLE_STAKES, EXAMPLE_MODELS)
    result = close_epoch(inputs, EpochParams(epoch_emission=1_000_000))
    credits = share_pool(1_001, result, {"B": {"P": 1}})
    assert sum(c.amount for c in credits) == 1_001
    # By stake x agreement, 3,000,000 : 750,000 : 375,000 for A, B, C (D revealed nothing:
    # nothing). B's whole stake (1) is P's delegation, so P takes B's part.
    by = {(c.address, c.reason): c.amount for c in credits}
    assert by == {("A", REASON_POOL): 728, ("P", REASON_DELEGATOR): 182, ("C", REASON_POOL): 91}
    nobody = close_epoch(
        EpochInputs(0, {}, EXAMPLE_STAKES, EXAMPLE_MODELS), EpochParams(epoch_emission=10)
    )
    assert share_pool(500, nobody, {}) == ()  # no weight: the pool waits for the next close
