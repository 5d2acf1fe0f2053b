"""The ways a caller holds one sequence of a model's engine (`dn/runner/engine.py`).

    TokenStream     greedy token ids as the engine decodes them (`LoadedModel.generate`)
    CheckSession    an incremental prefill check of a claimed answer (`LoadedModel.check`)
    Exclusive       `with model.lock:` — one sequence whose positions the caller places itself
                    (`LoadedModel._decode`; PoWR scoring)

Each holds a slot, never a lock across a wait for the network: a caller that goes quiet keeps
its own slot until the engine's idle limit frees it, and every other sequence goes on.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from dn.runner.check import Thresholds, TokenValue, Verdict, judge

if TYPE_CHECKING:
    from dn.runner.engine import Sequence as EngineSequence
    from dn.runner.llama import LoadedModel

POWR_WAIT_S = 120.0  # how long `with model.lock:` waits for a free slot before Busy


class TokenStream(Iterator[int]):
    """The greedy tokens of one sequence as the engine decodes them (see `generate`)."""

    def __init__(self, seq: EngineSequence) -> None:
        self._seq: EngineSequence | None = seq

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
    ) -> None:
        self.model = model
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

    def _refuse(self, reason: str, message: str) -> None:
        self._problem = Verdict(False, reason, message, len(self.tokens), 0, 0.0, 0.0, 0.0, None)

    def feed(self, tokens: Sequence[int]) -> list[TokenValue]:
        """Score the next claimed tokens; returns their values (empty once the answer is
        already refused for its shape)."""
        import numpy as np

        if self._seq is None:
            raise RuntimeError("feed() outside the session's `with` block")
        tokens = [int(t) for t in tokens]
        if self._problem is None and tokens:
            if any(not 0 <= t < self.model.n_vocab for t in tokens):
                self._refuse("bad-token", "a claimed token id is not in the model's vocabulary")
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
        claimed = predictors[np.arange(len(tokens)), tokens]
        ranks = (predictors > claimed[:, None]).sum(axis=1)
        gaps = predictors.max(axis=1) - claimed
        self._pending = rows[-1]
        fresh = [
            TokenValue(t, int(r), float(g), float(c))
            for t, r, g, c in zip(tokens, ranks, gaps, claimed, strict=True)
        ]
        self.tokens.extend(tokens)
        self.values.extend(fresh)
        return fresh

    def finish(self) -> Verdict:
        if self._problem is not None:
            return self._problem
        ended = bool(self.tokens) and self.model.is_eog(self.tokens[-1])
        return judge(self.values, self.thresholds, max_tokens=self.max_tokens, ended=ended)


def _close_quietly(holder: TokenStream | CheckSession) -> None:
    """A holder dropped without being closed gives its slot back (at interpreter exit the
    engine may be gone already: nothing to give back then)."""
    if sys.is_finalizing():
        return  # the engines were stopped at exit (dn.runner.engine._stop_all)
    try:
        holder.close()
    except Exception:  # noqa: BLE001, S110 - a finalizer must not raise
        pass
