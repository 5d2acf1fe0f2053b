"""A small synchronous HTTP client for a node's `/dn/v1/` API (httpx).

Errors come back as the same typed exceptions the node raised: the JSON body names the error class
and reason, so `InvalidTx("...", reason="nonce-gap")` on the node is `InvalidTx` here too.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import quote

import httpx

from dn import errors
from dn.errors import DNError, InputError, NodeError, Unauthenticated

DEFAULT_TIMEOUT = 30.0


def _error_from(response: httpx.Response) -> DNError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = str(body.get("message") or f"node answered HTTP {response.status_code}")
    cls = getattr(errors, str(body.get("error", "")), None)
    if not (isinstance(cls, type) and issubclass(cls, DNError)):
        cls = NodeError
    return cls(message, reason=body.get("reason"))


class NodeClient:
    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        try:
            self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)
        except (httpx.InvalidURL, ValueError) as exc:
            raise InputError(f"invalid node URL {url!r}: {exc}") from None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def stream(
        self, path: str, body: Any, timeout: float
    ) -> AbstractContextManager[httpx.Response]:
        """POST `body` to `path` (under /dn/v1) and read the answer as it comes, on this
        client's connection (a new client would cost ~50 ms before the request goes out)."""
        return self._http.stream("POST", "/dn/v1" + path, json=body, timeout=timeout)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, "/dn/v1" + path, **kwargs)
        except httpx.TransportError as exc:
            raise NodeError(
                f"cannot reach a node at {self.url} ({type(exc).__name__}); "
                "is 'dn node start' running, and is --node right?"
            ) from None
        if response.status_code >= 400:
            raise _error_from(response)
        try:
            return response.json()
        except ValueError:
            raise NodeError(f"{self.url} answered with something that is not JSON") from None

    def status(self) -> dict[str, Any]:
        return dict(self._request("GET", "/status"))

    def genesis(self) -> dict[str, Any]:
        return dict(self._request("GET", "/genesis"))

    def param(self, name: str) -> int:
        """A genesis parameter of the node's chain: the genesis file's value, or its default
        where the file leaves it out (`Genesis.param`, never a default restated here)."""
        from dn.chain.genesis import Genesis

        return Genesis.from_json(self.genesis()).param(name)

    def peers(self) -> dict[str, Any]:
        return dict(self._request("GET", "/peers"))

    def account(self, address: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/accounts/{address}"))

    def submit(self, tx: dict[str, Any]) -> dict[str, Any]:
        return dict(self._request("POST", "/txs", json=tx))

    def submit_many(self, txs: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(self._request("POST", "/txs", json=txs))

    def tx(self, tx_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/txs/{tx_id}"))

    def block(self, ref: int | str) -> dict[str, Any]:
        return dict(self._request("GET", f"/blocks/{ref}"))

    def blocks(self, start: int = 0, limit: int = 20) -> dict[str, Any]:
        """`{"height", "blocks"}` from height `start`. A node with a network key serves ranges
        only to its members (they are how peers sync); then the blocks are read one by one."""
        try:
            return dict(self._request("GET", "/blocks", params={"from": start, "limit": limit}))
        except Unauthenticated:
            height = int(self.status()["height"])
            found = [self.block(h) for h in range(start, min(start + limit, height + 1))]
            return {"height": height, "blocks": found}

    def validators(self) -> dict[str, Any]:
        """`{"height", "active": [address], "validators": [...]}` (GET /dn/v1/validators)."""
        return dict(self._request("GET", "/validators"))

    def models(self) -> dict[str, Any]:
        """`{"height", "models": [...]}`: every model on chain, with the miners serving it."""
        return dict(self._request("GET", "/models"))

    def model(self, ref: str) -> dict[str, Any]:
        """One model by SHA-256, unique hash prefix or name; NotFound when the chain has none."""
        return dict(self._request("GET", f"/models/{quote(ref.strip(), safe='')}"))

    def stakes(self, *, target: str | None = None, backer: str | None = None) -> dict[str, Any]:
        """`{"height", "stakes": [{target, backer, amount}, …]}`: the stakes on `target` (a model
        sha256 or a validator address) and/or by `backer`; every stake without either."""
        params = {k: v for k, v in (("target", target), ("backer", backer)) if v is not None}
        return dict(self._request("GET", "/stakes", params=params))

    def powr_status(self) -> dict[str, Any]:
        """The current PoWR epoch, its phase and the last closed epoch."""
        return dict(self._request("GET", "/powr/status"))

    def powr_epoch(self, epoch: int) -> dict[str, Any]:
        """One epoch's revealed scores (raw and clipped), task stats and result record."""
        return dict(self._request("GET", f"/powr/epochs/{int(epoch)}"))

    def powr_leaderboard(
        self, *, epoch: int | None = None, domain: str | None = None
    ) -> dict[str, Any]:
        """Models ranked by consensus score in `epoch` (default: the last closed)."""
        params = {k: v for k, v in (("epoch", epoch), ("domain", domain)) if v is not None}
        return dict(self._request("GET", "/powr/leaderboard", params=params))

    def task(self, task_id: str) -> dict[str, Any]:
        """A settled task's record (status, miners, tokens, paid); NotFound before settling."""
        return dict(self._request("GET", f"/tasks/{task_id}"))

    def wait_for_tx(
        self, tx_id: str, timeout: float = 60.0, *, final: bool = False
    ) -> dict[str, Any]:
        """Poll until the transaction is in a block (with `final`, in a final block: one no
        reorganisation can replace); NodeError if it is not within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.tx(tx_id)
            if found["status"] == "included" and (found.get("final") or not final):
                return found
            if time.monotonic() > deadline:
                what = "in a final block" if final else "included"
                raise NodeError(f"transaction {tx_id} was not {what} within {timeout:.0f} s")
            time.sleep(0.1)
