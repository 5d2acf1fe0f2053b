"""Real node processes on free loopback ports, for multi-process tests.

In the manner of bitcoin's test/functional: a test asks for nodes, gets them started in their own
folders, and waits on conditions with `wait_until` instead of sleeping. Every process is started
in its own session and killed by its own pid at teardown.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from dn.chain.genesis import Genesis
from dn.chain.types import Tx
from dn.client.http import NodeClient
from dn.node.node import Node, NodeHome
from dn.node.setup import init_dev_chain
from dn.wallet.keys import Keypair
from tests.functional import hooks

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]  # so node processes can import the harness's hook


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:port now. SO_REUSEADDR as servers use it:
    connections the devnet closed may linger in TIME_WAIT; a listening socket still counts."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_base(count: int) -> int:
    """A port P with P..P+count-1 all free (probed; another process could still take one)."""
    for _ in range(50):
        base = free_port()
        if base + count <= 65535 and all(port_free(base + i) for i in range(count)):
            return base
    raise AssertionError(f"no {count} consecutive free ports found")


def wait_until(
    predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll `predicate` until it returns something truthy; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001 - a node still starting raises; keep polling
            last_error = exc
        else:
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout} s waiting for {what or predicate}: {last_error}"
    )


def init_chain(dn_home: Path, allocations: dict[str, int], name: str = "default", **params: int):
    """Write a dev genesis and create the store for node `name` under `dn_home`."""
    from dn.chain.genesis import default_params

    home = NodeHome.named(name, dn_home)
    genesis = init_dev_chain(home, allocations, params=default_params(**params))
    Node(home, genesis).close()
    return genesis


class NodeProcess:
    """`dn node start` as a child process. `args` are extra options for `dn node start`; the
    node reads its test-only link deny list from `links_file` (see tests/functional/hooks.py).
    `command` replaces `node start` (e.g. `["mine", "--wallet", "m1"]`); `env` adds variables."""

    def __init__(
        self,
        dn_home: Path,
        name: str = "default",
        port: int | None = None,
        args: list[str] | None = None,
        *,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.dn_home = dn_home
        self.name = name
        self.port = port or free_port()
        self.args = list(args or [])
        self.command = list(command or ["node", "start"])
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = dn_home / f"{name}-{self.port}.log"
        self.links_file = dn_home / f"links-{name}.json"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def home(self) -> NodeHome:
        return NodeHome.named(self.name, self.dn_home)

    def client(self) -> NodeClient:
        return NodeClient(self.url, timeout=10)

    def start(self, timeout: float = 30.0) -> NodeProcess:
        env = {
            **os.environ,
            "DN_HOME": str(self.dn_home),
            "PYTHONUNBUFFERED": "1",
            # the harness's hook (tests/functional/hooks.py): cut links, misbehaving miners
            "DN_TEST_HOOK": hooks.HOOK,
            hooks.LINKS_ENV: str(self.links_file),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
            ),
            **self.extra_env,
        }
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dn",
                    *self.command,
                    "--name",
                    self.name,
                    "--port",
                    str(self.port),
                    *self.args,
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with self.client() as client:
            wait_until(lambda: self._alive() and client.status(), timeout, what=f"{self.url} up")
        return self

    def _alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"node exited early:\n{self.log.read_text()[-2000:]}")
        return True

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT, then wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None:
            return 0
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None
        return proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self) -> dict[str, Any]:
        with self.client() as client:
            return client.status()

    def deny(self, urls: list[str]) -> None:
        """Cut this node's links to `urls` (both ways need both nodes told)."""
        tmp = self.links_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"deny": sorted(urls)}))
        os.replace(tmp, self.links_file)


def transfer(
    chain_id: str, sender: Keypair, nonce: int, to: str, amount: int, fee: int = 1_000
) -> Tx:
    return Tx.create(
        sender,
        chain_id=chain_id,
        kind="transfer",
        nonce=nonce,
        fee=fee,
        payload={"to": to, "amount": amount},
    )


def verify_offline(dn_home: Path, name: str) -> dict[str, Any]:
    """`verify_store` on node `name`'s store, read-only (safe while it runs, or after a kill)."""
    from dn.chain.store import Store
    from dn.chain.verify import verify_store

    store = Store.open(NodeHome.named(name, dn_home).store_file, readonly=True)
    try:
        return verify_store(store)
    finally:
        store.close()


def canonical_count(dn_home: Path, name: str, tx_id: str) -> int:
    """How many times node `name`'s canonical chain holds `tx_id`."""
    from dn.chain.store import Store

    store = Store.open(NodeHome.named(name, dn_home).store_file, readonly=True)
    try:
        return store.count_canonical_tx(tx_id)
    finally:
        store.close()


def agreed_prefix(dn_home: Path, names: list[str]) -> tuple[int, str]:
    """The height and hash of the block every named (stopped or killed) node's canonical chain
    holds at the lowest of their tips. Blocks are hash-linked, so one hash there means one chain
    (and one state root) up to it; raise if the stores disagree."""
    from dn.chain.store import Store

    stores = [Store.open(NodeHome.named(n, dn_home).store_file, readonly=True) for n in names]
    try:
        height = min(store.tip().height for store in stores)
        hashes = {store.canonical_hash(height) for store in stores}
    finally:
        for store in stores:
            store.close()
    if len(hashes) != 1:
        raise AssertionError(f"stores disagree at height {height}: {sorted(map(str, hashes))}")
    return height, str(hashes.pop())


def make_keys(dn_home: Path, names: list[str]) -> dict[str, Keypair]:
    """The node key of each named node (made on first use, as `dn node start` would)."""
    return {name: NodeHome.named(name, dn_home).key() for name in names}


def write_genesis(
    dn_home: Path,
    validators: list[str],
    allocations: dict[str, int],
    names: list[str],
    *,
    escrows: dict[str, int] | None = None,
    **params: int,
) -> Genesis:
    """One genesis with these validators (and query `escrows`), pinned into the folder of every
    named node."""
    from dn.chain.genesis import default_params

    genesis = Genesis.build(
        network="devnet",
        time_ms=time.time_ns() // 1_000_000,
        validators=validators,
        allocations=allocations,
        params=default_params(**params),
        escrows=escrows,
    )
    for name in names:
        genesis.save(NodeHome.named(name, dn_home).genesis_file)
    return genesis


class Cluster:
    """Several node processes on one genesis, peered by static `--peer` (no mDNS)."""

    def __init__(self, nodes: list[NodeProcess]) -> None:
        self.nodes = nodes

    def start(self) -> Cluster:
        for node in self.nodes:
            node.start()
        return self

    def statuses(self) -> list[dict[str, Any]]:
        return [n.status() for n in self.nodes if n.running]

    def sync_all(self, timeout: float = 30.0, nodes: list[NodeProcess] | None = None) -> str:
        """Wait until the given (default: all running) nodes have one tip and one state root,
        seen in the same round of status calls; return the tip.

        Validators keep producing, so a later `statuses()` may already see the next block:
        compare what this returns, or the stores after a stop (`agreed_prefix`)."""
        group = nodes or [n for n in self.nodes if n.running]

        def same_tip() -> str | None:
            seen = {(s["tip"], s["state_root"]) for s in (n.status() for n in group)}
            return seen.pop()[0] if len(seen) == 1 else None

        return wait_until(same_tip, timeout, interval=0.1, what="all nodes on one tip")

    def partition(self, *groups: list[NodeProcess]) -> None:
        """Cut every link between nodes of different groups."""
        for group in groups:
            outside = [n.url for n in self.nodes if n not in group]
            for node in group:
                node.deny(outside)

    def heal(self) -> None:
        for node in self.nodes:
            node.deny([])
