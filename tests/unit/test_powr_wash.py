"""Wash tasks (issue 11, attack 3), played on the pure state machine with the three-validator
chain of test_chain_powr.py (epochs of 4 blocks).

An attacker who runs two miners wants tasks where both roles are its own, so that it signs both
attestations for 65,536 tokens it never generated and settles the task from its own consumer
wallet. It used to grind ticket nonces offline until the task id picked its two miners. Now
the miners are drawn from ticket books (dn/chain/books.py): the attacker books slots on chain,
paying `min_fee` for each before the hash that draws them exists, and uses only the slots whose
draw lands on its own two miners (one in C(5, 2) = 10 with five miners serving the model); it
pays for every slot it bought. Before the usage cap, the miners' share of a model's emission
went by confirmed tokens, so the washed tokens took nearly all of SMOL's (the attacker's net
over the epoch, every fee counted: +15.08 DN, for 262,144 units of prices of which it got half
back as generator and checker). Now the usage-tied emission is bounded by what was burned
(`powr_usage_cap_bps` of the burned share of task prices, each miner weighted by what its own
tasks burned): the attacker's net, every fee (the slot fees included), bond, escrow and credit
counted over the epoch, is below zero, and was already below zero before the slot fees
(-133,704 units when it ground nonces for free; here it bought 120 slots at 1,000 units, and
its net is -253,703: the same loss less the 120,000 units of slot fees, to a unit of the
emission's rounding). The honest miners earn what they earned without it. The chain ends verified
from genesis (`dn chain verify`) with the supply invariant holding. A property then checks the
bound behind it on arbitrary epochs: washing never earns more than twice the capped burn.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dn.chain import books, escrow
from dn.chain.ledger import MINER, DictState, account
from dn.chain.state import apply_block, genesis_block, genesis_state, supply_holds
from dn.chain.store import Store
from dn.chain.tasks import eligible_miners, output_hash, sign_attestation, task_id
from dn.chain.types import Tx
from dn.chain.verify import verify_store
from dn.encoding import BPS
from dn.powr.consensus import EpochInputs, close_epoch
from dn.powr.emission import ModelEpoch
from dn.powr.params import EpochParams
from dn.wallet.keys import Keypair
from tests.unit.test_chain_models import (
    CONSUMER,
    CREATOR,
    DN,
    GATEWAY,
    GEMMA,
    M1,
    M2,
    M3,
    OTHER,
    SMOL,
)
from tests.unit.test_chain_powr import V0, V1, V2, E, PowrChain, market
from tests.unit.test_chain_tasks import attest, book_at, book_tx, pair, settle, ticket

HONEST = {
    V0: {SMOL: 800_000, GEMMA: 400_000},
    V1: {SMOL: 820_000, GEMMA: 380_000},
    V2: {SMOL: 790_000, GEMMA: 410_000},
}
WASHER = Keypair.from_seed(b"washer".ljust(32, b"."))  # the attacker's consumer wallet
A1 = Keypair.from_seed(b"wash-miner-1".ljust(32, b"."))
A2 = Keypair.from_seed(b"wash-miner-2".ljust(32, b"."))
ATTACKER = (WASHER, A1, A2)
OURS = {kp.address for kp in ATTACKER}
WASHED_TOKENS = 65_536  # the most a ticket may ask for
WASH_PRICE = DN // 100  # each washed slot reserves this much of the attacker's 10 DN escrow
WASH_FIELDS = {"max_tokens": WASHED_TOKENS, "max_price": WASH_PRICE}
WASHES = 4  # the tasks the attacker washes
HONEST_TOKENS = 500
HONEST_SLOTS = 32  # the honest consumer's book: enough for its four tasks among the draws
HONEST_BOOK = 6  # the block that holds the honest consumer's book (and the attacker's first)


def holdings(chain: PowrChain, kp: Keypair) -> int:
    """What `kp` owns: its balance, its miner bond and its query escrow."""
    bond = (chain.state.get(MINER + kp.address) or {}).get("bond", 0)
    escrowed = escrow.held(chain.state, kp.address)["amount"]
    return int(account(chain.state, kp.address)["balance"]) + int(bond) + int(escrowed)


def lucky_slots(chain: PowrChain, height: int) -> list[dict[str, Any]]:
    """The attacker's tickets for the slots of its book at `height` whose draw lands on A1 and
    A2 (in either role): the only ones it uses. Every slot was paid for before the hash of
    block `height`, and so the draw, existed."""
    found = book_at(chain, WASHER, height)
    assert found is not None
    tickets = [
        ticket(chain, WASHER, nonce=slot, ref_height=height, **WASH_FIELDS)
        for slot in range(found["slots"])
    ]
    return [t for t in tickets if set(pair(chain, t)) == {A1.address, A2.address}]


def washed(chain: PowrChain, t: dict[str, Any], nonce: int) -> Tx:
    """`task.settle` of `t` with both attestations signed by the attacker's own miners for
    WASHED_TOKENS tokens nobody generated."""
    chain_id = chain.genesis.chain_id
    tid = task_id(chain_id, t)
    gen_addr, _ = pair(chain, t)
    gen, chk = (A1, A2) if gen_addr == A1.address else (A2, A1)
    common = {"task": tid, "output_hash": output_hash([0] * WASHED_TOKENS)}
    common["tokens"] = WASHED_TOKENS
    g = sign_attestation(
        chain_id, gen, **common, role="generator", verdict="generated", commitment=""
    )
    c = sign_attestation(
        chain_id, chk, **common, role="checker", verdict="confirmed", commitment="c0ffee"
    )
    return settle(chain, t, (g, c), sender=WASHER, nonce=nonce)


def honest_settle(chain: PowrChain, slot: int, sender_nonce: int) -> Tx | None:
    """A real consumer's task in `slot` of its book at HONEST_BOOK, served by whichever two
    miners the slot draws; None when the draw falls on an attacker's miner (they would not serve
    it honestly in this story)."""
    t = ticket(chain, CONSUMER, nonce=slot, ref_height=HONEST_BOOK, max_tokens=HONEST_TOKENS)
    picked = pair(chain, t)
    keys = {kp.address: kp for kp in (M1, M2, M3)}
    if not set(picked) <= keys.keys():
        return None
    atts = attest(chain, t, tokens=HONEST_TOKENS, miners=(keys[picked[0]], keys[picked[1]]))
    return settle(chain, t, atts, nonce=sender_nonce)


def play(attack: bool) -> tuple[PowrChain, int, int]:
    """Epoch 1 (heights 5-8) of a `market`, closed at 9: the validators score SMOL and GEMMA,
    honest consumers pay for a few SMOL tasks (slots booked at 6), and with `attack` the
    attacker washes WASHES tickets through its two miners, up to two in block 7 and the rest in
    block 8, each in a slot of its books that drew them. It books at 6 the slots that give
    WASHES lucky draws on average (one in `pairs`: C(5, 2) with five miners); when those drew
    too few, it books more at 7, four times the average of what it still needs, so the story
    does not hang on one block's hash. (the chain, the attacker's net in units, the slots it
    bought)."""
    chain = market()  # tip: height 4
    chain.commit(
        [
            chain.send(CREATOR, "transfer", {"to": WASHER.address, "amount": 20 * DN}),
            chain.send(OTHER, "transfer", {"to": A1.address, "amount": 20 * DN}),
            chain.send(M3, "transfer", {"to": A2.address, "amount": 20 * DN}),
        ]
        + [chain.commit_scores(kp, 1, s) for kp, s in HONEST.items()]
    )  # block 5
    before = sum(holdings(chain, kp) for kp in ATTACKER)
    pairs = math.comb(5, 2)  # M1, M2, M3, A1 and A2: one pair of the ten is the attacker's
    bought = WASHES * pairs if attack else 0
    txs = [book_tx(chain, CONSUMER, slots=HONEST_SLOTS)]
    if attack:
        txs += [chain.register_miner(kp, models=[SMOL]) for kp in (A1, A2)]
        txs.append(chain.send(WASHER, "escrow.deposit", {"amount": 10 * DN}))
        txs.append(
            book_tx(
                chain, WASHER, slots=bought, nonce=chain.nonce(WASHER) + 1, max_price=WASH_PRICE
            )
        )
    chain.commit(txs)  # block 6: the attacker's miners serve SMOL from here
    assert chain.tip.height == HONEST_BOOK
    if attack:
        assert len(eligible_miners(chain.state, SMOL, HONEST_BOOK)) == 5
    lucky = lucky_slots(chain, HONEST_BOOK) if attack else []
    wash: list[Tx] = []
    honest: list[Tx] = []
    slots = iter(range(HONEST_SLOTS))
    for height in (7, 8):
        block_txs = []
        for i in range(2):
            found = None
            while found is None:
                found = honest_settle(chain, next(slots), chain.nonce(GATEWAY) + i)
            block_txs.append(found)
        honest += block_txs
        top_up = 0
        if attack:
            take = lucky[: 2 if height == 7 else WASHES - len(wash)]
            lucky = lucky[len(take) :]
            nonce = chain.nonce(WASHER)
            for n, t in enumerate(take, start=nonce):
                block_txs.append(washed(chain, t, n))
            wash += block_txs[len(block_txs) - len(take) :]
            need = WASHES - len(wash) - len(lucky)
            if height == 7 and need > 0:  # too few lucky slots: buy more for block 8
                top_up = min(books.MAX_SLOTS, 4 * need * pairs)
                block_txs.append(
                    book_tx(
                        chain, WASHER, slots=top_up, nonce=nonce + len(take), max_price=WASH_PRICE
                    )
                )
                bought += top_up
        if chain.tip.height + 1 == E + 3:  # the first reveal height of epoch 1
            block_txs += [chain.reveal(kp, 1, s) for kp, s in HONEST.items()]
        chain.commit(block_txs)
        if top_up:
            lucky += lucky_slots(chain, chain.tip.height)
    chain.advance_to(2 * E + 1)  # epoch 1 closes at the start of block 9
    after = sum(holdings(chain, kp) for kp in ATTACKER)
    return chain, after - before, bought


def honest_emission(chain: PowrChain) -> int:
    honest = (M1.address, M2.address, M3.address)
    credits = chain.result(1)["credits"]
    return sum(c["amount"] for c in credits if c["address"] in honest and c["reason"] == "miner")


def verified(chain: PowrChain, tmp_path: Path) -> None:
    """Every block replayed into a store from genesis, then `dn chain verify` on it."""
    store = Store.create(tmp_path / "chain.db", chain.genesis)
    state = DictState(genesis_state(chain.genesis))
    parent = genesis_block(chain.genesis)
    for block in chain.blocks:
        applied = apply_block(state, parent.header, parent.hash, block, chain.genesis)
        state.update(applied.changes)
        store.commit_block(block, applied.changes)
        parent = block
    assert state.data == chain.state.data
    assert supply_holds(chain.state.items())
    report = verify_store(store, genesis=chain.genesis)
    assert report["ok"], report["problems"]
    store.close()


def test_wash_tasks_through_the_attackers_own_miners_lose_money(tmp_path: Path) -> None:
    clean, _, _ = play(attack=False)
    chain, net, bought = play(attack=True)
    verified(chain, tmp_path)
    washed_tasks = [
        t
        for t in chain.state.items()
        if t[0].startswith("task:") and t[1]["consumer"] == WASHER.address
    ]
    assert len(washed_tasks) == WASHES and all(
        t[1]["tokens"] == WASHED_TOKENS for t in washed_tasks
    )
    assert bought >= WASHES
    paid = sum(
        t.fee
        for b in chain.blocks
        for t in b.txs
        if t.kind == "task.book" and t.sender == WASHER.address
    )
    assert paid == bought * chain.min_fee  # each slot paid for, drawn on its miners or not
    print(f"attacker's net over the epoch: {net} units ({net / DN:+.6f} DN), {bought} slots")
    assert net <= 0, f"wash trading earned the attacker {net / DN:.4f} DN"
    # and it loses even before the slot fees: the usage cap alone takes the profit away
    assert net + paid <= 0
    # What the emission gave its miners is at most a third of what its tasks burned.
    burned = sum(t[1]["burned"] for t in washed_tasks)
    taken = sum(c["amount"] for c in chain.result(1)["credits"] if c["address"] in OURS)
    assert 0 < taken <= burned * 3_333 // 10_000
    # The honest miners earn what they earned without the attack, to a unit of rounding.
    assert abs(honest_emission(chain) - honest_emission(clean)) <= 2
    assert honest_emission(clean) > 0


# --- whatever the epoch: the bound behind it ----------------------------------------------------

ATK = "attacker"
QUALITY = st.integers(100_000, 1_000_000)  # a model worth washing has some quality


@st.composite
def washes(draw: st.DrawFn) -> tuple[EpochInputs, EpochParams, int, int]:
    """An epoch where ATK is the creator and sole backer of model "m" (with honest miners and
    other models beside it, scored by one validator), and a wash: n tasks confirmed by ATK's own
    miners whose fee split burned `extra` units. (inputs, params, n, extra)."""
    tasks = draw(st.integers(0, 40))
    confirmed = draw(st.integers((tasks + 1) // 2, tasks))  # success at or above neutral
    honest = draw(st.dictionaries(st.sampled_from(["h1", "h2"]), st.integers(1, 10**9)))
    models = {"m": ModelEpoch(ATK, tasks, confirmed, honest, {ATK: 1})}
    scores = {"m": draw(QUALITY)}
    for other in draw(st.lists(st.sampled_from(["o1", "o2", "o3"]), unique=True)):
        burned = draw(st.dictionaries(st.sampled_from(["h1", "h3"]), st.integers(1, 10**12)))
        models[other] = ModelEpoch("someone", 1, 1, burned)
        scores[other] = draw(QUALITY)
    creator = draw(st.integers(0, BPS))
    miners = draw(st.integers(0, BPS - creator))
    params = EpochParams(
        epoch_emission=draw(st.integers(10**6, 10**15)),
        validator_share_bps=draw(st.integers(0, BPS - 1)),
        creator_share_bps=creator,
        miner_share_bps=miners,
        backer_share_bps=BPS - creator - miners,
        usage_cap_bps=draw(st.integers(0, 5_000)),
    )
    inputs = EpochInputs(0, {"V": scores}, {"V": 1}, models)
    return inputs, params, draw(st.integers(1, 100)), draw(st.integers(0, 10**12))


def taken_by(inputs: EpochInputs, params: EpochParams, address: str) -> int:
    return sum(c.amount for c in close_epoch(inputs, params).credits if c.address == address)


@settings(max_examples=300, deadline=None)
@given(washes())
def test_washing_earns_at_most_twice_the_capped_burn(
    case: tuple[EpochInputs, EpochParams, int, int],
) -> None:
    """Consumer, both miners, creator and sole backer at once, the attacker's washed tasks earn
    it at most 2 * `powr_usage_cap_bps` of what they burned (its miners' part, and what demand
    moves to its model), up to the ppm steps of demand and score (each worth at most a
    millionth of the models' pot against the model's score share): so it loses money at
    every allowed value, a third of the burn at the default."""
    inputs, params, n, extra = case
    m = inputs.models["m"]
    washed = ModelEpoch(
        m.creator, m.tasks + n, m.confirmed + n, {**m.miners, ATK: extra}, m.backers
    )
    after = dataclasses.replace(inputs, models={**inputs.models, "m": washed})
    gain = taken_by(after, params, ATK) - taken_by(inputs, params, ATK)
    emission = params.epoch_emission
    pot = emission - emission * params.validator_share_bps // BPS
    steps = 40 * pot // 1_000_000 + 4
    assert gain <= 2 * (extra * params.usage_cap_bps // BPS + 1) + steps
