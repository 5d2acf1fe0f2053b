"""Standard errors of PoWR scores (DESIGN.md section 8): the error of an evaluation's quality,
the optional `errors` of `powr.reveal` and the consensus error at the close, and the
leaderboard's ranks with ties (`dn.powr.ranking`).

Expected numbers are worked by hand from the definitions: the standard error is the sample
standard deviation (n - 1) over sqrt(n); two scores are tied when |a - b| <= 1.96 *
sqrt(se_a² + se_b²).
"""

from __future__ import annotations

import itertools
import math
import random

import pytest

from dn.chain.powr_rules import powr_commitment
from dn.chain.types import Tx
from dn.encoding import hash_hex
from dn.errors import InputError
from dn.powr.evaluate import Evaluation, ItemResult
from dn.powr.grading import standard_error
from dn.powr.ranking import distinguishable, rank_label, score_error, tie_groups
from dn.wallet.keys import Keypair
from tests.unit.test_chain_models import GEMMA, SMOL
from tests.unit.test_chain_powr import SALT, V0, V1, V2, E, PowrChain, new_chain, opened
from tests.unit.test_chain_state import assert_rejected

# --- the standard error of a quality ---------------------------------------------------------


def test_standard_error_of_grades() -> None:
    # 3 right of 4: mean 0.75, squared deviations 3 * 0.0625 + 0.5625 = 0.75, / 3 = 0.25,
    # sd 0.5, se 0.5 / sqrt(4) = 0.25
    assert standard_error([1, 1, 1, 0]) == pytest.approx(0.25, abs=1e-12)
    # 5 right of 10: sd = sqrt(10 * 0.25 / 9), se = sd / sqrt(10) = sqrt(1/36) = 1/6
    assert standard_error([1, 0] * 5) == pytest.approx(1 / 6, abs=1e-12)
    assert standard_error([1.0] * 8) == 0.0  # all alike: no spread
    assert standard_error([0]) == 0.5  # one grade: the bound for a grade in [0, 1]
    assert standard_error([]) == 0.0
    with pytest.raises(InputError):
        standard_error([1, 2])


def test_an_evaluation_reports_its_standard_error() -> None:
    grades = [1, 0, 0, 0, 1, 0, 0, 0]  # mean 0.25; sd = sqrt(8 * 0.1875 / 7); se = sqrt(3/112)
    results = tuple(
        ItemResult(f"i{n}", "exact", float(g), "", None, 1, 0.0, 0.0) for n, g in enumerate(grades)
    )
    evaluation = Evaluation(results, quality=0.25, seconds=1.0, llama_s=0.5, model_kind="base")
    assert evaluation.stderr == pytest.approx(math.sqrt(3 / 112), abs=1e-12)
    shown = evaluation.to_json()
    assert shown["stderr"] == pytest.approx(0.163663, abs=1e-6)
    assert shown["model_kind"] == "base"


# --- ties ------------------------------------------------------------------------------------


def test_the_tie_rule_is_1_96_combined_errors() -> None:
    # combined error sqrt(30_000² + 40_000²) = 50_000; 1.96 of it is 98_000
    assert not distinguishable(500_000, 30_000, 402_000, 40_000)  # 98_000 apart: tied
    assert distinguishable(500_000, 30_000, 401_999, 40_000)  # 98_001 apart
    assert not distinguishable(7, None, 7, None)  # no errors: equal scores tie
    assert distinguishable(8, None, 7, 0)


def test_ranks_with_ties() -> None:
    # a and b tied, c clear of both: =1 =1 3
    entries = [(800_000, 50_000), (750_000, 50_000), (400_000, 50_000)]
    ranks = tie_groups(entries)
    assert ranks == [1, 1, 3]
    assert [rank_label(r, ranks) for r in ranks] == ["=1", "=1", "3"]
    # without errors every distinct score has its own rank
    assert tie_groups([(9, None), (8, None), (8, None), (1, None)]) == [1, 2, 2, 4]
    assert tie_groups([]) == []
    with pytest.raises(ValueError):
        tie_groups([(1, None), (2, None)])


def test_a_chain_of_ties_is_one_group() -> None:
    # a ~ b (diff 0.1 <= 1.96 * 0.1 = 0.196 with se 0.07071 each) and b ~ c, but a - c = 0.2 >
    # 0.196: still one group, since b cannot be put on either side
    se = 70_711
    entries = [(900_000, se), (800_000, se), (700_000, se)]
    assert distinguishable(900_000, se, 700_000, se)
    assert tie_groups(entries) == [1, 1, 1]


def test_models_in_different_groups_always_differ_by_more_than_the_error() -> None:
    rng = random.Random(14)
    for _ in range(300):
        entries = sorted(
            ((rng.randrange(0, 1_000_001), rng.choice([None, rng.randrange(0, 200_000)]))
             for _ in range(rng.randrange(1, 8))),
            key=lambda e: -e[0],
        )  # fmt: skip
        ranks = tie_groups(entries)
        for (i, a), (k, b) in itertools.combinations(enumerate(entries), 2):
            if ranks[i] != ranks[k]:  # ranked apart only when the difference exceeds the error
                assert ranks[i] < ranks[k] and distinguishable(*a, *b)
            if not distinguishable(*a, *b):  # tied pairs share a rank
                assert ranks[i] == ranks[k]
        # competition ranking: a rank is 1 + the number of models above the group
        for rank in ranks:
            assert rank == 1 + sum(1 for r in ranks if r < rank)
        assert ranks == sorted(ranks) and (not ranks or ranks[0] == 1)


def test_the_score_error_scales_like_the_score() -> None:
    # no tasks: s = 0.5, d = 0, the score is q * (0.5 + 0.25 * 0.5) = q * 0.625
    assert score_error(100_000, 500_000, 0) == 62_500
    # full demand, s = 0.5: q * (0.5 + 0.125 + 0.25) = q * 0.875
    assert score_error(40_000, 500_000, 1_000_000) == 35_000
    assert score_error(1, 500_000, 0) == 1  # rounded up, never to 0


# --- on the chain ----------------------------------------------------------------------------


@pytest.fixture
def chain() -> PowrChain:
    return new_chain()


def commit_with_errors(
    chain: PowrChain, kp: Keypair, scores: dict[str, int], errors: dict[str, int]
) -> Tx:
    commitment = powr_commitment(0, kp.address, scores, SALT, errors)
    return chain.send(kp, "powr.commit", {"epoch": 0, "commitment": commitment})


def reveal_with_errors(
    chain: PowrChain, kp: Keypair, scores: dict[str, int], errors: dict[str, int] | None
) -> Tx:
    payload = {"epoch": 0, "scores": scores, "salt": SALT, "errors": errors}
    return chain.send(kp, "powr.reveal", payload)


def test_a_commitment_without_errors_hashes_as_before() -> None:
    before = hash_hex({"epoch": 3, "validator": V0.address, "scores": {SMOL: 5}, "salt": SALT})
    assert powr_commitment(3, V0.address, {SMOL: 5}, SALT) == before
    assert powr_commitment(3, V0.address, {SMOL: 5}, SALT, {SMOL: 1}) != before


def test_reveals_with_errors_and_the_consensus_error(chain: PowrChain) -> None:
    opened(
        chain,
        commit_with_errors(chain, V0, {SMOL: 600_000}, {SMOL: 100_000}),
        commit_with_errors(chain, V1, {SMOL: 600_000}, {SMOL: 120_000}),
        chain.commit_scores(V2, 0, {SMOL: 600_000}),  # no errors, as before they existed
    )
    chain.advance_to(2)
    # errors must cover exactly the scored models, and are bound by the commitment
    scores = {SMOL: 600_000}
    assert_rejected(chain, reveal_with_errors(chain, V0, scores, {GEMMA: 1}), "bad-errors")
    assert_rejected(chain, reveal_with_errors(chain, V0, scores, None), "bad-errors")
    wrong = reveal_with_errors(chain, V0, scores, {SMOL: 99_999})
    assert_rejected(chain, wrong, "reveal-mismatch")
    chain.commit(
        [
            reveal_with_errors(chain, V0, {SMOL: 600_000}, {SMOL: 100_000}),
            reveal_with_errors(chain, V1, {SMOL: 600_000}, {SMOL: 120_000}),
            chain.reveal(V2, 0, {SMOL: 600_000}),
        ]
    )
    assert chain.state.get(f"powr:0:errors:{V0.address}") == {SMOL: 100_000}
    assert chain.state.get(f"powr:0:errors:{V2.address}") is None
    chain.advance_to(E + 1)  # epoch 0 closed
    model = chain.result(0)["models"][SMOL]
    # equal voices, errors 100_000 and 120_000: the lower weighted median is 100_000
    assert model["error"] == 100_000
    assert model["quality"] == 600_000


def test_a_close_without_errors_records_none(chain: PowrChain) -> None:
    opened(chain, chain.commit_scores(V0, 0, {SMOL: 600_000}))
    chain.advance_to(2)
    chain.commit([chain.reveal(V0, 0, {SMOL: 600_000})])
    chain.advance_to(E + 1)
    assert "error" not in chain.result(0)["models"][SMOL]
