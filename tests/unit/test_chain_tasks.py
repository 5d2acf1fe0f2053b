"""Paid queries (DESIGN.md section 7): tickets, attestations, miner selection, the fee split and
`task.settle` on the pure state machine.

Every invalid settlement asserts the exact rejection reason, from apply_tx and from the mempool,
and that nothing changed: no funds move for a query that is not paid.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dn.chain import books
from dn.chain.economics import split_fee
from dn.chain.genesis import FEE_SPLIT, default_params
from dn.chain.ledger import DictState
from dn.chain.staking import backers_of
from dn.chain.state import apply_block, build_block, supply_report
from dn.chain.tasks import (
    ATTEST_DOMAIN,
    TICKET_DOMAIN,
    eligible_miners,
    output_hash,
    price_of,
    prompt_hash,
    select_miners,
    sign_attestation,
    sign_ticket,
    task_id,
    verify_attestation,
    verify_ticket,
)
from dn.chain.types import Block, Tx
from dn.encoding import MAX_AMOUNT, canonical, hash_hex
from dn.errors import InputError, InvalidTx, TaskError
from dn.wallet.keys import Keypair
from tests.unit.test_chain_models import (
    CONSUMER,
    CREATOR,
    DN,
    ESCROWED,
    GATEWAY,
    M1,
    M2,
    M3,
    OTHER,
    SMOL,
    WINDOW,
    Chain,
    model_sha,
    new_chain,
)
from tests.unit.test_chain_state import V, assert_rejected

PRICE = 123_457  # units per 1,000 tokens
TOKENS = 77
CHARGE = 9_506  # 123_457 * 77 // 1000
MINERS = {kp.address: kp for kp in (M1, M2, M3)}
BROKE = Keypair.from_seed(b"broke".ljust(32, b"."))


@pytest.fixture
def market() -> Chain:
    """SMOL (price PRICE) registered at height 1 by CREATOR; M1 and M2 serve it from height 2."""
    chain = new_chain()
    chain.commit([chain.register_model(price=PRICE)])
    chain.commit([chain.register_miner(M1), chain.register_miner(M2)])
    return chain


def book_tx(
    chain: Chain,
    consumer: Keypair = CONSUMER,
    slots: int = 1,
    model: str = SMOL,
    nonce: int | None = None,
    max_price: int = DN,
) -> Tx:
    """`consumer`'s `task.book` of `slots` slots for `model`, each reserving `max_price` of its
    escrow, paying min_fee per slot."""
    payload = {"model": model, "slots": slots, "max_price": max_price}
    return chain.send(consumer, "task.book", payload, nonce=nonce, fee=slots * chain.min_fee)


def book(
    chain: Chain,
    consumer: Keypair = CONSUMER,
    slots: int = 1,
    model: str = SMOL,
    max_price: int = DN,
) -> int:
    """Commit a block holding `consumer`'s book of `slots` slots for `model`, each reserving
    `max_price` of its escrow; its height."""
    chain.commit([book_tx(chain, consumer, slots, model, max_price=max_price)])
    return chain.tip.height


def book_nonce(chain: Chain, consumer: Keypair, height: int) -> int | None:
    """The nonce of `consumer`'s first book in block `height` (None if it has none there)."""
    for name in chain.state.get(books.BOOKS_AT + str(height)) or []:
        address, nonce = name.rsplit(":", 1)
        if address == consumer.address:
            return int(nonce)
    return None


def book_at(chain: Chain, consumer: Keypair, height: int) -> dict[str, Any] | None:
    """`consumer`'s first book in block `height`, if any."""
    nonce = book_nonce(chain, consumer, height)
    return None if nonce is None else books.get(chain.state, consumer.address, nonce)


def ticket(chain: Chain, consumer: Keypair = CONSUMER, **fields: Any) -> dict[str, Any]:
    """`consumer`'s ticket. Its `nonce` field here is a slot number (0 unless given) of the
    consumer's first book at `ref_height` (the tip unless given; booked here first when the tip
    holds none with that slot), and becomes that slot's ticket nonce (`books.ticket_nonce`);
    where the consumer has no book at `ref_height` it is the ticket's nonce as it is."""
    slot = fields.pop("nonce", 0)
    if "ref_height" not in fields:
        found, model = book_at(chain, consumer, chain.tip.height), fields.get("model", SMOL)
        if found is None or found["model"] != model or slot >= found["slots"]:
            book(
                chain, consumer, slots=slot + 1, model=model, max_price=fields.get("max_price", DN)
            )
    ref = fields.get("ref_height", chain.tip.height)
    number = book_nonce(chain, consumer, ref)
    fields["nonce"] = slot if number is None else books.ticket_nonce(number, slot)
    values: dict[str, Any] = {
        "model": SMOL,
        "prompt_hash": prompt_hash("Why is the sky blue?"),
        "max_tokens": 128,
        "seed": 7,
        "max_price": DN,
        "ref_height": chain.tip.height,
        "nonce": 0,
        "expiry": chain.tip.height + 10,
    }
    return sign_ticket(chain.genesis.chain_id, consumer, **{**values, **fields})


def beacon(chain: Chain, height: int) -> str | None:
    """The hash of block `height` when it is the tip (a book's beacon before the next block
    writes it; the chain's own record after)."""
    return chain.tip.hash if height == chain.tip.height else None


def pair(chain: Chain, t: dict[str, Any]) -> tuple[str, str]:
    """The (generator, checker) the ticket's slot draws."""
    return books.chosen(chain.state, t, lambda h: beacon(chain, h), final=chain.tip.height)


def attest(
    chain: Chain,
    t: dict[str, Any],
    *,
    verdict: str = "confirmed",
    tokens: int = TOKENS,
    miners: tuple[Keypair, Keypair] | None = None,
    gen: dict[str, Any] | None = None,
    chk: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The generator's and checker's attestations, by the miners the chain selects unless
    `miners` says otherwise; `gen` / `chk` override fields before signing."""
    chain_id = chain.genesis.chain_id
    tid = task_id(chain_id, t)
    if miners is None:
        picked = pair(chain, t)
        miners = (MINERS[picked[0]], MINERS[picked[1]])
    common = {"task": tid, "output_hash": output_hash(list(range(tokens))), "tokens": tokens}
    g = {**common, "role": "generator", "verdict": "generated", "commitment": "", **(gen or {})}
    c = {**common, "role": "checker", "verdict": verdict, "commitment": "c0ffee", **(chk or {})}
    return sign_attestation(chain_id, miners[0], **g), sign_attestation(chain_id, miners[1], **c)


def settle(
    chain: Chain,
    t: dict[str, Any],
    atts: tuple[dict[str, Any], dict[str, Any]],
    sender: Keypair = GATEWAY,
    **kw: Any,
) -> Tx:
    payload = {"ticket": t, "generator": atts[0], "checker": atts[1]}
    return chain.send(sender, "task.settle", payload, **kw)


def drawn_ticket(chain: Chain, **fields: Any) -> dict[str, Any]:
    """`ticket`, then the block after its book, whose start writes the book's beacon: a
    settlement checked on the state alone (assert_rejected's apply_tx runs no begin_block)
    then draws the same miners a block would."""
    t = ticket(chain, **fields)
    chain.commit([])
    return t


def paid_settle(chain: Chain, **fields: Any) -> Tx:
    t = ticket(chain, **fields)
    return settle(chain, t, attest(chain, t))


# --- tickets and attestations ---------------------------------------------------------------


def test_a_ticket_is_signed_by_its_consumer_for_one_chain(market: Chain) -> None:
    chain_id = market.genesis.chain_id
    t = ticket(market)
    assert t["consumer"] == CONSUMER.address and len(bytes.fromhex(t["sig"])) == 64
    verify_ticket(chain_id, t)
    signed = {k: v for k, v in t.items() if k != "sig"}
    expected = TICKET_DOMAIN + canonical({"chain_id": chain_id, **signed})
    assert task_id(chain_id, t) == hashlib.sha256(expected).hexdigest()
    for bad in ({**t, "max_price": t["max_price"] + 1}, {**t, "consumer": OTHER.address}):
        with pytest.raises(InvalidTx) as caught:
            verify_ticket(chain_id, bad)
        assert caught.value.reason == "bad-ticket-signature"
    with pytest.raises(InvalidTx) as caught:
        verify_ticket("devnet-000000000000", t)
    assert caught.value.reason == "bad-ticket-signature"
    with pytest.raises(InvalidTx) as caught:
        verify_ticket(chain_id, {**t, "memo": "hi"})
    assert caught.value.reason == "bad-ticket"


def test_task_id_names_the_ticket_not_its_signature(market: Chain) -> None:
    chain_id = market.genesis.chain_id
    t = ticket(market)
    assert task_id(chain_id, {**t, "sig": "00" * 64}) == task_id(chain_id, t)
    assert task_id(chain_id, ticket(market, nonce=1)) != task_id(chain_id, t)
    assert task_id("devnet-000000000000", t) != task_id(chain_id, t)


def test_prompt_and_output_hashes() -> None:
    assert prompt_hash("hello") == (
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    )
    assert prompt_hash("héllo") == hashlib.sha256("héllo".encode()).hexdigest()
    assert output_hash([1, 2, 3]) == hash_hex([1, 2, 3]) == hashlib.sha256(b"[1,2,3]").hexdigest()
    assert output_hash([1, 2]) != output_hash([2, 1])


def test_an_attestation_is_signed_by_its_miner(market: Chain) -> None:
    chain_id = market.genesis.chain_id
    g, c = attest(market, ticket(market))
    verify_attestation(chain_id, g)
    verify_attestation(chain_id, c)
    signed = {k: v for k, v in c.items() if k != "sig"}
    message = ATTEST_DOMAIN + canonical({"chain_id": chain_id, **signed})
    assert MINERS[c["miner"]].sign(message).hex() == c["sig"]
    for bad in ({**c, "verdict": "rejected"}, {**c, "miner": g["miner"]}, {**g, "tokens": 1}):
        with pytest.raises(InvalidTx) as caught:
            verify_attestation(chain_id, bad)
        assert caught.value.reason == "bad-attestation-signature"
    with pytest.raises(InvalidTx) as caught:
        verify_attestation(chain_id, {**c, "role": "judge"})
    assert caught.value.reason == "bad-attestation"


# --- miner selection and price --------------------------------------------------------------

POOL = [Keypair.from_seed(bytes([i]) * 32).address for i in range(8)]
draw_keys = st.binary(min_size=32, max_size=32).map(bytes.hex)  # what books.draw makes


@settings(max_examples=100, deadline=None)
@given(
    eligible=st.lists(st.sampled_from(POOL), min_size=2, max_size=12).filter(
        lambda xs: len(set(xs)) >= 2
    ),
    key=draw_keys,
    data=st.data(),
)
def test_select_miners_is_deterministic_and_order_free(
    eligible: list[str], key: str, data: st.DataObject
) -> None:
    generator, checker = select_miners(eligible, key)
    shuffled = data.draw(st.permutations(eligible))
    assert select_miners(shuffled, key) == (generator, checker)
    assert generator != checker and {generator, checker} <= set(eligible)
    ranked = sorted(set(eligible), key=lambda a: hashlib.sha256((key + a).encode()).digest())
    assert (generator, checker) == (ranked[0], ranked[1])


def test_select_miners_spreads_work_over_draws() -> None:
    picks = {select_miners(POOL, hashlib.sha256(bytes([i])).hexdigest()) for i in range(64)}
    assert len({g for g, _ in picks}) >= 4  # not always the same generator


def test_select_miners_needs_two_miners() -> None:
    key = "ab" * 32
    for eligible, reason in (
        ([], "no-miner"),
        ([POOL[0]], "one-miner"),
        ([POOL[1]] * 3, "one-miner"),
    ):
        with pytest.raises(TaskError) as caught:
            select_miners(eligible, key)
        assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("price", "tokens", "cost"),
    [
        (1000, 1, 1),
        (999, 1, 0),
        (PRICE, TOKENS, CHARGE),
        (0, 500, 0),
        (7, 0, 0),
        (10**12, 3, 3 * 10**9),
    ],
)
def test_price_of_rounds_down(price: int, tokens: int, cost: int) -> None:
    assert price_of(price, tokens) == cost


# --- the fee split --------------------------------------------------------------------------


def _split_from_cuts(cuts: list[int]) -> dict[str, int]:
    """Five cut points in [0, 10,000] make six shares that sum to 10,000."""
    bounds = [0, *sorted(cuts), 10_000]
    return {name: bounds[i + 1] - bounds[i] for i, name in enumerate(FEE_SPLIT)}


splits = st.lists(st.integers(min_value=0, max_value=10_000), min_size=5, max_size=5).map(
    _split_from_cuts
)
backer_maps = st.dictionaries(
    st.sampled_from(POOL), st.integers(min_value=0, max_value=MAX_AMOUNT), max_size=6
)


@settings(max_examples=300, deadline=None)
@given(amount=st.integers(min_value=0, max_value=MAX_AMOUNT), split=splits, backers=backer_maps)
def test_split_fee_parts_sum_to_the_amount(
    amount: int, split: dict[str, int], backers: dict[str, int]
) -> None:
    assert sum(split.values()) == 10_000
    parts = split_fee(amount, split, backers)
    units = [parts[k] for k in ("creator", "generator", "checker", "validators", "burn")]
    assert all(u >= 0 for u in units) and all(u > 0 for u in parts["backers"].values())
    assert sum(units) + sum(parts["backers"].values()) == amount
    assert set(parts["backers"]) <= {a for a, s in backers.items() if s > 0}
    pot = amount * split["fee_split_backers"] // 10_000
    assert sum(parts["backers"].values()) <= pot
    assert parts["generator"] == amount * split["fee_split_generator"] // 10_000
    if not any(backers.values()):
        own = amount * split["fee_split_creator"] // 10_000
        assert parts["creator"] == own + pot and parts["backers"] == {}


def test_split_fee_with_the_defaults_to_the_unit() -> None:
    assert split_fee(CHARGE, default_params(), {}) == {
        "creator": 2_851 + 475,  # its own 30% and the backers' 5%: there are none
        "generator": 3_327,
        "checker": 1_425,
        "validators": 950,
        "backers": {},
        "burn": 475 + 3,  # 5% and the 3 units rounding left over
    }
    backers = {POOL[0]: 2, POOL[1]: 1}  # 475 shared 2:1 -> 316 and 158, 1 unit to the burn
    parts = split_fee(CHARGE, default_params(), backers)
    assert parts["backers"] == {POOL[0]: 316, POOL[1]: 158}
    assert (parts["creator"], parts["burn"]) == (2_851, 475 + 3 + 1)


def test_split_fee_refuses_a_split_that_is_not_whole() -> None:
    with pytest.raises(InputError, match="must sum to 10000"):
        split_fee(100, default_params(fee_split_burn=501), {})


# --- task.settle: paying for an answer ------------------------------------------------------


def test_a_confirmed_answer_is_paid_and_split_to_the_unit(market: Chain) -> None:
    t = ticket(market)
    g, c = attest(market, t)
    tx = settle(market, t, (g, c))
    before = {kp.address: market.balance(kp) for kp in (CONSUMER, CREATOR, GATEWAY, M1, M2, V)}
    burned_before = market.state.get("supply")["burned"]
    market.mempool.add(tx)
    block = market.commit(market.mempool.pending())
    # the book is block 3 (its fee paid before `before`), the settlement block 4
    assert block.height == 4 and [x.id for x in block.txs] == [tx.id]

    gen, chk = g["miner"], c["miner"]
    assert {gen, chk} == {M1.address, M2.address}
    fee_burn = tx.fee * 2000 // 10_000

    def delta(kp: Keypair) -> int:
        return market.balance(kp) - before[kp.address]

    assert delta(CONSUMER) == 0  # the price comes out of its escrow, not its balance
    assert market.state.get("escrow:" + CONSUMER.address)["amount"] == ESCROWED - CHARGE
    assert delta(CREATOR) == 2_851 + 475
    assert delta(MINERS[gen]) == 3_327 and delta(MINERS[chk]) == 1_425
    assert delta(GATEWAY) == -tx.fee  # the sender pays only the fee
    assert delta(V) == tx.fee - fee_burn
    assert market.state.get("pool:validators") == {"balance": 950}
    assert market.state.get("supply")["burned"] - burned_before == fee_burn + 478
    assert 2_851 + 475 + 3_327 + 1_425 + 950 + 478 == CHARGE
    tid = task_id(market.genesis.chain_id, t)
    assert market.state.get("task:" + tid) == {
        "model": SMOL,
        "consumer": CONSUMER.address,
        "generator": gen,
        "checker": chk,
        "tokens": TOKENS,
        "paid": CHARGE,
        "status": "confirmed",
        "height": 4,
        "output_hash": output_hash(list(range(TOKENS))),
        "commitment": "c0ffee",
        "burned": 478,  # what bounds the usage-tied emission (dn/powr/emission.py)
    }
    model = market.state.get("model:" + SMOL)
    assert (model["tasks"], model["tokens"], model["rejected"]) == (1, TOKENS, 0)
    report = supply_report(market.state.items())
    assert report["pools"] == 950 and report["held"] == report["created"]


def test_a_settling_block_round_trips(market: Chain) -> None:
    first, second = _ticket_and_atts(market), _ticket_and_atts(market, nonce=1)
    txs = [settle(market, *first), settle(market, *second, nonce=1)]
    applied, rejected = build_block(
        market.state, market.tip.header, market.tip.hash, txs, V, 10_000, market.genesis
    )
    assert rejected == []
    wire = Block.from_json(applied.block.to_json())
    fresh = DictState(copy.deepcopy(market.state.data))
    replayed = apply_block(fresh, market.tip.header, market.tip.hash, wire, market.genesis)
    assert replayed.changes == applied.changes
    fresh.update(replayed.changes)
    assert fresh.get("model:" + SMOL)["tasks"] == 2
    assert fresh.get("pool:validators") == {"balance": 2 * 950}


def _ticket_and_atts(chain: Chain, **fields: Any) -> tuple[dict[str, Any], Any]:
    t = ticket(chain, **fields)
    return t, attest(chain, t)


def test_a_rejected_answer_is_recorded_and_not_charged(market: Chain) -> None:
    t = ticket(market)
    g, c = attest(market, t, verdict="rejected")
    before = market.balance(CONSUMER)
    market.commit([settle(market, t, (g, c))])
    assert market.balance(CONSUMER) == before
    record = market.state.get("task:" + task_id(market.genesis.chain_id, t))
    assert (record["status"], record["paid"], record["tokens"]) == ("rejected", 0, TOKENS)
    model = market.state.get("model:" + SMOL)
    assert (model["tasks"], model["tokens"], model["rejected"]) == (0, 0, 1)
    assert market.state.get("pool:validators") is None


def test_the_same_ticket_settles_once(market: Chain) -> None:
    t, atts = _ticket_and_atts(market)
    market.commit([settle(market, t, atts)])
    assert_rejected(market, settle(market, t, atts), "task-settled")
    by_miner = settle(market, t, atts, sender=M1)  # a miner submitting it too changes nothing
    assert_rejected(market, by_miner, "task-settled")


def test_the_same_ticket_twice_in_one_block_is_left_out(market: Chain) -> None:
    t, atts = _ticket_and_atts(market)
    first, second = settle(market, t, atts), settle(market, t, atts, sender=M1)
    tip = market.tip
    applied, rejected = build_block(
        market.state, tip.header, tip.hash, [first, second], V, 9_000, market.genesis
    )
    assert [x.id for x in applied.block.txs] == [first.id]
    assert [(x.id, e.reason) for x, e in rejected] == [(second.id, "task-settled")]


def test_a_miner_may_submit_the_settlement(market: Chain) -> None:
    t, (g, c) = _ticket_and_atts(market)
    generator = MINERS[g["miner"]]
    before = market.balance(generator)
    tx = settle(market, t, (g, c), sender=generator)
    market.commit([tx])
    assert market.balance(generator) == before - tx.fee + 3_327


def test_backers_are_paid_pro_rata(market: Chain) -> None:
    """Stakes come with the `stake` kind (a later issue); written here by hand, moved out of
    OTHER's balance so the supply still holds."""
    state = market.state.data
    stakes = {OTHER.address: 2 * DN, CREATOR.address: DN}
    for address, amount in stakes.items():
        acct = state["acct:" + address]
        state["acct:" + address] = {**acct, "balance": acct["balance"] - amount}
        state[f"stake:{SMOL}:{address}"] = {"amount": amount}
    state["backers:" + SMOL] = sorted(stakes)
    assert backers_of(market.state, SMOL) == stakes
    assert backers_of(market.state, model_sha("other")) == {}
    before = {a: market.state.get("acct:" + a)["balance"] for a in stakes}
    market.commit([paid_settle(market)])
    got = {a: market.state.get("acct:" + a)["balance"] - before[a] for a in stakes}
    assert got == {OTHER.address: 316, CREATOR.address: 2_851 + 158}
    assert supply_report(market.state.items())["stakes"] == 3 * DN


# --- task.settle: what is refused -----------------------------------------------------------


Build = Callable[[Chain], Tx]


def _tampered_ticket(chain: Chain) -> Tx:
    t = ticket(chain)
    return settle(chain, {**t, "max_tokens": 64}, attest(chain, t))


def _with(**fields: Any) -> Build:
    def build(chain: Chain) -> Tx:
        t = drawn_ticket(chain, **fields)
        return settle(chain, t, attest(chain, t))

    return build


def _refers_to(ahead: int) -> Build:
    """A ticket whose ref_height is `ahead` blocks past the tip (1: the settling block). No book
    is there, so the miners are named; the window is checked before the book."""

    def build(chain: Chain) -> Tx:
        t = ticket(chain, ref_height=chain.tip.height + ahead)
        return settle(chain, t, attest(chain, t, miners=(M1, M2)))

    return build


def _unknown_model(chain: Chain) -> Tx:
    # A book can only be made for a registered model: the ticket names another in SMOL's slot.
    height = book(chain)
    t = ticket(chain, model=model_sha("nope"), ref_height=height)  # nobody serves it: name them
    return settle(chain, t, attest(chain, t, miners=(M1, M2)))


def _atts(**kw: Any) -> Build:
    def build(chain: Chain) -> Tx:
        t = ticket(chain)
        return settle(chain, t, attest(chain, t, **kw))

    return build


def _swapped(chain: Chain) -> Tx:
    t = drawn_ticket(chain)
    g, c = attest(chain, t)
    swapped = (MINERS[c["miner"]], MINERS[g["miner"]])
    return settle(chain, t, attest(chain, t, miners=swapped))


def _changed_after_signing(chain: Chain) -> Tx:
    t = ticket(chain)
    g, c = attest(chain, t)
    return settle(chain, t, (g, {**c, "verdict": "rejected"}))


def _disagree_on_tokens(chain: Chain) -> Tx:
    t = ticket(chain)
    g, _ = attest(chain, t)
    _, c = attest(chain, t, tokens=TOKENS - 1)
    return settle(chain, t, (g, c))


def _for_another_task(chain: Chain) -> Tx:
    t = ticket(chain)
    other = task_id(chain.genesis.chain_id, ticket(chain, ref_height=t["ref_height"], nonce=99))
    return settle(chain, t, attest(chain, t, gen={"task": other}, chk={"task": other}))


REFUSED: list[tuple[str, Build, str]] = [
    ("ticket changed after signing", _tampered_ticket, "bad-ticket-signature"),
    ("unknown model", _unknown_model, "unknown-model"),
    ("ref_height is the settling block", _refers_to(1), "stale-ticket"),
    ("ref_height in the future", _refers_to(48), "stale-ticket"),
    ("expired before the block", _with(expiry=2), "expired-ticket"),
    ("attestation changed after signing", _changed_after_signing, "bad-attestation-signature"),
    ("attestations for another task", _for_another_task, "wrong-task"),
    ("generator claims the checker role", _atts(gen={"role": "checker"}), "wrong-role"),
    ("checker claims the generator role", _atts(chk={"role": "generator"}), "wrong-role"),
    ("generator says confirmed", _atts(gen={"verdict": "confirmed"}), "wrong-verdict"),
    ("checker says generated", _atts(verdict="generated"), "wrong-verdict"),
    ("different outputs", _atts(chk={"output_hash": "ab" * 32}), "attestations-disagree"),
    ("different token counts", _disagree_on_tokens, "attestations-disagree"),
    ("more tokens than the ticket allows", _atts(tokens=129), "too-many-tokens"),
    ("generator and checker swapped", _swapped, "wrong-miners"),
    ("a miner the selection did not pick", _atts(miners=(M3, M1)), "wrong-miners"),
    ("price above max_price", _with(max_price=CHARGE - 1), "over-max-price"),
]


@pytest.mark.parametrize(("build", "reason"), [p[1:] for p in REFUSED], ids=[p[0] for p in REFUSED])
def test_settlement_refused(market: Chain, build: Build, reason: str) -> None:
    tx = build(market)
    before = market.balance(CONSUMER)
    assert_rejected(market, tx, reason)
    assert market.balance(CONSUMER) == before


def test_max_price_exactly_and_expiry_at_the_block_are_fine(market: Chain) -> None:
    # the book is block 3, the settlement block 4
    market.commit([paid_settle(market, max_price=CHARGE, expiry=4)])
    assert market.state.get("model:" + SMOL)["tasks"] == 1


def test_a_consumer_who_cannot_pay(market: Chain) -> None:
    # BROKE gets just the fee of a one-slot book: no escrow, and an empty balance after it.
    market.commit(
        [market.transfer(OTHER, BROKE.address, market.min_fee, nonce=market.nonce(OTHER))]
    )
    # A book whose slot may pay DN needs DN of escrow available to reserve: refused.
    assert_rejected(market, book_tx(market, BROKE), "escrow-short")
    # A book of max_price 0 reserves nothing and is made; its ticket may pay nothing.
    t = drawn_ticket(market, consumer=BROKE, max_price=0)
    assert market.balance(BROKE) == 0
    assert_rejected(market, settle(market, t, attest(market, t)), "over-max-price")
    # A rejected answer costs the consumer nothing, so it settles even for an empty account.
    market.commit([settle(market, t, attest(market, t, verdict="rejected"))])


def test_a_retired_model_takes_no_new_tasks_but_pays_for_the_ones_before(market: Chain) -> None:
    before, before_atts = _ticket_and_atts(market)  # made while the model was live
    retire = market.send(CREATOR, "model.retire", {"model": SMOL})
    market.commit([book_tx(market), retire])  # a book made in the retiring block, before it
    after, after_atts = _ticket_and_atts(market, ref_height=market.tip.height)
    assert_rejected(market, settle(market, after, after_atts), "model-retired")
    assert_rejected(market, book_tx(market), "model-retired")  # and no book after it
    market.commit([settle(market, before, before_atts)])
    record = market.state.get("task:" + task_id(market.genesis.chain_id, before))
    assert record["status"] == "confirmed" and record["paid"] > 0


def test_a_ticket_older_than_the_window_is_stale(market: Chain) -> None:
    t, atts = _ticket_and_atts(market, expiry=100)  # ref_height 3: the book's block
    assert t["ref_height"] == 3
    market.advance_to(3 + WINDOW)  # the next block is 4 + WINDOW: one past the window
    assert_rejected(market, settle(market, t, atts), "stale-ticket")


def test_a_ticket_at_the_edge_of_the_window_settles(market: Chain) -> None:
    t, atts = _ticket_and_atts(market, expiry=100)  # ref_height 3: the book's block
    assert t["ref_height"] == 3
    market.advance_to(3 + WINDOW - 1)
    market.commit([settle(market, t, atts)])
    assert market.tip.height == 3 + WINDOW


def test_one_miner_cannot_make_a_task(market: Chain) -> None:
    market.commit([market.exit_miner(M2)])  # height 3: only M1 serves from here on
    t = ticket(market)
    assert eligible_miners(market.state, SMOL, t["ref_height"]) == [M1.address]
    assert_rejected(market, settle(market, t, attest(market, t, miners=(M1, M2))), "wrong-miners")


def test_the_miner_set_is_the_one_at_the_reference_height(market: Chain) -> None:
    """A miner that joins after the ticket's ref_height is not picked; one that exits after it
    still is, and the settlement pays it."""
    t, atts = _ticket_and_atts(market)  # ref_height 3, the book's block: M1 and M2
    # height 4, with a second book for the ticket after
    market.commit([market.register_miner(M3), market.exit_miner(M1), book_tx(market)])
    assert eligible_miners(market.state, SMOL, 3) == sorted([M1.address, M2.address])
    picked = pair(market, t)
    assert set(picked) == {M1.address, M2.address}
    market.commit([settle(market, t, atts)])
    record = market.state.get("task:" + task_id(market.genesis.chain_id, t))
    assert {record["generator"], record["checker"]} == {M1.address, M2.address}
    # A new ticket, referring to height 4, is for M2 and M3.
    t2 = ticket(market, ref_height=4)
    g2, c2 = attest(market, t2)
    assert {g2["miner"], c2["miner"]} == {M2.address, M3.address}
    market.commit([settle(market, t2, (g2, c2))])
