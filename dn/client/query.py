"""A consumer's side of one paid query, as a library (the CLI's `dn query` is a thin shell on it).

    result = run_query(client, keypair, "smollm2", chat_input("Hello"), max_tokens=128)

or step by step:

    ticket, model = make_ticket(client, keypair, "smollm2", {"messages": [...]}, max_tokens=128)
                                              # books one slot first (task.book), waits till final
    for event in stream_query(client, ticket, task_input): ...      # start, token…, done
    tx = settle_tx(client, keypair, done_event)                      # task.settle, signed
    client.submit(tx.to_json())

The consumer books the slot its ticket uses (`task.book`: the block that holds the booking draws
the two miners, so nobody picks them: dn/chain/books.py), signs the ticket (what it asks and the
most it pays) and, at the end, the `task.settle` transaction that carries both miners'
attestations; the node it talks to is its gateway and never holds its key.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from dn.chain import books, tasks
from dn.chain.types import Tx
from dn.client.http import NodeClient, _error_from
from dn.client.txs import send, sign_next, submit_next
from dn.errors import NodeError, TaskError
from dn.node.taskio import input_hash, normalize_input, require_kind
from dn.wallet.keys import Keypair

DEFAULT_EXPIRY_BLOCKS = 50


def make_ticket(
    client: NodeClient,
    keypair: Keypair,
    model_ref: str,
    task_input: dict[str, Any],
    *,
    max_tokens: int,
    max_price: int | None = None,
    expiry_blocks: int = DEFAULT_EXPIRY_BLOCKS,
    slot: tuple[int, int] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sign a ticket for `model_ref` (a name, id or id prefix); `max_price` defaults to what
    `max_tokens` can cost at the model's price (and is what the slot reserves of the escrow);
    chat messages to a base model are InputError
    `base-model` before anything is signed. The ticket uses `slot` (its book's height, its
    number: `book`), or a slot booked here for it (one transaction, waited for: the block that
    holds it draws the miners). Returns (ticket, model)."""
    model = client.model(model_ref)
    require_kind(model, normalize_input(task_input))
    price = tasks.price_of(model["price"], max_tokens) if max_price is None else max_price
    if slot is None:  # no-miner, one-miner: refused before a slot is booked in vain
        tasks.select_miners([m["address"] for m in model.get("miners", [])], "")
        booked, book_nonce = book(client, keypair, model["id"], max_price=price)
        slot = (booked, books.ticket_nonce(book_nonce, 0))
    booked, number = slot
    status = client.status()
    window = client.param("ticket_window_blocks")
    height = status["height"]
    ticket = tasks.sign_ticket(
        status["chain_id"],
        keypair,
        model=model["id"],
        prompt_hash=input_hash(normalize_input(task_input)),
        max_tokens=max_tokens,
        seed=0,
        max_price=price,
        ref_height=booked,
        nonce=number,
        expiry=height + min(expiry_blocks, window - 1),
    )
    return ticket, model


def book(
    client: NodeClient, keypair: Keypair, model: str, slots: int = 1, *, max_price: int
) -> tuple[int, int]:
    """Book `slots` slots of `model` (its id) for `keypair`'s tickets, each paying at most
    `max_price` (`task.book`, fee `min_fee` per slot; `slots × max_price` of the escrow is
    reserved for them: dn/chain/books.py, InvalidTx `escrow-short` when it is not there), and
    wait until the block that holds them is final (miners serve only final books: a
    reorganisation would change the draw): (its height, the booking's nonce n). Slot i is the
    ticket with that `ref_height` and `nonce` `books.ticket_nonce(n, i)`."""
    payload = {"model": model, "slots": slots, "max_price": max_price}
    fee = slots * client.param("min_fee")
    sent = send(client, keypair, "task.book", payload, fee=fee, wait=False)
    found = client.wait_for_tx(sent["id"], final=True)
    return int(found["height"]), int(sent["nonce"])


def stream_query(
    client: NodeClient,
    ticket: dict[str, Any],
    task_input: dict[str, Any],
    *,
    timeout: float = 120.0,
) -> Iterator[dict[str, Any]]:
    """The gateway's events for this query; a TaskError (or the node's own error) on failure."""
    body = {"ticket": ticket, "input": normalize_input(task_input)}
    try:
        with client.stream("/query", body, timeout) as response:
            if response.status_code >= 400:
                response.read()
                raise _error_from(response)
            for line in response.iter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("event") == "error":
                    raise TaskError(
                        str(event.get("message")), reason=str(event.get("reason", "task"))
                    )
                yield event
    except httpx.TransportError as exc:
        raise NodeError(f"lost the gateway at {client.url}: {type(exc).__name__}") from None


def settle_payload(done: dict[str, Any]) -> dict[str, Any]:
    """The `task.settle` payload of a finished query (the gateway's `done` event)."""
    return {"ticket": done["ticket"], "generator": done["generator"], "checker": done["checker"]}


def settle_tx(client: NodeClient, keypair: Keypair, done: dict[str, Any]) -> Tx:
    """The `task.settle` transaction for a finished query, signed by `keypair`."""
    return sign_next(client, keypair, "task.settle", settle_payload(done))


def chat_input(text: str, *, raw: bool = False) -> dict[str, Any]:
    """What a prompt is sent as: one user message, rendered with the model's chat template, or
    with `raw` the text as it is."""
    return {"prompt": text} if raw else {"messages": [{"role": "user", "content": text}]}


def with_options(task_input: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """`task_input` with decoding options (dn/node/taskio.py; InputError when one is wrong);
    defaults are left out, so a greedy query's input is just its text."""
    return normalize_input({**task_input, "options": options})


def run_query(
    client: NodeClient,
    keypair: Keypair,
    model_ref: str,
    task_input: dict[str, Any],
    *,
    max_tokens: int,
    max_price: int | None = None,
    wait: bool = True,
    on_token: Callable[[str], None] | None = None,
    on_answered: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """One paid query from start to settlement: sign the ticket, stream the answer (each
    token's text to `on_token`; the gateway's `done` event to `on_answered` before settling),
    then sign and submit `task.settle` and, with `wait`, wait until it is in a block.

    Returns `{"task", "model", "model_name", "status", "text", "tokens", "price_units",
    "max_price_units", "verdict", "settle_tx", "settlement"}`; `settlement` is `{"status"}`
    plus `"height"` once included."""
    ticket, model = make_ticket(
        client, keypair, model_ref, task_input, max_tokens=max_tokens, max_price=max_price
    )
    pieces: list[str] = []
    done: dict[str, Any] = {}
    for event in stream_query(client, ticket, task_input):
        if event["event"] == "token":
            pieces.append(event["text"])
            if on_token is not None:
                on_token(event["text"])
        elif event["event"] == "done":
            done = event
    if on_answered is not None:
        on_answered(done)
    tx, settled = submit_next(client, keypair, "task.settle", settle_payload(done), wait=wait)
    del settled["id"]
    return {
        "task": done["task"],
        "model": model["id"],
        "model_name": model["name"],
        "status": done["status"],
        "text": "".join(pieces),
        "tokens": done["tokens"],
        "price_units": done["price_units"],
        "max_price_units": ticket["max_price"],
        "verdict": done["verdict"],
        "settle_tx": tx.id,
        "settlement": settled,
    }
