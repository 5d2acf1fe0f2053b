"""Real node processes that find each other by mDNS on 127.0.0.1 alone (no `--peer`).

Each node starts with its default: mDNS on the interface of `--host`, which is 127.0.0.1 here, so
nothing multicasts on a real interface. Other tests may announce on loopback at the same time;
they are on other genesis files and are filtered out like any stranger. Skipped, with the reason,
where mDNS on loopback cannot work (tests/functional/multicast.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dn.wallet.keys import Keypair
from tests.functional.harness import NodeProcess, make_keys, wait_until, write_genesis
from tests.functional.multicast import skip_without_loopback_multicast

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module", autouse=True)
def loopback_mdns() -> None:
    skip_without_loopback_multicast()


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
    names = ["keyed", "other", "a", "b", "c", "keyed2", "other2"]
    keys = make_keys(dn_home, names)
    funded = {Keypair.generate().address: 10**12}
    ours = ["a", "b", "c", "keyed", "keyed2"]
    write_genesis(dn_home, [keys["a"].address], funded, ours)
    write_genesis(dn_home, [keys["other"].address], funded, ["other", "other2"])  # another chain
    fast = ["--peer-expiry", "3"]
    keyed_args = [*fast, "--network-key", "not the same"]
    # The strangers first: one on another genesis, one on ours with another network key. Every
    # node started after them meets them at once, so each check below waits on a checkpoint
    # reached after that meeting, not on a guess at how long it takes.
    keyed = node_factory("keyed", None, keyed_args).start()
    other = node_factory("other", None, fast).start()
    trio = [node_factory(n, None, fast).start() for n in ("a", "b", "c")]

    def address(*nodes: NodeProcess) -> set[str]:
        return {keys[n.name].address for n in nodes}

    # Checkpoint for the trio: each finds the other two, which started after the strangers.
    for node in trio:
        expected = address(*(n for n in trio if n is not node))
        wait_until(lambda nd=node, e=expected: _peers(nd) == e, 30, what=f"{node.name} peers")  # type: ignore[misc]
    # Checkpoint for the strangers: a twin of each, started after the trio, becomes its peer (the
    # same network key; the same other genesis), so each stranger had met the trio by then.
    keyed2 = node_factory("keyed2", None, keyed_args).start()
    other2 = node_factory("other2", None, fast).start()
    for one, two in ((keyed, keyed2), (other, other2)):
        for node, twin in ((one, two), (two, one)):
            expected = address(twin)
            wait_until(lambda nd=node, e=expected: _peers(nd) == e, 30, what=f"{node.name} twin")  # type: ignore[misc]
    # The trio never peered with a stranger, nor a stranger with the trio.
    for node in trio:
        assert _peers(node) == address(*(n for n in trio if n is not node))
    assert _peers(keyed) == address(keyed2) and _peers(other) == address(other2)

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
    for node in (keyed, keyed2, other, other2):
        node.stop()
