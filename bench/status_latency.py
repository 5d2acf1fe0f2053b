"""How long a node takes to answer `/dn/v1/status` while it checks a 10,000-transaction batch.

One `dn node start` in a temporary DN_HOME, its own key the one validator. 10,000 transfers from
100 funded senders are signed up front. The baseline is `/status` answered while the node is idle,
measured in the same run; then the whole batch goes to `POST /dn/v1/txs` in one request while a
second thread keeps asking for `/status`. The node checks a batch a slice at a time and lets its
event loop answer in between (dn/node/http/app.py), so no answer should wait for the whole batch.

Target (the network-hardening issue): every `/status` during the batch answered within 100 ms.
Prints the idle and in-batch latencies, their ratio, and PASS/MISS; asserts nothing.

    .venv/bin/python bench/status_latency.py [--txs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from dn.chain.types import Tx
from dn.node.node import NodeHome
from dn.node.setup import init_dev_chain
from dn.wallet.keys import Keypair

TARGET_MS = 100.0
SENDERS = 100
FEE = 1_000


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sign_batch(chain_id: str, senders: list[Keypair], count: int) -> list[dict[str, Any]]:
    sink = Keypair.generate().address
    per_sender = -(-count // len(senders))
    batch = []
    for nonce in range(per_sender):
        for sender in senders:
            if len(batch) == count:
                return batch
            tx = Tx.create(
                sender,
                chain_id=chain_id,
                kind="transfer",
                nonce=nonce,
                fee=FEE,
                payload={"to": sink, "amount": 1},
            )
            batch.append(tx.to_json())
    return batch


def status_ms(http: httpx.Client, url: str) -> float:
    started = time.perf_counter()
    http.get(url + "/dn/v1/status").raise_for_status()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=10_000, help="transactions in the batch")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dn-bench-status-") as tmp:
        dn_home = Path(tmp)
        senders = [Keypair.generate() for _ in range(SENDERS)]
        home = NodeHome.named("bench", dn_home)
        genesis = init_dev_chain(
            home, {s.address: 10**15 for s in senders}, params=None
        )  # the default block time: blocks do not compete with the batch much
        say(f"signing {args.txs} transfers …")
        batch = sign_batch(genesis.chain_id, senders, args.txs)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "DN_HOME": str(dn_home)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "dn", "node", "start", "--name", "bench", "--port", str(port)]
            + ["--no-mdns"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            with httpx.Client(timeout=60) as http:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        status_ms(http, url)
                        break
                    except httpx.HTTPError:
                        if time.monotonic() > deadline:
                            raise SystemExit("the node did not start") from None
                        time.sleep(0.1)
                idle = [status_ms(http, url) for _ in range(50)]

                during: list[float] = []
                done = threading.Event()

                def poll() -> None:
                    with httpx.Client(timeout=60) as poller:
                        while not done.is_set():
                            during.append(status_ms(poller, url))
                            time.sleep(0.01)

                poller = threading.Thread(target=poll)
                poller.start()
                time.sleep(0.1)
                started = time.perf_counter()
                reply = http.post(url + "/dn/v1/txs", json=batch).json()
                batch_s = time.perf_counter() - started
                done.set()
                poller.join()
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    result = {
        "txs": args.txs,
        "accepted": reply["accepted"],
        "batch_s": round(batch_s, 3),
        "idle_median_ms": round(statistics.median(idle), 2),
        "idle_max_ms": round(max(idle), 2),
        "batch_polls": len(during),
        "batch_median_ms": round(statistics.median(during), 2),
        "batch_max_ms": round(max(during), 2),
        "ratio_max_to_idle_median": round(max(during) / statistics.median(idle), 1),
        "target_ms": TARGET_MS,
        "verdict": "PASS" if max(during) <= TARGET_MS else "MISS",
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{result['accepted']}/{args.txs} accepted in {result['batch_s']} s; /status idle: "
        f"median {result['idle_median_ms']} ms, max {result['idle_max_ms']} ms; during the "
        f"batch ({result['batch_polls']} polls): median {result['batch_median_ms']} ms, max "
        f"{result['batch_max_ms']} ms = {result['ratio_max_to_idle_median']}x the idle median; "
        f"target max <= {TARGET_MS:.0f} ms: {result['verdict']}"
    )


if __name__ == "__main__":
    main()
