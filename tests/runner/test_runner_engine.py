"""A model that serves many sequences at once (dn/runner/engine.py), on the real SmolLM2 model.

The attack first: five check sessions on one model, opened from a pool of four threads the way a
miner's check routes used to run them, must all end — each confirmed or refused as busy — and
not wedge the model for good. Then what replaces the lock that caused it: a slot per sequence,
refused at once beyond the slots, freed when its caller goes quiet, at its deadline or when the
model closes; and batching that leaves the answers what the protocol verifies.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import pytest

from dn.chain.genesis import default_params
from dn.errors import TaskError
from dn.runner.check import Drift, Thresholds, Verdict, consistent
from dn.runner.llama import LoadedModel

PROMPTS = [
    "Write a short paragraph about the history of bread.",
    "Explain in simple words why the sky is blue.",
    "List three tips for keeping a small vegetable garden healthy.",
    "Name three famous painters and one painting by each.",
    "Why do cats purr?",
]
MAX_TOKENS = 24
LIMITS = Thresholds.from_params(default_params().__getitem__)
DRIFT = Drift.from_params(default_params().__getitem__)
POOL_THREADS = 4  # the miner's check pool before this work
BURST = 5  # one more session than the pool has threads


@pytest.fixture(scope="module")
def model(smollm2_gguf: Path) -> Iterator[LoadedModel]:
    loaded = LoadedModel(smollm2_gguf, n_threads=2, n_ctx=512)
    yield loaded
    loaded.llm.close()


def chat(model: LoadedModel, text: str) -> str:
    return model.chat_prompt([{"role": "user", "content": text}])


def is_busy(exc: BaseException) -> bool:
    return isinstance(exc, TaskError) and exc.reason == "busy"


def test_five_check_sessions_from_a_four_thread_pool_all_end(model: LoadedModel) -> None:
    """The deadlock a devnet hit: sessions 2-5 used to block inside the pool on the model's lock
    while session 1 held it, so session 1's next chunk, queued behind them, never ran."""
    prompts = [chat(model, text) for text in PROMPTS[:BURST]]
    answers = [list(model.generate(p, MAX_TOKENS)) for p in prompts]
    pool = ThreadPoolExecutor(max_workers=POOL_THREADS)
    sessions = [model.check(p, MAX_TOKENS, LIMITS) for p in prompts]
    # Every check opens before the first chunk of any answer arrives (the gateway opens the
    # check when the query starts, then streams the generator's chunks to it).
    opens: list[Future[Any]] = [pool.submit(s.__enter__) for s in sessions]
    outcomes: list[str] = []
    end = time.monotonic() + 90
    try:
        for session, opened, answer in zip(sessions, opens, answers, strict=True):
            try:
                opened.result(timeout=max(0.1, end - time.monotonic()))
            except FutureTimeout:
                outcomes.append("stuck opening")
                continue
            except TaskError as exc:
                outcomes.append("busy" if is_busy(exc) else f"error {exc.reason}")
                continue
            try:
                for i in range(0, len(answer), 8):
                    pool.submit(session.feed, answer[i : i + 8]).result(
                        timeout=max(0.1, end - time.monotonic())
                    )
                verdict: Verdict = pool.submit(session.finish).result(
                    timeout=max(0.1, end - time.monotonic())
                )
                outcomes.append("confirmed" if verdict.ok else f"rejected {verdict.reason}")
            except FutureTimeout:
                outcomes.append("stuck checking")
            finally:
                session.close()
    finally:
        _unwedge(sessions, opens)
        pool.shutdown(wait=False, cancel_futures=True)
    assert all(o in {"confirmed", "busy"} for o in outcomes), outcomes
    assert outcomes.count("confirmed") >= 2, outcomes
    # And the model still serves: a check right after the burst is confirmed.
    with model.check(prompts[0], MAX_TOKENS, LIMITS) as again:
        again.feed(answers[0])
        assert again.finish().ok


def _unwedge(sessions: list[Any], opens: list[Future[Any]]) -> None:
    """Let blocked opens through so the test process can end (each close hands the model to
    the next waiter under the old lock); bounded in rounds and time."""
    for _ in range(2 * len(sessions)):
        for session, opened in zip(sessions, opens, strict=True):
            if opened.done():
                session.close()
        if all(o.done() for o in opens):
            break
        time.sleep(0.5)
    for session in sessions:
        session.close()


def test_a_check_abandoned_mid_answer_does_not_block_the_next(smollm2_gguf: Path) -> None:
    model = LoadedModel(smollm2_gguf, n_threads=2, n_ctx=512, slots=2, idle_s=2.0)
    try:
        prompt = chat(model, PROMPTS[0])
        answer = list(model.generate(prompt, MAX_TOKENS))
        abandoned = model.check(prompt, MAX_TOKENS, LIMITS).__enter__()
        abandoned.feed(answer[:8])  # ... and then its gateway goes away: no feed, no close
        start = time.monotonic()
        with model.check(prompt, MAX_TOKENS, LIMITS) as session:
            session.feed(answer)
            assert session.finish().ok
        assert time.monotonic() - start < 30
        # The abandoned one holds its slot only until the idle limit: then a full model frees.
        held = model.check(prompt, MAX_TOKENS, LIMITS).__enter__()
        with pytest.raises(TaskError) as busy:
            model.check(prompt, MAX_TOKENS, LIMITS).__enter__()
        assert busy.value.reason == "busy"
        held.close()
        freed = time.monotonic()
        both: list[Any] = []
        _poll(lambda: _open_all(model, prompt, 2, both), 15)
        assert len(both) == 2 and time.monotonic() - freed < 10  # idle 2 s, then a look
        for one in both:
            with one:
                one.feed(answer)
                assert one.finish().ok
        with pytest.raises(TaskError) as idle:
            abandoned.feed(answer[8:16])
        assert idle.value.reason == "idle"
    finally:
        model.close()


def _open_all(model: LoadedModel, prompt: str, n: int, into: list[Any]) -> bool:
    """Open `n` check sessions at once into `into`, or none (closing any that opened)."""
    try:
        for _ in range(n):
            into.append(model.check(prompt, MAX_TOKENS, LIMITS).__enter__())
    except TaskError as exc:
        for session in into:
            session.close()
        into.clear()
        if exc.reason != "busy":
            raise
        return False
    return True


def _poll(probe: Any, seconds: float) -> None:
    """Call `probe` until it raises or returns true, for at most `seconds`."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if probe():
            return
        time.sleep(0.2)


def test_beyond_its_slots_a_model_is_busy_at_once(smollm2_gguf: Path) -> None:
    """Admission control: no queue behind the slots, even while the model is working."""
    model = LoadedModel(smollm2_gguf, n_threads=2, n_ctx=512, slots=2)
    try:
        prompt = chat(model, PROMPTS[1])
        streams = [model.generate(prompt, 200), model.generate(prompt, 200)]
        next(streams[0])
        for attempt in (
            lambda: model.generate(prompt, 8),
            lambda: model.check(prompt, 8, LIMITS).__enter__(),
        ):
            start = time.monotonic()
            with pytest.raises(TaskError) as caught:
                attempt()
            assert caught.value.reason == "busy"
            assert caught.value.http_status == 503
            assert time.monotonic() - start < 0.5
        streams[1].close()  # a slot is free again as soon as its stream is closed
        assert len(list(model.generate(prompt, 4))) == 4
        streams[0].close()
    finally:
        model.close()


def test_an_unread_stream_and_a_session_past_its_deadline_free_their_slots(
    smollm2_gguf: Path,
) -> None:
    model = LoadedModel(smollm2_gguf, n_threads=2, n_ctx=512, slots=1, idle_s=1.0)
    try:
        prompt = chat(model, PROMPTS[2])
        stream = model.generate(prompt, 200)
        next(stream)  # the reader goes away without closing the stream
        start = time.monotonic()
        _poll(lambda: _opens(model, prompt), 15)
        assert time.monotonic() - start < 10  # idle 1 s, then the scheduler's next look
        with pytest.raises(TaskError) as idle:
            for _ in range(500):
                next(stream)
        assert idle.value.reason == "idle"
        # A session that stays busy still ends at its deadline.
        session = model.check(prompt, 200, LIMITS, deadline_s=1.0).__enter__()
        answer = list(range(100, 110))
        with pytest.raises(TaskError) as late:
            _poll(lambda: session.feed(answer[:1]) and False, 10)
        assert late.value.reason == "deadline"
        assert _opens(model, prompt)
    finally:
        model.close()


def _opens(model: LoadedModel, prompt: str) -> bool:
    try:
        model.generate(prompt, 2).close()
    except TaskError as exc:
        if exc.reason != "busy":
            raise
        return False
    return True


def test_closing_a_working_model_returns_promptly_and_fails_its_callers(
    smollm2_gguf: Path,
) -> None:
    model = LoadedModel(smollm2_gguf, n_threads=2, n_ctx=512, slots=4)
    prompt = chat(model, PROMPTS[3])
    ended: list[str] = []
    streaming = threading.Semaphore(0)

    def read() -> None:
        try:
            for i, _ in enumerate(model.generate(prompt, 400)):
                if i == 0:
                    streaming.release()
            ended.append("finished")
        except TaskError as exc:
            ended.append(exc.reason)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    session = model.check(prompt, 400, LIMITS).__enter__()
    # Close while all three stream: at their first token, not after a fixed time (on a quiet
    # machine an answer can end on its own within a second).
    for _ in readers:
        assert streaming.acquire(timeout=60), "a stream never started"
    start = time.monotonic()
    model.close()
    assert time.monotonic() - start < 5
    for reader in readers:
        reader.join(10)
    assert not any(r.is_alive() for r in readers)
    assert ended == ["closed"] * 3
    with pytest.raises(TaskError) as closed:
        session.feed([100])
    assert closed.value.reason == "closed"


def test_answers_and_checks_in_a_batch_are_what_the_protocol_accepts(model: LoadedModel) -> None:
    """Four answers generated at once and checked at once, against each alone: the checker
    accepts every batched answer, and the values a batched check commits to are within the
    drift a referee allows of the values computed alone."""
    prompts = [chat(model, text) for text in PROMPTS[:4]]
    alone = [list(model.generate(p, MAX_TOKENS)) for p in prompts]
    alone_values = [_values(model, p, a) for p, a in zip(prompts, alone, strict=True)]
    together: list[list[int]] = [[] for _ in prompts]
    values: list[Any] = [None] * len(prompts)

    def answer_and_check(i: int) -> None:
        together[i] = list(model.generate(prompts[i], MAX_TOKENS))
        values[i] = _values(model, prompts[i], alone[i])

    threads = [threading.Thread(target=answer_and_check, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for i, prompt in enumerate(prompts):
        with model.check(prompt, MAX_TOKENS, LIMITS) as session:
            session.feed(together[i])
            assert session.finish().ok, (i, together[i], alone[i])
        assert consistent(values[i], alone_values[i], DRIFT) == (True, "within drift")


def _values(model: LoadedModel, prompt: str, tokens: list[int]) -> Any:
    with model.check(prompt, MAX_TOKENS, LIMITS) as session:
        for i in range(0, len(tokens), 8):
            session.feed(tokens[i : i + 8])
        assert session.finish().ok
        return list(session.values)


LEFT_OPEN = """
import sys, threading
from dn.runner.check import Thresholds
from dn.runner.llama import LoadedModel
model = LoadedModel(sys.argv[1], n_threads=1, n_ctx=512, slots=3)
prompt = model.chat_prompt([{"role": "user", "content": "Count to fifty."}])
stream = model.generate(prompt, 400)
next(stream)
threading.Thread(target=lambda: list(model.generate(prompt, 400)), daemon=True).start()
session = model.check(prompt, 400, Thresholds()).__enter__()
print("leaving", flush=True)
"""


def test_a_process_that_leaves_streams_and_sessions_open_still_exits(smollm2_gguf: Path) -> None:
    """At exit the engines stop before the interpreter freezes their threads (one frozen while
    holding the engine's lock would hang every finalizer that closes a stream)."""
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", LEFT_OPEN, str(smollm2_gguf)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "leaving"
    assert time.monotonic() - start < 60
