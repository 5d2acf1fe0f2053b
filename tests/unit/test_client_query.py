"""One paid query from the consumer's side (dn/client/query.py run_query), against a scripted
node over httpx's mock transport: the ticket it signs, the order of what it streams and
settles, and what it reports."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from dn.chain import books, tasks
from dn.chain.genesis import Genesis
from dn.chain.types import Tx
from dn.client.http import NodeClient
from dn.client.query import chat_input, run_query
from dn.errors import TaskError
from dn.node.taskio import input_hash
from dn.wallet.keys import Keypair

CONSUMER = Keypair.from_seed(bytes(range(32)))
VALIDATOR = Keypair.from_seed(bytes(range(1, 33)))
GENERATOR = Keypair.from_seed(bytes(range(2, 34)))
CHECKER = Keypair.from_seed(bytes(range(3, 35)))
MODEL = {
    "id": "cd" * 32,
    "name": "tiny",
    "price": 2_000,
    "miners": [{"address": GENERATOR.address}, {"address": CHECKER.address}],
}
TASK = "ef" * 32
HEIGHT = 40
NEXT_NONCE = 3


def genesis(**params: int) -> Genesis:
    return Genesis.build(
        network="devnet",
        time_ms=0,
        validators=[VALIDATOR.address],
        allocations={CONSUMER.address: 10**12},
        params=params,
    )


class ScriptedNode:
    """Answers as a node whose gateway streams `tokens` and confirms; keeps a log of what
    happened, in order, with the client's own callbacks writing to the same log."""

    def __init__(self, genesis: Genesis, tokens: list[str], *, fail: str | None = None) -> None:
        self.genesis = genesis
        self.tokens = tokens
        self.fail = fail
        self.log: list[Any] = []
        self.query_body: dict[str, Any] = {}
        self.settled: list[Tx] = []
        self.booked: list[Tx] = []

    def attestation(self, keypair: Keypair, role: str, verdict: str) -> dict[str, Any]:
        return tasks.sign_attestation(
            self.genesis.chain_id,
            keypair,
            task=TASK,
            role=role,
            output_hash="01" * 32,
            tokens=len(self.tokens),
            verdict=verdict,
            commitment="02" * 32,
        )

    def done(self) -> dict[str, Any]:
        return {
            "event": "done",
            "task": TASK,
            "status": "confirmed",
            "tokens": len(self.tokens),
            "price_units": 777,
            "verdict": {"ok": True},
            "ticket": self.query_body["ticket"],
            "generator": self.attestation(GENERATOR, "generator", "generated"),
            "checker": self.attestation(CHECKER, "checker", "confirmed"),
        }

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/dn/v1")
        if path == "/status":
            return httpx.Response(200, json={"chain_id": self.genesis.chain_id, "height": HEIGHT})
        if path == "/genesis":
            return httpx.Response(200, json=self.genesis.doc)
        if path == f"/models/{MODEL['name']}":
            return httpx.Response(200, json=MODEL)
        if path == f"/accounts/{CONSUMER.address}":
            return httpx.Response(200, json={"next_nonce": NEXT_NONCE})
        if path == "/query":
            self.query_body = json.loads(request.content)
            self.log.append("query")
            events: list[dict[str, Any]] = [{"event": "start"}]
            events += [{"event": "token", "text": t} for t in self.tokens]
            if self.fail:
                events.append({"event": "error", "reason": self.fail, "message": "no miner"})
            else:
                events.append(self.done())
            body = "".join(json.dumps(e) + "\n" for e in events)
            return httpx.Response(200, content=body.encode())
        if path == "/txs" and request.method == "POST":
            tx = Tx.from_json(json.loads(request.content))
            booking = tx.kind == "task.book"
            (self.booked if booking else self.settled).append(tx)
            self.log.append("book" if booking else "settle")
            return httpx.Response(200, json={"accepted": True})
        if path.startswith("/txs/"):
            found = {"status": "included", "height": HEIGHT + 1, "final": True}
            return httpx.Response(200, json=found)
        return httpx.Response(404, json={"error": "NotFound", "message": f"no {path}"})


def ask(node: ScriptedNode, **kwargs: Any) -> dict[str, Any]:
    client = NodeClient("http://gateway.test", transport=httpx.MockTransport(node.handle))
    with client:
        return run_query(
            client,
            CONSUMER,
            "tiny",
            chat_input("Name a colour."),
            on_token=lambda text: node.log.append(("token", text)),
            on_answered=lambda done: node.log.append(("answered", done["task"])),
            **{"max_tokens": 16, **kwargs},
        )


def test_the_answer_streams_before_the_settlement_and_is_reported_whole() -> None:
    node = ScriptedNode(genesis(min_fee=4_321), ["Blue", ",", " green"])
    result = ask(node, max_price=12_345)
    assert node.log == [
        "book",  # the ticket's slot: its block (HEIGHT + 1 here) draws the miners
        "query",
        ("token", "Blue"),
        ("token", ","),
        ("token", " green"),
        ("answered", TASK),
        "settle",
    ]
    (book,) = node.booked
    assert (book.kind, book.sender, book.nonce, book.fee) == (
        "task.book",
        CONSUMER.address,
        3,
        4_321,
    )
    # one slot (min_fee), reserving what the ticket may pay
    assert book.payload == {"model": MODEL["id"], "slots": 1, "max_price": 12_345}
    (tx,) = node.settled
    assert (tx.kind, tx.sender, tx.nonce, tx.fee) == ("task.settle", CONSUMER.address, 3, 4_321)
    assert tx.chain_id == node.genesis.chain_id and tx.signature_valid
    assert tx.payload["ticket"] == node.query_body["ticket"]
    assert tx.payload["generator"]["miner"] == GENERATOR.address
    assert tx.payload["checker"]["miner"] == CHECKER.address
    assert result == {
        "task": TASK,
        "model": MODEL["id"],
        "model_name": "tiny",
        "status": "confirmed",
        "text": "Blue, green",
        "tokens": 3,
        "price_units": 777,
        "max_price_units": 12_345,
        "verdict": {"ok": True},
        "settle_tx": tx.id,
        "settlement": {"status": "included", "height": HEIGHT + 1},
    }


def test_the_ticket_names_the_input_and_expires_within_the_genesis_window() -> None:
    node = ScriptedNode(genesis(ticket_window_blocks=10), ["ok"])
    ask(node, wait=False)
    ticket = node.query_body["ticket"]
    assert node.query_body["input"] == {"messages": [{"role": "user", "content": "Name a colour."}]}
    assert ticket["prompt_hash"] == input_hash(chat_input("Name a colour."))
    # the slot: slot 0 of the book made with nonce NEXT_NONCE, in block HEIGHT + 1
    assert (ticket["model"], ticket["max_tokens"]) == (MODEL["id"], 16)
    assert (ticket["ref_height"], ticket["nonce"]) == (
        HEIGHT + 1,
        books.ticket_nonce(NEXT_NONCE, 0),
    )
    assert ticket["expiry"] == HEIGHT + 9  # a window of 10 blocks: at most 9 ahead
    # Without --max-price: what 16 tokens can cost at the model's price.
    assert ticket["max_price"] == tasks.price_of(MODEL["price"], 16)
    tasks.verify_ticket(node.genesis.chain_id, ticket)  # signed by the consumer for this chain


def test_without_wait_the_settlement_is_pending() -> None:
    result = ask(ScriptedNode(genesis(), ["ok"]), wait=False)
    assert result["settlement"] == {"status": "pending"}


def test_a_failed_query_settles_nothing() -> None:
    node = ScriptedNode(genesis(), ["half"], fail="no-miner")
    with pytest.raises(TaskError) as failed:
        ask(node)
    assert failed.value.reason == "no-miner"
    assert node.settled == [] and ("answered", TASK) not in node.log


def test_a_raw_prompt_is_sent_as_it_is() -> None:
    assert chat_input("2+2=", raw=True) == {"prompt": "2+2="}


def test_a_model_with_fewer_than_two_miners_is_refused_before_booking() -> None:
    node = ScriptedNode(genesis(), ["ok"])
    MODEL["miners"], miners = MODEL["miners"][:1], MODEL["miners"]
    try:
        with pytest.raises(TaskError) as refused:
            ask(node)
    finally:
        MODEL["miners"] = miners
    assert refused.value.reason == "one-miner" and node.booked == [] and node.log == []
