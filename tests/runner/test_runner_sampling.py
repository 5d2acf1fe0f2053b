"""Verifiable sampling, log-probabilities and stop strings on the real SmolLM2 model: the
generator decodes as the task's `Decoding` says and a checker with the same decoding confirms
the honest answer, and catches what a dishonest generator would change."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from dn.runner.check import Verdict
from dn.runner.llama import LoadedModel
from dn.runner.sampling import Decoding, StopScanner, first_stop, sampler_key
from tests.runner.test_runner_check import LIMITS
from tests.runner.test_runner_check import PROMPTS as CHECK_PROMPTS

PROMPTS = CHECK_PROMPTS[:3]

MAX_TOKENS = 48
SAMPLED = Decoding(temperature=0.7, top_p=0.95, key=sampler_key(seed=None, task="11" * 32))


@pytest.fixture(scope="module")
def model(smollm2_gguf: Path) -> Iterator[LoadedModel]:
    loaded = LoadedModel(smollm2_gguf, n_threads=2, slots=2)
    yield loaded
    loaded.close()


def chat(model: LoadedModel, text: str) -> str:
    return model.chat_prompt([{"role": "user", "content": text}])


def generate(model: LoadedModel, prompt: str, decoding: Decoding) -> list[int]:
    return list(model.generate(chat(model, prompt), MAX_TOKENS, decoding=decoding))


def check(
    model: LoadedModel,
    prompt: str,
    tokens: list[int],
    decoding: Decoding,
    logprobs: list[dict] | None = None,
) -> Verdict:
    with model.check(chat(model, prompt), MAX_TOKENS, LIMITS, decoding=decoding) as session:
        for i in range(0, len(tokens), 16):
            claims = None if logprobs is None else logprobs[i : i + 16]
            session.feed(tokens[i : i + 16], claims)
        return session.finish()


def test_a_sampled_answer_is_a_function_of_the_key(model: LoadedModel) -> None:
    other = replace(SAMPLED, key=sampler_key(seed=None, task="22" * 32))
    first = [generate(model, p, SAMPLED) for p in PROMPTS]
    again = [generate(model, p, SAMPLED) for p in PROMPTS]
    assert first == again
    assert first != [generate(model, p, other) for p in PROMPTS]
    greedy = [generate(model, p, Decoding()) for p in PROMPTS]
    assert first != greedy  # temperature 0.7 is not the argmax everywhere


def test_honest_sampled_answers_are_confirmed(model: LoadedModel) -> None:
    for prompt in PROMPTS:
        tokens = generate(model, prompt, SAMPLED)
        verdict = check(model, prompt, tokens, SAMPLED)
        assert verdict.ok, (prompt, verdict)
        assert verdict.max_gap < 1.0  # the sampler's own choice, up to batching drift


def test_a_tampered_sampled_answer_is_rejected(model: LoadedModel) -> None:
    vocab = model.n_vocab
    for n, prompt in enumerate(PROMPTS):
        tokens = generate(model, prompt, SAMPLED)
        tokens[5] = (tokens[5] * 7919 + 104_729 + n) % vocab  # a token nobody would sample
        verdict = check(model, prompt, tokens, SAMPLED)
        assert not verdict.ok and verdict.reason in {"rank", "gap"}, verdict
        assert verdict.worst == 5


def test_generator_log_probabilities_pass_the_check_and_made_up_ones_do_not(
    model: LoadedModel,
) -> None:
    decoding = replace(SAMPLED, logprobs=3)
    prompt = PROMPTS[0]
    stream = model.generate(chat(model, prompt), MAX_TOKENS, decoding=decoding)
    tokens = list(stream)
    claims = list(stream.logprobs)
    assert len(claims) == len(tokens)
    assert all(c["token"] == t and len(c["top"]) == 3 for c, t in zip(claims, tokens, strict=True))
    assert all(c["top"][0][1] >= c["top"][1][1] >= c["top"][2][1] for c in claims)
    assert check(model, prompt, tokens, decoding, claims).ok
    lowered = [dict(c) for c in claims]
    lowered[7] = {**lowered[7], "logprob": lowered[7]["logprob"] - 5.0}
    verdict = check(model, prompt, tokens, decoding, lowered)
    assert verdict.reason == "logprobs" and "token 7" in verdict.message
    assert check(model, prompt, tokens, decoding, None).reason == "logprobs"


def test_an_answer_must_stop_at_the_first_match_of_a_stop_string(model: LoadedModel) -> None:
    prompt = PROMPTS[1]
    tokens = generate(model, prompt, Decoding())
    decoder = model.text_decoder()
    pieces = [decoder.piece(t).text for t in tokens]
    word = next(p for p in pieces[8:] if len(p.strip()) >= 3).strip()
    decoding = Decoding(stop=(word,))
    at = first_stop(pieces, decoding.stop)
    assert at is not None and at < len(tokens)
    # What the generator streams: the text up to the match, the tokens up to the one that made it.
    scanner = StopScanner(decoding.stop)
    shown, count = "", 0
    while not scanner.matched:
        shown += scanner.feed(pieces[count])
        count += 1
    assert count == at and word not in shown and "".join(pieces).startswith(shown)
    assert check(model, prompt, tokens[:at], decoding).ok
    assert check(model, prompt, tokens, decoding).reason == "past-stop"
    assert check(model, prompt, tokens[: at - 1], decoding).reason == "truncated"
