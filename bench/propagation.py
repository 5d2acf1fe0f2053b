"""Transaction propagation on a 5-node devnet with a 1 s block time, against a lone node.

Two devnets run side by side, each in its own temporary DN_HOME, with the same block time
(`dn devnet up --block-time 1000`): the measured one of `--nodes` nodes (default 5, all
validators) and, as the baseline, one of a single node. On each, from its own thread, one signed
transfer at a time is submitted (on the network to node i % 5) and the clock runs until every
node of that devnet reports it included. Before each, a random part of a block time passes, so
the transfers land at every phase of the block cycle; both devnets get the same seeded waits,
so transfer i meets about the same phase on both.

Why a lone node is the baseline: most of the time a transfer waits is the wait for the next
block (a node makes one as soon as a block time has passed since the last and work is waiting),
which the network cannot beat and a raw HTTP round trip (a few milliseconds) says nothing about.
A lone node pays that wait and its own HTTP, mempool and block production, and nothing of the
network. `ratio = median on all nodes / median on the lone node` is what the network adds on
top: the transfer's gossip to the validator whose turn it is, out-of-turn delays, the block's
gossip to every node, and polling five nodes instead of one; the median of the paired
differences gives the same in milliseconds. Running both at once puts them under the same load
of a shared machine.

Target: median <= 2.5 s (on all nodes). Also printed: the 90th percentiles and the median as a
share of the block time. Numbers are printed, never asserted.

With `--hostile`, the two devnets are both of `--nodes` nodes, and one of them has a hostile peer
attached for the whole run (bench/_attacker.py: it claims a far heavier chain and trickles its
block pages, re-handshakes under a fresh key every second, and replays the last blocks and their
transactions to every node). `ratio = median under attack / median of the clean devnet`.
Target (the network-hardening issue): ratio <= 1.5.

    .venv/bin/python bench/propagation.py [--txs N] [--nodes N] [--hostile] [--json] [--keep]
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from dn.chain.types import Tx
from dn.wallet.keystore import Keystore

TARGET_S = 2.5
HOSTILE_TARGET = 1.5
ATTACHED_S = 5.0  # the attacker's head start before the clock runs
BLOCK_MS = 1000
FEE = 1_000


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_base(count: int, taken: range = range(0)) -> int:
    for _ in range(200):
        base = random.randrange(20_000, 60_000)
        if set(range(base, base + count)) & set(taken):
            continue
        try:
            for i in range(count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", base + i))
        except OSError:
            continue
        return base
    raise SystemExit("no free run of ports found")


class Devnet:
    """A `dn devnet up` process in its own DN_HOME, and the transfers timed on it."""

    def __init__(self, home: Path, nodes: int, taken: range = range(0)) -> None:
        home.mkdir()
        self.home = home
        base = free_base(nodes, taken)
        self.ports = range(base, base + nodes)
        cmd = [sys.executable, "-m", "dn", "--json", "devnet", "up", "--nodes", str(nodes)]
        cmd += ["--block-time", str(BLOCK_MS), "--port-base", str(base)]
        self.log = (home / "devnet.log").open("wb")
        env = {**os.environ, "DN_HOME": str(home)}
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=self.log)
        self.times: list[float] = []
        self.rng = random.Random(7)  # the same waits on both devnets

    def ready(self, http: httpx.Client) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"devnet did not start; see {self.home / 'devnet.log'}")
        info: dict[str, Any] = json.loads(line)
        self.urls = [n["url"] for n in info["nodes"]]
        self.chain_id = info["chain_id"]
        self.to = {w["name"]: w["address"] for w in info["wallets"]}["devnet-bob"]
        self.sender = Keystore(self.home / "wallets").load("devnet-alice", info["password"])
        account = http.get(f"{self.urls[0]}/dn/v1/accounts/{self.sender.address}").json()
        self.nonce = int(account["nonce"])

    def transfers(self, count: int) -> None:
        with httpx.Client(timeout=10) as http:
            for i in range(count):
                self.transfer(http, i)

    def transfer(self, http: httpx.Client, i: int) -> None:
        """Wait a random part of a block time, then time transfer i until all nodes hold it."""
        time.sleep(self.rng.uniform(0, BLOCK_MS / 1000))
        tx = Tx.create(
            self.sender,
            chain_id=self.chain_id,
            kind="transfer",
            nonce=self.nonce + i,
            fee=FEE,
            payload={"to": self.to, "amount": 1},
        )
        start = time.perf_counter()
        answer = http.post(f"{self.urls[i % len(self.urls)]}/dn/v1/txs", json=tx.to_json())
        answer.raise_for_status()
        waiting = set(self.urls)
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
        self.times.append(time.perf_counter() - start)

    def summary(self) -> dict[str, Any]:
        times = sorted(self.times)
        median = statistics.median(times)
        return {
            "nodes": len(self.urls),
            "txs": len(times),
            "median_s": round(median, 3),
            "p90_s": round(times[int(0.9 * (len(times) - 1))], 3),
            "median_over_block_time": round(median / (BLOCK_MS / 1000), 3),
            "mean_s": round(statistics.fmean(times), 3),
            "times_s": [round(t, 3) for t in self.times],
        }

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=30, help="transfers timed on each devnet")
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary DN_HOMEs")
    parser.add_argument(
        "--hostile", action="store_true", help="against the same devnet with a hostile peer"
    )
    args = parser.parse_args()
    if args.txs < 1 or args.nodes < 2:
        parser.error("--txs must be at least 1 and --nodes at least 2")
    if args.hostile:
        hostile_run(args)
        return
    work = Path(tempfile.mkdtemp(prefix="dn-bench-prop-"))
    nets: list[Devnet] = []
    try:
        nets.append(Devnet(work / "network", args.nodes))
        nets.append(Devnet(work / "lone", 1, taken=nets[0].ports))
        network, lone = nets
        with httpx.Client(timeout=10) as http:
            for net in nets:
                net.ready(http)
        say(f"devnets of {args.nodes} nodes and of 1 up; timing {args.txs} transfers on each")
        with ThreadPoolExecutor(len(nets)) as pool:
            for done in [pool.submit(net.transfers, args.txs) for net in nets]:
                done.result()
        result: dict[str, Any] = {
            "block_time_s": BLOCK_MS / 1000,
            "network": network.summary(),
            "lone": lone.summary(),
            "ratio": round(statistics.median(network.times) / statistics.median(lone.times), 3),
            "mean_ratio": round(statistics.fmean(network.times) / statistics.fmean(lone.times), 3),
            # Transfer i waits the same random time on both devnets, so pairs are comparable.
            "median_extra_ms": round(
                1000
                * statistics.median(a - b for a, b in zip(network.times, lone.times, strict=True))
            ),
            "target_s": TARGET_S,
            "pass": statistics.median(network.times) <= TARGET_S,
        }
        if args.json:
            print(json.dumps(result))
        else:
            verdict = "PASS" if result["pass"] else "MISS"
            for key, what in (("network", f"all {args.nodes} nodes"), ("lone", "a lone node")):
                r = result[key]
                print(
                    f"in a block on {what:11}: median {r['median_s']:.3f} s, p90 "
                    f"{r['p90_s']:.3f} s, median / block time {r['median_over_block_time']:.3f}"
                )
            print(
                f"network / lone node: {result['ratio']:.3f} (medians), {result['mean_ratio']:.3f} "
                f"(means); the network adds a median {result['median_extra_ms']} ms per transfer"
            )
            print(f"target median <= {TARGET_S} s  {verdict}")
    finally:
        for net in nets:
            net.stop()
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def hostile_run(args: argparse.Namespace) -> None:
    from _attacker import Attacker  # bench/: the tests' hostile peer, in a loop

    work = Path(tempfile.mkdtemp(prefix="dn-bench-prop-"))
    nets: list[Devnet] = []
    attacker = None
    try:
        nets.append(Devnet(work / "clean", args.nodes))
        nets.append(Devnet(work / "attacked", args.nodes, taken=nets[0].ports))
        clean, attacked = nets
        with httpx.Client(timeout=10) as http:
            for net in nets:
                net.ready(http)
        attacker = Attacker(attacked.urls)
        attacker.start()
        time.sleep(ATTACHED_S)
        say(f"two devnets of {args.nodes} nodes up, one under attack; timing {args.txs} each")
        with ThreadPoolExecutor(len(nets)) as pool:
            for done in [pool.submit(net.transfers, args.txs) for net in nets]:
                done.result()
        attack = attacker.stop()
        attacker = None
        ratio = statistics.median(attacked.times) / statistics.median(clean.times)
        result = {
            "block_time_s": BLOCK_MS / 1000,
            "clean": clean.summary(),
            "attacked": attacked.summary(),
            "attack": attack,
            "ratio": round(ratio, 3),
            "target": HOSTILE_TARGET,
            "pass": ratio <= HOSTILE_TARGET,
        }
        if args.json:
            print(json.dumps(result))
            return
        for key in ("clean", "attacked"):
            r = result[key]
            print(
                f"in a block on all {args.nodes} nodes, {key:8}: median {r['median_s']:.3f} s, "
                f"p90 {r['p90_s']:.3f} s"
            )
        print("the attacker: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in attack.items()))
        verdict = "PASS" if result["pass"] else "MISS"
        print(f"attacked / clean: {ratio:.3f} (target <= {HOSTILE_TARGET})  {verdict}")
    finally:
        if attacker is not None:
            attacker.stop()
        for net in nets:
            net.stop()
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
