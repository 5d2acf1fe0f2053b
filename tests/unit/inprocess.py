"""A real node's HTTP API in this process, for testing the client library without sockets.

A dev chain on a temporary SQLite store, served by the node's own FastAPI app (with its model
routes, over an empty model store) through an httpx transport. The node proposes a block as
soon as it accepts a transaction (it is the chain's one validator), and another when a client
looks at a booking that is in a block not final yet (as a validator does while a book waits),
so a client that waits for inclusion or a book's finality does not wait on a clock.

    with served_node(tmp_path, {alice.address: 100 * DN}, min_fee=2_500) as (node, client):
        send(client, alice, "transfer", {...})
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from dn.client.http import NodeClient
from dn.node.http.app import create_app
from dn.node.market.gateway import Gateway
from dn.node.node import Node, NodeHome
from dn.node.setup import init_dev_chain
from dn.runner.modelstore import ModelStore

DN = 10**9


class AppTransport(httpx.BaseTransport):
    """Hands each request to the node's app; after an accepted POST of transactions the node
    puts them in a block."""

    def __init__(self, node: Node, store: ModelStore) -> None:
        self.node = node
        self.app = TestClient(create_app(node, gateway=Gateway(node), store=store))
        self.submitted = 0  # transaction posts the node accepted

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.app.request(
            request.method,
            request.url.raw_path.decode(),
            headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
            content=request.read(),
        )
        if request.method == "POST" and request.url.path == "/dn/v1/txs" and answer.is_success:
            self.submitted += 1
            self.node.produce()
        elif request.method == "GET" and request.url.path.startswith("/dn/v1/txs/"):
            found = answer.json() if answer.is_success else {}
            booking = found.get("tx", {}).get("kind") == "task.book"
            if booking and found["status"] == "included" and not found["final"]:
                self.node.produce()  # as a validator does while a book waits to be final
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)


@contextmanager
def served_node(
    base: Path, allocations: dict[str, int], **params: int
) -> Iterator[tuple[Node, NodeClient]]:
    """A dev chain with `allocations` and only the genesis `params` given (the rest left to
    their defaults), and a NodeClient talking to it."""
    home = NodeHome.named("default", base)
    genesis = init_dev_chain(home, allocations, params=dict(params))
    node = Node(home, genesis)
    transport = AppTransport(node, ModelStore(base / "node-models"))
    client = NodeClient("http://node.test", transport=transport)
    try:
        yield node, client
    finally:
        client.close()
        node.close()
