"""GGUF files: read the header ourselves, and ask llama.cpp whether it can load the model.

A GGUF file (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), little-endian:

    magic b"GGUF" · u32 version (2 or 3) · u64 tensor_count · u64 kv_count
    kv_count × (string key, u32 value type, value)
    tensor_count × (string name, u32 n_dims, n_dims × u64 dim, u32 ggml type, u64 offset)
    padding to `general.alignment` (default 32) · tensor data

Strings are a u64 length and UTF-8 bytes; an array is a u32 element type, a u64 count and the
elements. `read_header` walks all of that without reading tensor data, so checking a file costs
milliseconds, and it bounds every length by the file size: a corrupt length is an error, never a
huge allocation. `data_end`, where the last tensor's bytes end, must lie inside the file, which
catches a download that stopped early.

Reasons carried by the `ModelError`s raised here: `not-gguf` (empty file, wrong magic),
`unsupported-version`, `truncated` (header or tensor data cut short), `corrupt` (a length, count,
type or dimension no valid file has), `unknown-type` (a ggml tensor type we do not know),
`unreadable` (the file cannot be opened), `unloadable` (llama.cpp refuses the model).
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from dn.chain.models import BASE, CHAT
from dn.errors import ModelError

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_DEPTH = 8

MetadataValue = int | float | bool | str

# Metadata value types: the struct format of each fixed-size one.
_SCALARS: dict[int, str] = {
    0: "<B",  # UINT8
    1: "<b",  # INT8
    2: "<H",  # UINT16
    3: "<h",  # INT16
    4: "<I",  # UINT32
    5: "<i",  # INT32
    6: "<f",  # FLOAT32
    7: "<?",  # BOOL
    10: "<Q",  # UINT64
    11: "<q",  # INT64
    12: "<d",  # FLOAT64
}
_STRING = 8
_ARRAY = 9

# ggml tensor types: id -> (name, elements per block, bytes per block). Checked against
# ggml_blck_size/ggml_type_size of the ggml that llama-cpp-python ships (tests/unit/test_gguf.py).
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
    42: ("Q2_0", 64, 18),
}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: str
    offset: int  # from the start of the tensor data section
    nbytes: int


@dataclass(frozen=True)
class GGUFInfo:
    """What `read_header` learned. `metadata` holds the scalar and string keys; arrays (such as
    the tokenizer's vocabulary) are skipped."""

    version: int
    tensor_count: int
    kv_count: int
    metadata: dict[str, MetadataValue]
    alignment: int
    data_offset: int  # where tensor data starts
    data_end: int  # where the last tensor's data ends
    file_size: int
    tensors: tuple[TensorInfo, ...] = field(repr=False, default=())

    @property
    def architecture(self) -> str | None:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None

    @property
    def name(self) -> str | None:
        value = self.metadata.get("general.name")
        return value if isinstance(value, str) else None

    @property
    def context_length(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.context_length")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def kind(self) -> str:
        """How the model is asked, "chat" or "base" (`model_kind`)."""
        return model_kind(self.metadata)


# Words that name an instruct finetune in `general.finetune` or `general.name`
# ("SmolLM2-135M-Instruct", "gemma-3-270m-it", "Llama-2-7b-chat").
INSTRUCT_WORDS = frozenset({"instruct", "it", "chat"})


def model_kind(metadata: dict[str, MetadataValue]) -> str:
    """A chat model answers messages, a base model continues text. "chat" when the file has a
    chat template (`tokenizer.chat_template`), or when `general.finetune` or `general.name`
    holds one of `INSTRUCT_WORDS` as a word (an instruct model whose file lost its template:
    the runner then uses its family's documented template); "base" otherwise, as for a
    pretrained model such as Gemma 3 270M, whose file has neither. SmolLM2-135M-Instruct's file
    has a template, while its name ("Smollm2 135M 8k Lc100K Mix1 Ep2") and finetune
    ("8k-lc100k-mix1-ep2") do not say "instruct": the template is the sound signal, the words a
    fallback."""
    template = metadata.get("tokenizer.chat_template")
    if isinstance(template, str) and template.strip():
        return CHAT
    for key in ("general.finetune", "general.name"):
        value = metadata.get(key)
        if isinstance(value, str) and INSTRUCT_WORDS & set(re.split(r"[^a-z0-9]+", value.lower())):
            return CHAT
    return BASE


class _Reader:
    """Sequential little-endian reads from a file, each checked against the file's size."""

    def __init__(self, fh: BinaryIO, size: int, label: str) -> None:
        self.fh = fh
        self.size = size
        self.pos = 0
        self.label = label

    def read(self, n: int, what: str) -> bytes:
        if n > self.size - self.pos:
            raise ModelError(
                f"{self.label} is truncated: the file ends inside the header ({what})",
                reason="truncated",
            )
        data = self.fh.read(n)
        if len(data) != n:  # the file shrank while we read it
            raise ModelError(f"{self.label} is truncated ({what})", reason="truncated")
        self.pos += n
        return data

    def skip(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise ModelError(
                f"{self.label} is truncated: the file ends inside the header ({what})",
                reason="truncated",
            )
        self.fh.seek(n, os.SEEK_CUR)
        self.pos += n

    def unpack(self, fmt: str, what: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt), what))[0]

    def u32(self, what: str) -> int:
        value: int = self.unpack("<I", what)
        return value

    def u64(self, what: str) -> int:
        value: int = self.unpack("<Q", what)
        return value

    def length(self, what: str) -> int:
        """A u64 length or count. Every item takes at least a byte, so one larger than the whole
        file is corruption (not a reason to allocate); one that merely runs past the end of a
        file cut short is found as `truncated` when the read gets there."""
        n = self.u64(what)
        if n > self.size:
            raise ModelError(
                f"{self.label} is corrupt: {what} is {n:,}, more than the file "
                f"({self.size:,} bytes) could hold",
                reason="corrupt",
            )
        return n

    def string(self, what: str) -> str:
        n = self.length(f"the length of {what}")
        return self.read(n, what).decode("utf-8", errors="replace")

    def skip_string(self, what: str) -> None:
        self.skip(self.length(f"the length of {what}"), what)


def _value(r: _Reader, vtype: int, key: str, depth: int = 0) -> MetadataValue | None:
    """Read one metadata value; arrays are walked over and give None."""
    if vtype in _SCALARS:
        value: MetadataValue = r.unpack(_SCALARS[vtype], f"the value of {key}")
        return value
    if vtype == _STRING:
        return r.string(f"the value of {key}")
    if vtype == _ARRAY:
        if depth >= MAX_ARRAY_DEPTH:
            raise _corrupt(r.label, f"arrays nested too deep in {key}")
        etype = r.u32(f"the array type of {key}")
        if etype in _SCALARS:
            width = struct.calcsize(_SCALARS[etype])
            r.skip(r.length(f"the length of array {key}") * width, f"array {key}")
        elif etype == _STRING:
            for _ in range(r.length(f"the length of array {key}")):
                r.skip_string(f"an item of {key}")
        elif etype == _ARRAY:
            for _ in range(r.length(f"the length of array {key}")):
                _value(r, _ARRAY, key, depth + 1)
        else:
            raise _bad_type(r, etype, key)
        return None
    raise _bad_type(r, vtype, key)


def _bad_type(r: _Reader, vtype: int, key: str) -> ModelError:
    return ModelError(
        f"{r.label} is corrupt: metadata {key!r} has unknown value type {vtype}", reason="corrupt"
    )


def _corrupt(label: str, why: str) -> ModelError:
    return ModelError(f"{label} is corrupt: {why}", reason="corrupt")


def _tensor(r: _Reader, index: int) -> tuple[str, tuple[int, ...], int, int]:
    name = r.string(f"the name of tensor {index}")
    n_dims = r.u32(f"the dimensions of tensor {name!r}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise _corrupt(r.label, f"tensor {name!r} has {n_dims} dimensions")
    shape = tuple(r.u64(f"the shape of tensor {name!r}") for _ in range(n_dims))
    ggml_type = r.u32(f"the type of tensor {name!r}")
    offset = r.u64(f"the offset of tensor {name!r}")
    return name, shape, ggml_type, offset


def _tensor_bytes(label: str, name: str, shape: tuple[int, ...], type_id: int) -> int:
    if type_id not in GGML_TYPES:
        raise ModelError(
            f"{label}: tensor {name!r} has a ggml type we do not know ({type_id})",
            reason="unknown-type",
        )
    type_name, block, block_bytes = GGML_TYPES[type_id]
    if shape[0] % block:
        raise _corrupt(label, f"tensor {name!r} ({type_name}) has a row of {shape[0]} elements")
    elements = 1
    for dim in shape:
        elements *= dim
    return elements // block * block_bytes


def read_header(path: Path | str) -> GGUFInfo:
    """Parse the GGUF header of `path` and check that the tensor data it describes is all there."""
    path = Path(path)
    label = path.name
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise ModelError(
            f"cannot read {path}: {exc.strerror or exc}", reason="unreadable"
        ) from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise ModelError(f"{label} is empty, not a GGUF file", reason="not-gguf")
        head = fh.read(4)
        if head != MAGIC:
            raise ModelError(
                f"{label} is not a GGUF file (it starts with {head!r})", reason="not-gguf"
            )
        r = _Reader(fh, size, label)
        r.pos = 4
        version = r.u32("the version")
        if version not in SUPPORTED_VERSIONS:
            hint = " (a big-endian file?)" if version > 0xFFFF else ""
            raise ModelError(
                f"{label} is GGUF version {version}{hint}; supported versions are "
                f"{', '.join(map(str, SUPPORTED_VERSIONS))}",
                reason="unsupported-version",
            )
        tensor_count = r.length("the tensor count")
        kv_count = r.length("the metadata count")

        metadata: dict[str, MetadataValue] = {}
        for i in range(kv_count):
            key = r.string(f"metadata key {i}")
            value = _value(r, r.u32(f"the value type of {key}"), key)
            if value is not None:
                metadata[key] = value

        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if (
            not isinstance(alignment, int)
            or isinstance(alignment, bool)
            or alignment <= 0
            or alignment & (alignment - 1)
        ):
            raise _corrupt(label, f"general.alignment is {alignment!r}, not a power of two")

        raw = [_tensor(r, i) for i in range(tensor_count)]
        header_end = r.pos
        data_offset = -(-header_end // alignment) * alignment

    tensors: list[TensorInfo] = []
    data_end = header_end
    for name, shape, type_id, offset in raw:
        if offset % alignment:
            raise _corrupt(label, f"tensor {name!r} starts at {offset}, not aligned to {alignment}")
        nbytes = _tensor_bytes(label, name, shape, type_id)
        if offset + nbytes > size:
            raise _corrupt(label, f"tensor {name!r} is larger than the whole file")
        end = data_offset + offset + nbytes
        if end > size:
            raise ModelError(
                f"{label} is truncated: tensor {name!r} needs bytes up to {end:,} but the file "
                f"has {size:,}",
                reason="truncated",
            )
        data_end = max(data_end, end)
        tensors.append(TensorInfo(name, shape, GGML_TYPES[type_id][0], offset, nbytes))

    return GGUFInfo(
        version=version,
        tensor_count=tensor_count,
        kv_count=kv_count,
        metadata=metadata,
        alignment=alignment,
        data_offset=data_offset,
        data_end=data_end,
        file_size=size,
        tensors=tuple(tensors),
    )


def check_loadable(path: Path | str) -> dict[str, Any]:
    """Load the model with llama.cpp on the CPU (a tiny context, weights memory-mapped) and
    return `{"n_vocab", "n_ctx_train", "architecture"}`; any failure is `unloadable`."""
    path = Path(path)
    info = read_header(path)  # a clear error for a file that is not GGUF at all
    import llama_cpp  # before anything imports numpy: the other order was seen to segfault

    try:
        llm = llama_cpp.Llama(
            model_path=str(path), n_ctx=64, n_gpu_layers=0, verbose=False, vocab_only=False
        )
    except Exception as exc:  # llama-cpp-python raises ValueError, RuntimeError, …
        raise ModelError(f"llama.cpp cannot load {path.name}: {exc}", reason="unloadable") from None
    try:
        architecture = llm.metadata.get("general.architecture") or info.architecture
        return {
            "n_vocab": int(llm.n_vocab()),
            "n_ctx_train": int(llama_cpp.llama_model_n_ctx_train(llm.model)),
            "architecture": architecture,
        }
    finally:
        llm.close()
