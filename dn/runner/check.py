"""The verdict on a claimed answer, from the per-token values a checker's prefill pass computed.

"One model, two nodes" (DESIGN.md section 7): the generator decodes greedily and streams token
ids; the checker evaluates the prompt plus those ids in prefill passes and, for every claimed
token, records

    rank   how many vocabulary entries had a strictly higher logit than the claimed token
    gap    best logit minus the claimed token's logit (>= 0; 0 when the claim is the argmax)
    logit  the claimed token's raw logit (what a checker cannot guess without computing)

Greedy output is not bit-identical across thread counts, batch sizes or CPU/GPU, so an honest
answer is not always rank 0; but it is always near the top, while a token from another model, for
another prompt, or typed in by hand is far down the list. An answer is valid when

    every token:  rank <= max_rank  and  gap <= max_gap
    the answer:   share of rank-0 tokens >= min_top1   and   mean gap <= max_mean_gap
    and it ends properly: with an end-of-generation token, or at exactly max_tokens tokens.

The thresholds are genesis parameters; their defaults and the margins measured around them are in
docs/verification.md. Everything here is pure: no llama.cpp, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from dn.encoding import BPS, hash_hex


@dataclass(frozen=True)
class Thresholds:
    max_rank: int = 64
    max_gap: float = 8.0
    min_top1: float = 0.30
    max_mean_gap: float = 2.0

    @classmethod
    def from_params(cls, param: Any) -> Thresholds:
        """From a genesis (`genesis.param(name)`); integers there, milli-logits and bps."""
        return cls(
            max_rank=int(param("check_max_rank")),
            max_gap=param("check_max_gap_milli") / 1000,
            min_top1=param("check_min_top1_bps") / BPS,
            max_mean_gap=param("check_max_mean_gap_milli") / 1000,
        )


@dataclass(frozen=True)
class TokenValue:
    """What the checker computed for one claimed token."""

    token: int
    rank: int
    gap: float
    logit: float = 0.0

    def quantized(self) -> list[int]:
        """The committed form: token, rank, and gap and logit in thousandths of a logit."""
        return [self.token, self.rank, round(self.gap * 1000), round(self.logit * 1000)]

    @classmethod
    def from_quantized(cls, row: Sequence[int]) -> TokenValue:
        token, rank, gap, logit = row
        return cls(int(token), int(rank), gap / 1000, logit / 1000)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str  # "ok", or the first rule broken: "rank", "gap", "top1", "mean-gap",
    #              "truncated", "too-long", "empty"
    message: str
    tokens: int
    max_rank: int
    max_gap: float
    top1: float
    mean_gap: float
    worst: int | None  # index of the worst token, when a per-token rule failed

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "max_gap": round(self.max_gap, 3),
            "top1": round(self.top1, 4),
            "mean_gap": round(self.mean_gap, 3),
        }


def judge(
    values: Sequence[TokenValue],
    thresholds: Thresholds,
    *,
    max_tokens: int,
    ended: bool,
) -> Verdict:
    """Apply the rules above. `ended` says the last claimed token is an end-of-generation token
    (the generator claims it stopped on its own)."""
    n = len(values)
    max_rank = max((v.rank for v in values), default=0)
    max_gap = max((v.gap for v in values), default=0.0)
    top1 = sum(v.rank == 0 for v in values) / n if n else 0.0
    mean_gap = sum(v.gap for v in values) / n if n else 0.0

    def verdict(reason: str, message: str, worst: int | None = None) -> Verdict:
        return Verdict(reason == "ok", reason, message, n, max_rank, max_gap, top1, mean_gap, worst)

    if n == 0:
        return verdict("empty", "the answer has no tokens")
    if n > max_tokens:
        return verdict("too-long", f"{n} tokens claimed, the ticket allows {max_tokens}")
    for i, v in enumerate(values):
        if v.rank > thresholds.max_rank:
            return verdict("rank", f"token {i} has rank {v.rank} (limit {thresholds.max_rank})", i)
        if v.gap > thresholds.max_gap:
            return verdict(
                "gap",
                f"token {i} is {v.gap:.2f} below the best logit (limit {thresholds.max_gap:.2f})",
                i,
            )
    if top1 < thresholds.min_top1:
        return verdict(
            "top1",
            f"only {top1:.0%} of tokens are the checker's first choice "
            f"(at least {thresholds.min_top1:.0%} needed)",
        )
    if mean_gap > thresholds.max_mean_gap:
        return verdict(
            "mean-gap", f"mean gap {mean_gap:.2f} is above {thresholds.max_mean_gap:.2f}"
        )
    if not ended and n < max_tokens:
        return verdict(
            "truncated", f"the answer stops after {n} of {max_tokens} tokens without ending"
        )
    return verdict("ok", "every token is within the limits")


def commitment(values: Sequence[TokenValue]) -> str:
    """A compact commitment to what the checker computed: the hash of the quantized per-token
    values. The checker keeps the values; a validator who asks for them can check them against
    this hash and then against its own prefill pass (`consistent`), so a checker cannot approve
    without computing."""
    return quantized_commitment([v.quantized() for v in values])


def quantized_commitment(rows: Sequence[Sequence[int]]) -> str:
    """`commitment` of values already in their quantized form (as a miner keeps and sends them)."""
    return hash_hex([list(row) for row in rows])


@dataclass(frozen=True)
class Drift:
    """How far two honest computations of the same values may differ (different thread counts,
    batch sizes, CPU or GPU): per token, the gaps by at most `max_gap`; over the answer, the
    claimed tokens' logits by at most `max_mean_logit` on average. Genesis parameters
    (`dispute_*`); docs/verification.md has the margins."""

    max_gap: float = 4.0
    max_mean_logit: float = 1.0

    @classmethod
    def from_params(cls, param: Any) -> Drift:
        return cls(
            max_gap=param("dispute_max_gap_milli") / 1000,
            max_mean_logit=param("dispute_max_mean_logit_milli") / 1000,
        )


def consistent(
    claimed: Sequence[TokenValue], own: Sequence[TokenValue], drift: Drift
) -> tuple[bool, str]:
    """Whether values a checker committed to (`claimed`) could have come from computing what a
    validator computed (`own`) on other hardware. Logits are what give a lazy checker away: a
    greedy answer is mostly rank 0 and gap 0, which anyone can write down, but the claimed
    token's logit has to be computed."""
    if len(claimed) != len(own):
        return False, f"values for {len(claimed)} tokens, the answer has {len(own)}"
    for i, (c, o) in enumerate(zip(claimed, own, strict=True)):
        if c.token != o.token:
            return False, f"token {i} is {c.token} in the values, {o.token} in the answer"
        if abs(c.gap - o.gap) > drift.max_gap:
            return False, f"token {i}: gap {c.gap:.2f} claimed, {o.gap:.2f} computed"
    if own:
        mean = sum(abs(c.logit - o.logit) for c, o in zip(claimed, own, strict=True)) / len(own)
        if mean > drift.max_mean_logit:
            return False, f"the claimed logits are {mean:.2f} off on average"
    return True, "within drift"
