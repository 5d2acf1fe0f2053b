"""The dashboard's routes: HTML pages rendered on the server, their static files, and the one
JSON route they added to the API.

    GET /                       the network: this node, peers, validators and turns, last blocks
    GET /models                 models, the PoWR leaderboard, scores over epochs, reveals (?epoch=N)
    GET /lookup?q=…             the search box: to a task's page or an address's
    GET /address/{address}      `dn chain explain` as a table, the balance over time
    GET /task/{task}            a task: prompt, answer, each token by the checker's rank and gap
    GET /playground             a paid query, streamed (loopback clients only)
    GET /block/{height}          one block and its transactions (a settled task links to its page)
    GET /dashboard/static/…     CSS, the polling script, the playground script, the icon
    GET /dn/v1/explain/{address}?from=H     `dn --json chain explain ADDRESS` over HTTP

Read-only pages need no login and hold no form that spends: the only script that POSTs is the
playground's, and it posts to the OpenAI route (`POST /v1/chat/completions`), so a query from
the page passes exactly the guards of any other client (dn/node/http/local.py: loopback client,
JSON body, no foreign Origin, loopback Host, the price cap). The playground page itself is
served only to loopback clients with a loopback Host. Every page is sent with a
Content-Security-Policy that allows only this node's own scripts, styles and connections, and
forbids framing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import jinja2
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.staticfiles import StaticFiles

from dn.chain import tasks
from dn.chain.ledger import MODEL
from dn.encoding import UNITS_PER_DN, format_dn
from dn.errors import DNError, InputError
from dn.node.http.dashboard.charts import PALETTE
from dn.node.http.dashboard.explained import Explainer, balance_chart, ledger_rows
from dn.node.http.dashboard.taskview import TASK_ID, task_view
from dn.node.http.dashboard.views import block_row, models_view, network_view, ppm
from dn.node.http.dashboard.vocab import Vocabularies
from dn.node.http.local import is_local
from dn.node.node import Node

if TYPE_CHECKING:
    from dn.node.market.miner import Miner
    from dn.node.p2p.network import Network
    from dn.runner.modelstore import ModelStore
    from dn.wallet.keys import Keypair

HERE = Path(__file__).resolve().parent
STATIC = "/dashboard/static"
CHAT_ROUTE = "/v1/chat/completions"
LEDGER_ROWS = 300  # the newest entries shown on an address page; the JSON route has them all
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _short(text: Any, n: int = 12) -> str:
    text = "" if text is None else str(text)
    return text[:n] + "…" if len(text) > n else text


def _signed(units: int) -> str:
    return ("+" if units > 0 else "") + format_dn(units)


def _price(units: int) -> str:
    """Units per 1,000 tokens as DN per 1,000 tokens."""
    return format_dn(units)


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(dn=format_dn, short=_short, when=_when, signed=_signed, ppm=ppm)
    env.filters["price"] = _price
    env.globals.update(static=STATIC, palette=PALETTE, units_per_dn=UNITS_PER_DN)
    return env


def _host_is_local(request: Request) -> bool:
    """Whether the Host header names this machine (a page reached by a LAN name or through DNS
    rebinding does not)."""
    try:
        host = httpx.URL(f"http://{request.headers.get('host', '')}").host
    except (httpx.InvalidURL, ValueError):
        return False
    return is_local(host)


def _signing(network: Network | None) -> httpx.AsyncBaseTransport | None:
    """On a keyed network, a transport that signs as this node (another node's miner routes
    answer only members); else None, httpx's own."""
    if network is None or network.network_key is None:
        return None
    from dn.node.p2p.session import MemberTransport

    return MemberTransport(network.member)


def client_is_local(request: Request) -> bool:
    return is_local(request.client.host if request.client else None) and _host_is_local(request)


def add_dashboard_routes(
    app: FastAPI,
    node: Node,
    network: Network | None = None,
    miner: Miner | None = None,
    store: ModelStore | None = None,
    gateway_wallet: Keypair | None = None,
    max_price: int | None = None,
) -> None:
    """Mount the dashboard on `app`, with what `create_app` was given. Of the gateway wallet
    only its address is kept (None: queries cannot be paid here); `max_price` is its cap in
    units per 1,000 tokens (None: the OpenAI routes' default)."""
    payer = gateway_wallet.address if gateway_wallet is not None else None
    env = templates()
    explainer = Explainer(node)
    vocabs = Vocabularies()
    app.mount(STATIC, StaticFiles(directory=HERE / "static"), name="dashboard-static")

    def playground_here() -> bool:
        return any(getattr(route, "path", None) == CHAT_ROUTE for route in app.routes)

    def page(request: Request, name: str, code: int = 200, **context: Any) -> HTMLResponse:
        body = env.get_template(name).render(
            page=name.removesuffix(".html"),
            me=node.key.address,
            network_name=node.genesis.network,
            height=node.tip.height,
            show_playground=playground_here() and client_is_local(request),
            **context,
        )
        return HTMLResponse(body, status_code=code, headers=HEADERS)

    def refused(request: Request, exc: DNError) -> HTMLResponse:
        return page(request, "message.html", exc.http_status, title=exc.reason, message=exc.message)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def network_page(request: Request) -> HTMLResponse:
        return page(request, "network.html", **network_view(node, network))

    @app.get("/models", response_class=HTMLResponse, include_in_schema=False)
    async def models_page(request: Request, epoch: int | None = Query(None)) -> HTMLResponse:
        try:
            return page(request, "models.html", **models_view(node, epoch))
        except DNError as exc:
            return refused(request, exc)

    @app.get("/lookup", include_in_schema=False, response_model=None)
    async def lookup(request: Request, q: str = "") -> Any:
        """The header's search box: a task id opens the task, anything else the address."""
        wanted = q.strip()
        if not wanted:
            message = "type an address (dn1…) or a task id in the box above"
            return refused(request, InputError(message, reason="nothing-to-look-up"))
        where = "task" if TASK_ID.match(wanted.lower()) else "address"
        return RedirectResponse(f"/{where}/{quote(wanted, safe='')}", status_code=303)

    @app.get("/address/{address}", response_class=HTMLResponse, include_in_schema=False)
    async def address_page(request: Request, address: str) -> HTMLResponse:
        try:
            found = await explainer.explain(address.strip())
            account = node.account(address.strip())
        except DNError as exc:
            return refused(request, exc)
        return page(
            request,
            "address.html",
            address=found.address,
            account=account,
            found=found,
            rows=list(reversed(ledger_rows(found)))[:LEDGER_ROWS],
            entries=len(found.entries),
            totals=found.totals(),
            chart=balance_chart(found),
        )

    @app.get("/task/{task}", response_class=HTMLResponse, include_in_schema=False)
    async def task_page(request: Request, task: str) -> HTMLResponse:
        try:
            found = await task_view(
                node,
                task,
                miner=miner,
                store=store,
                vocabs=vocabs,
                local_client=client_is_local(request),
                transport=_signing(network),
            )
        except DNError as exc:
            return refused(request, exc)
        return page(request, "task.html", t=found)

    @app.get("/playground", response_class=HTMLResponse, include_in_schema=False)
    async def playground_page(request: Request) -> HTMLResponse:
        if not playground_here():
            message = "this node does not serve the OpenAI API, so it has no playground"
            return page(request, "message.html", 404, title="no-playground", message=message)
        if not client_is_local(request):
            message = (
                "the playground spends this node's gateway wallet, so it opens only on the "
                "node's own machine: browse to http://127.0.0.1:PORT/playground there"
            )
            return page(request, "message.html", 403, title="not-local", message=message)
        from dn.node.http.openai_routes import DEFAULT_MAX_PRICE

        cap = DEFAULT_MAX_PRICE if max_price is None else max_price
        live = [
            {"name": r["name"], "id": key[len(MODEL) :], "price": r["price"]}
            for key, r in sorted(node.state.items())
            if key.startswith(MODEL) and not r["retired"]
        ]
        balance = node.account(payer)["balance"] if payer else None
        return page(request, "playground.html", models=live, cap=cap, payer=payer, balance=balance)

    @app.get("/dn/v1/explain/{address}")
    async def explain_route(address: str, start: int = Query(0, alias="from", ge=0)) -> Any:
        found = await explainer.explain(address.strip(), start)
        return found.to_json()

    @app.get("/block/{height}", response_class=HTMLResponse, include_in_schema=False)
    async def block_page(request: Request, height: int) -> HTMLResponse:
        block = node.store.block(height) if 0 <= height <= node.tip.height else None
        if block is None:
            message = f"no block {height} on this node's chain"
            return page(request, "message.html", 404, title="not-found", message=message)
        txs = []
        for tx in block.txs:
            ticket = tx.payload.get("ticket") if tx.kind == "task.settle" else None
            task = tasks.task_id(node.genesis.chain_id, ticket) if ticket else None
            txs.append(
                {
                    "id": tx.id,
                    "kind": tx.kind,
                    "sender": tx.sender,
                    "fee": tx.fee,
                    "task": task,
                    "payload": tx.payload,
                }
            )
        return page(request, "block.html", b=block_row(node, height), txs=txs)
