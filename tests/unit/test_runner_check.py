"""The verdict rules on per-token values (pure; the real prefill pass is in tests/runner)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dn.runner.check import Thresholds, TokenValue, commitment, judge

LIMITS = Thresholds(max_rank=10, max_gap=5.0, min_top1=0.5, max_mean_gap=1.0)


def honest(n: int) -> list[TokenValue]:
    return [TokenValue(100 + i, 0 if i % 4 else 1, 0.0 if i % 4 else 0.2) for i in range(n)]


def test_an_answer_within_every_limit_is_accepted() -> None:
    verdict = judge(honest(20), LIMITS, max_tokens=20, ended=False)  # stopped at max_tokens
    assert verdict.ok and verdict.reason == "ok"
    assert verdict.tokens == 20 and verdict.max_rank == 1


def test_each_rule_rejects_with_its_own_reason() -> None:
    values = honest(20)
    high_rank = values[:5] + [TokenValue(7, 11, 0.5)] + values[6:]
    assert judge(high_rank, LIMITS, max_tokens=20, ended=True).reason == "rank"
    assert judge(high_rank, LIMITS, max_tokens=20, ended=True).worst == 5
    big_gap = values[:3] + [TokenValue(7, 2, 5.5)] + values[4:]
    assert judge(big_gap, LIMITS, max_tokens=20, ended=True).reason == "gap"
    rarely_first = [TokenValue(i, 1, 0.1) for i in range(20)]
    assert judge(rarely_first, LIMITS, max_tokens=20, ended=True).reason == "top1"
    drifting = [TokenValue(i, i % 2, 2.2 * (i % 2)) for i in range(20)]
    assert judge(drifting, LIMITS, max_tokens=20, ended=True).reason == "mean-gap"
    assert judge(values[:12], LIMITS, max_tokens=20, ended=False).reason == "truncated"
    assert judge(values, LIMITS, max_tokens=19, ended=True).reason == "too-long"
    assert judge([], LIMITS, max_tokens=19, ended=True).reason == "empty"


def test_an_answer_that_ends_itself_early_is_not_truncated() -> None:
    assert judge(honest(12), LIMITS, max_tokens=20, ended=True).ok


def test_limits_are_inclusive() -> None:
    edge = [TokenValue(1, 0, 0.0)] * 9 + [TokenValue(2, 10, 5.0)]
    assert judge(edge, LIMITS, max_tokens=10, ended=True).ok


def test_thresholds_come_from_integer_genesis_params() -> None:
    params = {
        "check_max_rank": 20,
        "check_max_gap_milli": 4500,
        "check_min_top1_bps": 6000,
        "check_max_mean_gap_milli": 750,
    }
    assert Thresholds.from_params(params.__getitem__) == Thresholds(20, 4.5, 0.6, 0.75)


@given(
    st.lists(
        st.tuples(st.integers(0, 50_000), st.integers(0, 1000), st.floats(0, 30)),
        min_size=1,
        max_size=40,
    )
)
def test_the_commitment_binds_every_value(raw: list[tuple[int, int, float]]) -> None:
    values = [TokenValue(t, r, g) for t, r, g in raw]
    base = commitment(values)
    assert commitment(list(values)) == base
    changed = list(values)
    t, r, g = raw[-1]
    changed[-1] = TokenValue(t, r + 1, g)
    assert commitment(changed) != base
    changed[-1] = TokenValue(t, r, g + 0.01)
    assert commitment(changed) != base
