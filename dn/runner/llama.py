"""llama-cpp-python behind a small interface: load (mmap, LRU), generate greedily, prefill-check.

A `LoadedModel` is one llama.cpp context on one GGUF file. The runner keeps separate contexts
for generating and for checking, so a miner can do both at once; the weights are memory-mapped
and so shared between them by the operating system. Each context runs one task at a time (it
holds that task's KV cache); a task takes the context's lock for its whole life.

Task settings are pinned, because a checker must score exactly what the generator computed:
greedy decoding (the argmax of the logits; no sampler, no temperature, no penalties), the prompt
tokenized with the model's own BOS rule and special tokens parsed, and a stop only at an
end-of-generation token or at `max_tokens`.

Import llama_cpp before numpy: on one GPU machine the other order crashed the tokenizer set-up.
"""

from __future__ import annotations

import codecs
import os
import threading
from collections import OrderedDict
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dn.errors import ModelError, TaskError
from dn.runner.check import Thresholds, TokenValue, Verdict, judge

if TYPE_CHECKING:
    import numpy as np

# For GGUF files without `tokenizer.chat_template`: the family's documented format, else ChatML.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}<|im_start|>assistant\n"
)
FALLBACK_TEMPLATES = {
    "gemma": (
        "{% for m in messages %}<start_of_turn>"
        "{{ 'model' if m['role'] == 'assistant' else 'user' }}\n{{ m['content'] }}"
        "<end_of_turn>\n{% endfor %}<start_of_turn>model\n"
    ),
}
DEFAULT_CTX = 2048
DEFAULT_BATCH = 512


# llama-cpp-python (verbose=False) silences llama.cpp while it loads a model by pointing file
# descriptors 1 and 2 at /dev/null and back. Two loads at once in one process interleave those
# swaps, and the process can end with its stdout and stderr on /dev/null for good: every later
# log line lost. So models load one at a time.
_LOAD_LOCK = threading.Lock()


def gpu_offload_supported() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def auto_gpu_layers(override: int | None = None) -> int:
    """All layers (-1) when this llama.cpp build can offload to a GPU, none otherwise;
    `override` (or $DN_GPU_LAYERS) wins."""
    if override is not None:
        return override
    env = os.environ.get("DN_GPU_LAYERS")
    if env:
        try:
            return int(env)
        except ValueError:
            raise ModelError(f"DN_GPU_LAYERS must be an integer, got {env!r}") from None
    return -1 if gpu_offload_supported() else 0


def default_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


@dataclass(frozen=True)
class Piece:
    """One generated token and the text it adds (may be "" mid-character or for control
    tokens)."""

    token: int
    text: str


class LoadedModel:
    """One llama.cpp context on one model file."""

    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int = DEFAULT_CTX,
        n_threads: int | None = None,
        n_batch: int = DEFAULT_BATCH,
        n_gpu_layers: int | None = None,
    ) -> None:
        import llama_cpp  # before numpy, see the module docstring

        if not Path(path).is_file():
            raise ModelError(f"no model file at {path}", reason="missing")
        threads = n_threads or default_threads()
        self.path = Path(path)
        self.n_gpu_layers = auto_gpu_layers(n_gpu_layers)
        try:
            with _LOAD_LOCK:
                self.llm = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_batch=n_batch,
                    n_ubatch=n_batch,
                    n_threads=threads,
                    n_threads_batch=threads,
                    n_gpu_layers=self.n_gpu_layers,
                    logits_all=False,
                    verbose=False,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelError(f"llama.cpp cannot load {path}: {exc}", reason="unloadable") from None
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.n_threads = threads
        self.n_vocab = self.llm.n_vocab()
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self._lib = llama_cpp
        self.lock = threading.Lock()
        self._formatter: Any = None

    # --- text ----------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))

    def is_eog(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        """The model's own chat template (from the GGUF) applied to `messages`, ready for the
        assistant's turn."""
        formatter = self._formatter or self._make_formatter()
        prompt = formatter(messages=list(messages)).prompt  # type: ignore[arg-type]
        bos = self.llm.token_bos()
        bos_text = self.llm._model.token_get_text(bos) if bos != -1 else ""
        if bos_text and prompt.startswith(bos_text) and self.llm._model.add_bos_token():
            prompt = prompt[len(bos_text) :]  # tokenize() adds it; never twice
        return str(prompt)

    def _make_formatter(self) -> Any:
        """The chat template compiled once per loaded model (jinja2 compiles are not cheap)."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            arch = self.llm.metadata.get("general.architecture", "")
            template = FALLBACK_TEMPLATES.get(arch.rstrip("0123456789"), CHATML)
        model = self.llm._model
        eos, bos = self.llm.token_eos(), self.llm.token_bos()
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(eos) if eos != -1 else "",
            bos_token=model.token_get_text(bos) if bos != -1 else "",
        )
        return self._formatter

    def text_decoder(self) -> TextDecoder:
        return TextDecoder(self)

    # --- evaluation ----------------------------------------------------------------------

    def _reset(self) -> None:
        self._truncate(0)

    def _truncate(self, position: int) -> None:
        """Forget the KV cache from `position` on (0: everything)."""
        self.llm._ctx.kv_cache_seq_rm(-1, position, -1)

    def _decode(self, tokens: Sequence[int], n_past: int, *, all_rows: bool) -> np.ndarray:
        """Run `tokens` at positions n_past…; return the logits of every position (all_rows) or
        of the last one only, as float32 rows (copies)."""
        import numpy as np

        rows: list[np.ndarray] = []
        batch = self.llm._batch
        for start in range(0, len(tokens), self.n_batch):
            part = list(tokens[start : start + self.n_batch])
            batch.set_batch(batch=part, n_past=n_past + start, logits_all=all_rows)
            try:
                self.llm._ctx.decode(batch)
            except RuntimeError as exc:
                raise ModelError(f"llama.cpp decode failed: {exc}", reason="decode") from None
            n_out = len(part) if all_rows else 1
            out = np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(n_out, self.n_vocab))
            if all_rows or start + self.n_batch >= len(tokens):
                rows.append(out.copy())
        return np.concatenate(rows) if all_rows else rows[-1]

    def _fits(self, prompt_tokens: int, max_tokens: int) -> None:
        if prompt_tokens + max_tokens > self.n_ctx:
            raise TaskError(
                f"prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds the "
                f"context of {self.n_ctx} tokens",
                reason="too-long",
            )

    def generate(self, prompt: str, max_tokens: int) -> Generator[int, None, None]:
        """Greedy token ids, streamed; stops after an end-of-generation token (which is yielded)
        or after `max_tokens`. Holds the context until the iterator ends or is closed."""
        import numpy as np

        tokens = self.tokenize(prompt)
        self._fits(len(tokens), max_tokens)
        with self.lock:
            self._reset()
            logits = self._decode(tokens, 0, all_rows=False)[-1]
            n_past = len(tokens)
            for i in range(max_tokens):
                token = int(np.argmax(logits))
                yield token
                if self.is_eog(token) or i + 1 == max_tokens:
                    return
                logits = self._decode([token], n_past, all_rows=False)[-1]
                n_past += 1

    def check(self, prompt: str, max_tokens: int, thresholds: Thresholds) -> CheckSession:
        return CheckSession(self, prompt, max_tokens, thresholds)


class TextDecoder:
    """Token ids to text, a token at a time, keeping multi-byte characters whole."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._prev: list[int] = []

    def piece(self, token: int) -> Piece:
        raw = self.model.llm.detokenize([token], prev_tokens=self._prev or None, special=False)
        self._prev.append(token)
        return Piece(token, self._utf8.decode(raw))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


class CheckSession:
    """An incremental prefill check of one claimed answer. Use as a context manager (it holds
    the checking context): `feed()` chunks of claimed token ids as they stream in, then
    `finish()` for the verdict. Each chunk is one batched pass that reuses the KV cache of the
    prompt and of the chunks before it."""

    def __init__(
        self, model: LoadedModel, prompt: str, max_tokens: int, thresholds: Thresholds
    ) -> None:
        self.model = model
        self.prompt_tokens = model.tokenize(prompt)
        model._fits(len(self.prompt_tokens), max_tokens)
        self.max_tokens = max_tokens
        self.thresholds = thresholds
        self.values: list[TokenValue] = []
        self.tokens: list[int] = []
        self._pending: Any = None  # logits that predict the next claimed token
        self._n_past = 0
        self._problem: Verdict | None = None
        self._open = False

    def __enter__(self) -> CheckSession:
        self.model.lock.acquire()
        self._open = True
        try:
            self.model._reset()
            self._pending = self.model._decode(self.prompt_tokens, 0, all_rows=False)[-1]
            self._n_past = len(self.prompt_tokens)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._open:
            self._open = False
            self.model.lock.release()

    def _refuse(self, reason: str, message: str) -> None:
        self._problem = Verdict(False, reason, message, len(self.tokens), 0, 0.0, 0.0, 0.0, None)

    def feed(self, tokens: Sequence[int]) -> list[TokenValue]:
        """Score the next claimed tokens; returns their values (empty once the answer is
        already refused for its shape)."""
        import numpy as np

        if not self._open:
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
        rows = self.model._decode(tokens, self._n_past, all_rows=True)
        predictors = np.vstack([self._pending[None, :], rows[:-1]])
        claimed = predictors[np.arange(len(tokens)), tokens]
        ranks = (predictors > claimed[:, None]).sum(axis=1)
        gaps = predictors.max(axis=1) - claimed
        self._pending = rows[-1]
        self._n_past += len(tokens)
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


class Runner:
    """Loaded models by (file, role), least recently used first out."""

    def __init__(
        self,
        *,
        n_ctx: int = DEFAULT_CTX,
        n_threads: int | None = None,
        n_batch: int = DEFAULT_BATCH,
        n_gpu_layers: int | None = None,
        max_loaded: int = 4,
    ) -> None:
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_batch = n_batch
        self.n_gpu_layers = n_gpu_layers
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def model(self, path: Path, role: str = "generate") -> LoadedModel:
        key = (str(Path(path).resolve()), role)
        with self._lock:
            found = self._loaded.get(key)
            if found is not None:
                self._loaded.move_to_end(key)
                return found
            loaded = LoadedModel(
                Path(path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_batch=self.n_batch,
                n_gpu_layers=self.n_gpu_layers,
            )
            self._loaded[key] = loaded
            while len(self._loaded) > self.max_loaded:
                _, old = self._loaded.popitem(last=False)
                with old.lock:  # wait for its task to end before freeing it
                    old.llm.close()
            return loaded

    def loaded(self) -> list[tuple[str, str]]:
        return list(self._loaded)

    def close(self) -> None:
        with self._lock:
            while self._loaded:
                _, old = self._loaded.popitem()
                with old.lock:
                    old.llm.close()
