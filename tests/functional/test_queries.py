"""Paid queries on a real 3-node network: a validator that is also the consumer's gateway, and two
miners (`dn mine` processes) serving the real SmolLM2 model with llama.cpp.

One module-scoped market keeps the cost of starting processes and loading the model to once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dn.chain import tasks
from dn.chain.explain import explain
from dn.chain.store import Store
from dn.client.http import NodeClient
from dn.client.query import make_ticket, settle_tx, stream_query
from dn.errors import InvalidTx, NotFound, TaskError
from dn.node.node import NodeHome
from tests.functional.harness import wait_until
from tests.functional.market import PASSWORD, PRICE, Market, running_market

QUESTION = {"messages": [{"role": "user", "content": "Name three colours of the rainbow."}]}


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[Market]:
    with running_market(tmp_path_factory.mktemp("market"), smollm2_gguf) as running:
        yield running


def ask(
    market: Market, consumer: str = "consumer", **kwargs: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with market.client() as client:
        ticket, _ = make_ticket(
            client, market.wallets[consumer], "smollm2", QUESTION, **{"max_tokens": 48, **kwargs}
        )
        return ticket, list(stream_query(client, ticket, QUESTION))


def balances(client: NodeClient, market: Market) -> dict[str, int]:
    return {n: client.account(w.address)["balance"] for n, w in market.wallets.items()}


def escrowed(client: NodeClient, address: str) -> int:
    """What the consumer's query escrow holds (it pays the price: dn/chain/escrow.py)."""
    return int(client.account(address)["escrow"]["amount"])


def test_miners_load_their_models_in_both_roles_before_the_first_task(market: Market) -> None:
    """First in this module: no task has run yet, so only the miner's warm-up can load them."""
    wanted = {(market.model, "generate"), (market.model, "check")}
    for miner in market.miners:
        with miner.client() as client:
            wait_until(
                lambda c=client: (
                    {  # type: ignore[misc]
                        (m["model"], m["role"]) for m in c.status()["miner"]["loaded"]
                    }
                    == wanted
                ),
                30,
                what="models loaded",
            )
            assert client.status()["miner"]["sessions"] == 0


def test_a_query_streams_is_checked_and_pays_the_split_exactly(market: Market) -> None:
    with market.client() as client:
        before = balances(client, market)
        escrow_before = escrowed(client, market.wallets["consumer"].address)
        supply_before = client.status()["supply"]
    # The longest life a ticket may have, so the second settlement below meets a live ticket.
    ticket, events = ask(market, expiry_blocks=99)
    with market.client() as client:
        before_nonce = client.account(events[0]["checker"])["nonce"]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("token") >= 1
    assert (
        sum(len(e["tokens"]) for e in events if e["event"] == "token") == events[-1]["tokens"] >= 4
    )
    start, done = events[0], events[-1]
    assert {start["generator"], start["checker"]} == {
        market.wallets["m1"].address,
        market.wallets["m2"].address,
    }
    assert done["status"] == "confirmed", done["verdict"]
    assert "".join(e["text"] for e in events if e["event"] == "token").strip()
    tokens = done["tokens"]
    price = 2_000 * tokens  # PRICE is 2,000,000 units per 1,000 tokens
    assert done["price_units"] == price <= ticket["max_price"]

    consumer = market.wallets["consumer"]
    with market.client() as client:
        tx = settle_tx(client, consumer, done)
        client.submit(tx.to_json())
        client.wait_for_tx(tx.id, timeout=30)
        after = balances(client, market)
        escrow_after = escrowed(client, consumer.address)
        status = client.status()
        # The same ticket cannot settle twice, even in a new transaction. The ticket is still
        # live (checked after the refusal), so its age cannot be the reason.
        again = settle_tx(client, consumer, done)
        with pytest.raises(InvalidTx) as refused:
            client.submit(again.to_json())
        assert refused.value.reason == "task-settled", refused.value.message
        assert client.status()["height"] < ticket["expiry"]
    # The genesis fee split (docs/protocol.md), per token at 2,000 units a token: the creator
    # 30% and, as the model has no backers, their 5% too (700 units), the generator 35% (700),
    # the checker 15% (300), the validator pool 10% (200) and 5% burned (100).
    by_address = {w.address: n for n, w in market.wallets.items()}
    # The fees of its two transactions, the one-slot book (min_fee) and the settlement; the
    # price: out of its escrow.
    assert before["consumer"] - after["consumer"] == tx.fee + market.genesis.param("min_fee")
    assert escrow_before - escrow_after == price
    assert after["creator"] - before["creator"] == 700 * tokens
    gen, chk = by_address[start["generator"]], by_address[start["checker"]]
    assert after[gen] - before[gen] == 700 * tokens
    assert after[chk] - before[chk] == 300 * tokens
    assert status["supply"]["held"] == status["supply"]["created"]
    assert status["supply"]["burned"] >= supply_before["burned"] + 100 * tokens
    # The checker held the settlement as a backstop; it sees the consumer's and sends none.
    checker_node = next(m for m in market.miners if m.name == chk)
    with checker_node.client() as client:
        wait_until(lambda: client.status()["miner"]["unsettled"] == 0, 30, what="hold released")
    with market.client() as client:
        assert client.account(start["checker"])["nonce"] == before_nonce


def test_dn_query_streams_to_the_terminal_and_reports_the_payment(market: Market) -> None:
    env = {"DN_HOME": str(market.home), "DN_PASSWORD": PASSWORD, "DN_NODE": market.gateway.url}

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "dn",
            "query",
            "smollm2",
            "What is two plus two?",
            "--wallet",
            "consumer",
            "--max-tokens",
            "32",
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()
    assert "confirmed:" in out.stderr and "task " in out.stderr and "DN" in out.stderr
    as_json = subprocess.run(
        [
            sys.executable,
            "-m",
            "dn",
            "--json",
            "query",
            "smollm2",
            "Say hello.",
            "--wallet",
            "consumer",
            "--max-tokens",
            "16",
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert as_json.returncode == 0, as_json.stderr
    import json

    result = json.loads(as_json.stdout)
    assert result["status"] == "confirmed" and result["settlement"]["status"] == "included"
    assert result["price_units"] == PRICE * result["tokens"] // 1000


def test_bad_queries_fail_clearly_and_cost_nothing(market: Market) -> None:
    with market.client() as client:
        before = balances(client, market)
        escrow_before = escrowed(client, market.wallets["consumer"].address)
        # An unknown model.
        with pytest.raises(NotFound):
            make_ticket(client, market.wallets["consumer"], "no-such-model", QUESTION, max_tokens=8)
        # max_price below what max_tokens can cost.
        ticket, _ = make_ticket(
            client, market.wallets["consumer"], "smollm2", QUESTION, max_tokens=64, max_price=10
        )
        with pytest.raises(TaskError) as low:
            list(stream_query(client, ticket, QUESTION))
        assert low.value.reason == "price-too-low"
        # A consumer whose escrow cannot pay (it has none): its slot cannot reserve the price,
        # so the chain refuses the booking, and nothing is paid.
        with pytest.raises(InvalidTx) as poor:
            make_ticket(client, market.wallets["poor"], "smollm2", QUESTION, max_tokens=64)
        assert poor.value.reason == "escrow-short"
        # An expired ticket.
        ticket, _ = make_ticket(
            client, market.wallets["consumer"], "smollm2", QUESTION, max_tokens=8, expiry_blocks=0
        )
        wait_until(lambda: client.status()["height"] > ticket["expiry"], 10, what="expiry")
        with pytest.raises(TaskError) as expired:
            list(stream_query(client, ticket, QUESTION))
        assert expired.value.reason == "expired-ticket"
        # A different input than the ticket names.
        ticket, _ = make_ticket(
            client, market.wallets["consumer"], "smollm2", QUESTION, max_tokens=8
        )
        with pytest.raises(TaskError) as other:
            list(stream_query(client, ticket, {"prompt": "something else"}))
        assert other.value.reason == "wrong-input"
    # A replayed ticket: run once, settle, then run the same ticket again.
    ticket, events = ask(market, max_tokens=8)
    with market.client() as client:
        tx = settle_tx(client, market.wallets["consumer"], events[-1])
        client.submit(tx.to_json())
        client.wait_for_tx(tx.id, timeout=30)
        with pytest.raises(TaskError) as replay:
            list(stream_query(client, ticket, QUESTION))
        assert replay.value.reason == "ticket-used"
        after = balances(client, market)
        escrow_after = escrowed(client, market.wallets["consumer"].address)
    # No price but the one answered; fees: the four slots booked (one per ticket, min_fee each:
    # the unknown model failed before booking) and the one settlement.
    assert before["consumer"] - after["consumer"] == 5 * market.genesis.param("min_fee")
    assert before["poor"] == after["poor"]  # its refused booking cost nothing
    assert escrow_before - escrow_after == events[-1]["price_units"]  # only the one paid


def test_a_consumer_who_never_settles_pays_all_the_same(market: Market) -> None:
    """The gateway's user normally settles at once. When nobody does, the checker, which holds
    the ticket and both attestations, sends `task.settle` itself halfway through what is left of
    the ticket's life (dn/node/market/backstop.py): it pays the fee, the consumer pays the price."""
    ticket, events = ask(market, max_tokens=8, expiry_blocks=20)
    done = events[-1]
    assert done["status"] == "confirmed", done["verdict"]
    task, checker = done["task"], done["checker"]["miner"]
    consumer = market.wallets["consumer"].address
    checker_node = next(m for m in market.miners if market.wallets[m.name].address == checker)
    with checker_node.client() as client:
        assert client.status()["miner"]["unsettled"] >= 1  # held while it waits
    shown = subprocess.run(
        [sys.executable, "-m", "dn", "--node", checker_node.url, "node", "status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "COLUMNS": "160"},  # an address on one line
    ).stdout
    assert "miner" in shown and checker in shown and "held to settle" in shown
    with market.client() as client:
        before = {a: client.account(a) for a in (consumer, checker)}
        escrow_before = escrowed(client, consumer)
        with pytest.raises(NotFound):
            client.task(task)  # not settled by anyone yet
        wait_until(lambda: _settled(client, task), 60, what="the checker's settlement")
        record = client.task(task)
        after = {a: client.account(a) for a in (consumer, checker)}
        escrow_after = escrowed(client, consumer)
    assert record["status"] == "confirmed" and record["checker"] == checker
    assert record["paid"] == done["price_units"] > 0
    assert before[consumer]["balance"] == after[consumer]["balance"]  # paid from its escrow
    assert escrow_before - escrow_after == done["price_units"]
    assert after[consumer]["nonce"] == before[consumer]["nonce"]  # it sent nothing
    assert after[checker]["nonce"] == before[checker]["nonce"] + 1  # the checker sent it
    assert done["price_units"] == 2_000 * done["tokens"]
    share = 300 * done["tokens"]  # the checker's 15% (genesis fee_split_checker, 1,500 bps)
    fee = market.genesis.param("min_fee")
    assert after[checker]["balance"] - before[checker]["balance"] == share - fee
    with checker_node.client() as client:
        wait_until(lambda: client.status()["miner"]["unsettled"] == 0, 30, what="the hold released")
    # Both balances still trace to their causes: the checker's fee and share, the price.
    store = Store.open(NodeHome.named("gw", market.home).store_file, readonly=True)
    try:
        for address in (consumer, checker):
            assert explain(store, address).unexplained == 0
        entries = explain(store, checker).entries
    finally:
        store.close()
    there = {(e.kind, e.amount) for e in entries if e.height == record["height"]}
    assert there == {("fee", -fee), ("checker-share", share)}


def _settled(client: NodeClient, task: str) -> bool:
    try:
        client.task(task)
    except NotFound:
        return False
    return True


def test_a_settlement_naming_other_miners_is_refused(market: Market) -> None:
    ticket, events = ask(market, max_tokens=8)
    done = events[-1]
    m1, m2 = market.wallets["m1"], market.wallets["m2"]
    swapped_gen = tasks.sign_attestation(
        market.genesis.chain_id,
        m1 if done["generator"]["miner"] == m2.address else m2,
        task=done["task"],
        role="generator",
        output_hash=done["generator"]["output_hash"],
        tokens=done["tokens"],
        verdict="generated",
        commitment="",
    )
    swapped_chk = tasks.sign_attestation(
        market.genesis.chain_id,
        m1 if done["checker"]["miner"] == m2.address else m2,
        task=done["task"],
        role="checker",
        output_hash=done["checker"]["output_hash"],
        tokens=done["tokens"],
        verdict="confirmed",
        commitment=done["checker"]["commitment"],
    )
    with market.client() as client:
        tx = settle_tx(
            client,
            market.wallets["consumer"],
            {**done, "generator": swapped_gen, "checker": swapped_chk},
        )
        with pytest.raises(InvalidTx) as refused:
            client.submit(tx.to_json())
    assert refused.value.reason == "wrong-miners"
