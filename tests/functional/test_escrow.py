"""Free answers (issue 11, attack 4) on real nodes: a gateway, two `dn mine` processes serving the
real SmolLM2 model (tests/functional/market.py), and the prepaid query escrow
(dn/chain/escrow.py).

Written attacker first. Before the escrow, a miner's own route served any signed ticket (only the
gateway looked at the consumer's balance), and a consumer that emptied its wallet while its
answer streamed left a settlement that failed with `consumer-cannot-pay`: the miners worked for
nothing. Now the price is paid out of the escrow, which a wallet's transfers cannot touch, and
each booked slot reserves what its ticket may pay there (protocol 5); every miner refuses a
ticket beyond its slot's reservation (`over-reserve`) before it works.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dn.chain import tasks
from dn.chain.types import Tx
from dn.client.http import NodeClient
from dn.client.query import make_ticket, settle_tx, stream_query
from dn.errors import InvalidTx, NotFound
from dn.node.taskio import normalize_input
from dn.wallet.keys import Keypair
from tests.functional.harness import wait_until
from tests.functional.market import ESCROW, Market, find_ticket, running_market

QUESTION = {"messages": [{"role": "user", "content": "Count from one to twenty in words."}]}


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[Market]:
    with running_market(tmp_path_factory.mktemp("escrow"), smollm2_gguf) as running:
        yield running


def ticket_for(
    market: Market, wallet: str, role: str, miner: str, book_price: int | None = None
) -> dict[str, Any]:
    """A ticket signed by `wallet` whose `role` the selection rule gives to miner `miner`, its
    slot reserving `book_price` of the escrow (the ticket's max_price unless given)."""
    eligible = sorted(market.wallets[m].address for m in ("m1", "m2"))
    index = 0 if role == tasks.GENERATOR else 1
    address = market.wallets[miner].address
    return find_ticket(
        market,
        normalize_input(QUESTION),
        eligible,
        lambda chosen: chosen[index] == address,
        slots=16,
        wallet=wallet,
        book_price=book_price,
        max_tokens=16,
        max_price=10**6,
    )


@pytest.mark.parametrize("role", [tasks.GENERATOR, tasks.CHECKER])
def test_a_miner_refuses_a_consumer_without_escrow_on_its_own_route(
    market: Market, role: str
) -> None:
    """The creator holds 1,000 DN but nothing in escrow: a book whose slots would reserve
    anything is refused on chain (`escrow-short`), so it books free slots (max_price 0) and
    signs a ticket that promises to pay; calling the miner directly, past the gateway, gets the
    miner's own refusal before any work."""
    with market.client() as client:
        creator = client.account(market.wallets["creator"].address)
    assert creator["balance"] > 0 and creator.get("escrow", {}).get("available", 0) == 0
    with pytest.raises(InvalidTx) as short:
        ticket_for(market, "creator", role, "m1")
    assert short.value.reason == "escrow-short"
    ticket = ticket_for(market, "creator", role, "m1", book_price=0)
    route = "/dn/v1/tasks/generate" if role == tasks.GENERATOR else "/dn/v1/tasks/check"
    body = {"ticket": ticket, "input": normalize_input(QUESTION)}
    response = httpx.post(market.miners[0].url + route, json=body, timeout=30)
    assert response.status_code == 409, response.text
    assert response.json()["reason"] == "over-reserve", response.text
    assert "reserved" in response.json()["message"]
    with market.miners[0].client() as client:
        assert client.status()["miner"]["sessions"] == 0  # nothing opened


def _settled(client: NodeClient, task: str) -> dict[str, Any] | None:
    try:
        return client.task(task)
    except NotFound:
        return None


def test_emptying_the_wallet_mid_stream_still_pays_the_miners_in_full(market: Market) -> None:
    consumer = market.wallets["consumer"]
    by_address = {w.address: n for n, w in market.wallets.items()}
    with market.client() as client:
        ticket, _ = make_ticket(
            client, consumer, "smollm2", QUESTION, max_tokens=48, expiry_blocks=12
        )
        start = client.account(consumer.address)
        balances = {n: client.account(w.address)["balance"] for n, w in market.wallets.items()}
        events: list[dict[str, Any]] = []
        drained = None
        for event in stream_query(client, ticket, QUESTION):
            events.append(event)
            if event["event"] == "token" and drained is None:
                # The answer is streaming: move every unit of the wallet away, and wait for it.
                fee = market.genesis.param("min_fee")
                account = client.account(consumer.address)
                drained = Tx.create(
                    consumer,
                    chain_id=market.genesis.chain_id,
                    kind="transfer",
                    nonce=account["next_nonce"],
                    fee=fee,
                    payload={"to": Keypair.generate().address, "amount": account["balance"] - fee},
                )
                client.submit(drained.to_json())
                client.wait_for_tx(drained.id, timeout=30)
                assert client.account(consumer.address)["balance"] == 0
        assert drained is not None, "the answer ended before a token was streamed"
        done = events[-1]
        assert done["event"] == "done" and done["status"] == "confirmed", done
        price = done["price_units"]
        assert price == 2_000 * done["tokens"] > 0
        # The consumer cannot even pay the settlement's fee now ...
        with pytest.raises(InvalidTx) as refused:
            client.submit(settle_tx(client, consumer, done).to_json())
        assert refused.value.reason == "insufficient-funds"
        # ... so the checker, which holds the settlement, sends it (dn/node/market/backstop.py).
        record = wait_until(lambda: _settled(client, done["task"]), 60, what="the settlement")
        after = {n: client.account(w.address) for n, w in market.wallets.items()}
    assert record["status"] == "confirmed" and record["paid"] == price
    gen, chk = by_address[done["generator"]["miner"]], by_address[done["checker"]["miner"]]
    fee = market.genesis.param("min_fee")
    assert after[gen]["balance"] - balances[gen] == 700 * done["tokens"]  # 35%, in full
    assert after[chk]["balance"] - balances[chk] == 300 * done["tokens"] - fee  # 15%, less fee
    assert after["consumer"]["balance"] == 0
    assert start["escrow"]["amount"] - after["consumer"]["escrow"]["amount"] == price
    assert start["escrow"]["amount"] <= ESCROW
    with market.client() as client:
        supply = client.status()["supply"]
    assert supply["held"] == supply["created"] and supply["escrows"] > 0
