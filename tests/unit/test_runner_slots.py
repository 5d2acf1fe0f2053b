"""How many sequences a model serves at once by default (dn/runner/capacity.py `default_slots`),
and the KV cache one token takes, which bounds it (pure; the engine itself is in tests/runner)."""

from __future__ import annotations

from dn.runner.capacity import MAX_SLOTS, default_slots, kv_bytes_per_token

GIB = 1 << 30

# SmolLM2-135M's GGUF header: 30 blocks, 9 query heads over a 576-wide embedding (head size 64),
# 3 key/value heads.
SMOLLM2 = {
    "general.architecture": "llama",
    "llama.block_count": "30",
    "llama.embedding_length": "576",
    "llama.attention.head_count": "9",
    "llama.attention.head_count_kv": "3",
}
# Gemma 3 270M: 18 blocks, 1 key/value head with keys and values of 256 (wider than 640 / 4).
GEMMA3 = {
    "general.architecture": "gemma3",
    "gemma3.block_count": "18",
    "gemma3.embedding_length": "640",
    "gemma3.attention.head_count": "4",
    "gemma3.attention.head_count_kv": "1",
    "gemma3.attention.key_length": "256",
    "gemma3.attention.value_length": "256",
}


def test_a_token_takes_its_keys_and_values_in_16_bits_in_every_block() -> None:
    assert kv_bytes_per_token(SMOLLM2) == 30 * 3 * (64 + 64) * 2
    assert kv_bytes_per_token(GEMMA3) == 18 * 1 * (256 + 256) * 2


def test_slots_scale_with_cores_within_bounds() -> None:
    slots = default_slots()
    assert 2 <= slots <= MAX_SLOTS


def test_kv_caches_take_at_most_a_quarter_of_the_memory() -> None:
    assert default_slots(kv_bytes=GIB, memory=16 * GIB) <= 4
    assert default_slots(kv_bytes=GIB, memory=4 * GIB) == 1  # never none: one always runs
    assert default_slots(kv_bytes=1, memory=16 * GIB) == default_slots()
