"""Setting a node up before it runs (dn/node/setup.py, dn/client/nodes.py open_node): the
genesis a folder is pinned to, dev chains and genesis files, the network options, and which
interfaces mDNS runs on (dn/node/p2p/discovery.py mdns_interfaces)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dn.chain.genesis import Genesis
from dn.client.nodes import open_node
from dn.errors import GenesisError, InputError, StoreError
from dn.node.node import Node, NodeHome
from dn.node.p2p.discovery import mdns_interfaces
from dn.node.setup import init_dev, pin_genesis, powr_duty, write_genesis
from dn.runner.modelstore import ModelStore
from dn.wallet.keys import Keypair

V1 = Keypair.from_seed(bytes(range(32))).address
V2 = Keypair.from_seed(bytes(range(1, 33))).address


def genesis(network: str = "lan") -> Genesis:
    return Genesis.build(network=network, time_ms=1, validators=[V1], allocations={})


def test_a_folder_keeps_the_first_genesis_it_is_given(tmp_path: Path) -> None:
    home = NodeHome.named("n", tmp_path)
    told: list[str] = []
    first = genesis()
    assert pin_genesis(home, first, source="a.json", notify=told.append) is True
    assert told == [f"pinned genesis {first.chain_id} from a.json"]
    assert Genesis.load(home.genesis_file).hash == first.hash
    assert home.key_file.exists()  # the node's key is made with the folder
    assert pin_genesis(home, first, source="a.json", notify=told.append) is False
    assert len(told) == 1
    other = genesis("elsewhere")
    with pytest.raises(GenesisError) as refused:
        pin_genesis(home, other, source="b.json")
    assert refused.value.message == (
        f"node folder {home.path} is on chain {first.chain_id}, but b.json is chain "
        f"{other.chain_id}; use another --name for another network"
    )
    assert Genesis.load(home.genesis_file).hash == first.hash


def test_a_dev_chain_starts_with_its_store_at_block_0(tmp_path: Path) -> None:
    home = NodeHome.named("dev", tmp_path)
    made = init_dev(home, {V2: 5}, params={"min_fee": 3})
    assert made.validators == [home.key().address] and made.allocations == {V2: 5}
    node = Node(home)
    try:
        assert node.tip.height == 0 and node.genesis.hash == made.hash
        assert node.account(V2)["balance"] == 5
    finally:
        node.close()


def test_a_genesis_file_is_written_once_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "genesis.json"
    made = write_genesis(out, [V2, V1], {V1: 7}, network="lab")
    assert json.loads(out.read_text())["validators"] == sorted([V1, V2])
    assert Genesis.load(out).hash == made.hash and made.chain_id.startswith("lab-")
    with pytest.raises(InputError) as exists:
        write_genesis(out, [V1], {})
    assert exists.value.message == f"{out} exists already; use --force to overwrite it"
    assert write_genesis(out, [V1], {}, force=True).validators == [V1]
    with pytest.raises(InputError) as folder:
        write_genesis(tmp_path, [V1], {})
    assert folder.value.message == f"--out {tmp_path} is a folder: give a file name"


def test_open_node_pins_the_genesis_file_and_sets_the_network(tmp_path: Path) -> None:
    path = tmp_path / "g.json"
    made = write_genesis(path, [V1], {})
    node, net = open_node(
        tmp_path,
        name="n",
        host="127.0.0.1",
        genesis=path,
        peers=["10.0.0.7:8765", "http://10.0.0.9:1/"],
        network_key="our secret",
    )
    try:
        assert node.genesis.hash == made.hash
        assert net.peers == ["http://10.0.0.7:8765", "http://10.0.0.9:1"]
        assert net.mdns_interfaces == ["127.0.0.1"]
        assert net.network_key is not None and len(net.network_key) == 32
    finally:
        node.close()
    again, net = open_node(tmp_path, name="n", host="127.0.0.1", mdns=False)  # pinned: no file
    again.close()
    assert net.mdns_interfaces is None and net.network_key is None


def test_open_node_refuses_two_genesis_sources_and_a_folder_with_none(tmp_path: Path) -> None:
    with pytest.raises(InputError) as both:
        open_node(tmp_path, name="n", host="h", genesis=tmp_path / "g.json", join="h:1")
    assert both.value.message == "give --genesis or --join, not both"
    with pytest.raises(StoreError) as none:
        open_node(tmp_path, name="fresh", host="127.0.0.1")
    assert none.value.message.startswith("node 'fresh' has no chain yet")
    with pytest.raises(InputError):
        open_node(tmp_path, name="n", host="h", peers=["not a peer"])


def test_the_powr_duty_is_for_validators_only(tmp_path: Path) -> None:
    path = tmp_path / "g.json"
    write_genesis(path, [V1], {})  # this node's own key is not V1
    node, _ = open_node(tmp_path, name="n", host="127.0.0.1", genesis=path, mdns=False)
    with pytest.raises(InputError) as refused:
        powr_duty(node, "n", ModelStore(tmp_path / "models"), 4)
    assert refused.value.message.startswith("--validate is for validators; node 'n' (")


# --- mDNS interfaces ------------------------------------------------------------------------


def test_mdns_runs_on_the_chosen_interfaces_else_the_listening_address() -> None:
    assert mdns_interfaces(False, ["10.0.0.2"], "127.0.0.1") is None
    assert mdns_interfaces(True, ["10.0.0.2", "10.0.1.2"], "127.0.0.1") == ["10.0.0.2", "10.0.1.2"]
    assert mdns_interfaces(True, [], "192.168.1.20") == ["192.168.1.20"]
    assert mdns_interfaces(True, [], "my-host.lan") is None  # a name: say where with the option
    with pytest.raises(InputError) as bad:
        mdns_interfaces(True, ["eth0"], "127.0.0.1")
    assert bad.value.message == "--mdns-interface wants an IPv4 address, got 'eth0'"


def test_mdns_on_every_interface_leaves_out_loopback() -> None:
    for host in ("0.0.0.0", ""):
        found = mdns_interfaces(True, [], host)
        assert found is None or (found and not any(a.startswith("127.") for a in found))
