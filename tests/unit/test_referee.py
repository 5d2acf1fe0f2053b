"""The referee's decision (dn/node/validator/referee.py `decide`), the drift comparison it rests on
(dn/runner/check.py `consistent`) and who may read a miner's task records
(dn/node/market/records.py), as pure functions; the records themselves are in
test_market_records.py. The devnet test with cheating miners is
tests/functional/test_disputes.py."""

from __future__ import annotations

import pytest

from dn.chain import disputes
from dn.node.market.records import request_ok, sign_request
from dn.node.validator.referee import decide
from dn.runner.check import Drift, Thresholds, TokenValue, Verdict, consistent, judge
from dn.wallet.keys import Keypair

LIMITS = Thresholds()
DRIFT = Drift()
MAX = 32
VALIDATOR = Keypair.from_seed(b"validator".ljust(32, b"."))
STRANGER = Keypair.from_seed(b"stranger".ljust(32, b"."))


def honest(n: int = 20) -> list[TokenValue]:
    return [TokenValue(100 + i, i % 5 == 0, 0.3 * (i % 5 == 0), 12.0 + i / 7) for i in range(n)]


def drifted(values: list[TokenValue]) -> list[TokenValue]:
    """The same computation on other hardware: small moves of gaps and logits."""
    return [TokenValue(v.token, v.rank, v.gap + 0.2, v.logit - 0.3) for v in values]


def tampered(values: list[TokenValue]) -> list[TokenValue]:
    bad = list(values)
    bad[4] = TokenValue(7, 900, 11.5, 1.0)
    return bad


def ruling(
    *, confirmed: bool, own: list[TokenValue], claimed: list[TokenValue] | None, **kw: object
) -> dict[str, str]:
    verdict = kw.get("own_verdict") or judge(own, LIMITS, max_tokens=MAX, ended=True)
    faults, _ = decide(
        confirmed=confirmed,
        own=verdict,  # type: ignore[arg-type]
        own_values=own,
        claimed=claimed,
        thresholds=LIMITS,
        drift=DRIFT,
        max_tokens=MAX,
        ended=True,
    )
    return faults


G, C = "generator", "checker"


def test_an_honest_task_has_no_fault() -> None:
    values = honest()
    assert ruling(confirmed=True, own=values, claimed=drifted(values)) == {}


def test_a_bad_answer_rejected_by_an_honest_checker_blames_the_generator() -> None:
    bad = tampered(honest())
    assert ruling(confirmed=False, own=bad, claimed=drifted(bad)) == {G: disputes.INVALID_ANSWER}


def test_a_spiteful_checker_that_rejected_a_valid_answer_is_at_fault() -> None:
    values = honest()
    # Its own values accept the answer, yet it rejected it.
    assert ruling(confirmed=False, own=values, claimed=values) == {C: disputes.REJECTED_VALID}
    # Or it made up a bad value to justify the rejection: not what the answer gives.
    assert ruling(confirmed=False, own=values, claimed=tampered(values)) == {
        C: disputes.VALUES_MISMATCH
    }


def test_a_lazy_checker_is_caught_by_its_made_up_logits() -> None:
    values = honest()
    lazy = [TokenValue(v.token, 0, 0.0, 0.0) for v in values]
    assert ruling(confirmed=True, own=values, claimed=lazy) == {C: disputes.VALUES_MISMATCH}
    # … and when the answer it waved through was bad, the generator is at fault too.
    bad = tampered(values)
    lazy_bad = [TokenValue(v.token, 0, 0.0, 0.0) for v in bad]
    assert ruling(confirmed=True, own=bad, claimed=lazy_bad) == {
        C: disputes.VALUES_MISMATCH,
        G: disputes.INVALID_ANSWER,
    }


def test_a_checker_that_approved_what_its_own_values_reject_is_at_fault() -> None:
    bad = tampered(honest())
    assert ruling(confirmed=True, own=bad, claimed=bad) == {
        C: disputes.APPROVED_INVALID,
        G: disputes.INVALID_ANSWER,
    }


def test_drift_at_the_edge_slashes_nobody() -> None:
    """One token just past the rank limit on the checker's hardware, just inside it on the
    referee's: both computed honestly; the honest generator is not slashed."""
    values = honest()
    edge_checker = list(values)
    edge_checker[6] = TokenValue(values[6].token, LIMITS.max_rank + 1, 3.0, 10.0)
    edge_own = list(values)
    edge_own[6] = TokenValue(values[6].token, LIMITS.max_rank - 5, 2.6, 10.2)
    assert ruling(confirmed=False, own=edge_own, claimed=edge_checker) == {}
    assert ruling(confirmed=True, own=edge_checker, claimed=edge_own) == {}


def test_a_wrong_shape_is_the_generators_fault_whatever_the_values() -> None:
    shape = Verdict(False, "bad-token", "not in the vocabulary", 5, 0, 0.0, 0.0, 0.0, None)
    assert ruling(confirmed=False, own=[], claimed=None, own_verdict=shape) == {
        G: disputes.INVALID_ANSWER
    }
    assert ruling(confirmed=True, own=[], claimed=None, own_verdict=shape) == {
        G: disputes.INVALID_ANSWER,
        C: disputes.APPROVED_INVALID,
    }


def test_a_checker_without_its_values_is_at_fault() -> None:
    values = honest()
    assert ruling(confirmed=True, own=values, claimed=None) == {C: disputes.NO_VALUES}
    bad = tampered(values)
    assert ruling(confirmed=False, own=bad, claimed=None) == {
        C: disputes.NO_VALUES,
        G: disputes.INVALID_ANSWER,
    }


@pytest.mark.parametrize(
    ("change", "agrees"),
    [
        (lambda v: v, True),
        (drifted, True),
        (lambda v: v[:-1], False),  # one value short
        (lambda v: [TokenValue(v[0].token + 1, 0, 0.0, 0.0), *v[1:]], False),  # another token
        (lambda v: [TokenValue(x.token, x.rank, x.gap + 4.5, x.logit) for x in v], False),
        (lambda v: [TokenValue(x.token, x.rank, x.gap, x.logit + 1.5) for x in v], False),
    ],
)
def test_consistent_allows_drift_and_nothing_more(change: object, agrees: bool) -> None:
    values = honest()
    assert consistent(change(values), values, DRIFT)[0] is agrees  # type: ignore[operator]


def test_values_survive_their_quantized_form() -> None:
    v = TokenValue(42, 3, 1.2346, -7.891)
    assert v.quantized() == [42, 3, 1235, -7891]
    assert TokenValue.from_quantized(v.quantized()) == TokenValue(42, 3, 1.235, -7.891)


def test_only_a_validators_signed_request_reads_a_record() -> None:
    task, chain = "cd" * 32, "devnet-1"
    validators = [VALIDATOR.address]
    body = sign_request(chain, task, VALIDATOR)
    assert request_ok(chain, task, body, validators)
    assert not request_ok(chain, "ef" * 32, body, validators)  # another task
    assert not request_ok("devnet-2", task, body, validators)  # another chain
    assert not request_ok(chain, task, sign_request(chain, task, STRANGER), validators)
    forged = {**sign_request(chain, task, STRANGER), "validator": VALIDATOR.address}
    assert not request_ok(chain, task, forged, validators)
    assert not request_ok(chain, task, {"validator": VALIDATOR.address, "sig": "zz"}, validators)
    assert not request_ok(chain, task, None, validators)
