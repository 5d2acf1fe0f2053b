"""How many sequences of one model a node runs at once by default (`slots`, `dn mine --slots`).

A batched pass over k tokens costs far less than k one-token passes, so serving a few more
sequences than there are cores pays (bench/concurrency.py measures how much); each sequence also
holds a KV cache as long as the context, which bounds the count by memory.
"""

from __future__ import annotations

import os

MAX_SLOTS = 16


def default_slots(kv_bytes: int = 0, memory: int | None = None) -> int:
    """How many sequences one model serves at once by default: two per core (a batched pass over
    k tokens costs far less than k passes, so a few more than cores pays; the gain flattens past
    about 4 per core), at least 2, at most 16, and no more than a quarter of the available memory
    holds KV caches of `kv_bytes` each."""
    cores = os.cpu_count() or 1
    slots = max(2, min(MAX_SLOTS, 2 * cores))
    if kv_bytes > 0:
        slots = min(slots, max(1, (memory or available_memory()) // 4 // kv_bytes))
    return slots


def available_memory() -> int:
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def kv_bytes_per_token(metadata: dict[str, str]) -> int:
    """The KV cache one token takes (16-bit keys and values), from the GGUF metadata."""
    arch = metadata.get("general.architecture", "")

    def get(key: str, default: int) -> int:
        try:
            return int(metadata.get(f"{arch}.{key}", default))
        except ValueError:
            return default

    layers, heads = get("block_count", 32), get("attention.head_count", 32)
    head_dim = get("embedding_length", 4096) // max(1, heads)
    kv_heads = get("attention.head_count_kv", heads)
    key, value = get("attention.key_length", head_dim), get("attention.value_length", head_dim)
    return layers * kv_heads * (key + value) * 2
