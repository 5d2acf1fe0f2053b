"""Guessing API keys is rationed per client address (issue 14): after `MAX_FAILED_CHECKS` refused
keys from one address within `FAILED_CHECKS_WINDOW_S`, that address is answered 429
`rate_limited` without a look-up until the window has passed; a valid key from another address
goes on working (dn/node/market/apikeys.py). The store's clock is its own hook, moved by hand."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dn.errors import KeyRefused, RateLimited
from dn.node.market import apikeys
from dn.node.market.apikeys import FILE_NAME, KeyStore
from tests.unit.test_openai_guard import CHAT
from tests.unit.test_openai_keys import LAN, LanRig

GUESSER, OTHER = "10.20.30.40", "10.20.30.41"
WALLET = "dn1somewallet"


class Clock:
    def __init__(self) -> None:
        self.now = 5_000.0

    def __call__(self) -> float:
        return self.now


class CountingDb:
    """The store's connection, counting the statements run on it."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.statements = 0

    def execute(self, *args: Any) -> Any:
        self.statements += 1
        return self.db.execute(*args)

    def close(self) -> None:
        self.db.close()


def guess(n: int) -> str:
    return f"dn-key-{n:08x}." + "ab" * 32


def test_failed_checks_from_one_address_are_cut_off_for_the_window(tmp_path: Path) -> None:
    clock = Clock()
    store = KeyStore(tmp_path / FILE_NAME, clock=clock)
    good, record = store.create(WALLET, 1_000)
    counting = CountingDb(store.db)
    store.db = counting  # type: ignore[assignment]
    for n in range(apikeys.MAX_FAILED_CHECKS):
        with pytest.raises(KeyRefused):
            store.check(guess(n), source=GUESSER)
    looked_up = counting.statements
    assert looked_up >= apikeys.MAX_FAILED_CHECKS  # each of those was looked up

    for key in (guess(99), good):  # the next guess, and even the right key, from that address
        with pytest.raises(RateLimited) as caught:
            store.check(key, source=GUESSER)
        assert (caught.value.http_status, caught.value.reason) == (429, "rate_limited")
    assert counting.statements == looked_up  # refused without a look-up

    assert store.check(good, source=OTHER).id == record.id  # another address is its own
    with pytest.raises(KeyRefused):
        store.check(guess(100), source=OTHER)  # ... and has its own count

    clock.now += apikeys.FAILED_CHECKS_WINDOW_S - 1
    with pytest.raises(RateLimited):
        store.check(good, source=GUESSER)
    clock.now += 1  # the window has passed since the first of the failures
    assert store.check(good, source=GUESSER).id == record.id
    store.close()


def test_a_valid_key_is_not_a_failure_and_an_unknown_source_is_not_counted(
    tmp_path: Path,
) -> None:
    store = KeyStore(tmp_path / FILE_NAME, clock=Clock())
    good, record = store.create(WALLET, 1_000)
    for _ in range(3 * apikeys.MAX_FAILED_CHECKS):
        assert store.check(good, source=GUESSER).id == record.id
    for n in range(3 * apikeys.MAX_FAILED_CHECKS):
        with pytest.raises(KeyRefused):
            store.check(guess(n))  # no source: as before, refused each time on its merits
    assert store.check(good).id == record.id
    store.close()


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


def test_a_guessing_lan_client_gets_429_and_a_neighbour_with_a_key_does_not(
    rig: LanRig,
) -> None:
    assert rig.lan.app is not None and LAN[0] == GUESSER
    good = rig.key()
    before = rig.spent()
    for n in range(apikeys.MAX_FAILED_CHECKS):
        assert _error(rig.lan_post("/v1/chat/completions", CHAT, guess(n))) == (
            401,
            "invalid_api_key",
        )
    for key in (guess(99), good):
        response = rig.lan_post("/v1/chat/completions", CHAT, key)
        assert _error(response) == (429, "rate_limited"), response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}  # OpenAI's error shape
        assert key not in response.text
        # Worth retrying after the window (unlike an exhausted budget's 429).
        assert int(response.headers["retry-after"]) >= 1
        assert "x-should-retry" not in response.headers

    neighbour = TestClient(rig.http.app, base_url="http://10.20.30.1:8780", client=(OTHER, 5555))
    with neighbour:
        reply = neighbour.post(
            "/v1/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {good}"},
        )
    assert _error(reply) == (503, "no-miner")  # past the key check: no miner in this rig
    assert rig.keys.all()[0].spent == 0
    assert rig.spent() == before
