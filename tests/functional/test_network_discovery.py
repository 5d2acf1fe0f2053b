"""Real node processes that find each other by mDNS on 127.0.0.1 alone (no `--peer`).

Each node starts with its default: mDNS on the interface of `--host`, which is 127.0.0.1 here, so
nothing multicasts on a real interface. Other tests may announce on loopback at the same time;
they are on other genesis files and are filtered out like any stranger.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dn.wallet.keys import Keypair
from tests.functional.harness import NodeProcess, make_keys, wait_until, write_genesis

pytestmark = pytest.mark.timeout(180)


def _peers(node: NodeProcess) -> set[str]:
    with node.client() as client:
        return {p["address"] for p in client.peers()["peers"]}


def _dn(dn_home: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "dn", *args],
        env={**os.environ, "DN_HOME": str(dn_home), "COLUMNS": "300"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_nodes_find_each_other_and_ignore_strangers(
    dn_home: Path, node_factory: Callable[..., NodeProcess]
) -> None:
    names = ["a", "b", "c", "keyed", "other"]
    keys = make_keys(dn_home, names)
    funded = {Keypair.generate().address: 10**12}
    write_genesis(dn_home, [keys["a"].address], funded, ["a", "b", "c", "keyed"])
    write_genesis(dn_home, [keys["other"].address], funded, ["other"])  # another chain
    fast = ["--peer-expiry", "3"]
    trio = [node_factory(n, None, fast).start() for n in ("a", "b", "c")]
    keyed = node_factory("keyed", None, [*fast, "--network-key", "not the same"]).start()
    other = node_factory("other", None, fast).start()

    for node in trio:
        expected = {keys[n.name].address for n in trio if n is not node}
        wait_until(lambda nd=node, e=expected: _peers(nd) == e, 30, what=f"{node.name} peers")  # type: ignore[misc]
    # Several more heartbeats: the stranger on another genesis and the node with another
    # network key are still not peers, either way round.
    time.sleep(3)
    for node in trio:
        assert _peers(node) == {keys[n.name].address for n in trio if n is not node}
    assert _peers(keyed) == set()
    assert _peers(other) == set()

    # `dn node peers` shows them, with height, roles and when last heard from.
    shown = json.loads(_dn(dn_home, "--json", "--node", trio[0].url, "node", "peers"))
    assert {p["address"] for p in shown["peers"]} == {keys["b"].address, keys["c"].address}
    for row in shown["peers"]:
        assert row["height"] >= 0 and row["last_seen_ms"] > 0 and isinstance(row["roles"], list)
    table = _dn(dn_home, "--node", trio[0].url, "node", "peers")
    assert keys["b"].address[:20] in table and "s ago" in table

    # A stopped node leaves the others' peer lists (its goodbye, or silence past the expiry).
    assert trio[2].stop() == 0
    gone = keys["c"].address
    for node in trio[:2]:
        wait_until(lambda nd=node: gone not in _peers(nd), 20, what="stopped node expires")  # type: ignore[misc]

    # And a node killed without a goodbye expires by silence.
    trio[1].kill()
    wait_until(lambda: _peers(trio[0]) == set(), 20, what="killed node expires")
    keyed.stop()
    other.stop()
