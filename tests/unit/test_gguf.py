"""GGUF header checks on files built here byte by byte, and on the real catalog models."""

from __future__ import annotations

import ctypes
import io
import struct
import zipfile
from pathlib import Path

import pytest

from dn.errors import ModelError
from dn.runner.gguf import GGML_TYPES, check_loadable, read_header

# Metadata value types (the GGUF spec's numbering).
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
GGML_F32 = 0


def gguf_string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def gguf_value(vtype: int, value: object) -> bytes:
    formats = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f"}
    formats.update({BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"})
    if vtype == STRING:
        assert isinstance(value, str)
        return gguf_string(value)
    if vtype == ARRAY:
        assert isinstance(value, tuple)
        etype, items = value
        body = b"".join(gguf_value(etype, item) for item in items)
        return struct.pack("<IQ", etype, len(items)) + body
    return struct.pack(formats[vtype], value) if vtype in formats else b""


def gguf_bytes(
    metadata: list[tuple[str, int, object]] | None = None,
    tensors: list[tuple[str, tuple[int, ...], int, bytes]] | None = None,
    *,
    version: int = 3,
    alignment: int = 32,
) -> bytes:
    """A GGUF file: metadata (key, type, value) and tensors (name, shape, ggml type, data)."""
    metadata = metadata if metadata is not None else []
    tensors = tensors if tensors is not None else []
    out = bytearray(b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(metadata)))
    for key, vtype, value in metadata:
        out += gguf_string(key) + struct.pack("<I", vtype) + gguf_value(vtype, value)
    offset = 0
    blobs = bytearray()
    for name, shape, ggml_type, data in tensors:
        out += gguf_string(name) + struct.pack("<I", len(shape))
        out += b"".join(struct.pack("<Q", dim) for dim in shape)
        out += struct.pack("<IQ", ggml_type, offset)
        blobs += data + b"\0" * (-len(data) % alignment)
        offset = len(blobs)
    out += b"\0" * (-len(out) % alignment)
    return bytes(out + blobs)


TENSOR = ("weight", (4, 2), GGML_F32, struct.pack("<8f", *range(8)))
METADATA: list[tuple[str, int, object]] = [
    ("general.architecture", STRING, "tiny"),
    ("general.name", STRING, "Tiny Test"),
    ("tiny.context_length", U32, 128),
    ("tiny.rope.freq_base", F32, 10000.0),
    ("tokenizer.ggml.tokens", ARRAY, (STRING, ["<s>", "a", "b"])),
    ("tokenizer.ggml.scores", ARRAY, (F32, [0.0, -1.0, -2.0])),
    ("general.flag", BOOL, True),
]


def write(tmp_path: Path, data: bytes, name: str = "model.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def reason_of(path: Path) -> str:
    with pytest.raises(ModelError) as caught:
        read_header(path)
    return caught.value.reason


def test_a_valid_header_gives_its_metadata_and_where_the_data_ends(tmp_path):
    data = gguf_bytes(METADATA, [TENSOR])
    info = read_header(write(tmp_path, data))
    assert (info.version, info.tensor_count, info.kv_count) == (3, 1, len(METADATA))
    assert info.architecture == "tiny" and info.name == "Tiny Test"
    assert info.context_length == 128
    assert info.metadata["general.flag"] is True
    assert info.metadata["tiny.rope.freq_base"] == 10000.0
    assert "tokenizer.ggml.tokens" not in info.metadata  # arrays are walked over, not kept
    assert info.data_offset % 32 == 0
    assert info.data_end == info.data_offset + 32 == len(data) == info.file_size
    assert [(t.name, t.shape, t.ggml_type, t.nbytes) for t in info.tensors] == [
        ("weight", (4, 2), "F32", 32)
    ]


def test_version_2_and_a_custom_alignment_parse(tmp_path):
    meta = [*METADATA, ("general.alignment", U32, 64)]
    info = read_header(write(tmp_path, gguf_bytes(meta, [TENSOR], version=2, alignment=64)))
    assert info.version == 2 and info.alignment == 64 and info.data_offset % 64 == 0


def test_bad_magic_is_not_gguf_and_says_what_the_file_starts_with(tmp_path):
    path = write(tmp_path, b"GGML" + gguf_bytes(METADATA)[4:], "x.bin")
    with pytest.raises(ModelError) as caught:
        read_header(path)
    assert caught.value.reason == "not-gguf"
    assert caught.value.message == "x.bin is not a GGUF file (it starts with b'GGML')"


def test_a_zip_file_is_not_gguf(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model.gguf", gguf_bytes(METADATA, [TENSOR]))
    path = write(tmp_path, buffer.getvalue(), "x.zip")
    with pytest.raises(ModelError) as caught:
        read_header(path)
    assert caught.value.reason == "not-gguf"
    assert "x.zip is not a GGUF file (it starts with b'PK\\x03\\x04')" in caught.value.message


def test_an_empty_file_is_not_gguf(tmp_path):
    assert reason_of(write(tmp_path, b"")) == "not-gguf"


def test_a_missing_file_is_unreadable(tmp_path):
    assert reason_of(tmp_path / "nowhere.gguf") == "unreadable"


@pytest.mark.parametrize("version", [1, 4, 0x03000000])
def test_other_versions_are_refused(tmp_path, version):
    assert reason_of(write(tmp_path, gguf_bytes(METADATA, version=version))) == (
        "unsupported-version"
    )


def test_a_header_cut_anywhere_is_truncated(tmp_path):
    data = gguf_bytes(METADATA, [TENSOR])
    info = read_header(write(tmp_path, data))
    header_end = info.data_offset - 1
    for cut in range(5, header_end, 7):
        assert reason_of(write(tmp_path, data[:cut])) in {"truncated"}, cut


def test_tensor_data_cut_short_is_truncated(tmp_path):
    data = gguf_bytes(METADATA, [TENSOR])
    path = write(tmp_path, data[:-1])
    with pytest.raises(ModelError) as caught:
        read_header(path)
    assert caught.value.reason == "truncated"
    assert "'weight'" in caught.value.message


def test_an_absurd_string_length_is_corrupt_without_allocating_it(tmp_path):
    data = bytearray(gguf_bytes(METADATA, [TENSOR]))
    key_length_at = 4 + 4 + 8 + 8  # the first metadata key's length
    data[key_length_at : key_length_at + 8] = struct.pack("<Q", 2**62)
    path = write(tmp_path, bytes(data))
    with pytest.raises(ModelError) as caught:
        read_header(path)
    assert caught.value.reason == "corrupt"
    assert "more than the file" in caught.value.message


def test_an_absurd_tensor_count_is_corrupt(tmp_path):
    data = bytearray(gguf_bytes(METADATA, [TENSOR]))
    data[8:16] = struct.pack("<Q", 2**40)
    assert reason_of(write(tmp_path, bytes(data))) == "corrupt"


def test_an_absurd_array_length_is_corrupt(tmp_path):
    meta = [("tokenizer.ggml.scores", ARRAY, (F32, [0.0]))]
    data = bytearray(gguf_bytes(meta))
    at = data.index(struct.pack("<IQ", F32, 1)) + 4
    data[at : at + 8] = struct.pack("<Q", 2**60)
    assert reason_of(write(tmp_path, bytes(data))) == "corrupt"


def test_an_unknown_value_type_is_corrupt(tmp_path):
    assert reason_of(write(tmp_path, gguf_bytes([("k", 13, None)]))) == "corrupt"


def test_an_unknown_tensor_type_is_refused(tmp_path):
    data = gguf_bytes(METADATA, [("w", (32,), 4, b"\0" * 32)])  # 4: the removed Q4_2
    assert reason_of(write(tmp_path, data)) == "unknown-type"


def test_a_huge_tensor_shape_is_corrupt(tmp_path):
    data = gguf_bytes(METADATA, [("w", (2**40, 2**20), GGML_F32, b"\0" * 32)])
    assert reason_of(write(tmp_path, data)) == "corrupt"


def test_a_header_llama_cpp_cannot_use_is_unloadable(tmp_path):
    path = write(tmp_path, gguf_bytes(METADATA, [TENSOR]))
    with pytest.raises(ModelError) as caught:
        check_loadable(path)
    assert caught.value.reason == "unloadable"


def test_check_loadable_refuses_a_non_gguf_file_before_llama_sees_it(tmp_path):
    with pytest.raises(ModelError) as caught:
        check_loadable(write(tmp_path, b"PK\x03\x04 not a model"))
    assert caught.value.reason == "not-gguf"


def test_the_block_sizes_match_the_ggml_that_llama_cpp_ships():
    import llama_cpp  # noqa: F401  (before numpy; loads the shared libraries we ask below)

    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    candidates = sorted(lib_dir.glob("libggml-base.so*")) + sorted(lib_dir.glob("libggml.so*"))
    if not candidates:
        pytest.skip(f"no libggml in {lib_dir}")
    ggml = ctypes.CDLL(str(candidates[0]))
    ggml.ggml_type_size.restype = ctypes.c_size_t
    ggml.ggml_type_size.argtypes = [ctypes.c_int]
    ggml.ggml_blck_size.restype = ctypes.c_int64
    ggml.ggml_blck_size.argtypes = [ctypes.c_int]
    for type_id, (name, block, block_bytes) in GGML_TYPES.items():
        assert (ggml.ggml_blck_size(type_id), ggml.ggml_type_size(type_id)) == (
            block,
            block_bytes,
        ), name


def test_the_real_smollm2_parses_and_loads(smollm2_gguf):
    info = read_header(smollm2_gguf)
    assert info.architecture == "llama"
    assert info.context_length == 8192
    assert info.data_end == info.file_size == 98_362_432
    assert {t.ggml_type for t in info.tensors} >= {"Q4_1", "F32"}
    assert check_loadable(smollm2_gguf) == {
        "n_vocab": 49152,
        "n_ctx_train": 8192,
        "architecture": "llama",
    }


def test_the_real_gemma_parses(gemma_gguf):
    info = read_header(gemma_gguf)
    assert info.architecture == "gemma3"
    assert info.context_length == 32768
    assert info.data_end == info.file_size == 253_113_024
    assert {t.ggml_type for t in info.tensors} >= {"Q4_K", "Q6_K", "F32"}


def test_a_real_model_cut_short_is_truncated(smollm2_gguf, tmp_path):
    cut = tmp_path / "cut.gguf"
    with smollm2_gguf.open("rb") as src, cut.open("wb") as dst:
        dst.write(src.read(50_000_000))
    assert reason_of(cut) == "truncated"
    with pytest.raises(ModelError) as caught:
        check_loadable(cut)
    assert caught.value.reason == "truncated"
