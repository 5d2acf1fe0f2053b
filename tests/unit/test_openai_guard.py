"""The OpenAI routes spend the node's gateway wallet; a web page in the user's browser, or a
model priced to drain it, must not (issue 11, attack 6).

A real node on a temporary SQLite store with a gateway wallet, served in this process by its own
FastAPI app with the client seen at a loopback address, as a browser on the same machine is.
Every refusal is checked to spend nothing: the wallet's balance and nonce do not move, and no
block or pending transaction appears.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dn.node.http.app import create_app
from dn.node.http.openai_routes import DEFAULT_MAX_PRICE
from dn.node.market.gateway import Gateway
from dn.node.node import Node, NodeHome
from dn.node.setup import init_dev_chain
from dn.runner.modelstore import ModelStore
from dn.wallet.keys import Keypair

DN = 10**9
ROUTES = ["/v1/chat/completions", "/v1/completions"]
CHAT = {"model": "cheap", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
TEXT = {"model": "cheap", "prompt": "hi", "max_tokens": 8}


class Rig:
    def __init__(self, base: Path) -> None:
        self.wallet, self.creator = Keypair.generate(), Keypair.generate()
        home = NodeHome.named("default", base)
        genesis = init_dev_chain(home, {self.wallet.address: 1000 * DN, self.creator.address: DN})
        self.node = Node(home, genesis)
        self.register("cheap", 2_000)  # 0.000002 DN a token
        self.register("gpt-4o", 500 * DN * 1000)  # 500 DN a token
        # the escrow that pays its queries (dn/chain/escrow.py), so a request gets to the miners
        deposit = self.node.own_tx(self.wallet, "escrow.deposit", {"amount": 10 * DN})
        assert self.node.submit([deposit.to_json()])[0]["accepted"]
        self.node.produce()
        app = create_app(
            self.node,
            gateway=Gateway(self.node),
            store=ModelStore(base / "models"),
            gateway_wallet=self.wallet,
        )
        self.http = TestClient(app, base_url="http://127.0.0.1:8780", client=("127.0.0.1", 5555))

    def register(self, name: str, price: int) -> None:
        sha = hashlib.sha256(name.encode()).hexdigest()
        payload = {
            "model": sha,
            "name": name,
            "domain": "general",
            "price": price,
            "license": "",
            "size": 1,
        }
        tx = self.node.own_tx(self.creator, "model.register", payload)
        assert self.node.submit([tx.to_json()])[0]["accepted"]
        self.node.produce()

    def spent(self) -> tuple[int, int, int, int]:
        """What a spend would move: the wallet's balance and nonce, the height, the mempool."""
        account = self.node.account(self.wallet.address)
        return (
            account["balance"],
            account["next_nonce"],
            self.node.tip.height,
            len(self.node.mempool),
        )

    def post(self, route: str, body: Any, **headers: str) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.http.post(route, content=data, headers=headers)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    made = Rig(tmp_path)
    yield made
    made.http.close()
    made.node.close()


def _error(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""]
)
def test_a_cross_site_form_post_is_415_and_spends_nothing(
    rig: Rig, route: str, content_type: str
) -> None:
    """A form on any web site can POST text/plain (or a form encoding) to 127.0.0.1 without a
    CORS preflight; the body may still be valid JSON. Only application/json is read."""
    before = rig.spent()
    body = CHAT if "chat" in route else TEXT
    headers = {"content-type": content_type} if content_type else {}
    response = rig.post(route, body, **headers)
    assert _error(response) == (415, "not-json")
    assert rig.spent() == before


@pytest.mark.parametrize("route", ROUTES)
def test_a_request_from_a_web_page_elsewhere_is_403_and_spends_nothing(
    rig: Rig, route: str
) -> None:
    before = rig.spent()
    body = CHAT if "chat" in route else TEXT
    response = rig.post(
        route, body, **{"content-type": "application/json", "origin": "https://evil.example"}
    )
    assert _error(response) == (403, "cross-origin")
    assert rig.spent() == before


@pytest.mark.parametrize("route", ROUTES)
def test_dns_rebinding_is_403_and_spends_nothing(rig: Rig, route: str) -> None:
    """A page on evil.example whose name now resolves to 127.0.0.1 is same-origin to the
    browser, but its requests name evil.example in the Host header."""
    before = rig.spent()
    body = CHAT if "chat" in route else TEXT
    response = rig.post(
        route, body, **{"content-type": "application/json", "host": "evil.example:8780"}
    )
    assert _error(response) == (403, "bad-host")
    assert rig.spent() == before


@pytest.mark.parametrize("route", ROUTES)
def test_a_model_priced_to_drain_the_wallet_is_refused_before_anything_is_signed(
    rig: Rig, route: str
) -> None:
    before = rig.spent()
    body = {**(CHAT if "chat" in route else TEXT), "model": "gpt-4o"}
    response = rig.post(route, body, **{"content-type": "application/json"})
    assert _error(response) == (402, "over-price-cap")
    assert str(DEFAULT_MAX_PRICE) in response.json()["error"]["message"]
    assert rig.spent() == before


def test_a_request_may_lower_the_cap_but_never_raise_it(rig: Rig) -> None:
    before = rig.spent()
    lower = {**CHAT, "dn_max_price": 1_000}  # below the cheap model's 2,000 per 1k tokens
    response = rig.post("/v1/chat/completions", lower, **{"content-type": "application/json"})
    assert _error(response) == (402, "over-price-cap")
    higher = {**CHAT, "model": "gpt-4o", "dn_max_price": 10**18}
    response = rig.post("/v1/chat/completions", higher, **{"content-type": "application/json"})
    assert _error(response) == (400, "bad-request")
    assert rig.spent() == before


def test_a_same_machine_client_gets_past_the_guard(rig: Rig) -> None:
    """The guard's own control: JSON, no Origin (as curl and the openai package send), a
    loopback Host, a model under the cap: the request reaches the market, which has no miner
    here, so it ends in `no-miner` (503), not in one of the guard's refusals."""
    for host in ("127.0.0.1:8780", "localhost:8780", "[::1]:8780"):
        response = rig.post(
            "/v1/chat/completions", CHAT, **{"content-type": "application/json", "host": host}
        )
        assert _error(response) == (503, "no-miner"), host
    allowed_origin = {"content-type": "application/json", "origin": "http://127.0.0.1:8780"}
    response = rig.post("/v1/chat/completions", CHAT, **allowed_origin)
    assert _error(response) == (503, "no-miner")
