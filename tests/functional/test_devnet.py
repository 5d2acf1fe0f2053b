"""`dn devnet up`: N nodes in one real process, used from "another terminal" through the CLI.

The devnet runs as `python -m dn devnet up` in its own session; everything else is `python -m dn`
with the same DN_HOME, as a user would type it. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dn.client.http import NodeClient
from dn.encoding import UNITS_PER_DN
from dn.node.devnet import DEVNET_PASSWORD, FUNDS, WALLETS
from tests.functional.harness import free_base, port_free, wait_until

STOP_WITHIN_S = 5.0


def dn(dn_home: Path, *args: str, password: bool = False, timeout: float = 60) -> Any:
    """`python -m dn ARGS` as a separate process; returns the CompletedProcess."""
    env = {**os.environ, "DN_HOME": str(dn_home), "COLUMNS": "200"}
    if password:
        env["DN_PASSWORD"] = DEVNET_PASSWORD
    return subprocess.run(
        [sys.executable, "-m", "dn", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def dn_json(dn_home: Path, *args: str, password: bool = False) -> Any:
    done = dn(dn_home, "--json", *args, password=password)
    assert done.returncode == 0, f"dn {args}: exit {done.returncode}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return json.loads(done.stdout)


class DevnetProcess:
    """`dn --json devnet up ARGS` in its own session, stdout and stderr in files."""

    def __init__(self, dn_home: Path, *args: str) -> None:
        self.dn_home = dn_home
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.out = dn_home.parent / f"devnet-{time.monotonic_ns()}.out"
        self.err = self.out.with_suffix(".err")

    def start(self, timeout: float = 60.0) -> dict[str, Any]:
        """Start it and return the JSON it prints once every node listens."""
        env = {**os.environ, "DN_HOME": str(self.dn_home), "PYTHONUNBUFFERED": "1"}
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dn", "--json", "devnet", "up", *self.args],
                env=env,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

        def announced() -> dict[str, Any] | None:
            text = self.out.read_text()
            if text.endswith("\n"):
                return dict(json.loads(text))
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"devnet exited early:\n{self.stderr()}")
            return None

        return wait_until(announced, timeout, interval=0.1, what="devnet JSON on stdout")

    def stderr(self) -> str:
        return self.err.read_text() if self.err.exists() else ""

    def stop(self, sig: signal.Signals = signal.SIGINT) -> tuple[int, float]:
        """Send `sig`; return (exit code, seconds it took). Killed after STOP_WITHIN_S * 3."""
        assert self.proc is not None
        began = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(STOP_WITHIN_S * 3)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"devnet did not stop on {sig.name}:\n{self.stderr()}") from None
        self.proc = None
        return code, time.monotonic() - began

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def devnets(dn_home: Path) -> Iterator[list[DevnetProcess]]:
    """Devnet processes made by a test; any still running are killed at teardown."""
    made: list[DevnetProcess] = []
    yield made
    for devnet in made:
        devnet.kill()


def up(devnets: list[DevnetProcess], dn_home: Path, *args: str) -> tuple[DevnetProcess, Any]:
    devnet = DevnetProcess(dn_home, *args)
    devnets.append(devnet)
    return devnet, devnet.start()


def status(url: str) -> dict[str, Any]:
    with NodeClient(url, timeout=5) as client:
        return client.status()


def same_tip(urls: list[str]) -> dict[str, Any] | None:
    statuses = [status(url) for url in urls]
    if len({(s["tip"], s["state_root"]) for s in statuses}) == 1 and statuses[0]["height"] > 0:
        return statuses[0]
    return None


def test_devnet_runs_three_nodes_that_agree_and_move_funds(
    dn_home: Path, devnets: list[DevnetProcess]
) -> None:
    base = free_base(3)
    devnet, info = up(
        devnets, dn_home, "--nodes", "3", "--port-base", str(base), "--block-time", "200"
    )

    urls = [f"http://127.0.0.1:{base + i}" for i in range(3)]
    assert [n["url"] for n in info["nodes"]] == urls
    assert [n["name"] for n in info["nodes"]] == ["devnet-0", "devnet-1", "devnet-2"]
    assert all(n["validator"] for n in info["nodes"])
    assert [w["name"] for w in info["wallets"]] == list(WALLETS)
    assert info["password"] == DEVNET_PASSWORD
    assert info["chain_id"].startswith("devnet-")
    wallets = {w["name"]: w["address"] for w in info["wallets"]}

    # Every node answers the CLI, on the devnet's chain, with the validators it announced.
    for node in info["nodes"]:
        data = dn_json(dn_home, "--node", node["url"], "node", "status")
        assert data["chain_id"] == info["chain_id"]
        assert data["node_address"] == node["address"]
        assert data["validator"] is True
        assert sorted(data["validators"]) == sorted(n["address"] for n in info["nodes"])
    wait_until(lambda: same_tip(urls), 30, interval=0.1, what="three nodes on one tip")

    # The devnet wallets are ordinary wallets in the same DN_HOME.
    listed = {w["name"]: w["address"] for w in dn_json(dn_home, "wallet", "list")}
    assert {name: listed[name] for name in WALLETS} == wallets

    # Sent through node 2, seen from node 0.
    sent = dn_json(
        dn_home,
        "--node",
        urls[2],
        "wallet",
        "send",
        "devnet-alice",
        wallets["devnet-bob"],
        "1.5",
        "--wait",
        password=True,
    )
    assert sent["status"] == "included"
    expected = FUNDS + 3 * UNITS_PER_DN // 2

    def bob_on_node0() -> bool:
        account = dn_json(dn_home, "--node", urls[0], "wallet", "balance", "devnet-bob")
        return bool(account["balance"] == expected)

    wait_until(bob_on_node0, 30, interval=0.2, what="bob's 1.5 DN visible on node 0")
    agreed = wait_until(lambda: same_tip(urls), 30, interval=0.1, what="one tip after the send")
    assert agreed["height"] >= sent["height"]

    # A second devnet on the same DN_HOME would pull the chain from under the first: refused.
    second = dn(dn_home, "devnet", "up", "--nodes", "3", "--port-base", str(free_base(3)))
    assert second.returncode == 5, second.stderr
    assert "a devnet is already running with this DN_HOME" in " ".join(second.stderr.split())
    assert "Traceback" not in second.stderr

    code, took = devnet.stop(signal.SIGINT)
    assert code == 0, devnet.stderr()
    assert took < STOP_WITHIN_S, f"took {took:.1f} s to stop"
    assert "Traceback" not in devnet.stderr()
    for i in range(3):
        assert port_free(base + i), f"port {base + i} still bound after the devnet stopped"


def test_devnet_resumes_its_chain_and_starts_over_on_a_new_shape(
    dn_home: Path, devnets: list[DevnetProcess]
) -> None:
    base = free_base(2)
    args = ("--nodes", "2", "--port-base", str(base), "--block-time", "200")
    devnet, first = up(devnets, dn_home, *args)
    urls = [n["url"] for n in first["nodes"]]
    height = wait_until(lambda: same_tip(urls), 30, interval=0.1, what="one tip")["height"]
    assert devnet.stop(signal.SIGTERM)[0] == 0

    # A wallet and a node folder of the user's own, which starting over must leave alone.
    mine = dn(dn_home, "wallet", "create", "mine", "--kdf", "fast", password=True)
    assert mine.returncode == 0, mine.stderr
    (dn_home / "nodes" / "default").mkdir()

    devnet, again = up(devnets, dn_home, *args)
    assert again["chain_id"] == first["chain_id"]
    assert again["wallets"] == first["wallets"]
    assert status(urls[0])["height"] >= height
    assert "resuming devnet" in devnet.stderr()
    assert devnet.stop()[0] == 0

    devnet, other = up(devnets, dn_home, "--validators", "1", *args)
    assert other["chain_id"] != first["chain_id"]
    assert [n["validator"] for n in other["nodes"]] == [True, False]
    assert other["wallets"] == first["wallets"]  # the same addresses, funded on the new chain
    assert "stored devnet has 2 nodes, 2 validators" in " ".join(devnet.stderr().split())
    with NodeClient(urls[1], timeout=5) as client:
        assert client.account(other["wallets"][0]["address"])["balance"] == FUNDS
    assert devnet.stop()[0] == 0
    assert (dn_home / "wallets" / "mine.json").exists()
    assert (dn_home / "nodes" / "default").is_dir()

    devnet, fresh = up(devnets, dn_home, "--validators", "1", "--fresh", *args)
    assert fresh["chain_id"] != other["chain_id"]
    assert devnet.stop()[0] == 0
    record = json.loads((dn_home / "devnet.json").read_text())
    assert record["genesis_hash"] == fresh["genesis_hash"]
    assert (record["nodes"], record["validators"]) == (2, 1)


def test_a_taken_port_is_a_clear_error(dn_home: Path) -> None:
    base = free_base(3)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", base + 1))
        holder.listen()
        done = dn(dn_home, "devnet", "up", "--nodes", "3", "--port-base", str(base))
    said = " ".join(done.stderr.split())
    assert done.returncode not in (0, 1), said
    assert f"port {base + 1} on 127.0.0.1 (for devnet-1) is in use" in said
    assert "Traceback" not in done.stderr
    assert not (dn_home / "nodes").exists()  # nothing was set up


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--nodes", "0"), "--nodes must be at least 1"),
        (("--nodes", "2", "--validators", "3"), "--validators 3 is more than --nodes 2"),
        (("--nodes", "2", "--validators", "0"), "--validators must be at least 1"),
        (("--block-time", "1"), "--block-time must be from 50"),
    ],
)
def test_impossible_shapes_are_input_errors(
    dn_home: Path, args: tuple[str, ...], message: str
) -> None:
    done = dn(dn_home, "devnet", "up", *args)
    assert done.returncode == 2, done.stderr
    assert message in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr
    assert not dn_home.exists()
