"""How fast the single binary starts: `dist/dn --help` against the venv's `dn --help`.

`make binary` builds dist/dn: a shell stub and a packed program folder that the first run unpacks
into a cache (binary/onefile.py). Measured in one run, in turns so that load on the machine falls
on both alike: the venv's `dn --help` (the baseline), the binary's `--help` with its cache warm,
and the binary's first run into an empty cache (the unpack), each the median of `--runs`. The
binary runs with an environment holding no Python: `PATH=/usr/bin:/bin`, no PYTHONPATH, a
temporary HOME.

Target (the dashboard-and-binary issue): warm `dist/dn --help` ≤ 1.5× the venv's. Also printed:
the binary's size and its first run. Prints PASS/MISS; asserts nothing.

    make binary && .venv/bin/python bench/startup.py [--binary dist/dn] [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.5


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, check=False)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.decode()[-800:]}")
    return took


def load() -> float:
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--binary", type=Path, default=ROOT / "dist" / "dn")
    parser.add_argument("--venv-dn", type=Path, default=Path(sys.executable).parent / "dn")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.binary.is_file():
        raise SystemExit(f"no {args.binary}: run `make binary` first")
    if not args.venv_dn.is_file():
        raise SystemExit(f"no {args.venv_dn}: run `make install` first")

    home = Path(tempfile.mkdtemp(prefix="dn-bench-startup-"))
    try:
        bare = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
        warm_env = {**bare, "DN_BINARY_CACHE": str(home / "warm")}
        start_load = load()
        timed([str(args.binary), "--help"], warm_env)  # fills the warm cache
        venv, warm, first = [], [], []
        for run in range(args.runs):
            venv.append(timed([str(args.venv_dn), "--help"]))
            warm.append(timed([str(args.binary), "--help"], warm_env))
            cold = home / f"cold-{run}"
            first.append(
                timed([str(args.binary), "--help"], {**bare, "DN_BINARY_CACHE": str(cold)})
            )
            shutil.rmtree(cold, ignore_errors=True)
            print(f"run {run + 1}/{args.runs}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)

    result = {
        "load": round(start_load, 2),
        "venv_help_s": statistics.median(venv),
        "binary_help_s": statistics.median(warm),
        "binary_first_run_s": statistics.median(first),
        "ratio": statistics.median(warm) / statistics.median(venv),
        "binary_bytes": args.binary.stat().st_size,
        "target": TARGET,
    }
    result["verdict"] = "PASS" if result["ratio"] <= TARGET else "MISS"
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"load average at start        {result['load']}")
    print(f"venv  dn --help              {result['venv_help_s'] * 1000:7.0f} ms (baseline)")
    print(f"dist/dn --help (warm cache)  {result['binary_help_s'] * 1000:7.0f} ms")
    print(f"dist/dn --help (first run)   {result['binary_first_run_s'] * 1000:7.0f} ms (unpacks)")
    print(f"binary size                  {result['binary_bytes'] / 2**20:7.1f} MiB")
    print(
        f"warm / venv                  {result['ratio']:7.2f}x (target <= {TARGET}x) "
        f"{result['verdict']}"
    )


if __name__ == "__main__":
    main()
