"""The catalog models for benchmarks: fetched once into `<repo>/.cache/models-home` (the same
git-ignored cache the tests use), never into the user's own DN_HOME."""

from __future__ import annotations

import sys
from pathlib import Path

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "models-home" / "models"


def model_file(name: str) -> Path:
    from dn.runner import catalog
    from dn.runner.modelstore import ModelStore

    print(f"model {name}: checking the cache {CACHE}", file=sys.stderr)
    return Path(catalog.fetch(name, ModelStore(CACHE))["path"])
