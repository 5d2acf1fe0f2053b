"""Every benchmark script in bench/ still starts: its imports resolve and `--help` works.

The benchmarks are run by hand, not by the suite, so a renamed module or constant would
otherwise break one unnoticed until somebody next measured with it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def test_there_are_benchmarks() -> None:
    assert len(SCRIPTS) >= 5


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_script_starts(script: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:")


def test_the_epoch_benchmark_runs_on_a_small_chain() -> None:
    """bench/epoch.py needs no model or node, so a small run of it is cheap: it builds the
    epoch's inputs as the chain records them, which a change of those records once broke
    (its `ModelEpoch` kept a field the chain had dropped) with `--help` still working."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "epoch.py"), "--validators", "8", "--models", "4"]
        + ["--runs", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert (result["validators"], result["models"]) == (8, 4)
    assert result["close_epoch_s"] > 0
