"""Blocks made in the service's worker thread (dn/node/service.py: `NodeService.produce`) while
the event loop goes on (issue 12, network hardening).

The block must be the one `Node.produce` makes for the same mempool; while it is out the node's
state, tip and store-backed answers stay those of the old tip, the mempool still takes
transactions, and whatever changes the chain otherwise lands the block first (`Node.settle`).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dn.chain.genesis import Genesis, default_params
from dn.chain.types import Tx
from dn.errors import InvalidBlock
from dn.node import service as service_module
from dn.node.node import Node, NodeHome, now_ms
from dn.node.service import NodeService
from dn.runner.modelstore import ModelStore
from dn.wallet.keys import Keypair

FEE = 1_000
V = Keypair.from_seed(b"p" * 32)
SENDERS = [Keypair.from_seed(bytes([97 + i]) * 32) for i in range(5)]
SINK = Keypair.from_seed(b"z" * 32).address


def _home(path: Path) -> NodeHome:
    path.mkdir(parents=True, mode=0o700)
    (path / "node_key.json").write_text(json.dumps({"address": V.address, "seed": V.seed().hex()}))
    (path / "node_key.json").chmod(0o600)
    return NodeHome(path)


@pytest.fixture
def genesis() -> Genesis:
    return Genesis.build(
        network="devnet",
        time_ms=now_ms() - 60_000,
        validators=[V.address],
        allocations={kp.address: 10**15 for kp in SENDERS},
        params=default_params(max_block_txs=60),
    )


def transfers(genesis: Genesis, count: int, first_nonce: int = 0) -> list[Tx]:
    out = []
    for nonce in range(first_nonce, first_nonce + count // len(SENDERS)):
        for kp in SENDERS:
            out.append(
                Tx.create(
                    kp,
                    chain_id=genesis.chain_id,
                    kind="transfer",
                    nonce=nonce,
                    fee=FEE,
                    payload={"to": SINK, "amount": 1 + nonce},
                )
            )
    return out


@pytest.fixture
def served(tmp_path: Path, genesis: Genesis) -> Iterator[tuple[Node, NodeService]]:
    node = Node(_home(tmp_path / "served"), genesis)
    service = NodeService(node, "127.0.0.1", 9, store=ModelStore(tmp_path / "models"))
    try:
        yield node, service
    finally:
        service._close_maker()  # noqa: SLF001
        node.close()


def accept(node: Node, txs: list[Tx]) -> None:
    results = node.submit([tx.to_json() for tx in txs])
    assert all(r["accepted"] for r in results), results


def test_the_worker_makes_the_block_produce_makes(
    tmp_path: Path, genesis: Genesis, served: tuple[Node, NodeService]
) -> None:
    """Same key, same genesis, same mempool: the same block (hash), state, mempool and store,
    over two blocks (the second built on the mempool the first one's rebase left)."""
    node, service = served
    twin = Node(_home(tmp_path / "twin"), genesis)
    txs = transfers(genesis, 100)
    accept(node, txs)
    accept(twin, txs)
    at = now_ms()
    for i in range(2):
        made = asyncio.run(service.produce(at + i))
        want = twin.produce(at + i)
        assert made.hash == want.hash and len(made.txs) == 60 - 20 * i
        assert node.tip.hash == twin.tip.hash == node.store.tip().hash
        assert node.state.data == twin.state.data
        assert [t.id for t in node.mempool.pending()] == [t.id for t in twin.mempool.pending()]
        assert [t.id for t in node.store.mempool_txs()] == [t.id for t in twin.store.mempool_txs()]
        assert node.supply.report() == twin.supply.report()
    assert node.job is None
    twin.close()


def test_while_the_block_is_made_the_node_answers_from_its_old_tip(
    genesis: Genesis, served: tuple[Node, NodeService]
) -> None:
    node, service = served
    txs = transfers(genesis, 100)
    accept(node, txs[:50])
    stored = threading.Event()  # the worker has committed the block to the store
    release = threading.Event()
    real = service._make  # noqa: SLF001

    def make_then_wait(*args: Any) -> Any:
        out = real(*args)
        stored.set()
        assert release.wait(10)
        return out

    service._make = make_then_wait  # type: ignore[method-assign]  # noqa: SLF001

    async def scenario() -> None:
        producing = asyncio.create_task(service.produce(now_ms()))
        while not stored.is_set():
            await asyncio.sleep(0.005)
        # the block is in the store, not yet the node's: every answer is still the old tip's
        assert node.store.tip().height == 1
        status = node.status()
        assert status["height"] == 0 and status["mempool"] == 50
        assert node.tx_status(txs[0].id)["status"] == "pending"
        transport = httpx.ASGITransport(app=service.server.config.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            listed = (await client.get("/dn/v1/blocks")).json()
            assert listed["height"] == 0 and [b["height"] for b in listed["blocks"]] == [0]
            assert (await client.get("/dn/v1/blocks/1")).status_code == 404
            assert (await client.get("/dn/v1/status")).json()["height"] == 0
        # the mempool still takes transactions, checked against the old view
        results, kept = node.check([tx.to_json() for tx in txs[50:]])
        assert all(r["accepted"] for r in results) and len(node.mempool) == 100
        release.set()
        block = await producing
        assert block.height == 1 and [t.id for t in block.txs] == [t.id for t in txs[:50]]
        node.keep(kept)
        assert node.tx_status(txs[0].id)["status"] == "included"
        assert [t.id for t in node.mempool.pending()] == [t.id for t in txs[50:]]

    asyncio.run(scenario())
    assert node.job is None and node.tip.height == 1


def test_whatever_else_changes_the_chain_lands_the_block_first(
    genesis: Genesis, served: tuple[Node, NodeService]
) -> None:
    """`Node.produce` (or `receive_block`, `close`) while a block is out waits for it and adopts
    it, then goes on from the new tip; the service's own `land` then only returns it."""
    node, service = served
    txs = transfers(genesis, 60)
    accept(node, txs)
    release = threading.Event()
    real = service._make  # noqa: SLF001

    def wait_then_make(*args: Any) -> Any:
        assert release.wait(10)
        return real(*args)

    service._make = wait_then_make  # type: ignore[method-assign]  # noqa: SLF001

    async def scenario() -> None:
        producing = asyncio.create_task(service.produce(now_ms()))
        await asyncio.sleep(0.05)
        assert node.job is not None
        threading.Timer(0.1, release.set).start()
        second = node.produce()  # blocks until the worker is done, lands its block, goes on
        assert second.height == 2
        first = await producing
        assert first.height == 1 and node.tip.hash == second.hash

    asyncio.run(scenario())
    assert node.job is None


def test_a_block_that_cannot_be_made_changes_nothing(
    genesis: Genesis, served: tuple[Node, NodeService], monkeypatch: pytest.MonkeyPatch
) -> None:
    node, service = served
    accept(node, transfers(genesis, 10))
    state = dict(node.state.data)

    def refuse(*_: Any) -> Any:
        raise InvalidBlock("no", reason="test")

    monkeypatch.setattr(service_module, "build_block", refuse)
    with pytest.raises(InvalidBlock):
        asyncio.run(service.produce(now_ms()))
    assert node.job is None and node.tip.height == 0 and node.state.data == state
    assert len(node.mempool) == 10
    monkeypatch.undo()
    assert asyncio.run(service.produce(now_ms())).height == 1


def test_a_reopened_store_holds_what_the_worker_stored(
    tmp_path: Path, genesis: Genesis, served: tuple[Node, NodeService]
) -> None:
    node, service = served
    accept(node, transfers(genesis, 30))
    block = asyncio.run(service.produce(now_ms()))
    copy = tmp_path / "copy"
    copy.mkdir()
    node.store.conn.execute("PRAGMA wal_checkpoint(FULL)")
    shutil.copy(node.home.store_file, copy / "chain.sqlite")
    shutil.copy(node.home.key_file, copy / "node_key.json")
    reopened = Node(NodeHome(copy), genesis)
    assert reopened.tip.hash == block.hash and reopened.state.data == node.state.data
    assert len(reopened.mempool) == 0
    reopened.close()


def test_a_batch_goes_in_while_blocks_are_made(
    tmp_path: Path, genesis: Genesis, served: tuple[Node, NodeService]
) -> None:
    """A batch posted to the service's app while its producer makes block after block: every
    transaction accepted, persisted by the maker thread, and a node reopened on the store has
    the same chain and the same mempool."""
    node, service = served
    txs = transfers(genesis, 300)
    app = service.server.config.app

    async def scenario() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            posting = asyncio.create_task(
                client.post("/dn/v1/txs", json=[tx.to_json() for tx in txs])
            )
            while not posting.done():
                if len(node.mempool):
                    await service.produce(now_ms())
                await asyncio.sleep(0)
            return (await posting).json()

    reply = asyncio.run(scenario())
    assert reply["accepted"] == len(txs)
    assert node.tip.height >= 2
    included = sum(len(b.txs) for b in node.store.iter_canonical())
    assert included + len(node.mempool) == len(txs)
    reopened = Node(node.home, genesis)
    assert reopened.tip.hash == node.tip.hash and reopened.state.data == node.state.data
    assert [t.id for t in reopened.mempool.pending()] == [t.id for t in node.mempool.pending()]
    reopened.close()
