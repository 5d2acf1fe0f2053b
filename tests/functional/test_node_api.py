"""The node's HTTP API against one real node process, through raw HTTP (httpx and sockets).

Every invalid request must get a 4xx with a JSON body `{"error", "reason", "message"}` naming the
exact rule it broke, and must change nothing. That is checked at a checkpoint rather than after a
wait: a valid transfer sent after the refused request is included, and then the chain holds that
transfer and nothing else (one new block, holding it alone; the sender's nonce and balance moved
by it alone; the refused transaction unknown to the node).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from dn.chain.genesis import Genesis
from dn.chain.types import Tx
from dn.encoding import canonical
from dn.errors import DNError, EncodingError
from dn.node.http.app import MAX_BODY
from dn.wallet.keys import Keypair
from tests.functional.harness import NodeProcess, init_chain, wait_until

BLOCK_TIME_MS = 100
FEE = 1_000  # the default min_fee
FUNDS = 10**15
ERROR_KEYS = {"error", "reason", "message"}


@dataclass
class Api:
    node: NodeProcess
    http: httpx.Client
    genesis: Genesis
    alice: Keypair

    @property
    def chain_id(self) -> str:
        return self.genesis.chain_id

    def status(self) -> dict[str, Any]:
        response = self.http.get("/dn/v1/status")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def account(self, address: str) -> dict[str, Any]:
        response = self.http.get(f"/dn/v1/accounts/{address}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def next_nonce(self, who: Keypair | None = None) -> int:
        return int(self.account((who or self.alice).address)["next_nonce"])

    def transfer(
        self,
        *,
        amount: int = 1_000,
        to: str | None = None,
        nonce: int | None = None,
        fee: int = FEE,
        chain_id: str | None = None,
        sender: Keypair | None = None,
    ) -> Tx:
        """A correctly signed transfer from alice (by default) with her next nonce."""
        sender = sender or self.alice
        return Tx.create(
            sender,
            chain_id=chain_id or self.chain_id,
            kind="transfer",
            nonce=self.next_nonce(sender) if nonce is None else nonce,
            fee=fee,
            payload={"to": to or Keypair.generate().address, "amount": amount},
        )

    def wait_included(self, tx_id: str, timeout: float = 20.0) -> dict[str, Any]:
        def included() -> dict[str, Any] | None:
            found = self.http.get(f"/dn/v1/txs/{tx_id}").json()
            return found if found.get("status") == "included" else None

        return wait_until(included, timeout, what=f"tx {tx_id[:12]} included")

    def snapshot(self, address: str | None = None) -> dict[str, Any]:
        status = self.status()
        acct = self.account(address or self.alice.address)
        return {
            "height": status["height"],
            "tip": status["tip"],
            "state_root": status["state_root"],
            "mempool": status["mempool"],
            "balance": acct["balance"],
            "nonce": acct["nonce"],
            "next_nonce": acct["next_nonce"],
        }


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One node for the whole module. Idle chains make no empty blocks during these tests."""
    home = tmp_path_factory.mktemp("api") / "dnhome"
    alice = Keypair.generate()
    genesis = init_chain(
        home,
        {alice.address: FUNDS},
        block_time_ms=BLOCK_TIME_MS,
        max_block_interval_ms=3_600_000,
    )
    node = NodeProcess(home)
    try:
        node.start()
        with httpx.Client(base_url=node.url, timeout=10) as http:
            yield Api(node, http, genesis, alice)
    finally:
        node.stop(timeout=5)


@pytest.fixture
def quiet(api: Api) -> dict[str, Any]:
    """The chain as it stands with nothing pending: the 'before' of an invalid request."""
    wait_until(lambda: api.status()["mempool"] == 0, 20, what="an empty mempool")
    return api.snapshot()


def assert_error(response: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict) and ERROR_KEYS <= body.keys(), body
    assert body["reason"] == reason, body
    assert isinstance(body["message"], str) and body["message"], body
    return dict(body)


def checkpoint(api: Api) -> Tx:
    """Send a valid transfer of 1 unit from alice and wait until a block holds it: whatever the
    node did with a request sent before it, it has done by then (the chain is idle otherwise)."""
    tx = api.transfer(amount=1)
    response = api.http.post("/dn/v1/txs", json=tx.to_json())
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": True, "id": tx.id}
    api.wait_included(tx.id)
    return tx


def assert_unchanged(api: Api, before: dict[str, Any], tx_id: str | None = None) -> dict[str, Any]:
    """The request made after `before` changed nothing: not at once (the same tip, state root,
    balance and nonce, nothing pending) and not later: past a checkpoint, the chain holds one
    new block with the checkpoint's transfer alone, alice's nonce and balance moved by that
    transfer alone, nothing is pending, and `tx_id` (the refused transaction) is unknown. Returns
    the snapshot after the checkpoint, the `before` of a next request."""
    assert api.snapshot() == before
    tx = checkpoint(api)
    after = api.snapshot()
    assert after["height"] == before["height"] + 1
    block = api.http.get(f"/dn/v1/blocks/{after['height']}").json()
    assert block["tx_ids"] == [tx.id]
    assert after["nonce"] == before["nonce"] + 1 == tx.nonce + 1
    assert after["balance"] == before["balance"] - 1 - FEE
    assert after["mempool"] == 0
    if tx_id is not None:
        assert api.http.get(f"/dn/v1/txs/{tx_id}").status_code == 404
    return after


def tx_id_of(raw: Any) -> str | None:
    """The id a wire transaction would have, when it parses at all."""
    try:
        return Tx.from_json(raw).id
    except DNError:
        return None


def _bad_signature(api: Api) -> dict[str, Any]:
    raw = api.transfer(amount=1_000).to_json()
    raw["payload"] = {**raw["payload"], "amount": 2_000}
    return raw


def _with_payload(api: Api, **changes: Any) -> dict[str, Any]:
    """A transfer whose payload differs from a valid one, signed by alice over what is sent.

    The signature is right, so only the payload's schema can be what the node refuses. Values
    that canonical JSON itself refuses (floats, integers past 2^63) are signed over plain sorted
    JSON: the node must reject them on the schema before it ever looks at the signature.
    """
    payload = {"to": Keypair.generate().address, "amount": 1_000, **changes}
    body = Tx.unsigned_body(
        api.chain_id, "transfer", api.alice.address, api.next_nonce(), FEE, payload
    )
    try:
        signed = canonical(body)
    except EncodingError:
        signed = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    body["sig"] = api.alice.sign(signed).hex()
    return body


def _mistyped(address: str) -> str:
    """`address` with one character of its data part changed: the checksum no longer matches."""
    i = len(address) - 10
    return address[:i] + ("q" if address[i] != "q" else "p") + address[i + 1 :]


# (id, build the request body, expected reason); all answered 422 except where noted
INVALID_TXS: list[tuple[str, Callable[[Api], Any], str]] = [
    ("json-string", lambda api: "a transaction", "malformed"),
    ("json-number", lambda api: 42, "malformed"),
    (
        "missing-field",
        lambda api: {k: v for k, v in api.transfer().to_json().items() if k != "fee"},
        "malformed",
    ),
    ("bad-signature", _bad_signature, "bad-signature"),
    (
        "signed-by-another-key",
        lambda api: {**api.transfer().to_json(), "sig": Keypair.generate().sign(b"x").hex()},
        "bad-signature",
    ),
    ("wrong-chain-id", lambda api: api.transfer(chain_id="other-123").to_json(), "wrong-chain-id"),
    ("nonce-gap", lambda api: api.transfer(nonce=api.next_nonce() + 1).to_json(), "nonce-gap"),
    (
        "overspend",
        lambda api: api.transfer(
            amount=api.account(api.alice.address)["balance"] - FEE + 1
        ).to_json(),
        "insufficient-funds",
    ),
    (
        "overspend-by-fee",
        lambda api: api.transfer(amount=api.account(api.alice.address)["balance"]).to_json(),
        "insufficient-funds",
    ),
    ("unknown-kind", lambda api: {**api.transfer().to_json(), "kind": "mint"}, "unknown-kind"),
    (
        "extra-top-level-field",
        lambda api: {**api.transfer().to_json(), "memo": "hi"},
        "unknown-field",
    ),
    ("extra-payload-field", lambda api: _with_payload(api, memo="hi"), "unknown-field"),
    ("float-amount", lambda api: _with_payload(api, amount=1000.0), "bad-payload"),
    ("string-amount", lambda api: _with_payload(api, amount="1000"), "bad-payload"),
    ("bool-amount", lambda api: _with_payload(api, amount=True), "bad-payload"),
    ("zero-amount", lambda api: _with_payload(api, amount=0), "bad-payload"),
    ("negative-amount", lambda api: _with_payload(api, amount=-1), "bad-payload"),
    ("amount-2^63", lambda api: _with_payload(api, amount=2**63), "bad-payload"),
    ("amount-2^64", lambda api: _with_payload(api, amount=2**64), "bad-payload"),
    ("fee-2^63", lambda api: {**api.transfer().to_json(), "fee": 2**63}, "bad-field"),
    ("float-fee", lambda api: {**api.transfer().to_json(), "fee": 1000.0}, "bad-field"),
    ("fee-below-min", lambda api: api.transfer(fee=FEE - 1).to_json(), "fee-too-low"),
    ("zero-fee", lambda api: api.transfer(fee=0).to_json(), "fee-too-low"),
    (
        "mistyped-sender",
        lambda api: {**api.transfer().to_json(), "sender": _mistyped(api.alice.address)},
        "bad-address",
    ),
]


def test_malformed_json_is_refused_and_changes_nothing(api: Api, quiet: dict[str, Any]) -> None:
    response = api.http.post(
        "/dn/v1/txs", content=b'{"chain_id": "x", ', headers={"content-type": "application/json"}
    )
    body = assert_error(response, 400, "malformed-json")
    assert body["error"] == "InputError"
    assert_unchanged(api, quiet)


def test_non_utf8_body_is_malformed_json(api: Api, quiet: dict[str, Any]) -> None:
    response = api.http.post("/dn/v1/txs", content=b"[\xc3(]")
    assert_error(response, 400, "malformed-json")
    assert_unchanged(api, quiet)


@pytest.mark.parametrize(
    ("build", "reason"), [c[1:] for c in INVALID_TXS], ids=[c[0] for c in INVALID_TXS]
)
def test_invalid_tx_is_refused_with_its_reason_and_changes_nothing(
    api: Api, quiet: dict[str, Any], build: Callable[[Api], Any], reason: str
) -> None:
    raw = build(api)
    response = api.http.post("/dn/v1/txs", json=raw)
    assert_error(response, 422, reason)
    assert_unchanged(api, quiet, tx_id_of(raw))


def test_mistyped_recipient_is_a_bad_payload_and_changes_nothing(
    api: Api, quiet: dict[str, Any]
) -> None:
    raw = _with_payload(api, to=_mistyped(Keypair.generate().address))
    body = assert_error(api.http.post("/dn/v1/txs", json=raw), 422, "bad-payload")
    assert body["error"] == "InvalidTx"
    assert "to" in body["message"] and "checksum" in body["message"]
    assert_unchanged(api, quiet, tx_id_of(raw))


def test_replayed_transaction_is_refused_after_inclusion(api: Api) -> None:
    bob = Keypair.generate()
    tx = api.transfer(to=bob.address, amount=7_000)
    assert api.http.post("/dn/v1/txs", json=tx.to_json()).json() == {"accepted": True, "id": tx.id}
    api.wait_included(tx.id)
    wait_until(lambda: api.status()["mempool"] == 0, what="an empty mempool")
    before = api.snapshot()
    assert before["nonce"] == tx.nonce + 1

    assert_error(api.http.post("/dn/v1/txs", json=tx.to_json()), 422, "duplicate")
    before = assert_unchanged(api, before)

    replay = api.transfer(to=bob.address, amount=8_000, nonce=tx.nonce)
    assert_error(api.http.post("/dn/v1/txs", json=replay.to_json()), 422, "nonce-too-low")
    assert_unchanged(api, before, replay.id)
    assert api.account(bob.address)["balance"] == 7_000
    assert api.http.get(f"/dn/v1/txs/{tx.id}").json()["status"] == "included"


def test_duplicate_of_a_pending_transaction_is_refused(api: Api, quiet: dict[str, Any]) -> None:
    tx = api.transfer()
    response = api.http.post("/dn/v1/txs", json=[tx.to_json(), tx.to_json()])
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[0] == {"accepted": True, "id": tx.id}
    assert results[1]["accepted"] is False and results[1]["reason"] == "duplicate"
    record = api.wait_included(tx.id)
    assert api.http.get(f"/dn/v1/blocks/{record['height']}").json()["tx_ids"].count(tx.id) == 1
    assert api.account(api.alice.address)["nonce"] == quiet["nonce"] + 1


def test_batch_includes_only_the_valid_transactions(api: Api, quiet: dict[str, Any]) -> None:
    bob = Keypair.generate()
    n = quiet["next_nonce"]
    ok0 = api.transfer(to=bob.address, amount=100, nonce=n)
    ok1 = api.transfer(to=bob.address, amount=200, nonce=n + 1)
    ok2 = api.transfer(to=bob.address, amount=300, nonce=n + 2)
    bad_sig = ok1.to_json()
    bad_sig["payload"] = {**bad_sig["payload"], "amount": 10**9}
    gap = api.transfer(to=bob.address, amount=400, nonce=n + 5)
    cheap = api.transfer(to=bob.address, amount=500, nonce=n + 3, fee=1)
    batch = [
        ok0.to_json(),
        bad_sig,
        ok1.to_json(),
        gap.to_json(),
        {**ok2.to_json(), "kind": "mint"},
        cheap.to_json(),
        ok2.to_json(),
        "junk",
    ]
    response = api.http.post("/dn/v1/txs", json=batch)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 3
    results = body["results"]
    assert [r["accepted"] for r in results] == [True, False, True, False, False, False, True, False]
    assert [r.get("id") for r in results if r["accepted"]] == [ok0.id, ok1.id, ok2.id]
    assert [r["reason"] for r in results if not r["accepted"]] == [
        "bad-signature",
        "nonce-gap",
        "unknown-kind",
        "fee-too-low",
        "malformed",
    ]
    for r in results:
        if not r["accepted"]:
            assert ERROR_KEYS <= r.keys() and r["message"]

    for tx in (ok0, ok1, ok2):
        api.wait_included(tx.id)
    checkpoint(api)  # past it, the refused ones would have reached a block if they could
    for rejected in (bad_sig, gap.to_json(), cheap.to_json()):
        rejected_id = tx_id_of(rejected)
        assert rejected_id is not None
        assert api.http.get(f"/dn/v1/txs/{rejected_id}").status_code == 404
    assert api.account(bob.address)["balance"] == 600
    after = api.account(api.alice.address)
    assert after["nonce"] == n + 4  # the three and the checkpoint
    assert after["balance"] == quiet["balance"] - 600 - 3 * FEE - (1 + FEE)
    assert api.status()["mempool"] == 0


def test_empty_batch_is_accepted_and_changes_nothing(api: Api, quiet: dict[str, Any]) -> None:
    response = api.http.post("/dn/v1/txs", json=[])
    assert response.status_code == 200
    assert response.json() == {"accepted": 0, "results": []}
    assert_unchanged(api, quiet)


# --- oversized bodies -------------------------------------------------------------------------


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response with a Content-Length; socket.timeout if it does not come."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length]


def _assert_too_large(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 413, body
    assert headers["content-type"].startswith("application/json")
    doc = json.loads(body)
    assert ERROR_KEYS <= doc.keys() and doc["reason"] == "too-large", doc


def test_declared_oversize_body_gets_413_before_it_is_sent(api: Api, quiet: dict[str, Any]) -> None:
    head = (
        "POST /dn/v1/txs HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{api.node.port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {MAX_BODY + 1}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", api.node.port), timeout=5) as sock:
        sock.sendall(head + b"[" + b" " * 4095)  # 4 KiB of the 8 MiB + 1 promised; no more
        try:
            status, headers, body = _read_response(sock)
        except TimeoutError:
            pytest.fail("no 413 within 5 s: the server waited for the declared body")
    _assert_too_large(status, headers, body)
    assert_unchanged(api, quiet)  # and its checkpoint shows the node still takes a valid tx


def test_chunked_oversize_body_gets_413_while_streaming(api: Api, quiet: dict[str, Any]) -> None:
    cap = 4 * MAX_BODY  # the sender gives up here, then ends the body, if no answer came first
    piece = b" " * 65536
    chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
    answered = threading.Event()
    sent = {"bytes": 0, "ended": False, "error": None}

    def stream(sock: socket.socket) -> None:
        try:
            while not answered.is_set() and sent["bytes"] < cap:
                sock.sendall(chunk)
                sent["bytes"] += len(piece)
            if not answered.is_set():
                sock.sendall(b"0\r\n\r\n")
                sent["ended"] = True
        except OSError as exc:  # the server may close the connection once it has answered
            sent["error"] = exc

    head = (
        "POST /dn/v1/txs HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{api.node.port}\r\n"
        "Content-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", api.node.port), timeout=10) as sock:
        sock.sendall(head + b"1\r\n[\r\n")
        sender = threading.Thread(target=stream, args=(sock,), daemon=True)
        sender.start()
        try:
            status, headers, body = _read_response(sock)
        except TimeoutError:
            pytest.fail(f"no answer within 10 s after streaming {sent['bytes']} bytes")
        finally:
            answered.set()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # unblocks a sender stuck on a full buffer
            sender.join(15)
    _assert_too_large(status, headers, body)
    assert not sent["ended"], "the server answered only after the whole body had been sent"
    assert sent["bytes"] >= MAX_BODY - 2 * len(piece)  # it did not refuse a body under the limit
    assert_unchanged(api, quiet)  # and its checkpoint shows the node still takes a valid tx


def test_body_just_under_the_limit_is_read(api: Api, quiet: dict[str, Any]) -> None:
    # a valid JSON array padded with whitespace to just under 8 MiB: parsed, not refused
    body = b"[]" + b" " * (MAX_BODY - 2)
    response = api.http.post(
        "/dn/v1/txs", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 0, "results": []}
    assert_unchanged(api, quiet)


# --- reads ------------------------------------------------------------------------------------


def test_unknown_block_is_404(api: Api) -> None:
    body = assert_error(api.http.get("/dn/v1/blocks/999999"), 404, "not-found")
    assert body["error"] == "NotFound"
    assert_error(api.http.get("/dn/v1/blocks/" + "ab" * 32), 404, "not-found")


def test_unknown_tx_is_404(api: Api) -> None:
    body = assert_error(api.http.get("/dn/v1/txs/" + "0" * 64), 404, "not-found")
    assert body["error"] == "NotFound"


def test_bad_account_address_is_400(api: Api) -> None:
    body = assert_error(api.http.get("/dn/v1/accounts/dn1bad"), 400, "bad-address")
    assert body["error"] == "InvalidAddress"
    mistyped = _mistyped(api.alice.address)
    assert_error(api.http.get(f"/dn/v1/accounts/{mistyped}"), 400, "bad-address")


def test_block_page_above_the_limit_is_422(api: Api) -> None:
    assert_error(api.http.get("/dn/v1/blocks", params={"limit": 1000}), 422, "bad-request")
    assert_error(api.http.get("/dn/v1/blocks", params={"from": -1}), 422, "bad-request")
    ok = api.http.get("/dn/v1/blocks", params={"limit": 100})
    assert ok.status_code == 200 and ok.json()["blocks"][0]["height"] == 0


# --- errors the framework raises itself ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/dn/v1/nothing-here", 404), ("DELETE", "/dn/v1/status", 405)],
    ids=["unknown-path", "wrong-method"],
)
def test_framework_errors_are_json_with_a_reason(
    api: Api, method: str, path: str, status: int
) -> None:
    response = api.http.request(method, path)
    assert response.status_code == status
    body = response.json()
    assert ERROR_KEYS <= body.keys() and body["reason"], body


def test_block_height_past_2_63_is_a_json_error(api: Api) -> None:
    response = api.http.get(f"/dn/v1/blocks/{2**63}")
    assert response.status_code in (400, 404), response.text
    assert ERROR_KEYS <= response.json().keys()
