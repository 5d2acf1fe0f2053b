"""llama.cpp's default thread count follows the cores this process may use (its CPU affinity, as
a container's cpuset or `taskset` sets it), not the machine's count."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest


@pytest.mark.skipif(shutil.which("taskset") is None, reason="no taskset here")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: nothing to restrict")
def test_a_process_pinned_to_one_core_uses_one_thread() -> None:
    code = "from dn.runner.llama import default_threads; print(default_threads())"
    pinned = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert pinned.stdout.strip() == "1"
    free = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert free.stdout.strip() == str(min(8, len(os.sched_getaffinity(0))))
