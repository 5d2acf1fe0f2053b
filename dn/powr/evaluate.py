"""Running benchmark items through a loaded model and grading them (DESIGN.md section 8).

`evaluate(model, items, model_kind=…)` answers each item with the runner and grades it with
`dn/powr/grading.py`. How a generative item is asked depends on the model's kind (the `kind` of
its chain record, `dn.chain.models.kind_of`); choice items are scored the same way for both:

- exact, contains, numeric, on a `chat` model: the item's prompt as the user turn of the model's
  own chat template, answered greedily (`LoadedModel.generate`: argmax, stop at an
  end-of-generation token or after `max_tokens`), decoded to text without special tokens and
  graded with `grade`.
- exact, contains, numeric, on a `base` model: a pretrained model was never taught a chat
  template (Gemma 3 270M's file has none; the runner's fallback for its family is a template
  the model was not tuned on, and through it the model echoes the question instead of
  answering), so it is asked as lm-evaluation-harness asks one, with a completion prompt:
  `"Question: " + prompt + "\\nAnswer:"` (`completion_prompt`), no template, continued greedily
  as plain text and cut at the first newline (the answer is the line after "Answer:"), or at
  an end-of-generation token or `max_tokens`. The text before the newline is graded.
- choice: no generation. Each choice is scored by the sum of the log-probabilities (log-softmax
  of the logits, in float64) of its tokens as a continuation of the raw item prompt, the text
  `prompt + " " + choice` as the suites' docstring says (no chat template: the prompts are
  written to be continued), then graded with `grade_choice`.

Where the prompt ends and the choice begins, in tokens. The prompt and each full text are
tokenized with the runner's own rule (`LoadedModel.tokenize`). The *context* is the longest run
of leading tokens shared by the prompt and by every choice's full text; each choice's score is
the log-probability of all its tokens after the context. With SmolLM2's byte-level BPE (and most
tokenizers) the space starts a new word, so the context is exactly the prompt's tokens and only
the choice's own tokens are scored. Where a tokenizer merges the end of the prompt with the space
or the choice (Gemma 3 does for a prompt ending in a space: that space and the separator become
one two-space token), the merged tail of the prompt is scored too, as part of every choice's
continuation: the same text after the same context for each choice, so the comparison stays
fair, and no choice is scored on a token split the tokenizer would never produce for its text.
Summed log-probabilities favour short choices; that is the measure the suites are written for
(their choices are single words or short phrases).

Each item starts on a fresh context (`_reset()`). The context tokens are decoded once per item;
each choice's continuation is then decoded after them and dropped from the KV cache again
(positions from the end of the context on), so no choice sees another and the context is not
recomputed per choice (2.3 times faster on the general suite's choice items than a fresh context
per choice, with the same scores to 1e-15). Two runs of the same items on the same model give the
same results bit for bit; scoring the choices in another order moves a score by float rounding at
most. Timings are reported beside the results and are the only part that varies.

The quality q is the mean grade, reported with its standard error (`Evaluation.stderr`, the
sample standard deviation of the grades over sqrt(n): `grading.standard_error`).

`llama_s` counts the time spent inside the runner's llama.cpp calls: each step of `generate` and
each `_decode` (the logits copies included). The rest — chat templating, tokenizing, log-softmax,
text decoding, grading — is the evaluator's overhead, which `llama_share` measures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from dn.errors import InputError, TaskError
from dn.powr.grading import grade, grade_choice, quality, standard_error
from dn.powr.suites import KINDS, Item, Kind

if TYPE_CHECKING:
    from dn.runner.llama import LoadedModel

DEFAULT_MAX_TOKENS = 32
CHAT, BASE = "chat", "base"  # a model's kind, as its chain record says (dn.chain.models)
MODEL_KINDS = (CHAT, BASE)

Progress = Callable[[int, int], None]  # update(items_done, items_total)


@dataclass(frozen=True)
class ItemResult:
    """One graded item: the generated `output` (exact, contains, numeric) or the `logprobs` of
    each choice (choice), the grade, how many tokens were generated or scored, and the seconds
    spent inside llama.cpp and in all (templating, tokenizing and grading included)."""

    id: str
    kind: Kind
    score: float
    output: str | None
    logprobs: dict[str, float] | None
    tokens: int
    llama_s: float
    seconds: float

    def answer(self) -> str:
        """What the model answered: its text, or the choice it scored highest."""
        if self.logprobs is not None:
            logprobs = self.logprobs
            return max(logprobs, key=logprobs.__getitem__)
        return self.output or ""

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "llama_s": round(self.llama_s, 6),
            "seconds": round(self.seconds, 6),
        }


@dataclass(frozen=True)
class Evaluation:
    """A run over some items: each item's result, the quality q (the mean grade), how the model
    was asked (`model_kind`) and where the time went."""

    results: tuple[ItemResult, ...]
    quality: float
    seconds: float
    llama_s: float
    model_kind: str = CHAT

    @property
    def stderr(self) -> float:
        """The standard error of `quality` (`grading.standard_error` of the item grades)."""
        return standard_error(r.score for r in self.results)

    @property
    def items_per_s(self) -> float:
        return len(self.results) / self.seconds if self.seconds > 0 else 0.0

    @property
    def llama_share(self) -> float:
        """The share of the run's time spent inside llama.cpp, in [0, 1]."""
        return min(1.0, self.llama_s / self.seconds) if self.seconds > 0 else 0.0

    def by_kind(self) -> dict[str, dict[str, Any]]:
        """Per item kind that was run, in the order kinds are listed in the suites module:
        how many items, how many right, and their quality."""
        out: dict[str, dict[str, Any]] = {}
        for kind in KINDS:
            scores = [r.score for r in self.results if r.kind == kind]
            if scores:
                right = sum(1 for s in scores if s == 1.0)
                out[kind] = {"items": len(scores), "right": right, "quality": quality(scores)}
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "items": len(self.results),
            "quality": self.quality,
            "stderr": self.stderr,
            "model_kind": self.model_kind,
            "right": sum(1 for r in self.results if r.score == 1.0),
            "seconds": round(self.seconds, 6),
            "llama_s": round(self.llama_s, 6),
            "items_per_s": round(self.items_per_s, 6),
            "llama_share": round(self.llama_share, 6),
            "by_kind": self.by_kind(),
            "results": [r.to_json() for r in self.results],
        }


def evaluate(
    model: LoadedModel,
    items: Iterable[Item],
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    progress: Progress | None = None,
    model_kind: str = CHAT,
) -> Evaluation:
    """Answer and grade `items` in order on `model`, a `model_kind` ("chat" or "base") model;
    `progress(done, total)` after each item.

    The items are run one after another, each holding the model's context while it runs (a
    generation takes the lock inside `generate`; choice scoring takes it here). A prompt that does
    not fit the context raises TaskError `too-long`.
    """
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InputError(f"max_tokens must be a whole number >= 1, not {max_tokens!r}")
    if model_kind not in MODEL_KINDS:
        raise InputError(f"a model's kind is 'chat' or 'base', not {model_kind!r}")
    todo = list(items)
    results: list[ItemResult] = []
    start = time.perf_counter()
    if progress:
        progress(0, len(todo))
    for item in todo:
        if item.kind == "choice":
            results.append(_run_choice(model, item))
        else:
            results.append(_run_generation(model, item, max_tokens, model_kind))
        if progress:
            progress(len(results), len(todo))
    seconds = time.perf_counter() - start
    return Evaluation(
        results=tuple(results),
        quality=quality(r.score for r in results),
        seconds=seconds,
        llama_s=math.fsum(r.llama_s for r in results),
        model_kind=model_kind,
    )


def completion_prompt(prompt: str) -> str:
    """How a base model is asked a generative item: a question to be continued by its answer."""
    return f"Question: {prompt}\nAnswer:"


def _run_generation(model: LoadedModel, item: Item, max_tokens: int, model_kind: str) -> ItemResult:
    start = time.perf_counter()
    if model_kind == BASE:
        prompt = completion_prompt(item.prompt)
    else:
        prompt = model.chat_prompt([{"role": "user", "content": item.prompt}])
    steps = model.generate(prompt, max_tokens)  # takes model.lock and resets the context
    decoder = model.text_decoder()
    pieces: list[str] = []
    tokens = 0
    llama_s = 0.0
    try:
        while True:
            step = time.perf_counter()
            try:
                token = next(steps)
            except StopIteration:
                break
            finally:
                llama_s += time.perf_counter() - step
            tokens += 1
            pieces.append(decoder.piece(token).text)
            if model_kind == BASE and "\n" in pieces[-1]:
                break  # the answer's line is complete
    finally:
        steps.close()  # releases the lock at once, also when the line ended early
    output = "".join(pieces) + decoder.flush()
    if model_kind == BASE:
        output = output.split("\n", 1)[0]
    score = grade(item, output)
    return ItemResult(
        item.id, item.kind, score, output, None, tokens, llama_s, time.perf_counter() - start
    )


def _run_choice(model: LoadedModel, item: Item) -> ItemResult:
    import numpy as np

    start = time.perf_counter()
    prompt_ids = model.tokenize(item.prompt)
    full_ids = {c: model.tokenize(f"{item.prompt} {c}") for c in item.choices}
    n = min(_shared_prefix(prompt_ids, ids) for ids in full_ids.values())
    if n == 0:
        raise InputError(
            f"item {item.id!r}: its prompt merges with its choices into one first token, so "
            "there is no context to score them after",
            reason="bad-suite",
        )
    for ids in full_ids.values():
        if len(ids) > model.n_ctx:
            raise TaskError(
                f"item {item.id!r}: prompt and choice ({len(ids)} tokens) exceed the context of "
                f"{model.n_ctx} tokens",
                reason="too-long",
            )
    logprobs: dict[str, float] = {}
    scored = 0
    with model.lock:
        step = time.perf_counter()
        model._reset()
        last = model._decode(prompt_ids[:n], 0, all_rows=False)  # predicts the first token
        llama_s = time.perf_counter() - step
        for choice, ids in full_ids.items():
            continuation = ids[n:]
            step = time.perf_counter()
            model._truncate(n)  # the previous choice's tokens
            rows = model._decode(continuation, n, all_rows=True)
            llama_s += time.perf_counter() - step
            # Row i predicts continuation token i: the context's last row, then each
            # continuation row but the last.
            predictors = np.vstack([last, rows[:-1]]).astype(np.float64)
            top = predictors.max(axis=1, keepdims=True)
            log_norm = top[:, 0] + np.log(np.exp(predictors - top).sum(axis=1))
            picked = predictors[np.arange(len(continuation)), continuation]
            logprobs[choice] = float(np.sum(picked - log_norm))
            scored += len(continuation)
    score = grade_choice(item, logprobs)
    return ItemResult(
        item.id, item.kind, score, None, logprobs, scored, llama_s, time.perf_counter() - start
    )


def _shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
