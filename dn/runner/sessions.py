"""The ways a caller holds one sequence of a model's engine (`dn/runner/engine.py`).

    TokenStream     token ids as the engine decodes them (`LoadedModel.generate`)
    CheckSession    an incremental prefill check of a claimed answer (`LoadedModel.check`)
    Exclusive       `with model.lock:` — one sequence whose positions the caller places itself
                    (`LoadedModel._decode`; PoWR scoring)

Each holds a slot, never a lock across a wait for the network: a caller that goes quiet keeps
its own slot until the engine's idle limit frees it, and every other sequence goes on.
"""

from __future__ import annotations

import collections
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from dn.runner.check import Drift, Thresholds, TokenValue, Verdict, judge
from dn.runner.sampling import (
    GREEDY,
    Decoding,
    choose,
    first_stop,
    logprob_problem,
    sampled_value,
    token_logprobs,
    valid_logprobs,
)

if TYPE_CHECKING:
    from dn.runner.engine import Sequence as EngineSequence
    from dn.runner.llama import LoadedModel

POWR_WAIT_S = 120.0  # how long `with model.lock:` waits for a free slot before Busy


class Picker:
    """Chooses each generated token on the engine's thread (`sampling.choose`) and, when the
    task asks for them, keeps its log-probabilities for the reader (in order, each recorded
    before its token is handed out)."""

    def __init__(self, decoding: Decoding) -> None:
        self.decoding = decoding
        self.index = 0
        self.logprobs: collections.deque[dict[str, Any]] = collections.deque()

    def __call__(self, row: Any) -> int:
        token = choose(row, self.decoding, self.index)
        if self.decoding.logprobs is not None:
            self.logprobs.append(token_logprobs(row, token, self.decoding.logprobs))
        self.index += 1
        return token


class TokenStream(Iterator[int]):
    """The tokens of one sequence as the engine decodes them (see `generate`); with
    log-probabilities asked for, `logprobs` holds one entry per token read or ready."""

    def __init__(self, seq: EngineSequence, picker: Picker | None = None) -> None:
        self._seq: EngineSequence | None = seq
        self.logprobs = picker.logprobs if picker is not None else collections.deque()

    def __next__(self) -> int:
        if self._seq is None:
            raise StopIteration
        token = self._seq.next_token()
        if token is None:
            self.close()
            raise StopIteration
        return token

    def close(self) -> None:
        """Leave the engine (frees the slot); what was not read is dropped."""
        seq, self._seq = self._seq, None
        if seq is not None:
            seq.close()

    def __enter__(self) -> TokenStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        _close_quietly(self)


class Exclusive:
    """`with model.lock:` holds one sequence of the engine for callers that place positions
    themselves (`_decode`, `_truncate`; PoWR scoring). Holders take turns; a holder waits for a
    free slot (it is local work, never a network task) up to `POWR_WAIT_S`."""

    def __init__(self, model: LoadedModel) -> None:
        self._model = model
        self._lock = threading.Lock()
        self.seq: EngineSequence | None = None

    def __enter__(self) -> Exclusive:
        self._lock.acquire()
        try:
            self.seq = self._model.engine.open_waiting(POWR_WAIT_S)
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        seq, self.seq = self.seq, None
        if seq is not None:
            seq.close()
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()


class CheckSession:
    """An incremental prefill check of one claimed answer. Use as a context manager (it holds
    a slot of the model's engine; entering takes it, `Busy` when none is free): `feed()` chunks
    of claimed token ids as they stream in, then `finish()` for the verdict. Each chunk is
    evaluated in one engine step (batched with whatever else runs), reusing the KV cells of the
    prompt and of the chunks before it."""

    def __init__(
        self,
        model: LoadedModel,
        prompt: str,
        max_tokens: int,
        thresholds: Thresholds,
        *,
        deadline_s: float | None = None,
        decoding: Decoding = GREEDY,
        drift: Drift | None = None,
    ) -> None:
        self.model = model
        self.decoding = decoding
        self.drift = drift or Drift()
        self.prompt_tokens = model.tokenize(prompt)
        model._fits(len(self.prompt_tokens), max_tokens)
        self.max_tokens = max_tokens
        self.thresholds = thresholds
        self.values: list[TokenValue] = []
        self.tokens: list[int] = []
        self.deadline_s = deadline_s
        self._pending: Any = None  # logits that predict the next claimed token
        self._problem: Verdict | None = None
        self._seq: EngineSequence | None = None

    def __enter__(self) -> CheckSession:
        if self._seq is not None:
            return self  # entered already (opened by hand, then used in a `with`)
        self._seq = self.model.engine.open(deadline_s=self.deadline_s)
        try:
            self._pending = self._seq.eval(self.prompt_tokens, all_rows=False)[-1]
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Leave the engine (frees the slot). The verdict stays available."""
        seq, self._seq = self._seq, None
        if seq is not None:
            seq.close()

    def __del__(self) -> None:
        _close_quietly(self)

    def _refuse(self, reason: str, message: str) -> Verdict:
        self._problem = Verdict(False, reason, message, len(self.tokens), 0, 0.0, 0.0, 0.0, None)
        return self._problem

    def feed(
        self, tokens: Sequence[int], logprobs: Sequence[Any] | None = None
    ) -> list[TokenValue]:
        """Score the next claimed tokens (and, when the task asks for log-probabilities, the
        generator's claims of them, one per token); returns their values (empty once the
        answer is already refused)."""
        import numpy as np

        if self._seq is None:
            raise RuntimeError("feed() outside the session's `with` block")
        tokens = [int(t) for t in tokens]
        want = self.decoding.logprobs
        if self._problem is None and tokens:
            if any(not 0 <= t < self.model.n_vocab for t in tokens):
                self._refuse("bad-token", "a claimed token id is not in the model's vocabulary")
            elif want is not None and (
                logprobs is None
                or len(logprobs) != len(tokens)
                or not all(
                    valid_logprobs(c, want, self.model.n_vocab) and c["token"] == t
                    for c, t in zip(logprobs, tokens, strict=False)
                )
            ):
                self._refuse("logprobs", "the generator's log-probabilities are missing or wrong")
            elif (self.tokens and self.model.is_eog(self.tokens[-1])) or any(
                self.model.is_eog(t) for t in tokens[:-1]
            ):
                self._refuse("after-end", "tokens claimed after an end-of-generation token")
            elif len(self.tokens) + len(tokens) > self.max_tokens:
                self._refuse(
                    "too-long",
                    f"{len(self.tokens) + len(tokens)} tokens claimed, the ticket allows "
                    f"{self.max_tokens}",
                )
        if self._problem is not None:
            # Refused for its shape: keep counting what is claimed (so chunks stay in order and
            # the verdict names every token), but score nothing more.
            self.tokens.extend(tokens)
            return []
        if not tokens:
            return []
        rows = self._seq.eval(tokens, all_rows=True)
        predictors = np.vstack([self._pending[None, :], rows[:-1]])
        self._pending = rows[-1]
        if self.decoding.sampled:
            start = len(self.tokens)
            fresh = [
                TokenValue(t, *sampled_value(row, self.decoding, start + i, t))
                for i, (t, row) in enumerate(zip(tokens, predictors, strict=True))
            ]
        else:
            claimed = predictors[np.arange(len(tokens)), tokens]
            ranks = (predictors > claimed[:, None]).sum(axis=1)
            gaps = predictors.max(axis=1) - claimed
            fresh = [
                TokenValue(t, int(r), float(g), float(c))
                for t, r, g, c in zip(tokens, ranks, gaps, claimed, strict=True)
            ]
        if want is not None and logprobs is not None:
            why = logprob_problem(logprobs, list(predictors), self.drift.max_gap)
            if why is not None:
                self._refuse("logprobs", why)
        self.tokens.extend(tokens)
        self.values.extend(fresh)
        return fresh

    def stopped_at(self) -> int | None:
        """How many of the claimed tokens it takes to match one of the task's stop strings
        (None: none matches, or the task has none)."""
        if not self.decoding.stop or not self.tokens:
            return None
        if any(not 0 <= t < self.model.n_vocab for t in self.tokens):
            return None
        decoder = self.model.text_decoder()
        return first_stop([decoder.piece(t).text for t in self.tokens], self.decoding.stop)

    def ended(self) -> bool:
        """Whether the answer ends properly before `max_tokens`: on an end-of-generation token,
        or with the token that completes the first match of a stop string."""
        last = self.tokens[-1] if self.tokens else -1
        eog = 0 <= last < self.model.n_vocab and self.model.is_eog(last)
        return eog or (bool(self.tokens) and self.stopped_at() == len(self.tokens))

    def finish(self) -> Verdict:
        if self._problem is not None:
            return self._problem
        at = self.stopped_at()
        if at is not None and at < len(self.tokens):
            return self._refuse(
                "past-stop",
                f"the answer matches a stop string after {at} tokens but goes on to "
                f"{len(self.tokens)}",
            )
        return judge(self.values, self.thresholds, max_tokens=self.max_tokens, ended=self.ended())


def _close_quietly(holder: TokenStream | CheckSession) -> None:
    """A holder dropped without being closed gives its slot back (at interpreter exit the
    engine may be gone already: nothing to give back then)."""
    if sys.is_finalizing():
        return  # the engines were stopped at exit (dn.runner.engine._stop_all)
    try:
        holder.close()
    except Exception:  # noqa: BLE001, S110 - a finalizer must not raise
        pass
