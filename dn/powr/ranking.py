"""Ranking models by score with their standard errors: ties where a difference is within the error
(DESIGN.md section 8, `dn powr leaderboard`). Pure integer arithmetic on ppm values, no I/O.

The rule. Two models with scores a and b and standard errors se_a and se_b are *tied* when

    |a - b| <= 1.96 * sqrt(se_a² + se_b²)

the two-sided 95 % bound of the difference of two independent estimates (`distinguishable`
checks it exactly, in integers: 10,000 (a - b)² > 196² (se_a² + se_b²)). A missing error
counts as 0, so scores without errors rank as plain numbers, equal scores tied.

Ranks. Ties are not transitive (a tied with b, b with c, a clearly above c), so a rank cannot
be read off pairs alone. The tie groups are the connected components of the tie relation: sort
by score, and join into one group every run of models from one model down to any model it is
tied with. Every model of a group is then ranked above every model of a later group only
because its score is above by more than the error — for *every* pair across two groups, which is
the point (`tie_groups`, tested). The price is that a chain of ties can make a long group. A
group's rank is one more than the number of models above it ("competition" ranking: 1, =2, =2,
4); a rank shared by several models is shown as "=2" (`rank_label`).

Errors of the PoWR score. Validators reveal the standard error of the quality q. The score is
q * mix // (BPS * PPM) with mix fixed by success s and demand d (`consensus.powr_score`), which
the chain observed and nobody estimated, so the score's error is that of q scaled by the same
factor (`score_error`).
"""

from __future__ import annotations

from collections.abc import Sequence

from dn.encoding import BPS
from dn.powr.consensus import (
    SCORE_WEIGHT_DEMAND_BPS,
    SCORE_WEIGHT_QUALITY_BPS,
    SCORE_WEIGHT_SUCCESS_BPS,
)
from dn.powr.params import PPM

Z_NUM, Z_DEN = 196, 100  # z = 1.96: the two-sided 95 % bound


def distinguishable(a: int, se_a: int | None, b: int, se_b: int | None) -> bool:
    """True when scores a and b differ by more than 1.96 times their combined standard error."""
    sa, sb = se_a or 0, se_b or 0
    return Z_DEN**2 * (a - b) ** 2 > Z_NUM**2 * (sa * sa + sb * sb)


def tie_groups(entries: Sequence[tuple[int, int | None]]) -> list[int]:
    """For (score, error) entries sorted by score, highest first: each entry's rank, 1 + the
    number of entries in earlier tie groups (see the module docstring). ValueError when the
    entries are not sorted."""
    n = len(entries)
    for i in range(1, n):
        if entries[i][0] > entries[i - 1][0]:
            raise ValueError("entries must be sorted by score, highest first")
    joined = [False] * n  # joined[k]: entry k is in the group of entry k - 1
    for k in range(1, n):
        for j in range(k):
            if not distinguishable(*entries[j], *entries[k]):
                for i in range(j + 1, k + 1):
                    joined[i] = True
                break
    ranks: list[int] = []
    for k in range(n):
        ranks.append(ranks[k - 1] if joined[k] else k + 1)
    return ranks


def rank_label(rank: int, ranks: Sequence[int]) -> str:
    """ "=2" when another entry shares rank 2, else "2"."""
    return f"={rank}" if sum(1 for r in ranks if r == rank) > 1 else str(rank)


def score_error(quality_error: int, success: int, demand: int) -> int:
    """The standard error of the PoWR score in ppm, from that of the quality: scaled by the
    score's factor (W_Q * PPM + W_S * s + W_D * d) / (BPS * PPM), rounded up."""
    mix = (
        SCORE_WEIGHT_QUALITY_BPS * PPM
        + SCORE_WEIGHT_SUCCESS_BPS * success
        + SCORE_WEIGHT_DEMAND_BPS * demand
    )
    return -(-quality_error * mix // (BPS * PPM))
