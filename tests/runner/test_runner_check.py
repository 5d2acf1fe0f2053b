"""Calibration of the prefill check on the real SmolLM2 model (DESIGN.md section 7).

Honest answers generated with other thread counts and batch sizes than the checker's must be
accepted; a swapped model, a swapped prompt, one tampered token and a truncated answer must each
be rejected. The thresholds are the genesis defaults; docs/verification.md records the margins.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dn.chain.genesis import default_params
from dn.runner.check import Drift, Thresholds, TokenValue, Verdict, consistent
from dn.runner.llama import LoadedModel

PROMPTS = [
    "Write a short paragraph about the history of bread.",
    "Explain in simple words why the sky is blue.",
    "List three tips for keeping a small vegetable garden healthy.",
]
MAX_TOKENS = 96
LIMITS = Thresholds.from_params(default_params().__getitem__)


@pytest.fixture(scope="module")
def checker(smollm2_gguf: Path) -> Iterator[LoadedModel]:
    model = LoadedModel(smollm2_gguf, n_threads=2, n_batch=512)
    yield model
    model.llm.close()


def check(model: LoadedModel, prompt: str, tokens: list[int], chunk: int = 16) -> Verdict:
    with model.check(prompt, MAX_TOKENS, LIMITS) as session:
        for i in range(0, len(tokens), chunk):
            session.feed(tokens[i : i + chunk])
        return session.finish()


def chat(model: LoadedModel, text: str) -> str:
    return model.chat_prompt([{"role": "user", "content": text}])


_ANSWERS: dict[str, list[int]] = {}


def answer(checker: LoadedModel, prompt: str) -> list[int]:
    """The checker's own greedy answer to `prompt` (deterministic: computed once per module)."""
    if prompt not in _ANSWERS:
        _ANSWERS[prompt] = list(checker.generate(prompt, MAX_TOKENS))
    return list(_ANSWERS[prompt])


@pytest.mark.parametrize(("threads", "batch"), [(1, 512), (2, 512), (1, 8), (2, 8)])
def test_honest_answers_from_other_settings_are_accepted(
    smollm2_gguf: Path, checker: LoadedModel, threads: int, batch: int
) -> None:
    generator = LoadedModel(smollm2_gguf, n_threads=threads, n_batch=batch)
    try:
        for text in PROMPTS:
            prompt = chat(generator, text)
            tokens = list(generator.generate(prompt, MAX_TOKENS))
            assert 8 <= len(tokens) <= MAX_TOKENS
            # Token by token once (the slowest way in); in chunks and whole for every setting.
            chunks = (1, 16, MAX_TOKENS) if (threads, batch) == (1, 512) else (16, MAX_TOKENS)
            for chunk in chunks:
                verdict = check(checker, prompt, tokens, chunk)
                assert verdict.ok, (threads, batch, text, chunk, verdict.to_json())
    finally:
        generator.llm.close()


def test_chunking_moves_the_values_only_by_drift(checker: LoadedModel) -> None:
    """Batch shape changes llama.cpp's float sums (the reason ranks are not all 0); the values
    move by far less than the thresholds allow."""
    prompt = chat(checker, PROMPTS[0])
    tokens = answer(checker, prompt)
    seen = []
    for chunk in (1, 7, MAX_TOKENS):
        with checker.check(prompt, MAX_TOKENS, LIMITS) as session:
            for i in range(0, len(tokens), chunk):
                session.feed(tokens[i : i + chunk])
            assert session.finish().ok
            seen.append(session.values)
    assert [v.token for v in seen[0]] == [v.token for v in seen[2]] == tokens
    for a, b in zip(seen[0], seen[2], strict=True):
        assert abs(a.gap - b.gap) < 0.5 and abs(a.rank - b.rank) <= 3


def test_a_checkers_values_are_reproducible_and_made_up_ones_are_not(
    smollm2_gguf: Path, checker: LoadedModel
) -> None:
    """What a referee relies on (dn/node/validator/referee.py): a second computation on other
    settings gives the same values within `Drift`, while values written down without computing
    (what a greedy answer mostly looks like: rank 0, gap 0) or one made-up bad gap do not."""
    other = LoadedModel(smollm2_gguf, n_threads=1, n_batch=8)
    try:
        drift = Drift.from_params(default_params().__getitem__)
        for text in PROMPTS[:2]:
            prompt = chat(checker, text)
            tokens = answer(checker, prompt)
            computed = []
            for model, chunk in ((checker, 16), (other, 5)):
                with model.check(prompt, MAX_TOKENS, LIMITS) as session:
                    for i in range(0, len(tokens), chunk):
                        session.feed(tokens[i : i + chunk])
                    assert session.finish().ok
                    computed.append(list(session.values))
            mine, theirs = computed
            assert all(abs(v.logit) > 1.0 for v in mine)  # real logits, not placeholders
            assert consistent(theirs, mine, drift) == (True, "within drift")
            lazy = [TokenValue(v.token, 0, 0.0, 0.0) for v in mine]
            assert not consistent(lazy, mine, drift)[0]
            spite = list(mine)
            spite[3] = TokenValue(mine[3].token, 900, mine[3].gap + 9.0, mine[3].logit - 9.0)
            assert not consistent(spite, mine, drift)[0]
    finally:
        other.llm.close()


def test_replaying_the_generators_own_steps_gives_rank_zero_everywhere(
    checker: LoadedModel,
) -> None:
    """Fed one token at a time, the check repeats the generator's exact computation (same
    context, same batch shapes), so every claimed token is the argmax: no off-by-one between a
    token and the logits that predict it."""
    prompt = chat(checker, PROMPTS[1])
    tokens = answer(checker, prompt)
    with checker.check(prompt, MAX_TOKENS, LIMITS) as session:
        for token in tokens:
            session.feed([token])
        assert [(v.rank, v.gap) for v in session.values] == [(0, 0.0)] * len(tokens)


def test_one_tampered_token_is_rejected(checker: LoadedModel) -> None:
    for text in PROMPTS:
        prompt = chat(checker, text)
        tokens = answer(checker, prompt)
        for position in (0, len(tokens) // 2, len(tokens) - 2):
            tampered = list(tokens)
            # A plausible word instead of the model's choice.
            tampered[position] = checker.tokenize(" banana")[-1]
            verdict = check(checker, prompt, tampered)
            assert not verdict.ok and verdict.reason in {"rank", "gap"}, verdict.to_json()
            assert verdict.worst == position


def test_a_swapped_prompt_is_rejected(checker: LoadedModel) -> None:
    tokens = answer(checker, chat(checker, PROMPTS[0]))
    verdict = check(checker, chat(checker, PROMPTS[1]), tokens)
    assert not verdict.ok and verdict.reason in {"rank", "gap", "top1", "mean-gap"}


def test_a_truncated_answer_is_rejected(checker: LoadedModel) -> None:
    prompt = chat(checker, PROMPTS[2])
    tokens = answer(checker, prompt)
    assert checker.is_eog(tokens[-1]) or len(tokens) == MAX_TOKENS
    verdict = check(checker, prompt, tokens[: len(tokens) // 2])
    assert not verdict.ok and verdict.reason == "truncated"
    # Ending it early with an end-of-generation token is caught by the rank of that token.
    cut = tokens[: len(tokens) // 2] + [checker.llm.token_eos()]
    assert not check(checker, prompt, cut).ok


def test_an_answer_from_another_model_is_rejected(checker: LoadedModel, gemma_gguf: Path) -> None:
    gemma = LoadedModel(gemma_gguf, n_threads=2)
    try:
        for text in PROMPTS[:2]:  # bench/calibrate.py runs six; two keep the suite quick
            own_ids = list(gemma.generate(chat(gemma, text), MAX_TOKENS))
            prompt = chat(checker, text)
            # Naive: Gemma's own token ids.
            assert not check(checker, prompt, own_ids).ok
            # Smarter: Gemma's text, re-tokenized with SmolLM2's tokenizer, ended properly.
            decoder = gemma.text_decoder()
            answer = "".join(decoder.piece(t).text for t in own_ids) + decoder.flush()
            retokenized = checker.llm.tokenize(answer.encode(), add_bos=False, special=False)
            claimed = retokenized[: MAX_TOKENS - 1] + [checker.llm.token_eos()]
            verdict = check(checker, prompt, claimed)
            assert not verdict.ok, (text, verdict.to_json())
    finally:
        gemma.llm.close()


def test_garbage_token_ids_and_tokens_after_the_end_are_rejected(checker: LoadedModel) -> None:
    prompt = chat(checker, PROMPTS[0])
    assert check(checker, prompt, [5, checker.n_vocab + 3]).reason == "bad-token"
    assert check(checker, prompt, [5, -1]).reason == "bad-token"
    tokens = answer(checker, prompt)
    eos = checker.llm.token_eos()
    assert check(checker, prompt, tokens[:5] + [eos] + tokens[5:8], chunk=50).reason == "after-end"
    assert check(checker, prompt, tokens[:5] + [eos] + tokens[5:8], chunk=6).reason == "after-end"
    assert check(checker, prompt, tokens * 3).reason == "too-long"
    # Once refused, later chunks are still counted (the gateway's offsets stay in step and the
    # checker's attestation names every claimed token), but no longer scored.
    with checker.check(prompt, MAX_TOKENS, LIMITS) as session:
        assert session.feed([5, checker.n_vocab + 3]) == []
        assert session.feed([6, 7]) == []
        assert session.tokens == [5, checker.n_vocab + 3, 6, 7] and session.values == []
        assert session.finish().reason == "bad-token"


def test_too_long_a_prompt_is_refused_before_any_work(checker: LoadedModel) -> None:
    from dn.errors import TaskError

    with pytest.raises(TaskError) as caught:
        list(checker.generate("word " * 3000, MAX_TOKENS))
    assert caught.value.reason == "too-long"


def test_loading_models_side_by_side_keeps_stdout_and_stderr(smollm2_gguf: Path) -> None:
    """llama-cpp-python points fds 1 and 2 at /dev/null while it loads; loads in parallel
    threads (a validator's PoWR and referee runners, two devnet miners warming up) must not
    leave them there, or every later log line of the node is lost."""
    before = [(os.fstat(fd).st_dev, os.fstat(fd).st_ino) for fd in (1, 2)]

    def load(into: list[LoadedModel]) -> None:
        into.append(LoadedModel(smollm2_gguf, n_threads=1, n_ctx=256))

    for _ in range(4):
        loaded: list[LoadedModel] = []
        threads = [threading.Thread(target=load, args=(loaded,)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for model in loaded:
            model.llm.close()
        assert len(loaded) == 3
        assert [(os.fstat(fd).st_dev, os.fstat(fd).st_ino) for fd in (1, 2)] == before


def test_the_runner_caches_loaded_models_and_evicts_the_oldest(
    smollm2_gguf: Path, gemma_gguf: Path, tmp_path: Path
) -> None:
    """One engine per file, shared by every role (a miner generates and checks on one context);
    the least recently used file goes first, and goes only once its open work has ended."""
    from dn.runner.llama import Runner

    copy = tmp_path / "copy.gguf"
    copy.write_bytes(smollm2_gguf.read_bytes())
    runner = Runner(n_threads=1, max_loaded=2, n_ctx=512, slots=2)
    try:
        first = runner.model(smollm2_gguf, "generate")
        assert runner.model(smollm2_gguf, "check") is first
        assert [role for _, role in runner.loaded()] == ["generate", "check"]
        stream = first.generate(chat(first, PROMPTS[0]), 8)
        runner.model(gemma_gguf, "check")
        runner.model(copy, "generate")  # evicts the first file, whose stream is still open
        assert [Path(path).name for path, _ in runner.loaded()] == [gemma_gguf.name, copy.name]
        assert len(list(stream)) == 8  # the evicted model finishes what it was doing
        assert runner.model(smollm2_gguf, "generate") is not first  # reloaded after eviction
    finally:
        runner.close()


def test_gpu_layers_are_chosen_automatically(smollm2_gguf: Path) -> None:
    from dn.runner.llama import auto_gpu_layers, gpu_offload_supported

    assert auto_gpu_layers() == (-1 if gpu_offload_supported() else 0)
    assert auto_gpu_layers(3) == 3
    model = LoadedModel(smollm2_gguf, n_threads=1, n_ctx=256, n_gpu_layers=0)
    try:
        assert model.n_gpu_layers == 0
    finally:
        model.llm.close()


@pytest.mark.gpu
def test_gpu_offloaded_answers_are_accepted_by_a_cpu_checker(
    smollm2_gguf: Path, checker: LoadedModel
) -> None:
    from dn.runner.llama import gpu_offload_supported

    if not gpu_offload_supported():
        pytest.skip("this llama.cpp build has no GPU offload")
    gpu = LoadedModel(smollm2_gguf, n_gpu_layers=-1)
    try:
        for text in PROMPTS:
            prompt = chat(gpu, text)
            tokens = list(gpu.generate(prompt, MAX_TOKENS))
            verdict = check(checker, prompt, tokens)
            assert verdict.ok, verdict.to_json()
            with gpu.check(prompt, MAX_TOKENS, LIMITS) as session:  # and the other way round
                session.feed(answer(checker, prompt))
                assert session.finish().ok
    finally:
        gpu.llm.close()
