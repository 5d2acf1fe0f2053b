"""Verifiable sampling, stop strings and log-probabilities (dn/runner/sampling.py), without a
model: the numbers come from the definitions (Gumbel's mean and spread, softmax, the nucleus
rule), not from the functions under test."""

from __future__ import annotations

import math

import llama_cpp  # noqa: F401  # numpy after llama_cpp, as the runner imports them
import numpy as np
import pytest

from dn.runner.sampling import (
    NUCLEUS_SLACK,
    OUTSIDE_GAP,
    Decoding,
    StopScanner,
    choose,
    first_stop,
    gumbel,
    log_softmax,
    logprob_problem,
    nucleus,
    sampled_value,
    sampler_key,
    token_logprobs,
    valid_logprobs,
)

KEY = sampler_key(seed=None, task="ab" * 32)


def test_the_noise_is_a_function_of_key_and_position_and_is_standard_gumbel() -> None:
    a = gumbel(KEY, 0, 50_000)
    assert np.array_equal(a, gumbel(KEY, 0, 50_000))
    assert not np.array_equal(a, gumbel(KEY, 1, 50_000))
    assert not np.array_equal(a, gumbel(sampler_key(seed=1, task=""), 0, 50_000))
    # Gumbel(0, 1): mean is the Euler-Mascheroni constant, standard deviation pi / sqrt(6).
    assert a.mean() == pytest.approx(0.5772, abs=0.03)
    assert a.std() == pytest.approx(math.pi / math.sqrt(6), abs=0.03)


def test_the_key_comes_from_the_seed_when_given_else_from_the_task() -> None:
    assert sampler_key(seed=7, task="a") == sampler_key(seed=7, task="b")
    assert sampler_key(seed=None, task="a") != sampler_key(seed=None, task="b")
    assert sampler_key(seed=7, task="a") != sampler_key(seed=8, task="a")


def test_sampling_draws_from_softmax_of_logits_over_temperature() -> None:
    logits = np.array([2.0, 1.0, 0.0, -1.0], dtype=np.float32)
    temperature = 0.7
    decoding = Decoding(temperature=temperature, key=KEY)
    draws = 6000
    counts = np.bincount([choose(logits, decoding, i) for i in range(draws)], minlength=4)
    expected = np.exp(logits / temperature) / np.exp(logits / temperature).sum()
    for count, p in zip(counts, expected, strict=True):
        sigma = math.sqrt(draws * p * (1 - p))
        assert abs(count - draws * p) < 5 * sigma, (counts, expected * draws)


def test_greedy_is_the_argmax() -> None:
    logits = np.array([0.5, 3.0, 2.9], dtype=np.float32)
    assert choose(logits, Decoding(), 0) == 1


def test_the_nucleus_is_the_fewest_most_probable_entries_reaching_top_p() -> None:
    probs = np.array([0.05, 0.5, 0.15, 0.3])
    logits = np.log(probs)
    # Sorted: 0.5 (1), 0.3 (3), 0.15 (2), 0.05 (0); mass ahead of each: 0, 0.5, 0.8, 0.95.
    assert nucleus(logits, 1.0, 0.79).tolist() == [False, True, False, True]
    assert nucleus(logits, 1.0, 0.81).tolist() == [False, True, True, True]
    assert nucleus(logits, 1.0, 1.0).all()
    decoding = Decoding(temperature=1.0, top_p=0.79, key=KEY)
    assert {choose(logits, decoding, i) for i in range(300)} == {1, 3}


def test_the_checker_finds_the_samplers_choice_at_rank_zero_and_an_outsider_far_off() -> None:
    rng = np.random.default_rng(5)
    logits = rng.normal(0, 3, 1000).astype(np.float32)
    decoding = Decoding(temperature=0.7, top_p=0.9, key=KEY)
    for index in range(20):
        token = choose(logits, decoding, index)
        rank, gap, logit = sampled_value(logits, decoding, index, token)
        assert (rank, gap) == (0, 0.0)
        assert logit == pytest.approx(float(logits[token]))
    mask = nucleus(logits.astype(np.float64), 0.7, 0.9 + NUCLEUS_SLACK)
    outsider = int(np.flatnonzero(~mask)[0])
    assert sampled_value(logits, decoding, 0, outsider)[1] == OUTSIDE_GAP


def test_log_probabilities_are_log_softmax_and_the_top_ones_come_first() -> None:
    logits = np.array([1.0, 3.0, 2.0, 0.0], dtype=np.float32)
    lp = log_softmax(logits)
    assert np.exp(lp).sum() == pytest.approx(1.0)
    assert lp[1] == pytest.approx(3.0 - math.log(sum(math.exp(x) for x in (1, 3, 2, 0))))
    claim = token_logprobs(logits, 2, 2)
    assert claim["token"] == 2 and claim["logprob"] == pytest.approx(lp[2])
    assert [t for t, _ in claim["top"]] == [1, 2]
    assert valid_logprobs(claim, 2, 4)
    assert not valid_logprobs({**claim, "top": claim["top"][:1]}, 2, 4)
    assert not valid_logprobs({**claim, "token": 9}, 2, 4)


def test_claimed_log_probabilities_off_by_more_than_the_margin_are_caught() -> None:
    logits = np.array([1.0, 3.0, 2.0, 0.0], dtype=np.float32)
    honest = token_logprobs(logits, 1, 2)
    assert logprob_problem([honest], [logits + 0.01], max_gap=4.0) is None
    inflated = {**honest, "logprob": honest["logprob"] + 5.0}
    assert "token 0" in str(logprob_problem([inflated], [logits], max_gap=4.0))
    lied_top = {**honest, "top": [[0, -0.01], honest["top"][1]]}
    assert logprob_problem([lied_top], [logits], max_gap=1.0) is not None


def test_stop_scanner_shows_the_text_up_to_the_first_match_and_holds_back_partial_ones() -> None:
    scanner = StopScanner(["END", "\n\n"])
    shown = [scanner.feed(p) for p in ["Hello wor", "ld. E", "N", "D more"]]
    assert "".join(shown) == "Hello world. "
    assert shown[1] == "ld. "  # "E" could start "END": held back
    assert scanner.matched
    assert scanner.feed("later") == ""
    other = StopScanner(["END"])
    assert other.feed("An E") == "An " and other.feed("ND") == "" and other.matched
    free = StopScanner(["END"])
    assert free.feed("An E") == "An " and free.feed("xit") == "Exit" and not free.matched
    assert free.feed("E") == "" and free.flush() == "E"
    assert StopScanner([]).feed("anything") == "anything"


def test_first_stop_counts_the_pieces_up_to_the_first_match() -> None:
    assert first_stop(["a", "b", "E", "ND", "x", "END"], ["END"]) == 4
    assert first_stop(["a", "b"], ["END"]) is None
    assert first_stop(["xy"], []) is None
    assert first_stop(["a\n", "\nb"], ["\n\n", "zz"]) == 2


@pytest.mark.parametrize("top_p", [0.3, 0.9, 0.95, 0.999])
def test_the_nucleus_of_a_large_vocabulary_is_the_one_a_full_sort_gives(top_p: float) -> None:
    rng = np.random.default_rng(11)
    for spread in (0.5, 3.0):  # a flat and a peaked distribution over 49,152 entries
        logits = rng.normal(0, spread, 49_152).astype(np.float32)
        scaled = logits.astype(np.float64) / 0.7
        probs = np.exp(scaled - scaled.max())
        probs /= probs.sum()
        order = np.argsort(-probs, kind="stable")
        ahead = np.empty_like(probs)
        ahead[order] = np.cumsum(probs[order]) - probs[order]
        assert np.array_equal(nucleus(logits, 0.7, top_p), ahead < top_p)
