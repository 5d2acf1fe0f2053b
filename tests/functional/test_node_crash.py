"""Crash safety: a node killed with SIGKILL at random moments while it ingests transactions.

After every kill the store must pass SQLite's integrity check and hold every block the node had
reported: each transaction the node called "included" is in the canonical chain exactly once, and
each one it accepted is either there or still in the persisted mempool. At the end every accepted
transaction is in the chain exactly once and `dn chain verify` replays the whole chain cleanly.
"""

from __future__ import annotations

import collections
import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from dn.chain.store import Store
from dn.chain.types import Tx
from dn.chain.verify import verify_store
from dn.wallet.keys import Keypair
from tests.functional.harness import NodeProcess, free_port, init_chain, wait_until

SEED = int(os.environ.get("DN_CRASH_SEED", "20240607"))
CYCLES, MIN_CYCLES, BUDGET_S = 12, 10, 90.0  # the default suite
SOAK_CYCLES, SOAK_MIN_CYCLES, SOAK_BUDGET_S = 25, 20, 150.0  # make soak
FEE = 1_000
PACE_S = 0.005  # between requests: a few thousand txs in all keeps each replay short


class Ingest(threading.Thread):
    """Submits signed transfers (single and batched) and polls some of them, until stopped.

    `accepted` holds every id the node answered 200 for; `confirmed` maps ids the node reported
    as included to their height. Anything the node refuses or forgets is recorded as a problem.
    """

    def __init__(
        self,
        url: str,
        chain_id: str,
        senders: list[Keypair],
        recipients: list[str],
        nonces: dict[str, int],
        rng: random.Random,
    ) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.chain_id = chain_id
        self.senders = senders
        self.recipients = recipients
        self.nonces = nonces
        self.rng = rng
        self.stopping = threading.Event()
        self.accepted: list[str] = []
        self.confirmed: dict[str, int] = {}
        self.problems: list[str] = []
        self._unpolled: collections.deque[str] = collections.deque()
        self._stale: set[str] = set()  # senders whose next nonce is unknown after an error

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=3) as http:
            turn = 0
            while not self.stopping.is_set():
                turn += 1
                try:
                    self._submit(http, self.senders[turn % len(self.senders)])
                    if turn % 3 == 0:
                        self._poll(http)
                    time.sleep(PACE_S)
                except httpx.TransportError:
                    self._stale.update(s.address for s in self.senders)
                    time.sleep(0.01)  # the node is gone (killed) or busy; the owner stops us
                except Exception as exc:  # noqa: BLE001 - reported by the test, not lost
                    self.problems.append(f"ingest stopped: {exc!r}")
                    return

    def _submit(self, http: httpx.Client, sender: Keypair) -> None:
        if sender.address in self._stale:
            reply = http.get(f"/dn/v1/accounts/{sender.address}").json()
            self.nonces[sender.address] = reply["next_nonce"]
            self._stale.discard(sender.address)
        count = self.rng.choice([1, 1, 1, 3, 10])
        first = self.nonces[sender.address]
        txs = [
            Tx.create(
                sender,
                chain_id=self.chain_id,
                kind="transfer",
                nonce=first + i,
                fee=FEE,
                payload={"to": self.rng.choice(self.recipients), "amount": 1_000 + i},
            )
            for i in range(count)
        ]
        self._stale.add(sender.address)  # until we know what the node made of these
        body = txs[0].to_json() if count == 1 else [tx.to_json() for tx in txs]
        response = http.post("/dn/v1/txs", json=body)
        if response.status_code != 200:
            self.problems.append(f"submit answered {response.status_code}: {response.text[:300]}")
            return
        results = [response.json()] if count == 1 else response.json()["results"]
        for tx, result in zip(txs, results, strict=True):
            if not result.get("accepted"):
                self.problems.append(f"tx {tx.id[:12]} (nonce {tx.nonce}) refused: {result}")
                return
            if result["id"] != tx.id:
                self.problems.append(f"tx {tx.id[:12]} came back with id {result['id']}")
            self.accepted.append(tx.id)
            self._unpolled.append(tx.id)
            self.nonces[sender.address] = tx.nonce + 1
        self._stale.discard(sender.address)

    def _poll(self, http: httpx.Client) -> None:
        for _ in range(min(3, len(self._unpolled))):
            tx_id = self._unpolled.popleft()
            response = http.get(f"/dn/v1/txs/{tx_id}")
            if response.status_code == 404:
                self.problems.append(f"accepted tx {tx_id[:12]} is unknown to the node")
                continue
            found = response.json()
            if found["status"] == "included":
                self.confirmed[tx_id] = found["height"]
            else:
                self._unpolled.append(tx_id)


def _check_store_after_kill(
    store_file: Path,
    accepted: list[str],
    confirmed: dict[str, int],
    reported_height: int,
    where: str,
) -> int:
    """Integrity, no reported block or accepted tx lost, a clean replay; returns the tip height."""
    raw = sqlite3.connect(store_file)  # read-write: replays the WAL as the node would
    try:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok", where
    finally:
        raw.close()
    store = Store.open(store_file, readonly=True)
    try:
        assert store.integrity_check() == "ok", where
        height = store.tip().height
        assert height >= reported_height, f"{where}: tip {height} < reported {reported_height}"
        for tx_id in confirmed:
            assert store.count_canonical_tx(tx_id) == 1, f"{where}: confirmed {tx_id} not once"
        pooled = {row[0] for row in store.conn.execute("SELECT id FROM mempool")}
        for tx_id in accepted:
            in_chain = store.count_canonical_tx(tx_id)
            assert in_chain <= 1, f"{where}: tx {tx_id} is in the chain {in_chain} times"
            assert in_chain or tx_id in pooled, f"{where}: accepted tx {tx_id} was lost"
            assert not (in_chain and tx_id in pooled), f"{where}: {tx_id} in chain and mempool"
        report = verify_store(store)  # blocks, state and supply agree as of the last commit
        assert report["ok"], f"{where}: {report['problems']}"
        return height
    finally:
        store.close()


def test_sigkill_while_ingesting_loses_nothing(
    dn_home: Path, node_factory: Callable[..., NodeProcess]
) -> None:
    """Twelve kills in the default suite; twenty-five in the soak test below."""
    _kill_while_ingesting(dn_home, node_factory, CYCLES, MIN_CYCLES, BUDGET_S)


@pytest.mark.soak
def test_sigkill_while_ingesting_loses_nothing_soak(
    dn_home: Path, node_factory: Callable[..., NodeProcess]
) -> None:
    _kill_while_ingesting(dn_home, node_factory, SOAK_CYCLES, SOAK_MIN_CYCLES, SOAK_BUDGET_S)


def _kill_while_ingesting(
    dn_home: Path,
    node_factory: Callable[..., NodeProcess],
    most: int,
    least: int,
    budget_s: float,
) -> None:
    rng = random.Random(SEED)
    seed_note = f"(DN_CRASH_SEED={SEED})"
    senders = [Keypair.generate() for _ in range(4)]
    recipients = [Keypair.generate().address for _ in range(6)] + [senders[0].address]
    genesis = init_chain(
        dn_home,
        {s.address: 10**15 for s in senders},
        block_time_ms=50,
        max_block_interval_ms=1000,
    )
    node = node_factory(port=free_port())
    store_file = node.home.store_file
    accepted: list[str] = []
    confirmed: dict[str, int] = {}
    problems: list[str] = []
    started = time.monotonic()
    cycles = 0
    node.start()
    while cycles < most and time.monotonic() - started < budget_s:
        where = f"cycle {cycles} {seed_note}"
        with node.client() as client:
            # the port is fixed; make sure it is our node answering on it, not another test's
            assert client.status()["genesis_hash"] == genesis.hash, where
            nonces = {s.address: client.account(s.address)["next_nonce"] for s in senders}
        ingest = Ingest(
            node.url, genesis.chain_id, senders, recipients, nonces, random.Random(rng.random())
        )
        ingest.start()
        time.sleep(rng.uniform(0.2, 1.5))
        node.kill()  # SIGKILL, wherever the node happens to be
        ingest.stopping.set()
        ingest.join(10)
        assert not ingest.is_alive(), where
        cycles += 1
        accepted += ingest.accepted
        confirmed.update(ingest.confirmed)
        problems += [f"{where}: {p}" for p in ingest.problems]
        reported = max(ingest.confirmed.values(), default=0)
        _check_store_after_kill(store_file, accepted, confirmed, reported, where)
        node.start()

    assert cycles >= least, f"only {cycles} kill cycles in {budget_s:.0f} s {seed_note}"
    assert not problems, "\n".join(problems[:20])
    assert len(confirmed) >= 10, f"only {len(confirmed)} txs seen included {seed_note}"

    # after the last restart everything accepted, persisted mempool included, lands exactly once
    with node.client() as client:
        wait_until(lambda: client.status()["mempool"] == 0, 60, what="the mempool to drain")
        height = client.status()["height"]
    store = Store.open(store_file, readonly=True)
    try:
        missing = [t for t in accepted if store.count_canonical_tx(t) != 1]
        assert not missing, f"{len(missing)} accepted txs not in the chain once {seed_note}"
        for tx_id, included_at in confirmed.items():
            record = store.tx(tx_id)
            assert record is not None and record.height == included_at, seed_note
    finally:
        store.close()
    assert node.stop() == 0

    env = {**os.environ, "DN_HOME": str(dn_home)}
    done = subprocess.run(
        [sys.executable, "-m", "dn", "--json", "chain", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["problems"] == [], report
    assert report["height"] >= height and report["txs"] >= len(accepted), report

    store = Store.open(store_file, readonly=True)
    try:
        direct = verify_store(store)
    finally:
        store.close()
    assert direct["ok"] is True, direct["problems"]
    assert direct["tip"] == report["tip"] and direct["txs"] == report["txs"]
    print(
        f"{cycles} kills, {len(accepted)} txs accepted, {len(confirmed)} seen included, "
        f"height {direct['height']}, {time.monotonic() - started:.0f} s {seed_note}"
    )
