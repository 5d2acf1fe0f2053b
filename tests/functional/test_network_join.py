"""Joining a network: `dn node start --join URL` and `--genesis FILE`, as a newcomer would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from dn.node.node import NodeHome
from dn.wallet.keys import Keypair
from tests.functional.harness import Cluster, NodeProcess, init_chain, wait_until


def test_join_pins_the_genesis_and_syncs(
    dn_home: Path, node_factory: Callable[..., NodeProcess]
) -> None:
    alice = Keypair.generate()
    init_chain(dn_home, {alice.address: 10**12}, name="first", max_block_interval_ms=1000)
    first = node_factory("first", None, ["--no-mdns"]).start()
    wait_until(lambda: first.status()["height"] >= 3, 30, what="a few blocks")

    joiner = node_factory("joiner", None, ["--no-mdns", "--join", first.url]).start()
    pinned = NodeHome.named("joiner", dn_home).genesis_file
    assert pinned.read_text() == NodeHome.named("first", dn_home).genesis_file.read_text()
    Cluster([first, joiner]).sync_all(timeout=30)
    status = joiner.status()
    assert status["validator"] is False
    assert status["node_address"] == NodeHome.named("joiner", dn_home).key().address
    assert "pinned genesis" in joiner.log.read_text()

    by_file = node_factory(
        "by-file",
        None,
        ["--no-mdns", "--genesis", str(pinned), "--peer", f"127.0.0.1:{joiner.port}"],
    ).start()
    Cluster([first, joiner, by_file]).sync_all(timeout=30)


def test_join_refuses_a_node_folder_on_another_chain(
    dn_home: Path, node_factory: Callable[..., NodeProcess]
) -> None:
    init_chain(dn_home, {Keypair.generate().address: 10**12}, name="mine")
    init_chain(dn_home, {Keypair.generate().address: 10**12}, name="theirs")
    theirs = node_factory("theirs", None, ["--no-mdns"]).start()
    env = {**os.environ, "DN_HOME": str(dn_home)}
    done = subprocess.run(
        [sys.executable, "-m", "dn", "node", "start", "--name", "mine", "--no-mdns"]
        + ["--join", theirs.url, "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 4, done.stderr
    assert "is on chain" in done.stderr and "Traceback" not in done.stderr
    both = subprocess.run(
        [sys.executable, "-m", "dn", "node", "start", "--name", "x", "--no-mdns"]
        + ["--join", theirs.url, "--genesis", "g.json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert both.returncode == 2 and "not both" in both.stderr
