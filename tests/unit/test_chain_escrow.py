"""Prepaid escrow for queries (THREATS.md, "Nobody works unpaid") on the real state machine:
`escrow.deposit`, `escrow.withdraw`, the unlock at the start of a block, and `task.settle`
paying out of the escrow.

Written attacker first: a consumer that signs a ticket, gets its answer, then moves its whole
balance away (or withdraws its escrow) must not stop the miners' pay. On the code before the
escrow the settlement failed with `consumer-cannot-pay` and the miners were paid nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from dn.chain import escrow
from dn.chain.explain import UNEXPLAINED, explain_blocks
from dn.chain.genesis import Genesis, default_params
from dn.chain.ledger import DictState
from dn.chain.state import apply_block, genesis_block, genesis_state, supply_report
from dn.chain.tasks import task_id
from dn.chain.types import Tx
from dn.errors import InvalidTx
from dn.wallet.keys import Keypair
from tests.unit.test_chain_models import (
    CONSUMER,
    DN,
    ESCROWED,
    GATEWAY,
    M1,
    M2,
    WINDOW,
    Chain,
    new_chain,
)
from tests.unit.test_chain_state import assert_rejected
from tests.unit.test_chain_tasks import (
    CHARGE,
    MINERS,
    PRICE,
    attest,
    book_tx,
    settle,
    ticket,
)

UNLOCK = WINDOW + 1  # the shortest unlock the rule allows (escrow.unlock_blocks)


@pytest.fixture
def market() -> Chain:
    """test_chain_tasks' market (SMOL at PRICE, M1 and M2 serving it from height 2; CONSUMER's
    escrow ESCROWED from genesis), with the shortest escrow unlock."""
    chain = new_chain(escrow_unlock_blocks=2)
    chain.commit([chain.register_model(price=PRICE)])
    chain.commit([chain.register_miner(M1), chain.register_miner(M2)])
    return chain


ATTACKER = Keypair.from_seed(b"escrow-attacker".ljust(32, b"."))


def held(chain: Chain, kp: Keypair) -> dict[str, Any]:
    return escrow.summary(chain.state, kp.address)


def deposit(chain: Chain, kp: Keypair, amount: int, **kw: Any) -> Tx:
    return chain.send(kp, "escrow.deposit", {"amount": amount}, **kw)


def withdraw(chain: Chain, kp: Keypair, amount: int, **kw: Any) -> Tx:
    return chain.send(kp, "escrow.withdraw", {"amount": amount}, **kw)


def drain(chain: Chain, kp: Keypair, nonce: int | None = None) -> Tx:
    """`kp` sends its whole balance to a fresh address: its wallet is empty (after the fee of
    this transfer and, with `nonce`, of one transaction before it in the same block)."""
    fee = chain.min_fee
    rest = chain.balance(kp) - fee * (1 if nonce is None else 2)
    to = Keypair.generate().address
    return chain.send(kp, "transfer", {"to": to, "amount": rest}, fee=fee, nonce=nonce)


def shares_of(chain: Chain, atts: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, int]:
    return {a["miner"]: chain.balance(MINERS[a["miner"]]) for a in atts}


# --- deposit and withdraw -------------------------------------------------------------------


def test_a_deposit_moves_balance_into_the_escrow(market: Chain) -> None:
    before = market.balance(GATEWAY)
    tx = deposit(market, GATEWAY, 3 * DN)
    market.commit([tx])
    assert market.balance(GATEWAY) == before - 3 * DN - tx.fee
    assert held(market, GATEWAY) == {
        "amount": 3 * DN,
        "available": 3 * DN,
        "unlocking": 0,
        "unlock_at": None,
        "reserved": 0,
    }
    assert supply_report(market.state.items())["escrows"] == ESCROWED + 3 * DN


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda c: deposit(c, GATEWAY, 10**6 * DN), "insufficient-funds"),
        (lambda c: withdraw(c, GATEWAY, 1), "no-escrow"),
        (lambda c: withdraw(c, CONSUMER, ESCROWED + 1), "escrow-short"),
    ],
    ids=["deposit-over-balance", "withdraw-without-escrow", "withdraw-over-escrow"],
)
def test_refused_with_its_reason(market: Chain, build: Any, reason: str) -> None:
    assert_rejected(market, build(market), reason)


def test_a_zero_or_negative_amount_is_malformed(market: Chain) -> None:
    for kind in ("escrow.deposit", "escrow.withdraw"):
        for amount in (0, -1):
            raw = deposit(market, GATEWAY, 1).to_json()
            raw["kind"], raw["payload"] = kind, {"amount": amount}
            with pytest.raises(InvalidTx) as refused:
                Tx.from_json(raw)
            assert refused.value.reason == "bad-payload"


def test_an_amount_unlocking_is_no_longer_available(market: Chain) -> None:
    market.commit([withdraw(market, CONSUMER, ESCROWED - DN)])
    found = held(market, CONSUMER)
    assert (found["amount"], found["available"], found["unlocking"]) == (
        ESCROWED,
        DN,
        ESCROWED - DN,
    )
    assert_rejected(market, withdraw(market, CONSUMER, DN + 1), "escrow-short")


def test_withdraw_cannot_take_the_escrow_out_before_the_unlock(market: Chain) -> None:
    balance = market.balance(CONSUMER)
    tx = withdraw(market, CONSUMER, ESCROWED)
    block = market.commit([tx])
    due = block.height + UNLOCK
    assert held(market, CONSUMER)["unlock_at"] == due
    market.advance_to(due - 1)
    assert market.balance(CONSUMER) == balance - tx.fee  # still in the escrow
    assert held(market, CONSUMER)["amount"] == ESCROWED
    market.commit([])  # block `due`: the unlock completes at its start
    assert market.balance(CONSUMER) == balance - tx.fee + ESCROWED
    assert market.state.get(escrow.ESCROW + CONSUMER.address) is None
    assert market.state.get(escrow.ESCROW_DUE + str(due)) is None


def test_a_second_withdraw_moves_the_whole_unlock_later(market: Chain) -> None:
    first = market.commit([withdraw(market, CONSUMER, DN)]).height
    market.commit([])
    second = market.commit([withdraw(market, CONSUMER, DN)]).height
    market.advance_to(first + UNLOCK)
    assert held(market, CONSUMER)["unlocking"] == 2 * DN  # not released early
    market.advance_to(second + UNLOCK)
    assert held(market, CONSUMER)["amount"] == ESCROWED - 2 * DN
    assert held(market, CONSUMER)["unlocking"] == 0


def test_the_unlock_outlasts_the_ticket_window_whatever_genesis_says() -> None:
    params = default_params(escrow_unlock_blocks=2, ticket_window_blocks=50)
    genesis = Genesis.build(
        network="devnet", time_ms=1, validators=[GATEWAY.address], allocations={}, params=params
    )
    assert escrow.unlock_blocks(genesis) == 51


def test_escrow_set_at_genesis_is_part_of_the_supply() -> None:
    genesis = Genesis.build(
        network="devnet",
        time_ms=1,
        validators=[GATEWAY.address],
        allocations={GATEWAY.address: 5},
        escrows={CONSUMER.address: 7},
    )
    assert genesis.supply == 12
    report = supply_report(genesis_state(genesis).items())
    assert (report["escrows"], report["held"], report["created"]) == (7, 12, 12)
    plain = Genesis.build(network="devnet", time_ms=1, validators=[GATEWAY.address], allocations={})
    assert "escrows" not in plain.doc  # a genesis without escrows keeps its old hash


# --- settlement -----------------------------------------------------------------------------


def test_emptying_the_wallet_after_the_ticket_does_not_stop_the_miners_pay(market: Chain) -> None:
    t = ticket(market)
    atts = attest(market, t)
    market.commit([drain(market, CONSUMER)])  # the answer is out; the wallet is emptied
    assert market.balance(CONSUMER) == 0
    before = shares_of(market, atts)
    market.commit([settle(market, t, atts)])  # the gateway (or the checker) settles
    record = market.state.get("task:" + task_id(market.genesis.chain_id, t))
    assert (record["status"], record["paid"]) == ("confirmed", CHARGE)
    gen, chk = atts[0]["miner"], atts[1]["miner"]
    assert market.balance(MINERS[gen]) - before[gen] == 3_327  # 35%, in full
    assert market.balance(MINERS[chk]) - before[chk] == 1_425  # 15%, in full
    assert held(market, CONSUMER)["amount"] == ESCROWED - CHARGE


def test_a_withdraw_after_the_ticket_cannot_take_what_its_book_reserved(market: Chain) -> None:
    t = ticket(market)  # its book reserves the ticket's max_price, DN
    atts = attest(market, t)
    assert_rejected(market, withdraw(market, CONSUMER, ESCROWED), "escrow-short")
    nonce = market.nonce(CONSUMER)
    rest = ESCROWED - DN
    market.commit([withdraw(market, CONSUMER, rest), drain(market, CONSUMER, nonce + 1)])
    assert held(market, CONSUMER)["available"] == 0
    market.commit([settle(market, t, atts)])
    record = market.state.get("task:" + task_id(market.genesis.chain_id, t))
    assert record["paid"] == CHARGE
    found = held(market, CONSUMER)
    assert (found["amount"], found["unlocking"]) == (ESCROWED - CHARGE, rest)
    assert (found["reserved"], found["available"]) == (0, DN - CHARGE)


def test_a_book_beyond_the_escrow_is_refused(market: Chain) -> None:
    market.commit([market.send(GATEWAY, "transfer", {"to": ATTACKER.address, "amount": DN})])
    market.commit([deposit(market, ATTACKER, 1_000)])
    tx = book_tx(market, ATTACKER, slots=2, max_price=501)
    with pytest.raises(InvalidTx, match="has 1000 units available and the book needs 1002"):
        market.mempool.add(tx)
    assert_rejected(market, tx, "escrow-short")
    market.commit([book_tx(market, ATTACKER, slots=2, max_price=500)])
    assert (held(market, ATTACKER)["reserved"], held(market, ATTACKER)["available"]) == (1_000, 0)
    assert_rejected(market, withdraw(market, ATTACKER, 1), "escrow-short")


def test_the_escrow_is_explained_and_replays() -> None:
    market = new_chain(escrow_unlock_blocks=2)
    blocks = [market.commit([market.register_model(price=PRICE)])]
    blocks.append(market.commit([market.register_miner(M1), market.register_miner(M2)]))
    blocks.append(market.commit([book_tx(market)]))  # the slot the ticket uses
    t = ticket(market)
    atts = attest(market, t)
    blocks.append(market.commit([deposit(market, CONSUMER, 2 * DN)]))
    blocks.append(market.commit([withdraw(market, CONSUMER, DN), settle(market, t, atts)]))
    blocks += [market.commit([]) for _ in range(UNLOCK)]
    got = explain_blocks(market.genesis, blocks, CONSUMER.address)
    assert got.unexplained == 0 and not [e for e in got.entries if e.kind == UNEXPLAINED]
    assert got.balance == market.balance(CONSUMER)
    kinds = [(e.kind, e.amount) for e in got.entries if e.kind.startswith("escrow")]
    assert kinds == [("escrow-deposit", -2 * DN), ("escrow-returned", DN)]
    replay = DictState(genesis_state(market.genesis))
    parent = genesis_block(market.genesis)
    for block in blocks:
        replay.update(
            apply_block(replay, parent.header, parent.hash, block, market.genesis).changes
        )
        parent = block
    assert replay.data == market.state.data
