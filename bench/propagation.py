"""Transaction propagation on a 5-node devnet with a 1 s block time.

`dn devnet up --nodes 5 --block-time 1000` runs in a temporary DN_HOME. One signed transfer at a
time is submitted to node i % 5; the clock runs until all five nodes report it included. The
transfers are spaced by a random part of a block time, so they land at every phase of the block
cycle. Prints the median and the 90th percentile, and the median as a ratio to the block time
(the floor a transaction cannot beat on average is half a block time plus gossip).

Target: median <= 2.5 s. Numbers are printed, never asserted.

    .venv/bin/python bench/propagation.py [--txs N] [--nodes N] [--json] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from dn.chain.types import Tx
from dn.wallet.keystore import Keystore

TARGET_S = 2.5
BLOCK_MS = 1000
FEE = 1_000


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_base(count: int) -> int:
    for _ in range(200):
        base = random.randrange(20_000, 60_000)
        try:
            for i in range(count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", base + i))
        except OSError:
            continue
        return base
    raise SystemExit("no free run of ports found")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=30)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary DN_HOME")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="dn-bench-prop-"))
    env = {**os.environ, "DN_HOME": str(home)}
    base = free_base(args.nodes)
    cmd = [sys.executable, "-m", "dn", "--json", "devnet", "up", "--nodes", str(args.nodes)]
    cmd += ["--block-time", str(BLOCK_MS), "--port-base", str(base)]
    log = (home / "devnet.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=log)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"devnet did not start; see {home / 'devnet.log'}")
        devnet: dict[str, Any] = json.loads(line)
        urls = [n["url"] for n in devnet["nodes"]]
        wallets = {w["name"]: w["address"] for w in devnet["wallets"]}
        sender = Keystore(home / "wallets").load("devnet-alice", devnet["password"])
        to = wallets["devnet-bob"]
        rng = random.Random(7)
        times: list[float] = []
        with httpx.Client(timeout=10) as http:
            nonce = int(http.get(f"{urls[0]}/dn/v1/accounts/{sender.address}").json()["nonce"])
            say(f"devnet of {len(urls)} nodes up; timing {args.txs} transfers")
            for i in range(args.txs):
                time.sleep(rng.uniform(0, BLOCK_MS / 1000))
                tx = Tx.create(
                    sender,
                    chain_id=devnet["chain_id"],
                    kind="transfer",
                    nonce=nonce + i,
                    fee=FEE,
                    payload={"to": to, "amount": 1},
                )
                start = time.perf_counter()
                answer = http.post(f"{urls[i % len(urls)]}/dn/v1/txs", json=tx.to_json())
                answer.raise_for_status()
                waiting = set(urls)
                deadline = start + 60
                while waiting and time.perf_counter() < deadline:
                    for url in list(waiting):
                        found = http.get(f"{url}/dn/v1/txs/{tx.id}")
                        if found.status_code == 200 and found.json()["status"] == "included":
                            waiting.discard(url)
                    if waiting:
                        time.sleep(0.01)
                if waiting:
                    raise SystemExit(f"transfer {i} was not included everywhere in 60 s")
                times.append(time.perf_counter() - start)
        times.sort()
        median = statistics.median(times)
        p90 = times[int(0.9 * (len(times) - 1))]
        result = {
            "nodes": len(urls),
            "txs": len(times),
            "block_time_s": BLOCK_MS / 1000,
            "median_s": round(median, 3),
            "p90_s": round(p90, 3),
            "median_over_block_time": round(median / (BLOCK_MS / 1000), 3),
            "target_s": TARGET_S,
            "pass": median <= TARGET_S,
        }
        if args.json:
            print(json.dumps(result))
        else:
            verdict = "PASS" if result["pass"] else "MISS"
            print(f"in a block on all {len(urls)} nodes: median {median:.3f} s, p90 {p90:.3f} s")
            print(f"median / block time  {median / (BLOCK_MS / 1000):.3f}")
            print(f"target median <= {TARGET_S} s  {verdict}")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        if args.keep:
            say(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
