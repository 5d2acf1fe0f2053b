"""API keys for LAN clients of the OpenAI routes (issue 14, item 4).

The node of tests/unit/test_openai_guard.py (a real SQLite store, a gateway wallet, no miner), its
app served in this process with the client seen at a LAN address. A request the guard lets
through reaches the market and ends in 503 `no-miner`; each refusal is checked to spend nothing.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dn.node.market.apikeys import FILE_NAME, KeyStore, parse_expiry
from dn.wallet.keys import Keypair
from tests.unit.test_openai_guard import CHAT, DN, ROUTES, TEXT, Rig

LAN = ("10.20.30.40", 5555)
JSON = {"content-type": "application/json"}


class LanRig(Rig):
    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self.keys = KeyStore.in_folder(self.node.home.path)
        self.lan = TestClient(self.http.app, base_url="http://10.20.30.1:8780", client=LAN)

    def key(self, budget: int = DN, **options: Any) -> str:
        made, _ = self.keys.create(options.pop("wallet", self.wallet.address), budget, **options)
        return made

    def lan_post(self, route: str, body: Any, key: str | None = None, **headers: str) -> Any:
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        return self.lan.post(route, content=json.dumps(body).encode(), headers={**JSON, **headers})


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[LanRig]:
    made = LanRig(tmp_path)
    yield made
    made.lan.close()
    made.http.close()
    made.keys.close()
    made.node.close()


def _error(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def _body(route: str) -> dict[str, Any]:
    return CHAT if "chat" in route else TEXT


@pytest.mark.parametrize("route", ROUTES)
def test_a_key_lets_a_lan_client_through_and_gives_back_what_was_not_spent(
    rig: LanRig, route: str
) -> None:
    key = rig.key()
    before = rig.spent()
    # a LAN client names the node by its LAN address, and may be a web app on the LAN
    origin = {"origin": "http://10.20.30.99:3000"}
    assert _error(rig.lan_post(route, _body(route), key, **origin)) == (503, "no-miner")
    assert rig.keys.all()[0].spent == 0  # the query failed before any work: nothing paid
    assert rig.spent() == before


@pytest.mark.parametrize("route", ROUTES)
def test_no_key_from_the_lan_is_403(rig: LanRig, route: str) -> None:
    before = rig.spent()
    assert _error(rig.lan_post(route, _body(route))) == (403, "not-local")
    # the openai client always sends a bearer value: one that is not a key changes nothing
    assert _error(rig.lan_post(route, _body(route), "sk-unused")) == (403, "not-local")
    assert rig.spent() == before


@pytest.mark.parametrize("route", ROUTES)
def test_unknown_revoked_expired_and_forged_keys_are_401_in_openais_shape(
    rig: LanRig, route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = rig.key()
    revoked = rig.key()
    rig.keys.revoke(revoked[len("dn-key-") :].split(".")[0])
    expiring = rig.key(expires_ms=parse_expiry("1m"))
    forged = good[:-4] + ("0000" if not good.endswith("0000") else "1111")
    before = rig.spent()
    import dn.node.market.apikeys as apikeys

    later = parse_expiry("2m")
    monkeypatch.setattr(apikeys, "_now_ms", lambda: later)  # the key's minute is over
    for key in ("dn-key-00000000." + "ab" * 32, revoked, expiring, forged, "dn-key-"):
        response = rig.lan_post(route, _body(route), key)
        assert _error(response) == (401, "invalid_api_key"), key
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert key not in response.text
        # a wrong key is refused from this machine too, never paid by the wallet instead
        local = rig.post(route, _body(route), authorization=f"Bearer {key}", **JSON)
        assert _error(local) == (401, "invalid_api_key"), key
    assert _error(rig.lan_post(route, _body(route), good)) == (503, "no-miner")
    assert rig.spent() == before


def test_a_budget_below_the_query_cost_is_429_insufficient_quota(rig: LanRig) -> None:
    fee = int(rig.node.genesis.param("min_fee"))
    key = rig.key(budget=fee)  # the fee alone: no room for the price of 8 tokens
    before = rig.spent()
    response = rig.lan_post("/v1/chat/completions", CHAT, key)
    assert _error(response) == (429, "insufficient_quota")
    assert response.json()["error"]["type"] == "insufficient_quota"
    assert response.headers["x-should-retry"] == "false"  # openai clients would retry a 429
    assert rig.keys.all()[0].spent == 0
    assert rig.spent() == before


def test_a_key_for_another_wallet_is_403(rig: LanRig) -> None:
    key = rig.key(wallet=Keypair.generate().address)
    assert _error(rig.lan_post("/v1/chat/completions", CHAT, key)) == (403, "key-wallet")


def test_a_key_made_while_the_node_runs_works_at_once(rig: LanRig) -> None:
    """The CLI writes the same SQLite file from another process: a second connection here."""
    other = KeyStore.in_folder(rig.node.home.path)
    key, record = other.create(rig.wallet.address, DN)
    assert _error(rig.lan_post("/v1/completions", TEXT, key)) == (503, "no-miner")
    other.revoke(record.id)
    other.close()
    assert _error(rig.lan_post("/v1/completions", TEXT, key)) == (401, "invalid_api_key")


def test_keys_are_stored_hashed(rig: LanRig) -> None:
    key = rig.key()
    secret = key.split(".", 1)[1]
    rig.keys.close()
    folder = rig.node.home.path
    stored = b"".join(p.read_bytes() for p in folder.iterdir() if p.name.startswith(FILE_NAME))
    assert secret.encode() not in stored and bytes.fromhex(secret) not in stored
    assert (folder / FILE_NAME).stat().st_mode & 0o077 == 0
    rig.keys = KeyStore.in_folder(folder)


def test_concurrent_reservations_never_overshoot_the_budget(tmp_path: Path) -> None:
    stores = [KeyStore(tmp_path / FILE_NAME) for _ in range(4)]
    _, record = stores[0].create("dn1someone", 1_000)
    won: list[int] = []

    def spend(store: KeyStore) -> None:
        for _ in range(50):
            try:
                store.reserve(record.id, 7)
            except Exception:  # noqa: BLE001 - QuotaExhausted once the budget is used
                continue
            won.append(7)

    threads = [threading.Thread(target=spend, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(won) == stores[0].get(record.id).spent == 1_000 // 7 * 7
    stores[0].settle(record.id, 7, 3)  # one query paid 3 of the 7 it reserved
    assert stores[0].get(record.id).spent == 1_000 // 7 * 7 - 4
    for store in stores:
        store.close()
    reopened = KeyStore(tmp_path / FILE_NAME)  # as after a restart
    assert reopened.get(record.id).spent == 1_000 // 7 * 7 - 4
    reopened.close()
