"""The soak (`make soak`): a 5-node LAN of network namespaces (tests/functional/lan.py) under a
steady stream of transfers and paid queries while a seeded driver perturbs one node at a time.

    namespace 0..2   validators v0..v2: `dn node start --host 10.213.0.1x`, mDNS on the veth
    namespace 3, 4   miners m1, m2: `dn mine` serving the real SmolLM2 model (in DN_HOME/models,
                     registered on chain by a funded creator; the miners' wallets funded at genesis)
    namespace 5      the traffic client (no node): this very file run as a script (`_agent_main`),
                     with the client library, against the nodes' LAN addresses

Nobody is given a `--peer`: every node finds the others by mDNS. A miner resolves its model from
its own chain, so each miner's folder is first synced by a plain `dn node start` of the same name.

The driver (`_Driver`, seeded: the seed is printed, DN_SOAK_SEED replays it) waits 10-30 s, then
picks one node and one perturbation (the three kinds take turns, in a seeded order): kill -9 and
restart a few seconds later; SIGSTOP then SIGCONT a few seconds later; `ip link set dn0 down` in
its namespace then up again. One node at a time, so at most one of the three validators is ever
down: never a majority. After each one it waits (bounded) for that node to catch up with the
others' height, and records how long it took.

The client (`_Agent`) sends signed transfers from two funded wallets (one at a time per wallet,
nonces tracked locally; a transfer that no node takes, or that is not in a block within a few
seconds, is sent again to another node) and paid queries through the validators' gateways (one at
a time; the consumer signs `task.settle` with its own nonce and sends it the same way). A
transaction counts as confirmed once a node reports it in a *final* block; a query as settled once
its task is settled in a final block (by the consumer's settlement, or the checker's backstop).

At the end the perturbations stop, the client drains (bounded), every node must reach one tip
(bounded), every node is stopped, and its store is read offline: `verify_store` passes (which
includes the supply invariant), the stores agree up to the lowest tip, every confirmed
transaction is in every node's canonical chain exactly once, and every settled task is in every
node's state. One line of counts is printed; lost (confirmed but missing anywhere) must be 0.

    DN_SOAK_SECONDS   traffic and perturbations, in seconds (default 1200); 90-120 to develop
    DN_SOAK_SEED      the driver's and the client's seed (default: a random one, printed)

Skipped, with the reason, without root, `ip` or network namespaces, without llama.cpp, or where
the SmolLM2 file is neither cached nor fetchable. Every process is ended by its own pid and every
namespace removed at the end, failed test or not; every loop and wait is bounded.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dn.chain.types import Tx
from dn.runner.modelstore import ModelStore
from dn.wallet.keys import Keypair
from dn.wallet.keystore import KDF_FAST, Keystore
from tests.functional.harness import REPO, agreed_prefix, make_keys, verify_offline, write_genesis
from tests.functional.lan import (
    Lan,
    LanMiner,
    LanNode,
    link_down,
    link_up,
    node_env,
    signal_node,
    skip_without_lan,
    statuses,
)

SOAK_S = int(os.environ.get("DN_SOAK_SECONDS", "1200"))
GAP_S = (10.0, 30.0)  # between perturbations
DOWN_S = (3.0, 8.0)  # how long one lasts
KINDS = ("kill", "pause", "link")
RECOVER_S = 120.0  # for a perturbed node to catch up with the others
DRAIN_S = 150.0  # for the client to see its last transactions final, after the traffic
SETTLE_S = 180.0  # for every node to reach one tip, after the drain
SETUP_S = 600.0  # starting the LAN, registering the model, starting the miners
pytestmark = [pytest.mark.soak, pytest.mark.timeout(int(SOAK_S + DRAIN_S + SETTLE_S + SETUP_S))]

VALIDATORS = ("v0", "v1", "v2")
MINERS = ("m1", "m2")
NAMES = (*VALIDATORS, *MINERS)
CLIENT = len(NAMES)  # the namespace of the traffic client
PASSWORD = "soak-test"
DN = 10**9
PRICE = 2_000_000  # units per 1,000 tokens
MAX_TOKENS = 12
PROMPTS = (
    "Name a colour.",
    "What is two plus two?",
    "Say hello.",
    "Name a fruit.",
    "What is the capital of France?",
    "Count to three.",
)


# --- the test ------------------------------------------------------------------------------------


@pytest.fixture
def soak_model(request: pytest.FixtureRequest) -> Path:
    """The SmolLM2 file, or a skip that says why there is none."""
    skip_without_lan()
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("the soak's miners need llama-cpp-python (pip install -e '.[dev]')")
    try:
        path: Path = request.getfixturevalue("smollm2_gguf")
    except Exception as exc:  # noqa: BLE001 - not cached and not fetchable: say so
        pytest.skip(f"the soak needs the SmolLM2 file (tests/conftest.py smollm2_gguf): {exc}")
    return path


def test_lan_soak(dn_home: Path, soak_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def say(line: str) -> None:  # on the terminal even under `pytest -q` (make soak)
        with capsys.disabled():
            print(line, flush=True)

    seed = int(os.environ.get("DN_SOAK_SEED") or random.SystemRandom().randrange(10**9))
    say(f"\nsoak: seed {seed} (DN_SOAK_SEED={seed} replays it), {SOAK_S} s of traffic")
    lan = Lan(len(NAMES) + 1)  # the nodes' namespaces and the client's
    nodes: list[LanNode] = []
    driver: _Driver | None = None
    try:
        lan.open()
        setup = _setup(dn_home, lan, soak_model, nodes)
        agent = _start_agent(dn_home, lan, setup, seed)
        driver = _Driver(lan, nodes, random.Random(seed), say)
        driver.run(SOAK_S)
        _finish(dn_home, lan, nodes, agent, driver, seed, say)
    except BaseException:
        if driver is not None:
            driver.restore()
        for node in nodes:
            print(f"--- {node.name} log ---\n{node.tail(4000)}")
        agent_log = dn_home / "agent.log"
        if agent_log.exists():
            print(f"--- client log ---\n{agent_log.read_text(errors='replace')[-4000:]}")
        raise
    finally:
        lan.close()


def _setup(dn_home: Path, lan: Lan, model_file: Path, nodes: list[LanNode]) -> dict[str, Any]:
    """Genesis, validators up and peered, the model registered, the miners up and serving;
    `nodes` gets each node as it is made (for its log, if anything fails)."""
    keystore = Keystore(dn_home / "wallets")
    wallets = {n: keystore.create(n, PASSWORD, KDF_FAST) for n in ("creator", "consumer", *MINERS)}
    senders = [Keypair.generate() for _ in range(2)]  # the client's transfer wallets
    node_keys = make_keys(dn_home, list(VALIDATORS))
    allocations = {w.address: 1_000 * DN for w in [*wallets.values(), *senders]}
    allocations.update({k.address: 10 * DN for k in node_keys.values()})
    genesis = write_genesis(
        dn_home,
        [k.address for k in node_keys.values()],
        allocations,
        list(NAMES),
        escrows={wallets["consumer"].address: 500 * DN},  # what pays its queries (escrow.py)
        block_time_ms=1000,
        max_block_interval_ms=1000,
        # Downtime jailing has its own tests (test_validator_jailing.py); here a validator that
        # lags on a busy host must not leave the set of three, where one down stops nobody.
        jail_max_missed_bps=10_000,
    )
    sha = ModelStore(dn_home / "models").add_file(model_file, name="smollm2-135m", source="test")
    validators = [
        LanNode(lan, i, dn_home, name, args=["--peer-expiry", "5"])
        for i, name in enumerate(VALIDATORS)
    ]
    nodes += validators
    for node in validators:
        node.start()
    _wait(
        lambda: all(len(v.get("/dn/v1/peers")["peers"]) >= 2 for v in validators),
        90,
        "the validators peered by mDNS",
    )
    register = Tx.create(
        wallets["creator"],
        chain_id=genesis.chain_id,
        kind="model.register",
        nonce=0,
        fee=1_000,
        payload={
            "model": sha,
            "name": "smollm2",
            "domain": "general",
            "price": PRICE,
            "license": "Apache-2.0",
            "size": model_file.stat().st_size,
        },
    )
    validators[0].post("/dn/v1/txs", register.to_json())
    _wait(
        lambda: validators[0].get(f"/dn/v1/txs/{register.id}")["status"] == "included",
        60,
        "the model registered",
    )
    miners: list[LanNode] = []
    for i, name in enumerate(MINERS, start=len(VALIDATORS)):
        # A miner resolves its model on its own chain (it has no static peer): sync it first.
        sync = LanNode(lan, i, dn_home, name, args=["--peer-expiry", "5"]).start()
        _wait(lambda sync=sync: sync.get(f"/dn/v1/models/{sha}"), 90, f"{name} synced")  # type: ignore[misc]
        assert sync.stop() == 0, sync.tail()
        miner = LanMiner(
            lan,
            i,
            dn_home,
            name,
            wallet=name,
            model=sha,
            password=PASSWORD,
            args=["--threads", "1"],
        )
        miners.append(miner)
        nodes.append(miner)
        miner.start()
    _wait(
        lambda: len(validators[0].get(f"/dn/v1/models/{sha}")["miners"]) == len(MINERS),
        120,
        "both miners serving",
    )
    return {
        "nodes": nodes,
        "genesis": genesis,
        "model": sha,
        "consumer": wallets["consumer"],
        "senders": senders,
    }


def _start_agent(dn_home: Path, lan: Lan, setup: dict[str, Any], seed: int) -> Any:
    nodes: list[LanNode] = setup["nodes"]
    config = {
        "nodes": [n.url for n in nodes],
        "gateways": [n.url for n in nodes if n.name in VALIDATORS],
        "chain_id": setup["genesis"].chain_id,
        "min_fee": setup["genesis"].param("min_fee"),
        "model": setup["model"],
        "consumer": setup["consumer"].seed().hex(),
        "senders": [k.seed().hex() for k in setup["senders"]],
        "duration": SOAK_S,
        "drain": DRAIN_S,
        "seed": seed,
        "events": str(dn_home / "events.jsonl"),
    }
    path = dn_home / "agent.json"
    path.write_text(json.dumps(config))
    env = node_env(
        dn_home,
        {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)},
    )
    argv = [sys.executable, "-m", "tests.functional.test_lan_soak", str(path)]
    return lan.popen(CLIENT, argv, env=env, log=dn_home / "agent.log")


def _finish(
    dn_home: Path,
    lan: Lan,
    nodes: list[LanNode],
    agent: Any,
    driver: _Driver,
    seed: int,
    say: Callable[[str], None],
) -> None:
    """Let the client drain and the nodes settle, stop them all, and check their stores."""
    problems = list(driver.problems)
    try:
        agent.wait(DRAIN_S + 60)
    except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: report it, stop it at close()
        problems.append(f"the client did not finish within {DRAIN_S + 60:.0f} s of the drain")
    urls = [n.url for n in nodes]

    def one_tip() -> bool:
        seen = statuses(lan, CLIENT, urls)
        return None not in seen and len({(s["tip"], s["state_root"]) for s in seen}) == 1

    settle_started = time.monotonic()
    try:
        _wait(one_tip, SETTLE_S, "one tip on every node", interval=1.0)
    except AssertionError as exc:
        seen = statuses(lan, CLIENT, urls)
        heights = {
            n.name: s and (s["height"], s["tip"][:10]) for n, s in zip(nodes, seen, strict=True)
        }
        problems.append(f"{exc}; last seen {heights}")
    settled_s = time.monotonic() - settle_started
    for node in nodes:
        code = node.stop()
        if code != 0:
            problems.append(f"{node.name} exited with {code} at the end")

    events = _read_events(dn_home / "events.jsonl")
    counts = _counts(events)
    names = list(NAMES)
    try:
        agreed_prefix(dn_home, names)
    except AssertionError as exc:
        problems.append(str(exc))
    lost: list[str] = []
    reports = {name: verify_offline(dn_home, name) for name in names}
    for name, report in reports.items():
        if not report["ok"]:
            problems.append(f"{name}: verify_store: {report['problems']}")
        supply = report.get("supply") or {}
        if supply.get("held") != supply.get("created"):
            problems.append(f"{name}: supply invariant: {supply}")
    tips = {name: (r["height"], r["tip"][:12]) for name, r in reports.items()}
    for name in names:
        lost += _missing(dn_home, name, counts["final_txs"], counts["settled_tasks"])
    counts["lost"] = len(lost)
    line = (
        f"soak: seed={seed} traffic={SOAK_S}s perturbations={driver.total} "
        f"({', '.join(f'{k}={v}' for k, v in sorted(driver.kinds.items()))}) "
        f"transfers sent={counts['transfers_sent']} confirmed={counts['transfers_confirmed']} "
        f"queries sent={counts['queries_sent']} confirmed={counts['queries_confirmed']} "
        f"rejected={counts['queries_rejected']} failed={counts['queries_failed']} "
        f"settled={counts['queries_settled']} unconfirmed={counts['unconfirmed']} "
        f"lost={counts['lost']}"
    )
    say(line)
    say(
        f"soak: query failures {dict(counts['failures'])}; settled by the checker's backstop "
        f"{counts['backstop']}; recoveries (s) {driver.recoveries}; one tip after "
        f"{settled_s:.0f} s; final tips {tips}"
    )
    if counts["unconfirmed"]:
        problems.append(f"transactions never confirmed: {counts['unconfirmed_ids'][:10]}")
    if counts["errors"]:
        problems.append(f"client errors: {counts['errors'][:5]}")
    assert not lost, lost[:20]
    assert counts["lost"] == 0
    assert not problems, problems
    assert counts["transfers_confirmed"] > 0 and counts["queries_settled"] > 0, line


def _missing(
    dn_home: Path, name: str, final_txs: set[str], settled_tasks: dict[str, str]
) -> list[str]:
    """What node `name`'s stopped store lacks: each confirmed transaction exactly once in its
    canonical chain, each settled task in its state with the status the gateway reported."""
    from dn.chain.ledger import TASK
    from dn.chain.store import Store
    from dn.node.node import NodeHome

    store = Store.open(NodeHome.named(name, dn_home).store_file, readonly=True)
    try:
        lost = [
            f"{name}: tx {tx} found {n} times"
            for tx in sorted(final_txs)
            if (n := store.count_canonical_tx(tx)) != 1
        ]
        state = store.load_state()
    finally:
        store.close()
    for task, status in sorted(settled_tasks.items()):
        record = state.get(TASK + task)
        if record is None:
            lost.append(f"{name}: task {task} not settled")
        elif record.get("status") != status:
            lost.append(f"{name}: task {task} is {record.get('status')}, answered {status}")
    return lost


def _read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue  # a line cut short
    return events


def _counts(events: list[dict[str, Any]]) -> dict[str, Any]:
    kinds = {e["id"]: e["kind"] for e in events if e["ev"] == "sent"}
    final = {e["id"] for e in events if e["ev"] == "final"}
    included = {e["id"] for e in events if e["ev"] == "included"}
    answered = {e["task"]: e["status"] for e in events if e["ev"] == "answered"}
    settled = {e["task"] for e in events if e["ev"] == "task_final"}
    backstop = {e["task"] for e in events if e["ev"] == "settled_by_other"}
    stuck = {e["id"] for e in events if e["ev"] == "stuck"}  # never in a block by the end
    # a settlement sent again after a refusal is the same task: count what was never confirmed
    # among the transfers, and the settlements of tasks that did not settle at all
    unconfirmed = [
        tx
        for tx, kind in kinds.items()
        if tx not in final and (kind == "transfer" or tx in included or tx in stuck)
    ]
    return {
        "transfers_sent": sum(k == "transfer" for k in kinds.values()),
        "transfers_confirmed": sum(kinds.get(t) == "transfer" for t in final),
        "queries_sent": sum(e["ev"] == "query" for e in events),
        "queries_confirmed": sum(s == "confirmed" for s in answered.values()),
        "queries_rejected": sum(s == "rejected" for s in answered.values()),
        "queries_failed": sum(e["ev"] == "query_failed" for e in events),
        "queries_settled": len(settled),
        "failures": Counter(e["reason"] for e in events if e["ev"] == "query_failed"),
        "backstop": len(backstop),
        "unconfirmed": len(unconfirmed),
        "unconfirmed_ids": unconfirmed,
        "final_txs": final,
        "settled_tasks": {t: answered[t] for t in settled if t in answered},
        "errors": [e for e in events if e["ev"] == "error"],
    }


def _wait(predicate: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001 - a node still starting; keep polling
            last = exc
        else:
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}: {last}")


# --- the driver: one perturbation at a time ------------------------------------------------------


class _Driver:
    def __init__(
        self, lan: Lan, nodes: list[LanNode], rng: random.Random, say: Callable[[str], None]
    ) -> None:
        self.say = say
        self.lan = lan
        self.nodes = nodes
        self.rng = rng
        self.kinds: Counter[str] = Counter()
        self.recoveries: list[float] = []
        self.problems: list[str] = []
        self._paused: LanNode | None = None
        self._cut: LanNode | None = None
        self._bag: list[str] = []

    @property
    def total(self) -> int:
        return sum(self.kinds.values())

    def run(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            gap = self.rng.uniform(*GAP_S)
            if time.monotonic() + gap >= end:
                time.sleep(max(0.0, end - time.monotonic()))
                self.check_alive()
                return
            time.sleep(gap)
            self.check_alive()
            node = self.rng.choice(self.nodes)
            if not self._bag:  # each kind once in every three, in a seeded order: even a short
                self._bag = self.rng.sample(KINDS, len(KINDS))  # run sees all of them
            kind = self._bag.pop()
            down = self.rng.uniform(*DOWN_S)
            started = time.monotonic()
            self.say(f"soak: t={started - end + seconds:4.0f} s  {kind} {node.name} ({down:.1f} s)")
            self.perturb(kind, node, down)
            self.kinds[kind] += 1
            self.catch_up(node, kind)

    def check_alive(self) -> None:
        """A node that exited by itself is a finding: record it with its log, start it again."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is not None:
                code = node.proc.returncode
                self.problems.append(f"{node.name} exited by itself ({code}):\n{node.tail(2000)}")
                self.say(f"soak: {node.name} exited by itself ({code}); starting it again")
                node.proc = None
                node.start(timeout=120)

    def perturb(self, kind: str, node: LanNode, down: float) -> None:
        assert node.proc is not None
        if kind == "kill":
            signal_node(node.proc, signal.SIGKILL)
            node.proc.wait(10)
            node.proc = None
            time.sleep(down)
            node.start(timeout=120)
        elif kind == "pause":
            self._paused = node
            signal_node(node.proc, signal.SIGSTOP)
            time.sleep(down)
            signal_node(node.proc, signal.SIGCONT)
            self._paused = None
        else:
            self._cut = node
            link_down(self.lan, node.i)
            time.sleep(down)
            link_up(self.lan, node.i)
            self._cut = None

    def catch_up(self, node: LanNode, kind: str) -> None:
        """Wait until `node` is at least as high as the others were when it came back."""
        started = time.monotonic()
        others = [n for n in self.nodes if n is not node]
        seen = statuses(self.lan, CLIENT, [n.url for n in others])
        target = max((s["height"] for s in seen if s), default=0)

        def caught_up() -> bool:
            status = statuses(self.lan, CLIENT, [node.url])[0]
            return bool(status) and status["height"] >= target

        try:
            _wait(caught_up, RECOVER_S, f"{node.name} back at height {target}", interval=0.5)
        except AssertionError as exc:
            self.problems.append(f"after {kind} of {node.name}: {exc}")
            return
        self.recoveries.append(round(time.monotonic() - started, 1))

    def restore(self) -> None:
        """Undo a perturbation left half done (the test failed in the middle of one)."""
        if self._paused is not None and self._paused.proc is not None:
            signal_node(self._paused.proc, signal.SIGCONT)
        if self._cut is not None:
            try:
                link_up(self.lan, self._cut.i)
            except RuntimeError:
                pass


# --- the client: run as a script inside the client's namespace -----------------------------------

RESUBMIT_S = 6.0  # a transaction not in a block this long after it was sent goes to another node
REQUEST_S = 5.0  # per request
QUERY_S = 60.0  # per query stream


class _Agent:
    def __init__(self, config: dict[str, Any]) -> None:
        from dn.wallet.keys import Keypair

        self.config = config
        self.urls: list[str] = config["nodes"]
        self.gateways: list[str] = config["gateways"]
        self.chain_id: str = config["chain_id"]
        self.fee: int = config["min_fee"]
        started = time.monotonic()
        self.traffic_until = started + config["duration"]
        self.drain_until = self.traffic_until + config["drain"]
        self.consumer = Keypair.from_seed(bytes.fromhex(config["consumer"]))
        self.senders = [Keypair.from_seed(bytes.fromhex(s)) for s in config["senders"]]
        self.lock = threading.Lock()
        self.out = open(config["events"], "a")  # noqa: SIM115 - closed in run()
        self.tracked: dict[str, dict[str, Any]] = {}  # id -> what to see final
        self.local = threading.local()
        self.workers_done = threading.Event()

    def log(self, **event: Any) -> None:
        with self.lock:
            self.out.write(json.dumps({"t": round(time.time(), 2), **event}) + "\n")
            self.out.flush()

    def client(self, url: str) -> Any:
        from dn.client.http import NodeClient

        clients = self.local.__dict__.setdefault("clients", {})
        if url not in clients:
            clients[url] = NodeClient(url, timeout=REQUEST_S)
        return clients[url]

    def run(self) -> None:
        seed = self.config["seed"]
        threads = [
            threading.Thread(target=self._guard, args=(self.transfers, s, random.Random(seed + i)))
            for i, s in enumerate(self.senders)
        ]
        threads.append(
            threading.Thread(target=self._guard, args=(self.queries, None, random.Random(seed - 1)))
        )
        tracker = threading.Thread(target=self._guard, args=(self.track, None, random.Random(seed)))
        for thread in [*threads, tracker]:
            thread.start()
        for thread in threads:
            thread.join(self.drain_until - time.monotonic() + 30)
        self.workers_done.set()
        tracker.join(max(0.0, self.drain_until - time.monotonic()) + 30)
        with self.lock:
            left = sum(not x["final"] for x in self.tracked.values())
        self.log(ev="end", left=left)
        self.out.close()

    def _guard(self, target: Any, arg: Any, rng: random.Random) -> None:
        try:
            target(arg, rng)
        except Exception as exc:  # noqa: BLE001 - a bug in the client: report it, end the thread
            self.log(ev="error", where=target.__name__, error=repr(exc))

    # --- sending and seeing a transaction in a block ---

    def push(self, tx: Tx, rng: random.Random, task: str | None = None) -> str | None:
        """Send `tx` until a node reports it in a block ("included"), or (a settlement) until
        its task is settled by another one ("other"); None when the drain ends first."""
        from dn.errors import DNError, InvalidTx, NotFound

        order = rng.sample(self.urls, len(self.urls))
        sends = 0
        next_send = 0.0
        while time.monotonic() < self.drain_until:
            now = time.monotonic()
            if now >= next_send:
                url = order[sends % len(order)]
                sends += 1
                try:
                    self.client(url).submit(tx.to_json())
                    next_send = now + RESUBMIT_S
                except InvalidTx as exc:
                    if exc.reason == "duplicate":  # it has it (pending or in a block)
                        next_send = now + RESUBMIT_S
                    else:  # e.g. a node behind (nonce-gap): the next one shortly
                        self.log(ev="refused", id=tx.id, node=url, reason=exc.reason)
                        next_send = now + 0.5
                except DNError:
                    next_send = now  # unreachable: the next node at once
                    continue
            for url in rng.sample(self.urls, 2):
                try:
                    found = self.client(url).tx(tx.id)
                except NotFound:
                    continue
                except DNError:
                    continue
                if found["status"] == "included":
                    self.log(ev="included", id=tx.id, node=url, height=found["height"])
                    return "included"
            if task is not None and self._settled_elsewhere(task, tx.id, rng):
                self.log(ev="settled_by_other", task=task, id=tx.id)
                return "other"
            time.sleep(0.5)
        return None

    def _settled_elsewhere(self, task: str, tx_id: str, rng: random.Random) -> bool:
        from dn.errors import DNError

        url = rng.choice(self.urls)
        try:
            self.client(url).task(task)
        except DNError:
            return False
        try:
            return self.client(url).tx(tx_id)["status"] != "included"
        except DNError:
            return True  # the node has the task settled and not our settlement

    # --- the workers ---

    def transfers(self, sender: Keypair, rng: random.Random) -> None:
        nonce = 0
        while time.monotonic() < self.traffic_until:
            fresh = rng.random() < 0.5  # a new account, or the other sender
            recipient = (Keypair.generate() if fresh else rng.choice(self.senders)).address
            tx = Tx.create(
                sender,
                chain_id=self.chain_id,
                kind="transfer",
                nonce=nonce,
                fee=self.fee,
                payload={"to": recipient, "amount": rng.randint(1_000, 100_000)},
            )
            self.log(ev="sent", kind="transfer", id=tx.id, nonce=nonce)
            with self.lock:
                self.tracked[tx.id] = {"kind": "transfer", "tx": tx, "final": False}
            if self.push(tx, rng) is None:
                self.log(ev="stuck", id=tx.id)
                return
            nonce += 1
            time.sleep(rng.uniform(0.2, 1.5))

    def queries(self, _: Any, rng: random.Random) -> None:
        from dn.chain.books import MAX_SLOTS
        from dn.client.query import chat_input, make_ticket, stream_query
        from dn.errors import DNError

        number = 0
        while time.monotonic() < self.traffic_until:
            number += 1
            gateway = self.gateways[number % len(self.gateways)]
            task_input = chat_input(rng.choice(PROMPTS))
            self.log(ev="query", n=number, gateway=gateway)
            done: dict[str, Any] = {}
            try:
                client = self.client(gateway)
                ticket, _ = make_ticket(
                    client, self.consumer, self.config["model"], task_input, max_tokens=MAX_TOKENS
                )
                # make_ticket booked the ticket's slot with the wallet's next nonce and waited
                # for its block: the settlement takes the nonce after it
                nonce = ticket["nonce"] // MAX_SLOTS + 1
                for event in stream_query(client, ticket, task_input, timeout=QUERY_S):
                    if event.get("event") == "done":
                        done = event
            except DNError as exc:
                self.log(
                    ev="query_failed",
                    n=number,
                    reason=exc.reason or type(exc).__name__,
                    message=exc.message[:200],
                )
                time.sleep(rng.uniform(0.5, 2.0))
                continue
            if not done:
                self.log(ev="query_failed", n=number, reason="no-done", message="")
                continue
            task = done["task"]
            self.log(
                ev="answered",
                n=number,
                task=task,
                status=done["status"],
                tokens=done["tokens"],
                price=done["price_units"],
            )
            tx = Tx.create(
                self.consumer,
                chain_id=self.chain_id,
                kind="task.settle",
                nonce=nonce,
                fee=self.fee,
                payload={k: done[k] for k in ("ticket", "generator", "checker")},
            )
            self.log(ev="sent", kind="settle", id=tx.id, task=task, nonce=nonce)
            with self.lock:
                self.tracked[tx.id] = {"kind": "settle", "tx": tx, "task": task, "final": False}
            pushed = self.push(tx, rng, task=task)
            if pushed is None:
                self.log(ev="stuck", id=tx.id, task=task)
                return
            if pushed != "included":  # the checker settled it first: it can never apply
                with self.lock:
                    self.tracked.pop(tx.id, None)
                    self.tracked["task:" + task] = {"kind": "task", "task": task, "final": False}
            time.sleep(rng.uniform(0.5, 2.0))

    def track(self, _: Any, rng: random.Random) -> None:
        """See every sent transaction (and task) in a final block; send again those a node
        does not know (a reorganisation or a restart may have dropped them)."""
        from dn.errors import DNError, NotFound

        while time.monotonic() < self.drain_until:
            with self.lock:
                open_items = [(k, v) for k, v in self.tracked.items() if not v["final"]]
            if not open_items and self.workers_done.is_set():
                return
            for key, item in open_items[:60]:
                url = rng.choice(self.urls)
                client = self.client(url)
                try:
                    if item["kind"] == "task":
                        record = client.task(item["task"])
                        if record["height"] <= client.status()["final_height"]:
                            item["final"] = True
                            self.log(ev="task_final", task=item["task"], height=record["height"])
                        continue
                    found = client.tx(key)
                except NotFound:
                    if item["kind"] != "task" and key in self.tracked:
                        try:
                            client.submit(item["tx"].to_json())
                        except DNError:
                            pass
                    continue
                except DNError:
                    continue
                if found["status"] == "included" and found["final"]:
                    item["final"] = True
                    self.log(
                        ev="final",
                        id=key,
                        kind=item["kind"],
                        height=found["height"],
                        block=found["block"],
                    )
                    if item["kind"] == "settle":
                        self.log(ev="task_final", task=item["task"], height=found["height"])
            time.sleep(1.0)


def _agent_main(config_path: str) -> int:
    config = json.loads(Path(config_path).read_text())
    _Agent(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(_agent_main(sys.argv[1]))
