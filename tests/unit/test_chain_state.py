"""Transactions, blocks and the mempool against the pure state machine (DESIGN.md sections 4-5).

Every invalid case asserts the exact rejection reason and that nothing changed.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest

from dn.chain.genesis import Genesis
from dn.chain.ledger import ACCT, SUPPLY, DictState, Overlay, account
from dn.chain.mempool import Mempool
from dn.chain.state import (
    apply_block,
    apply_tx,
    build_block,
    genesis_block,
    genesis_state,
    supply_holds,
)
from dn.chain.types import Block, Tx, txs_root
from dn.encoding import UNITS_PER_DN, canonical
from dn.errors import InvalidAddress, InvalidBlock, InvalidTx
from dn.wallet.keys import Keypair

DN = UNITS_PER_DN
V = Keypair.from_seed(b"v" * 32)  # the only validator
A = Keypair.from_seed(b"a" * 32)
B = Keypair.from_seed(b"b" * 32)
C = Keypair.from_seed(b"c" * 32)  # starts with nothing


def make_genesis(**allocs: int) -> Genesis:
    allocations = {A.address: 10 * DN, B.address: 5 * DN}
    allocations.update(allocs)
    return Genesis.build(
        network="devnet", time_ms=1000, validators=[V.address], allocations=allocations
    )


@dataclass
class Env:
    genesis: Genesis
    state: DictState
    mempool: Mempool
    tip: Block

    @property
    def min_fee(self) -> int:
        return self.genesis.param("min_fee")

    def transfer(
        self,
        kp: Keypair,
        to: str,
        amount: int,
        *,
        nonce: int = 0,
        fee: int | None = None,
        chain_id: str | None = None,
    ) -> Tx:
        return Tx.create(
            kp,
            chain_id=chain_id or self.genesis.chain_id,
            kind="transfer",
            nonce=nonce,
            fee=self.min_fee if fee is None else fee,
            payload={"to": to, "amount": amount},
        )

    def balance(self, kp: Keypair) -> int:
        return account(self.state, kp.address)["balance"]

    def nonce(self, kp: Keypair) -> int:
        return account(self.state, kp.address)["nonce"]

    def commit(self, txs: list[Tx], time_ms: int | None = None) -> Block:
        """Build a block on the genesis-or-last block, apply it and move the state on."""
        parent = self.tip
        applied, rejected = build_block(
            self.state,
            parent.header,
            parent.hash,
            txs,
            V,
            time_ms or parent.header.time + 1000,
            self.genesis,
        )
        assert rejected == []
        checked = apply_block(self.state, parent.header, parent.hash, applied.block, self.genesis)
        assert checked.changes == applied.changes
        self.state.update(applied.changes)
        self.tip = applied.block
        return applied.block


@pytest.fixture
def env() -> Env:
    genesis = make_genesis()
    state = DictState(genesis_state(genesis))
    tip = genesis_block(genesis)
    mempool = Mempool(genesis, V.address, state, tip_height=0, tip_hash=tip.hash)
    return Env(genesis, state, mempool, tip)


def assert_rejected(env: Env, tx: Tx, reason: str) -> None:
    """`tx` is refused with `reason` by apply_tx and by the mempool, and changes nothing."""
    before = copy.deepcopy(env.state.data)
    pending = [t.id for t in env.mempool.pending()]
    overlay = Overlay(env.state)
    with pytest.raises(InvalidTx) as exc:
        apply_tx(overlay, tx, env.genesis, V.address, height=env.tip.height + 1)
    assert exc.value.reason == reason, exc.value.message
    assert overlay.changes == {}
    with pytest.raises(InvalidTx) as exc:
        env.mempool.add(tx)
    assert exc.value.reason == reason, exc.value.message
    assert [t.id for t in env.mempool.pending()] == pending
    assert tx.id not in env.mempool
    assert env.state.data == before


def raw_transfer(env: Env, **payload: Any) -> dict[str, Any]:
    raw = env.transfer(A, B.address, DN).to_json()
    raw["payload"] = {**raw["payload"], **payload}
    return raw


# --- valid transfers ------------------------------------------------------------------------


def test_genesis_state_holds_the_allocations(env: Env) -> None:
    assert env.balance(A) == 10 * DN and env.nonce(A) == 0
    assert env.state.get(SUPPLY) == {"genesis": 15 * DN, "emitted": 0, "burned": 0}
    assert supply_holds(env.state.items())


def test_transfer_moves_tokens_and_pays_fees(env: Env) -> None:
    fee = 12_345
    tx = env.transfer(A, C.address, 3 * DN, fee=fee)
    env.mempool.add(tx)
    burned = fee * env.genesis.param("fee_burn_share") // 10_000
    assert burned == 2_469  # 20% of the fee, rounded down
    env.commit(env.mempool.pending())
    assert env.balance(A) == 10 * DN - 3 * DN - fee
    assert env.nonce(A) == 1
    assert env.balance(C) == 3 * DN
    assert env.balance(V) == fee - burned
    assert env.state.get(SUPPLY)["burned"] == burned
    assert env.nonce(B) == 0 and env.balance(B) == 5 * DN
    assert supply_holds(env.state.items())


def test_fees_accumulate_over_several_transactions(env: Env) -> None:
    txs = [env.transfer(A, B.address, DN, nonce=n, fee=env.min_fee * (n + 1)) for n in range(3)]
    env.commit(txs)
    total = sum(t.fee for t in txs)
    burned = sum(t.fee * 2000 // 10_000 for t in txs)
    assert env.state.get(SUPPLY)["burned"] == burned
    assert env.balance(V) == total - burned
    assert env.nonce(A) == 3
    assert supply_holds(env.state.items())


def test_spending_the_whole_balance_is_allowed(env: Env) -> None:
    tx = env.transfer(B, C.address, 5 * DN - env.min_fee)
    env.commit([tx])
    assert env.balance(B) == 0 and env.balance(C) == 5 * DN - env.min_fee


def test_transfer_to_self_only_costs_the_fee(env: Env) -> None:
    env.commit([env.transfer(A, A.address, 4 * DN)])
    assert env.balance(A) == 10 * DN - env.min_fee
    assert env.nonce(A) == 1


# --- invalid transactions -------------------------------------------------------------------


def test_wrong_chain_id(env: Env) -> None:
    assert_rejected(
        env, env.transfer(A, B.address, DN, chain_id="devnet-000000000000"), "wrong-chain-id"
    )


def test_transaction_from_another_network_is_refused(env: Env) -> None:
    other = make_genesis(**{C.address: 1})
    assert other.chain_id != env.genesis.chain_id
    tx = Tx.create(
        A,
        chain_id=other.chain_id,
        kind="transfer",
        nonce=0,
        fee=env.min_fee,
        payload={"to": B.address, "amount": DN},
    )
    assert_rejected(env, tx, "wrong-chain-id")
    # Rewriting the chain id breaks the signature: it covers the chain id.
    raw = tx.to_json()
    raw["chain_id"] = env.genesis.chain_id
    assert_rejected(env, Tx.from_json(raw), "bad-signature")


def test_signed_by_another_key_but_claiming_the_sender(env: Env) -> None:
    body = Tx.unsigned_body(
        env.genesis.chain_id,
        "transfer",
        A.address,
        0,
        env.min_fee,
        {"to": B.address, "amount": DN},
    )
    raw = {**body, "sig": B.sign(canonical(body)).hex()}
    assert_rejected(env, Tx.from_json(raw), "bad-signature")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda raw: raw["payload"].__setitem__("amount", raw["payload"]["amount"] + 1),
        lambda raw: raw["payload"].__setitem__("to", C.address),
        lambda raw: raw.__setitem__("fee", raw["fee"] + 1),
        lambda raw: raw.__setitem__("nonce", 1),
        lambda raw: raw.__setitem__("sig", "00" * 64),
    ],
)
def test_changed_after_signing(env: Env, mutate: Any) -> None:
    raw = env.transfer(A, B.address, DN).to_json()
    mutate(raw)
    assert_rejected(env, Tx.from_json(raw), "bad-signature")


def test_replayed_nonce(env: Env) -> None:
    tx = env.transfer(A, B.address, DN)
    env.commit([tx])
    assert_rejected(env, tx, "nonce-too-low")
    assert_rejected(env, env.transfer(A, B.address, 2 * DN, nonce=0), "nonce-too-low")


def test_nonce_gap(env: Env) -> None:
    assert_rejected(env, env.transfer(A, B.address, DN, nonce=1), "nonce-gap")
    assert_rejected(env, env.transfer(A, B.address, DN, nonce=2**63 - 1), "nonce-gap")


def test_overspend(env: Env) -> None:
    assert_rejected(env, env.transfer(B, A.address, 5 * DN - env.min_fee + 1), "insufficient-funds")
    assert_rejected(env, env.transfer(B, A.address, 2**63 - 1), "insufficient-funds")
    assert_rejected(env, env.transfer(C, A.address, 1), "insufficient-funds")


def test_fee_below_minimum(env: Env) -> None:
    assert env.min_fee == 1_000
    assert_rejected(env, env.transfer(A, B.address, DN, fee=env.min_fee - 1), "fee-too-low")
    assert_rejected(env, env.transfer(A, B.address, DN, fee=0), "fee-too-low")


def test_duplicate_in_mempool(env: Env) -> None:
    tx = env.transfer(A, B.address, DN)
    env.mempool.add(tx)
    view_nonce = env.mempool.pending_nonce(A.address)
    with pytest.raises(InvalidTx) as exc:
        env.mempool.add(Tx.from_json(tx.to_json()))
    assert exc.value.reason == "duplicate"
    assert len(env.mempool) == 1
    assert env.mempool.pending_nonce(A.address) == view_nonce == 1


def make_env_raw() -> dict[str, Any]:
    genesis = make_genesis()
    return Tx.create(
        A,
        chain_id=genesis.chain_id,
        kind="transfer",
        nonce=0,
        fee=1000,
        payload={"to": B.address, "amount": DN},
    ).to_json()


def test_unknown_kind() -> None:
    raw = make_env_raw()
    raw["kind"] = "transfer.v2"
    with pytest.raises(InvalidTx) as exc:
        Tx.from_json(raw)
    assert exc.value.reason == "unknown-kind"


def test_extra_top_level_field() -> None:
    raw = make_env_raw()
    raw["memo"] = "hi"
    with pytest.raises(InvalidTx) as exc:
        Tx.from_json(raw)
    assert exc.value.reason == "unknown-field"


def test_missing_field() -> None:
    raw = make_env_raw()
    del raw["fee"]
    with pytest.raises(InvalidTx) as exc:
        Tx.from_json(raw)
    assert exc.value.reason == "malformed"


def test_extra_payload_field(env: Env) -> None:
    with pytest.raises(InvalidTx) as exc:
        Tx.from_json(raw_transfer(env, memo="hi"))
    assert exc.value.reason == "unknown-field"


@pytest.mark.parametrize("amount", [1.0, 1.5, "5", "1000000000", 0, -1, 2**63, True, None, [1]])
def test_bad_amount_in_payload(env: Env, amount: object) -> None:
    with pytest.raises(InvalidTx) as exc:
        Tx.from_json(raw_transfer(env, amount=amount))
    assert exc.value.reason == "bad-payload"


def test_largest_amount_parses(env: Env) -> None:
    assert Tx.from_json(raw_transfer(env, amount=2**63 - 1)).payload["amount"] == 2**63 - 1


def _typos(address: str) -> list[str]:
    out = []
    for pos in (3, 20, len(address) - 1):
        out.append(address[:pos] + ("q" if address[pos] != "q" else "p") + address[pos + 1 :])
    return out + [address.upper(), "dn1", ""]


def test_mistyped_recipient_is_never_accepted(env: Env) -> None:
    for typo in _typos(B.address):
        with pytest.raises((InvalidTx, InvalidAddress)):
            Tx.from_json(raw_transfer(env, to=typo))
    with pytest.raises(InvalidTx) as exc:
        Tx.from_json(raw_transfer(env, to=5))
    assert exc.value.reason == "bad-payload"


@pytest.mark.parametrize("index", range(6))
def test_mistyped_recipient_is_bad_payload(env: Env, index: int) -> None:
    typo = _typos(B.address)[index]
    with pytest.raises(InvalidTx) as exc:
        Tx.from_json(raw_transfer(env, to=typo))
    assert exc.value.reason == "bad-payload"


def test_block_with_mistyped_recipient_is_an_invalid_block(env: Env) -> None:
    tx = env.transfer(A, B.address, DN)
    applied, _ = build_block(env.state, env.tip.header, env.tip.hash, [tx], V, 2000, env.genesis)
    raw = applied.block.to_json()
    raw["txs"][0]["payload"]["to"] = _typos(B.address)[0]
    with pytest.raises(InvalidBlock) as exc:
        Block.from_json(raw)
    assert exc.value.reason == "bad-tx"


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("nonce", -1, "bad-field"),
        ("nonce", 1.0, "bad-field"),
        ("fee", "1000", "bad-field"),
        ("fee", 2**63, "bad-field"),
        ("sender", "dn1nope", "bad-address"),
        ("sig", "zz", "bad-signature"),
        ("sig", "00" * 63, "bad-signature"),
        ("chain_id", 7, "bad-field"),
    ],
)
def test_bad_top_level_fields(field: str, value: object, reason: str) -> None:
    raw = make_env_raw()
    raw[field] = value
    with pytest.raises(InvalidTx) as exc:
        Tx.from_json(raw)
    assert exc.value.reason == reason


def test_tx_id_is_the_hash_of_the_signed_form(env: Env) -> None:
    tx = env.transfer(A, B.address, DN)
    again = Tx.from_json(tx.to_json())
    assert again.id == tx.id and len(tx.id) == 64
    assert env.transfer(A, B.address, DN + 1).id != tx.id


# --- mempool --------------------------------------------------------------------------------


def test_second_tx_is_checked_against_what_the_first_leaves(env: Env) -> None:
    first = env.transfer(A, B.address, 7 * DN)
    env.mempool.add(first)
    # 10 DN - 7 DN - fee left: 3 DN more does not fit, but the state alone would allow it.
    second = env.transfer(A, B.address, 3 * DN, nonce=1)
    apply_tx(
        Overlay(env.state), env.transfer(A, B.address, 3 * DN), env.genesis, V.address, height=1
    )
    with pytest.raises(InvalidTx) as exc:
        env.mempool.add(second)
    assert exc.value.reason == "insufficient-funds"
    assert len(env.mempool) == 1
    fits = env.transfer(A, B.address, 3 * DN - 2 * env.min_fee, nonce=1)
    env.mempool.add(fits)
    assert [t.id for t in env.mempool.pending()] == [first.id, fits.id]
    assert env.mempool.pending_nonce(A.address) == 2


def test_received_funds_can_be_spent_while_pending(env: Env) -> None:
    env.mempool.add(env.transfer(A, C.address, 2 * DN))
    env.mempool.add(env.transfer(C, B.address, DN))
    applied, rejected = build_block(
        env.state, env.tip.header, env.tip.hash, env.mempool.pending(), V, 2000, env.genesis
    )
    assert rejected == [] and len(applied.block.txs) == 2


def test_reset_after_a_block_drops_included_txs(env: Env) -> None:
    a0 = env.transfer(A, B.address, DN)
    a1 = env.transfer(A, B.address, DN, nonce=1)
    b0 = env.transfer(B, A.address, DN)
    for tx in (a0, a1, b0):
        env.mempool.add(tx)
    block = env.commit([a0, b0])
    dropped = env.mempool.reset(
        env.state, [tx.id for tx in block.txs], tip_height=block.height, tip_hash=block.hash
    )
    assert dropped == []
    assert [t.id for t in env.mempool.pending()] == [a1.id]
    assert env.mempool.pending_nonce(A.address) == 2
    assert env.mempool.pending_nonce(B.address) == 1


def test_reset_without_drop_list_still_drops_what_no_longer_applies(env: Env) -> None:
    a0 = env.transfer(A, B.address, DN)
    env.mempool.add(a0)
    rival = env.transfer(A, C.address, 9 * DN)  # the same nonce, included elsewhere
    env.commit([rival])
    dropped = env.mempool.reset(env.state, tip_height=env.tip.height, tip_hash=env.tip.hash)
    assert [t.id for t in dropped] == [a0.id]
    assert len(env.mempool) == 0
    assert env.mempool.pending_nonce(A.address) == 1


# --- blocks ---------------------------------------------------------------------------------


@pytest.fixture
def candidate(env: Env) -> Block:
    """A valid block 1 with one transfer, not yet applied."""
    tx = env.transfer(A, B.address, DN)
    applied, rejected = build_block(
        env.state, env.tip.header, env.tip.hash, [tx], V, 2000, env.genesis
    )
    assert rejected == []
    return applied.block


def assert_block_rejected(env: Env, block: Block, reason: str, now_ms: int | None = None) -> None:
    before = copy.deepcopy(env.state.data)
    with pytest.raises(InvalidBlock) as exc:
        apply_block(env.state, env.tip.header, env.tip.hash, block, env.genesis, now_ms=now_ms)
    assert exc.value.reason == reason, exc.value.message
    assert env.state.data == before


def forge(block: Block, signer: Keypair = V, txs: list[Tx] | None = None, **changes: Any) -> Block:
    header = dataclasses.replace(block.header, **changes)
    return Block.seal(header, list(block.txs) if txs is None else txs, signer)


def test_valid_block_applies(env: Env, candidate: Block) -> None:
    applied = apply_block(env.state, env.tip.header, env.tip.hash, candidate, env.genesis)
    assert candidate.header.height == 1 and candidate.header.difficulty == 2
    assert candidate.header.prev == env.tip.hash
    assert set(applied.changes) == {ACCT + A.address, ACCT + B.address, ACCT + V.address, SUPPLY}
    state = DictState(copy.deepcopy(env.state.data))
    state.update(applied.changes)
    assert supply_holds(state.items())


def test_empty_block_applies_and_changes_nothing(env: Env) -> None:
    block = env.commit([])
    assert block.txs == () and block.header.txs_root == env.genesis.empty_txs_root
    assert env.state.data == genesis_state(env.genesis)


def test_bad_state_root(env: Env, candidate: Block) -> None:
    assert_block_rejected(env, forge(candidate, state_root="00" * 32), "bad-state-root")


def test_bad_txs_root(env: Env, candidate: Block) -> None:
    assert_block_rejected(env, forge(candidate, txs_root=txs_root([])), "bad-txs-root")
    # Transactions swapped under a sealed header.
    other = env.transfer(A, B.address, 2 * DN)
    swapped = Block(candidate.header, candidate.sig, (other,), candidate.hash)
    assert_block_rejected(env, swapped, "bad-txs-root")


def test_bad_block_signature(env: Env, candidate: Block) -> None:
    assert_block_rejected(env, forge(candidate, signer=A), "bad-signature")
    flipped = bytes([candidate.sig[0] ^ 1]) + candidate.sig[1:]
    assert_block_rejected(
        env, Block(candidate.header, flipped, candidate.txs, candidate.hash), "bad-signature"
    )
    changed = dataclasses.replace(candidate.header, time=candidate.header.time + 1)
    assert_block_rejected(
        env, Block(changed, candidate.sig, candidate.txs, candidate.hash), "bad-signature"
    )


def test_proposer_not_a_validator(env: Env, candidate: Block) -> None:
    assert_block_rejected(env, forge(candidate, signer=A, proposer=A.address), "not-validator")


def test_wrong_chain_id_block(env: Env, candidate: Block) -> None:
    assert_block_rejected(env, forge(candidate, chain_id="devnet-000000000000"), "wrong-chain-id")


def test_wrong_prev(env: Env, candidate: Block) -> None:
    assert_block_rejected(env, forge(candidate, prev="ab" * 32), "bad-prev")


def test_wrong_height(env: Env, candidate: Block) -> None:
    assert_block_rejected(env, forge(candidate, height=2), "bad-height")


def test_wrong_difficulty(env: Env, candidate: Block) -> None:
    assert_block_rejected(env, forge(candidate, difficulty=1), "bad-difficulty")


def test_time_not_after_parent(env: Env, candidate: Block) -> None:
    assert env.tip.header.time == 1000
    assert_block_rejected(env, forge(candidate, time=1000), "bad-time")
    assert_block_rejected(env, forge(candidate, time=999), "bad-time")


def test_future_block(env: Env, candidate: Block) -> None:
    limit = env.genesis.param("max_future_ms")
    t = candidate.header.time
    assert_block_rejected(env, candidate, "future-block", now_ms=t - limit - 1)
    # Exactly at the limit is still fine.
    apply_block(env.state, env.tip.header, env.tip.hash, candidate, env.genesis, now_ms=t - limit)


def test_block_with_an_invalid_tx(env: Env, candidate: Block) -> None:
    gap = env.transfer(A, B.address, DN, nonce=5)
    bad = forge(candidate, txs=[gap], txs_root=txs_root([gap]))
    assert_block_rejected(env, bad, "bad-tx")
    # One good tx followed by an overspend: the good one's changes are not kept either.
    good = env.transfer(A, B.address, DN)
    over = env.transfer(A, B.address, 9 * DN, nonce=1)
    bad = forge(candidate, txs=[good, over], txs_root=txs_root([good, over]))
    assert_block_rejected(env, bad, "bad-tx")
    forged = env.transfer(A, B.address, DN).to_json()
    forged["payload"]["amount"] = 2 * DN
    bad_sig = Tx.from_json(forged)
    bad = forge(candidate, txs=[bad_sig], txs_root=txs_root([bad_sig]))
    assert_block_rejected(env, bad, "bad-tx")


def test_same_tx_twice_in_a_block(env: Env, candidate: Block) -> None:
    tx = candidate.txs[0]
    bad = forge(candidate, txs=[tx, tx], txs_root=txs_root([tx, tx]))
    assert_block_rejected(env, bad, "duplicate-tx")


def test_build_block_leaves_out_what_does_not_apply(env: Env) -> None:
    good = env.transfer(A, B.address, DN)
    gap = env.transfer(B, A.address, DN, nonce=3)
    poor = env.transfer(C, A.address, DN)
    applied, rejected = build_block(
        env.state, env.tip.header, env.tip.hash, [gap, good, poor], V, 2000, env.genesis
    )
    assert [t.id for t in applied.block.txs] == [good.id]
    assert [(t.id, e.reason) for t, e in rejected] == [
        (gap.id, "nonce-gap"),
        (poor.id, "insufficient-funds"),
    ]
    apply_block(env.state, env.tip.header, env.tip.hash, applied.block, env.genesis)


def test_build_block_time_is_after_parent(env: Env) -> None:
    applied, _ = build_block(env.state, env.tip.header, env.tip.hash, [], V, 0, env.genesis)
    assert applied.block.header.time == env.tip.header.time + 1
    apply_block(env.state, env.tip.header, env.tip.hash, applied.block, env.genesis)


def test_chain_of_blocks_links_roots(env: Env) -> None:
    b1 = env.commit([env.transfer(A, B.address, DN)])
    b2 = env.commit([env.transfer(A, B.address, DN, nonce=1)])
    assert b2.header.prev == b1.hash and b2.header.height == 2
    assert b2.header.state_root != b1.header.state_root
    # Block 2 does not fit on genesis.
    g = genesis_block(env.genesis)
    with pytest.raises(InvalidBlock) as exc:
        apply_block(DictState(genesis_state(env.genesis)), g.header, g.hash, b2, env.genesis)
    assert exc.value.reason == "bad-prev"


def test_every_kind_on_the_wire_has_its_rule() -> None:
    """A kind that parses but had no rule would fail inside apply_tx instead of being refused."""
    from dn.chain.state import RULES
    from dn.chain.types import PAYLOADS

    assert set(RULES) == set(PAYLOADS)
