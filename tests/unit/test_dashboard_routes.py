"""The dashboard's pages and its JSON route, on a real node (a dev chain on temporary SQLite, two
closed PoWR epochs) served in this process by its own FastAPI app.

What a user would care about: every page shows the chain's data; the explain route answers
what `dn --json chain explain` prints; read-only pages offer nothing that spends (no POST form,
no script that posts, no link to a paying route); the playground opens only to loopback
clients that name this machine, and the route it posts to refuses anyone else.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dn.chain.explain import explain
from dn.chain.powr_rules import powr_commitment
from dn.chain.store import Store
from dn.node.http.app import create_app
from dn.node.http.dashboard import routes
from dn.node.http.dashboard.taskview import token_class
from dn.node.market.gateway import Gateway
from dn.node.node import Node, NodeHome
from dn.node.setup import init_dev_chain
from dn.runner.modelstore import ModelStore
from dn.wallet.keys import Keypair

DN = 10**9
EPOCH = 4  # blocks; epoch e is heights 4e+1 … 4e+4, closed by block 4e+5
SALT = "5a17"
SCORES = {0: 700_000, 1: 820_000}
ERRORS = {1: 50_000}  # the standard error revealed with epoch 1's score (none in epoch 0)
LOCAL = ("127.0.0.1", 5555)
LAN = ("192.168.1.20", 5555)
SPENDING = ("/v1/chat/completions", "/v1/completions", "/dn/v1/txs", "/dn/v1/query")


@dataclass
class Chain:
    base: Path
    node: Node
    key: Keypair
    alice: Keypair
    bob: Keypair
    creator: Keypair
    model: str

    def app(self, **kw: Any) -> FastAPI:
        kw.setdefault("gateway", Gateway(self.node))
        kw.setdefault("store", ModelStore(self.base / "models"))
        return create_app(self.node, **kw)

    def client(self, client: tuple[str, int] = LOCAL, host: str = "127.0.0.1:8780", **kw: Any):
        return TestClient(
            self.app(**kw), base_url=f"http://{host}", client=client, follow_redirects=False
        )


def _send(node: Node, kp: Keypair, kind: str, payload: dict[str, Any]) -> None:
    tx = node.own_tx(kp, kind, payload)
    result = node.submit([tx.to_json()])[0]
    assert result["accepted"], result


def _produce_until_next_is(node: Node, heights: range) -> None:
    while node.tip.height + 1 not in heights:
        node.produce()


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    """Model `smol` registered, a transfer, and the node (the one validator) scoring the model
    in epochs 0 and 1, both closed."""
    base = tmp_path_factory.mktemp("dashboard")
    home = NodeHome.named("default", base)
    key = home.key()
    alice, bob, creator = Keypair.generate(), Keypair.generate(), Keypair.generate()
    allocations = {alice.address: 100 * DN, creator.address: 10 * DN, key.address: 10 * DN}
    genesis = init_dev_chain(home, allocations, params={"epoch_blocks": EPOCH})
    node = Node(home, genesis)
    sha = hashlib.sha256(b"smol").hexdigest()
    register = {"model": sha, "name": "smol", "domain": "general", "price": 2_000_000}
    _send(node, creator, "model.register", {**register, "license": "MIT", "size": 1})
    _send(node, alice, "transfer", {"to": bob.address, "amount": 5 * DN})
    node.produce()
    for epoch, score in SCORES.items():
        start = epoch * EPOCH + 1
        _produce_until_next_is(node, range(start, start + EPOCH // 2))
        errors = {sha: ERRORS[epoch]} if epoch in ERRORS else None
        commitment = powr_commitment(epoch, key.address, {sha: score}, SALT, errors)
        _send(node, key, "powr.commit", {"epoch": epoch, "commitment": commitment})
        node.produce()
        _produce_until_next_is(node, range(start + EPOCH // 2, start + EPOCH))
        reveal = {"epoch": epoch, "scores": {sha: score}, "salt": SALT}
        _send(node, key, "powr.reveal", {**reveal, **({"errors": errors} if errors else {})})
        node.produce()
    while node.tip.height < 2 * EPOCH + 1:
        node.produce()
    try:
        yield Chain(base, node, key, alice, bob, creator, sha)
    finally:
        node.close()


def read_only_pages(c: Chain) -> list[str]:
    return [
        "/",
        "/models",
        "/models?epoch=0",
        f"/address/{c.alice.address}",
        f"/address/{c.key.address}",
        "/block/1",
        f"/task/{'ab' * 32}",
    ]


def scripts_of(html: str) -> list[str]:
    return re.findall(r'<script[^>]*src="([^"]+)"', html)


def test_the_network_page_shows_this_node_its_validator_and_the_last_blocks(c: Chain) -> None:
    with c.client() as http:
        page = http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    html = page.text
    assert c.key.address in html
    assert "This node runs without networking" in html  # no Network given to this app
    assert "in turn now" in html  # the only validator is always in turn
    height = c.node.tip.height
    for h in range(height, max(height - 10, 0), -1):
        assert f'<a href="/block/{h}">{h}</a>' in html
    assert "model.register, transfer" in html  # block 1's kinds
    assert scripts_of(html) == ["/dashboard/static/live.js"]


def test_the_models_page_shows_the_leaderboard_and_both_charts(c: Chain) -> None:
    with c.client() as http:
        html = http.get("/models").text
    assert "PoWR leaderboard · epoch 1" in html
    assert "<th>kind</th>" in html and "<td>chat</td>" in html  # registered without a kind
    board = html[html.index('id="leaderboard"') : html.index("</table>", html.index("leaderboard"))]
    assert "smol" in board and "0.82" in board  # quality of epoch 1
    assert "0.82 ± 0.05" in board  # with its standard error; the score's is 0.05 * 0.625
    assert "0.5125 ± 0.0312" in board
    chart = html[
        html.index('id="score-chart"') : html.index("</figure>", html.index("score-chart"))
    ]
    assert 'data-series="smol"' in chart
    assert chart.count("<circle") == 2  # one point per closed epoch
    reveals = html[html.index('id="reveal-chart"') :]
    assert reveals.count('class="bar"') == 2  # revealed and clipped, one validator
    assert "median (weighted by voice)" in reveals

    with c.client() as http:
        older = http.get("/models?epoch=0").text
        future = http.get("/models?epoch=99")
    assert "Validators' scores · epoch 0" in older and "0.7</td>" in older
    assert future.status_code == 404 and "has not started" in future.text


def test_the_address_page_explains_every_unit_with_a_balance_chart(c: Chain) -> None:
    with c.client() as http:
        html = http.get(f"/address/{c.alice.address}").text
    assert "every unit explained" in html
    assert f"transfer to {c.bob.address}" in html
    assert "genesis allocation" in html
    assert '<strong id="balance">94.999999 DN</strong>' in html  # 100 - 5 - the fee
    chart = html[html.index('id="balance-chart"') :]
    assert 'data-series="balance"' in chart
    with c.client() as http:
        validator = http.get(f"/address/{c.key.address}").text
        bad = http.get("/address/dn1nonsense")
    assert "PoWR epoch 0 reward" in validator and "PoWR epoch 1 reward" in validator
    assert bad.status_code == 400 and "text/html" in bad.headers["content-type"]


def test_a_long_history_shows_the_newest_entries_and_points_to_the_json(
    c: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes, "LEDGER_ROWS", 3)
    with c.client() as http:
        html = http.get(f"/address/{c.key.address}").text
        total = len(http.get(f"/dn/v1/explain/{c.key.address}").json()["entries"])
    ledger = html[html.index('id="ledger"') : html.index("</table>", html.index('id="ledger"'))]
    assert ledger.count("<tr>") == 1 + 3  # the header and three entries
    assert f"the newest 3 of {total}" in html and total > 3
    assert "PoWR epoch 1 reward" in ledger  # newest first


def test_the_explain_route_answers_what_dn_chain_explain_prints(c: Chain) -> None:
    store = Store.open(c.node.store.path, readonly=True)
    try:
        expected = explain(store, c.key.address).to_json()
        later = explain(store, c.key.address, 5).to_json()
    finally:
        store.close()
    with c.client(client=LAN) as http:  # read-only: anyone on the LAN may ask
        assert http.get(f"/dn/v1/explain/{c.key.address}").json() == expected
        assert http.get(f"/dn/v1/explain/{c.key.address}?from=5").json() == later
        bad = http.get("/dn/v1/explain/dn1nonsense")
    assert bad.status_code == 400 and bad.json()["reason"] == "bad-address"


def test_a_block_page_lists_its_transactions(c: Chain) -> None:
    with c.client() as http:
        html = http.get("/block/1").text
        missing = http.get("/block/999")
    assert "model.register" in html and "5 DN to" in html
    assert missing.status_code == 404


def test_lookup_sends_a_task_id_to_its_page_and_anything_else_to_an_address(c: Chain) -> None:
    with c.client() as http:
        task = http.get("/lookup", params={"q": "AB" * 32})
        address = http.get("/lookup", params={"q": c.alice.address})
        empty = http.get("/lookup", params={"q": " "})
    assert task.status_code == 303 and task.headers["location"] == f"/task/{'AB' * 32}"
    assert address.headers["location"] == f"/address/{c.alice.address}"
    assert empty.status_code == 400


def test_read_only_pages_offer_nothing_that_spends(c: Chain) -> None:
    with c.client() as http:  # a loopback client: the case where spending is possible at all
        for path in read_only_pages(c):
            html = http.get(path).text
            forms = re.findall(r"<form\b[^>]*>", html, flags=re.IGNORECASE)
            assert forms == ['<form class="lookup" action="/lookup" method="get" role="search">']
            assert 'method="post"' not in html.lower()
            assert not [route for route in SPENDING if route in html], path
            assert "playground.js" not in html
            for script in scripts_of(html):
                source = http.get(script).text
                assert "POST" not in source.upper().replace("POSTS", "")
                assert not [route for route in SPENDING if route in source]


def test_the_playground_opens_only_on_this_machine(c: Chain) -> None:
    with c.client(gateway_wallet=c.alice) as http:
        page = http.get("/playground")
        network = http.get("/").text
    assert page.status_code == 200
    assert scripts_of(page.text) == ["/dashboard/static/playground.js"]
    assert c.alice.address[:18] in page.text and "94.999999 DN" in page.text
    assert 'href="/playground"' in network

    with c.client(client=LAN, gateway_wallet=c.alice) as http:
        lan = http.get("/playground")
        lan_network = http.get("/").text
        posted = http.post(
            "/v1/chat/completions",
            json={"model": "smol", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert lan.status_code == 403 and "only on the node" in lan.text
    assert "playground.js" not in lan.text and "<textarea" not in lan.text
    assert 'href="/playground"' not in lan_network
    assert posted.status_code == 403 and posted.json()["error"]["code"] == "not-local"

    # A loopback client reaching the node by a LAN name (or by DNS rebinding) is refused too.
    with c.client(host="mynode.local:8780", gateway_wallet=c.alice) as http:
        assert http.get("/playground").status_code == 403


def test_the_playground_says_when_it_cannot_pay(c: Chain) -> None:
    with c.client() as http:  # OpenAI routes, but no gateway wallet
        html = http.get("/playground").text
    assert "no gateway wallet" in html and "--gateway-wallet" in html
    assert re.search(r'<button type="submit" id="send" disabled>', html)
    bare = TestClient(create_app(c.node), base_url="http://127.0.0.1:8780", client=LOCAL)
    with bare as http:  # no gateway, so no OpenAI routes: no playground at all
        missing = http.get("/playground")
        assert 'href="/playground"' not in http.get("/").text
    assert missing.status_code == 404 and "no playground" in missing.text


def test_a_model_above_the_cap_cannot_be_chosen(c: Chain) -> None:
    with c.client(gateway_wallet=c.alice, gateway_max_price=1_000_000) as http:
        html = http.get("/playground").text
    assert re.search(r'<option value="smol" disabled>smol — 0.002 DN / 1k tokens \(above', html)


class _Records:
    def __init__(self, found: dict[str, Any]) -> None:
        self.found = found

    def get(self, task: str) -> dict[str, Any] | None:
        return self.found.get(task)


class _Miner:
    """What the task page reads of a miner: its records."""

    def __init__(self, found: dict[str, Any]) -> None:
        self.records = _Records(found)


def test_the_task_page_colours_each_token_and_shows_the_prompt_only_on_this_machine(
    c: Chain,
) -> None:
    task = "cd" * 32
    values = [[101, 0, 0, 5000], [102, 2, 300, 4000], [103, 40, 6000, 1000], [104, 70, 9000, 0]]
    record = {
        "task": task,
        "role": "checker",
        "ticket": {"model": c.model},
        "input": {"messages": [{"role": "user", "content": "Name a <b>colour</b>"}]},
        "tokens": [v[0] for v in values],
        "values": values,
    }
    miner = _Miner({task: record})
    with c.client(miner=miner) as http:  # type: ignore[arg-type]
        html = http.get(f"/task/{task}").text
    assert "was its checker" in html
    assert "Name a &lt;b&gt;colour&lt;/b&gt;" in html
    classes = re.findall(r'<span class="tok (t-\w+)" title="#\d', html)
    assert classes == ["t-top", "t-near", "t-far", "t-bad"]
    assert "rank 40 · gap 6.000" in html
    # The model file is not on this node: token ids instead of text, and the page says why.
    assert "[101]" in html and "does not hold the model file" in html
    assert "this node (it was the checker)" in html

    with c.client(client=LAN, miner=miner) as http:  # type: ignore[arg-type]
        lan = http.get(f"/task/{task}").text
    assert "colour" not in lan and "shows it only on its own machine" in lan
    assert re.findall(r'<span class="tok (t-\w+)" title="#\d', lan) == classes

    with c.client() as http:
        unknown = http.get(f"/task/{'ef' * 32}").text
        bad = http.get("/task/xyz")
    assert "not settled on this node" in unknown and "chain keeps only its hash" in unknown
    assert bad.status_code == 400


def test_token_classes_follow_the_checkers_limits() -> None:
    assert token_class(0, 0, 64, 8000) == "t-top"
    assert token_class(3, 1000, 64, 8000) == "t-near"
    assert token_class(4, 1000, 64, 8000) == "t-far"
    assert token_class(64, 8000, 64, 8000) == "t-far"
    assert token_class(65, 0, 64, 8000) == "t-bad"
    assert token_class(0, 8001, 64, 8000) == "t-bad"


def test_static_files_are_served_from_the_package(c: Chain) -> None:
    with c.client(client=LAN) as http:
        css = http.get("/dashboard/static/dashboard.css")
        js = http.get("/dashboard/static/live.js")
        icon = http.get("/dashboard/static/favicon.svg")
    assert css.status_code == js.status_code == icon.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert "javascript" in js.headers["content-type"]
    assert json.dumps("dn/v1/status")[1:-1] in js.text


@pytest.fixture
def c(chain: Chain) -> Chain:
    return chain
