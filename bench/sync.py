"""Range sync over loopback, as a ratio to replaying the same blocks from a local file.

A chain of `--blocks` blocks (default 5,000, each with `--txs` signed transfers) is made in a
temporary DN_HOME by a single validator. It is written to a JSONL file, one block per line.

- *baseline*: a fresh node in this process reads the file and takes every block through
  `Node.receive_block`, the same code that takes blocks from peers (decode, signatures, state,
  SQLite).
- *sync*: the chain's node runs as a real `dn node start` process; a second, fresh process is
  started with `--peer` to it and syncs by itself. The clock runs from its first synced block to
  its last (process start-up and the handshake are not sync), polled at 20 ms.

Target: sync blocks/s >= 0.5 of the baseline's. Numbers are printed, never asserted.

    .venv/bin/python bench/sync.py [--blocks N] [--txs N] [--json] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dn.chain.genesis import Genesis, default_params
from dn.chain.types import Block, Tx
from dn.client.http import NodeClient
from dn.node.node import Node, NodeHome, now_ms
from dn.wallet.keys import Keypair

TARGET = 0.5
FEE = 1_000


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_chain(home: Path, blocks: int, txs: int) -> Genesis:
    source = NodeHome.named("source", home)
    key = source.key()
    sender, receiver = Keypair.generate(), Keypair.generate()
    genesis = Genesis.build(
        network="devnet",
        time_ms=now_ms() - blocks - 10_000,
        validators=[key.address],
        allocations={sender.address: 10**15},
        params=default_params(block_time_ms=50),
    )
    for name in ("source", "fresh", "replay"):
        genesis.save(NodeHome.named(name, home).genesis_file)
    node = Node(source, genesis)
    nonce = 0
    try:
        for height in range(1, blocks + 1):
            batch = [
                Tx.create(
                    sender,
                    chain_id=genesis.chain_id,
                    kind="transfer",
                    nonce=nonce + i,
                    fee=FEE,
                    payload={"to": receiver.address, "amount": 1},
                ).to_json()
                for i in range(txs)
            ]
            nonce += txs
            node.submit(batch)
            node.produce(genesis.time + height)
            if height % 1000 == 0:
                say(f"  made {height}/{blocks} blocks")
    finally:
        node.close()
    return genesis


def export(home: Path, path: Path) -> int:
    node = Node(NodeHome.named("source", home))
    count = 0
    try:
        with path.open("w") as out:
            for block in node.store.iter_canonical(1):
                out.write(json.dumps(block.to_json()) + "\n")
                count += 1
    finally:
        node.close()
    return count


def replay(home: Path, path: Path) -> float:
    node = Node(NodeHome.named("replay", home))
    try:
        start = time.perf_counter()
        with path.open() as lines:
            for line in lines:
                outcome = node.receive_block(Block.from_json(json.loads(line)))
                assert outcome == "extended", outcome
        return time.perf_counter() - start
    finally:
        node.close()


def start(home: Path, name: str, port: int, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DN_HOME": str(home)}
    log = (home / f"{name}.log").open("ab")
    cmd = [sys.executable, "-m", "dn", "node", "start", "--name", name, "--port", str(port)]
    return subprocess.Popen(
        [*cmd, "--no-mdns", *extra], env=env, stdout=log, stderr=subprocess.STDOUT
    )


def wait_up(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with NodeClient(url, timeout=5) as client:
        while time.monotonic() < deadline:
            try:
                client.status()
                return
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


def network_sync(home: Path, blocks: int) -> tuple[float, int]:
    src_port, dst_port = free_port(), free_port()
    procs = [start(home, "source", src_port)]
    try:
        wait_up(f"http://127.0.0.1:{src_port}")
        procs.append(start(home, "fresh", dst_port, "--peer", f"127.0.0.1:{src_port}"))
        url = f"http://127.0.0.1:{dst_port}"
        wait_up(url)
        first_height = 0
        first_at = 0.0
        deadline = time.monotonic() + 600
        with NodeClient(url, timeout=30) as client:
            while time.monotonic() < deadline:
                height = int(client.status()["height"])
                now = time.perf_counter()
                if height and not first_at:
                    first_at, first_height = now, height
                if height >= blocks:
                    return now - first_at, blocks - first_height
                time.sleep(0.02)
        raise SystemExit("sync did not finish in 600 s")
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=5_000)
    parser.add_argument("--txs", type=int, default=4, help="transfers per block")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary DN_HOME")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="dn-bench-sync-"))
    try:
        say(f"making a chain of {args.blocks} blocks x {args.txs} transfers in {home}")
        make_chain(home, args.blocks, args.txs)
        file = home / "blocks.jsonl"
        count = export(home, file)
        say("baseline: replaying the file through Node.receive_block")
        base_s = replay(home, file)
        say("sync: a fresh node process syncing from the chain's node over loopback")
        sync_s, synced = network_sync(home, count)
        base_rate = count / base_s
        sync_rate = synced / sync_s if sync_s > 0 else float("inf")
        ratio = sync_rate / base_rate
        result: dict[str, Any] = {
            "blocks": count,
            "txs_per_block": args.txs,
            "replay_blocks_per_s": round(base_rate, 1),
            "sync_blocks_per_s": round(sync_rate, 1),
            "ratio": round(ratio, 3),
            "target": TARGET,
            "pass": ratio >= TARGET,
        }
        if args.json:
            print(json.dumps(result))
        else:
            verdict = "PASS" if result["pass"] else "MISS"
            print(f"replay from file  {base_rate:10.1f} blocks/s   (baseline, {count} blocks)")
            print(f"sync over HTTP    {sync_rate:10.1f} blocks/s   ({synced} blocks timed)")
            print(f"ratio             {ratio:10.3f}            target >= {TARGET}  {verdict}")
    finally:
        if args.keep:
            say(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
