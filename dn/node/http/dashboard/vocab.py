"""Token ids to text for the task page, from a model file's vocabulary alone.

A node that shows a task need not run its model: llama.cpp loads the vocabulary of a GGUF file
without its weights (`vocab_only`, about 0.1 s and a few MB), and each token's piece comes from
`llama_token_to_piece`. Only the low-level calls are used, because the high-level `Llama` class
silences llama.cpp by swapping the process's stdout and stderr, which must never race with a
miner loading a model in the same process (dn/runner/llama.py). Vocabularies are kept for the
few most recent files; loads and lookups are serialised by one lock and run in a worker thread.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import threading
from collections import OrderedDict
from pathlib import Path

KEEP = 2  # vocabularies kept loaded
PIECE_BYTES = 256


class Vocab:
    """One GGUF file's vocabulary, loaded without weights."""

    def __init__(self, path: Path) -> None:
        import llama_cpp

        # llama.cpp logs through llama-cpp-python's callback, which prints whatever its logger
        # lets through; a node that never loaded a model has not set that logger's level yet.
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        params.n_gpu_layers = 0
        self._lib = llama_cpp
        self._model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not self._model:
            raise ValueError(f"llama.cpp cannot read the vocabulary of {path}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.size = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self._buffer = ctypes.create_string_buffer(PIECE_BYTES)

    def piece(self, token: int) -> bytes | None:
        """The bytes of one token (special tokens, such as the end of the turn, are empty);
        None for an id outside the vocabulary."""
        if not 0 <= token < self.size:
            return None
        n = self._lib.llama_token_to_piece(self._vocab, token, self._buffer, PIECE_BYTES, 0, False)
        return bytes(self._buffer.raw[: max(n, 0)])

    def is_end(self, token: int) -> bool:
        return 0 <= token < self.size and bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    def texts(self, tokens: list[int]) -> list[str | None]:
        """Each token's text, keeping a character split over several tokens whole (it shows on
        the token that completes it); None for an id outside the vocabulary."""
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        out: list[str | None] = []
        for token in tokens:
            raw = self.piece(token)
            out.append(None if raw is None else utf8.decode(raw))
        tail = utf8.decode(b"", final=True)
        if tail and out:
            out[-1] = (out[-1] or "") + tail
        return out

    def close(self) -> None:
        if self._model:
            self._lib.llama_model_free(self._model)
            self._model = None


class Vocabularies:
    """The vocabularies of the last `keep` model files asked for."""

    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._loaded: OrderedDict[str, Vocab] = OrderedDict()

    def texts(self, path: Path, tokens: list[int]) -> list[str | None]:
        """Each token's text in the model at `path` (ValueError if it cannot be read)."""
        with self._lock:
            return self._get(path).texts(tokens)

    def _get(self, path: Path) -> Vocab:
        key = str(path.resolve())
        found = self._loaded.get(key)
        if found is None:
            found = self._loaded[key] = Vocab(path)
            while len(self._loaded) > self.keep:
                self._loaded.popitem(last=False)[1].close()
        self._loaded.move_to_end(key)
        return found

    def close(self) -> None:
        with self._lock:
            for vocab in self._loaded.values():
                vocab.close()
            self._loaded.clear()
