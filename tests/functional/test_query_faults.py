"""Miners that misbehave, switched on through the harness's hook (tests/functional/hooks.py), and
models nobody (or only one miner) serves: every case ends with a clear error or a rejected answer,
and the consumer never pays for a bad answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dn.chain import books, tasks
from dn.chain.types import Tx
from dn.client.query import book, settle_tx, stream_query
from dn.errors import TaskError
from dn.node.taskio import input_hash
from tests.functional import hooks
from tests.functional.harness import wait_until
from tests.functional.market import (
    FIND_SLOTS,
    Market,
    find_ticket,
    register_model,
    running_market,
)

QUESTION = {"messages": [{"role": "user", "content": "Say something about the sea."}]}
TIMEOUT_S = "3"


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[Market]:
    with running_market(
        tmp_path_factory.mktemp("faults"),
        smollm2_gguf,
        gateway_env={"DN_TASK_TIMEOUT_S": TIMEOUT_S},
    ) as running:
        yield running


def ticket_for(market: Market, role: str, miner: str) -> dict[str, Any]:
    """A consumer ticket whose task puts `miner` in `role`."""
    eligible = [market.wallets[n].address for n in ("m1", "m2")]
    address, index = market.wallets[miner].address, 0 if role == "generator" else 1
    return find_ticket(market, QUESTION, eligible, lambda chosen: chosen[index] == address)


def restart_m1(market: Market, faults: str) -> None:
    miner = market.miners[0]
    miner.stop()
    miner.extra_env[hooks.FAULTS_ENV] = faults
    miner.start(timeout=60)


def consumer_balance(market: Market) -> int:
    """The consumer's balance plus its query escrow, which pays the price (escrow.py)."""
    with market.client() as client:
        found = client.account(market.wallets["consumer"].address)
        return int(found["balance"]) + int(found["escrow"]["amount"])


@pytest.mark.parametrize(
    ("faults", "role", "reason"),
    [
        ("stall", "generator", "miner-timeout"),
        ("check-stall", "checker", "miner-timeout"),
        ("wrong-key", "generator", "miner-lied"),
        ("wrong-key", "checker", "miner-lied"),
    ],
)
def test_a_miner_that_stalls_or_signs_wrongly_ends_the_query_unpaid(
    market: Market, faults: str, role: str, reason: str
) -> None:
    restart_m1(market, faults)
    before = consumer_balance(market)
    ticket = ticket_for(market, role, "m1")
    with market.client() as client, pytest.raises(TaskError) as failed:
        list(stream_query(client, ticket, QUESTION))
    assert failed.value.reason == reason, failed.value.message
    # no price, nothing settled: only the book the ticket was found in (min_fee a slot)
    assert consumer_balance(market) == before - FIND_SLOTS * market.genesis.param("min_fee")


def test_a_generator_answering_garbage_is_rejected_and_not_charged(market: Market) -> None:
    restart_m1(market, "garbage")
    ticket = ticket_for(market, "generator", "m1")
    with market.client() as client:
        events = list(stream_query(client, ticket, QUESTION))
        done = events[-1]
        assert done["status"] == "rejected" and done["price_units"] == 0
        assert done["verdict"]["reason"] in {"rank", "gap", "top1", "mean-gap", "bad-token"}
        before = consumer_balance(market)
        tx = settle_tx(client, market.wallets["consumer"], done)  # recorded for the validators
        client.submit(tx.to_json())
        client.wait_for_tx(tx.id, timeout=30)
        record = client.task(done["task"])
    assert record["status"] == "rejected" and record["paid"] == 0
    assert consumer_balance(market) == before - market.genesis.param("min_fee")


def test_models_served_by_nobody_or_by_one_miner_are_refused(market: Market) -> None:
    restart_m1(market, "")
    chain_id = market.genesis.chain_id
    creator = market.wallets["creator"]
    lonely, empty = "ab" * 32, "cd" * 32
    with market.client() as client:
        nonce = client.account(creator.address)["next_nonce"]
    register_model(market.gateway, creator, chain_id, empty, 1000, nonce=nonce, name="empty")
    register_model(market.gateway, creator, chain_id, lonely, 1000, nonce=nonce + 1, name="lonely")
    one_miner = Tx.create(
        creator,
        chain_id=chain_id,
        kind="miner.register",
        nonce=nonce + 2,
        fee=1_000,
        payload={"bond": 10 * 10**9, "url": "http://127.0.0.1:9", "models": [lonely]},
    )
    with market.client() as client:
        client.submit(one_miner.to_json())
        client.wait_for_tx(one_miner.id, timeout=30)
        wait_until(lambda: client.status()["height"] > client.tx(one_miner.id)["height"], 10)
        for sha, reason in ((empty, "no-miner"), (lonely, "one-miner")):
            height, book_nonce = book(client, market.wallets["consumer"], sha, max_price=10**9)
            ticket = tasks.sign_ticket(
                chain_id,
                market.wallets["consumer"],
                model=sha,
                prompt_hash=input_hash(QUESTION),
                max_tokens=8,
                seed=0,
                max_price=10**9,
                ref_height=height,
                nonce=books.ticket_nonce(book_nonce, 0),
                expiry=height + 20,
            )
            with pytest.raises(TaskError) as refused:
                list(stream_query(client, ticket, QUESTION))
            assert refused.value.reason == reason
