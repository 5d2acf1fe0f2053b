"""llama-cpp-python behind a small interface: load (mmap, LRU), generate greedily, prefill-check.

A `LoadedModel` is one model file and one batching engine on it (`dn/runner/engine.py`): a
llama.cpp context with `slots` sequences that a scheduler thread runs together, so a miner
generates and checks for many people at once. A stream or a check session holds a slot, never a
lock; one beyond the slots is refused with `Busy` at once.

Task settings are pinned, because a checker must score exactly what the generator computed:
greedy decoding (the argmax of the logits) unless the task asks for verifiable sampling (a
deterministic function of the logits and a key from the task: dn/runner/sampling.py), no
penalties, the prompt tokenized with the model's own BOS rule and special tokens parsed, and a
stop only at an end-of-generation token, a stop string of the task, or `max_tokens`.

Import llama_cpp before numpy: on one GPU machine the other order crashed the tokenizer set-up.
"""

from __future__ import annotations

import codecs
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dn.errors import ModelError, TaskError
from dn.runner.capacity import default_slots, kv_bytes_per_token
from dn.runner.check import Drift, Thresholds
from dn.runner.engine import DEFAULT_IDLE_S, Engine
from dn.runner.sampling import GREEDY, Decoding
from dn.runner.sessions import CheckSession, Exclusive, Picker, TokenStream

__all__ = ["CheckSession", "LoadedModel", "Piece", "Runner", "TextDecoder", "TokenStream"]

if TYPE_CHECKING:
    import numpy as np

    from dn.runner.engine import Sequence as EngineSequence

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
    """The cores this process may run on (its CPU affinity: a container's cpuset or `taskset`),
    up to 8; more llama.cpp threads than that only wait on each other."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


@dataclass(frozen=True)
class Piece:
    """One generated token and the text it adds (may be "" mid-character or for control
    tokens)."""

    token: int
    text: str


class LoadedModel:
    """One model file, and the batching engine that serves its sequences."""

    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int = DEFAULT_CTX,
        n_threads: int | None = None,
        n_batch: int = DEFAULT_BATCH,
        n_gpu_layers: int | None = None,
        slots: int | None = None,
        idle_s: float | None = DEFAULT_IDLE_S,
    ) -> None:
        import llama_cpp  # before numpy, see the module docstring

        if not Path(path).is_file():
            raise ModelError(f"no model file at {path}", reason="missing")
        threads = n_threads or default_threads()
        self.path = Path(path)
        self.n_gpu_layers = auto_gpu_layers(n_gpu_layers)
        try:
            with _LOAD_LOCK:
                # Llama's own context is only there because Llama always makes one: the tokenizer,
                # the metadata and the chat template are the model's; the work runs in the engine.
                self.llm = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=16,
                    n_batch=16,
                    n_threads=1,
                    n_gpu_layers=self.n_gpu_layers,
                    logits_all=False,
                    verbose=False,
                )
                self.slots = slots or default_slots(kv_bytes_per_token(self.llm.metadata) * n_ctx)
                self.engine = Engine(
                    self.llm.model,
                    n_vocab=self.llm.n_vocab(),
                    slots=self.slots,
                    n_ctx=n_ctx,
                    n_threads=threads,
                    n_batch=n_batch,
                    idle_s=idle_s,
                    name=self.path.stem[:16],
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelError(f"llama.cpp cannot load {path}: {exc}", reason="unloadable") from None
        # Whoever closes `llm` closes the engine first (an ExitStack unwinds the last one first),
        # so the context never outlives the weights it points at.
        self.llm._stack.callback(self.engine.close)
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.n_threads = threads
        self.n_vocab = self.llm.n_vocab()
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self._lib = llama_cpp
        self.lock = Exclusive(self)
        self._formatter: Any = None

    def close(self) -> None:
        """Stop the engine (its callers get `TaskError`), then free the weights."""
        self.engine.close()
        self.llm.close()

    def retire(self) -> None:
        """Free everything once the sequences open now have ended (none more are expected)."""
        self.engine.retire(self.llm.close)

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

    def token_text(self, token: int) -> str:
        """One token's text on its own (for showing alternatives; may be a partial
        character, replaced)."""
        raw = self.llm.detokenize([token], special=False)
        return raw.decode("utf-8", errors="replace")

    def text_decoder(self) -> TextDecoder:
        return TextDecoder(self)

    # --- evaluation ----------------------------------------------------------------------

    def _held(self) -> EngineSequence:
        seq = self.lock.seq
        if seq is None:
            raise RuntimeError("_decode() and _truncate() need `with model.lock:`")
        return seq

    def _reset(self) -> None:
        self._truncate(0)

    def _truncate(self, position: int) -> None:
        """Forget the held sequence's positions from `position` on (0: everything)."""
        self._held().truncate(position)

    def _decode(self, tokens: Sequence[int], n_past: int, *, all_rows: bool) -> np.ndarray:
        """Run `tokens` at positions n_past… of the sequence `with model.lock:` holds; return the
        logits of every position (all_rows) or of the last one only, as float32 rows (copies)."""
        seq = self._held()
        seq.truncate(n_past)
        if n_past != seq.n_past:
            raise ValueError(f"position {n_past} is past the {seq.n_past} evaluated")
        rows = seq.eval(tokens, all_rows=all_rows)
        return rows if all_rows else rows[-1]

    def _fits(self, prompt_tokens: int, max_tokens: int) -> None:
        if prompt_tokens + max_tokens > self.n_ctx:
            raise TaskError(
                f"prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds the "
                f"context of {self.n_ctx} tokens",
                reason="too-long",
            )

    def generate(
        self,
        prompt: str,
        max_tokens: int,
        *,
        deadline_s: float | None = None,
        decoding: Decoding = GREEDY,
    ) -> TokenStream:
        """Token ids, streamed, each chosen as `decoding` says (greedy by default; see
        dn/runner/sampling.py); stops after an end-of-generation token (which is yielded) or
        after `max_tokens` (stop strings are the reader's: it closes the stream). Takes a slot
        now (`Busy` when none is free) and holds it until the stream ends, is closed, or goes
        unread for the engine's idle limit. With `decoding.logprobs`, `stream.logprobs` gets
        each token's log-probabilities before the token is yielded."""
        tokens = self.tokenize(prompt)
        self._fits(len(tokens), max_tokens)
        picker = Picker(decoding)
        seq = self.engine.open(deadline_s=deadline_s)
        try:
            seq.generate(tokens, max_tokens, self.is_eog, picker)
        except BaseException:
            seq.close()
            raise
        return TokenStream(seq, picker)

    def check(
        self,
        prompt: str,
        max_tokens: int,
        thresholds: Thresholds,
        *,
        deadline_s: float | None = None,
        decoding: Decoding = GREEDY,
        drift: Drift | None = None,
    ) -> CheckSession:
        return CheckSession(
            self,
            prompt,
            max_tokens,
            thresholds,
            deadline_s=deadline_s,
            decoding=decoding,
            drift=drift or Drift(),
        )


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


class Runner:
    """Loaded models by file, least recently used first out. Every role (generating, checking)
    shares a file's one engine, whose `slots` bound how many sequences run on it at once."""

    def __init__(
        self,
        *,
        n_ctx: int = DEFAULT_CTX,
        n_threads: int | None = None,
        n_batch: int = DEFAULT_BATCH,
        n_gpu_layers: int | None = None,
        max_loaded: int = 4,
        slots: int | None = None,
        idle_s: float | None = DEFAULT_IDLE_S,
    ) -> None:
        self.n_ctx, self.n_threads, self.n_batch = n_ctx, n_threads, n_batch
        self.n_gpu_layers, self.max_loaded = n_gpu_layers, max_loaded
        self.slots, self.idle_s = slots, idle_s
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._roles: dict[str, list[str]] = {}
        self._retired: list[LoadedModel] = []
        self._lock = threading.Lock()

    def model(self, path: Path, role: str = "generate") -> LoadedModel:
        key = str(Path(path).resolve())
        with self._lock:
            roles = self._roles.setdefault(key, [])
            if role not in roles:
                roles.append(role)
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
                slots=self.slots,
                idle_s=self.idle_s,
            )
            self._loaded[key] = loaded
            while len(self._loaded) > self.max_loaded:
                old_key, old = self._loaded.popitem(last=False)
                self._roles.pop(old_key, None)
                old.retire()  # freed when its open sequences end; nothing waits for them here
                self._retired = [m for m in self._retired if m.engine.running] + [old]
            return loaded

    def models(self) -> list[tuple[str, LoadedModel]]:
        """(file, model) for every loaded file, least recently used first."""
        with self._lock:
            return list(self._loaded.items())

    def loaded(self) -> list[tuple[str, str]]:
        """(file, role) for every role asked of each loaded file, least recently used first."""
        return [(key, role) for key in self._loaded for role in self._roles.get(key, [])]

    def close(self) -> None:
        with self._lock:
            models = list(self._loaded.values()) + self._retired
            self._loaded.clear()
            self._roles.clear()
            self._retired = []
        for model in models:
            model.close()
