"""The mempool's incremental rebase (dn/chain/mempool.py) against the full one.

After each block the rebase must leave exactly the transactions that still apply, in order, and
the same view of the state, as checking every pending transaction again on the new state (what
`Mempool.reset` did before it became incremental, and still does without `before`).

A random mix of transfers, stakes, unstakes and escrow moves: their rules read the height, and
unlocks pay out at the start of later blocks; withdrawals are also refused in every third block
and move a unit to a user picked by the height, as if their kind had a window. Some are
double-spent by blocks that do not come from the mempool. Blocks of every shape: a prefix of the
mempool (as the node's own producer makes them), a sub-sequence (some then refused by the
block), others' transactions, nothing. Short epochs, so that epoch boundaries (rewards to the
validator) come by too. Two proposers: the block's own (its mempool credits itself the fees) and
another node (the block pays someone else).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from dn.chain import mempool as mempool_module
from dn.chain.genesis import Genesis, default_params
from dn.chain.ledger import DictState, Overlay, credit, debit
from dn.chain.mempool import Mempool, same
from dn.chain.state import RULES, Rule, build_block, genesis_block, genesis_state
from dn.chain.types import Block, Tx
from dn.encoding import UNITS_PER_DN
from dn.errors import InvalidTx
from dn.wallet.keys import Keypair

DN = UNITS_PER_DN
V = Keypair.from_seed(b"V" * 32)  # the validator: proposes every block
N = Keypair.from_seed(b"N" * 32)  # a node that only relays (its mempool's fees go nowhere real)
USERS = [Keypair.from_seed(bytes([65 + i]) * 32) for i in range(4)]
SENDERS = [*USERS, V]
PARAMS = {
    **default_params(),
    "epoch_blocks": 4,
    "unbonding_blocks": 1,
    "escrow_unlock_blocks": 2,
    "ticket_window_blocks": 1,
    "stake_min": 1,
    "min_fee": 10,
}
GENESIS = Genesis.build(
    network="devnet",
    time_ms=1000,
    validators=[V.address],
    allocations={kp.address: (i + 1) * 3 * DN for i, kp in enumerate(USERS)} | {V.address: DN},
    params=PARAMS,
)
MIN_FEE = PARAMS["min_fee"]

KINDS = ["transfer"] * 5 + ["stake", "unstake"] + ["escrow.deposit", "escrow.withdraw"] * 2
amounts = st.one_of(
    st.integers(min_value=1, max_value=DN // 10),
    st.integers(min_value=1, max_value=4 * DN),  # sometimes more than is there
)
tx_specs = st.tuples(
    st.integers(0, len(SENDERS) - 1),  # sender
    st.sampled_from(KINDS),
    st.integers(0, len(SENDERS) - 1),  # recipient of a transfer
    amounts,
    st.sampled_from([MIN_FEE, MIN_FEE, 3 * MIN_FEE, 2 * DN]),  # fee
    st.sampled_from([0] * 6 + [-1, 1]),  # nonce offset from the next pending one
)


def make_tx(spec: tuple[int, str, int, int, int, int], nonce: int) -> Tx:
    sender, kind, to, amount, fee, _ = spec
    payload: dict[str, Any]
    if kind == "transfer":
        payload = {"to": SENDERS[to].address, "amount": amount}
    elif kind in ("stake", "unstake"):
        payload = {"target": V.address, "amount": amount}
    else:
        payload = {"amount": amount}
    return Tx.create(
        SENDERS[sender],
        chain_id=GENESIS.chain_id,
        kind=kind,
        nonce=max(0, nonce),
        fee=fee,
        payload=payload,
    )


def rebuilt(proposer: str, state: DictState, tip: Block, pending: list[Tx], drop: set[str]):
    """The reference: a fresh mempool on the new state taking every pending transaction that is
    not dropped, in order (the old `reset`, line for line)."""
    fresh = Mempool(GENESIS, proposer, state, tip_height=tip.height, tip_hash=tip.hash)
    dropped = []
    for tx in pending:
        if tx.id in drop:
            continue
        try:
            fresh.add(tx)
        except InvalidTx:
            dropped.append(tx)
    return fresh, dropped


def assert_same_pool(got: Mempool, want: Mempool) -> None:
    assert [tx.id for tx in got.pending()] == [tx.id for tx in want.pending()]
    assert got.height == want.height
    assert got._senders == want._senders  # noqa: SLF001
    view, ref = got._view.changes, want._view.changes  # noqa: SLF001
    assert view.keys() == ref.keys()
    assert all(same(view[key], ref[key]) for key in ref), [
        key for key in ref if not same(view[key], ref[key])
    ]
    for kp in SENDERS:
        assert got.pending_nonce(kp.address) == want.pending_nonce(kp.address)


def windowed(rule: Rule) -> Rule:
    """`rule`, refused in every third block, and moving a unit from the sender to a user that
    depends on the height: a kind whose validity and whose effects on accounts change with the
    height alone (like a PoWR commit's phase), which a rebase must check again and follow."""

    def in_window(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
        if height % 3 == 0:
            raise InvalidTx("closed at this height", reason="window")
        rule(state, tx, genesis, height)
        debit(state, tx.sender, 1, "the window's unit")
        credit(state, USERS[height % len(USERS)].address, 1)

    return in_window


class RebaseMachine(RuleBasedStateMachine):
    """Each proposer's mempool twice, rebased incrementally and fully, block after block; after
    every block both must equal a mempool rebuilt from scratch."""

    @initialize()
    def start(self) -> None:
        self.real_withdraw = RULES["escrow.withdraw"]
        RULES["escrow.withdraw"] = windowed(self.real_withdraw)
        self.state = DictState(genesis_state(GENESIS))
        self.tip: Block = genesis_block(GENESIS)
        self.pools = {
            (who, how): Mempool(GENESIS, who, self.state, tip_height=0, tip_hash=self.tip.hash)
            for who in (V.address, N.address)
            for how in ("incremental", "full")
        }

    @property
    def own(self) -> Mempool:
        return self.pools[(V.address, "incremental")]

    @rule(specs=st.lists(tx_specs, min_size=1, max_size=12))
    def submit(self, specs: list[tuple[int, str, int, int, int, int]]) -> None:
        for spec in specs:
            sender = SENDERS[spec[0]].address
            tx = make_tx(spec, self.pools[(V.address, "full")].pending_nonce(sender) + spec[5])
            for who in (V.address, N.address):
                outcomes = []
                for how in ("incremental", "full"):
                    try:
                        self.pools[(who, how)].add(tx)
                        outcomes.append("accepted")
                    except InvalidTx as exc:
                        outcomes.append(exc.reason)
                assert outcomes[0] == outcomes[1]

    @rule(
        shape=st.sampled_from(["prefix", "prefix", "subsequence", "foreign", "empty"]),
        take=st.integers(min_value=0, max_value=40),
        picks=st.lists(st.booleans(), max_size=40),
        foreign=st.lists(tx_specs, max_size=4),
    )
    def block(
        self,
        shape: str,
        take: int,
        picks: list[bool],
        foreign: list[tuple[int, str, int, int, int, int]],
    ) -> None:
        pending = self.own.pending()
        if shape == "prefix":
            candidates = pending[:take]
        elif shape == "subsequence":
            candidates = [tx for tx, pick in zip(pending, picks, strict=False) if pick]
        elif shape == "foreign":  # others' transactions first: they may double-spend ours
            committed = {kp.address: self._committed_nonce(kp.address) for kp in SENDERS}
            others = []
            for spec in foreign:
                sender = SENDERS[spec[0]].address
                others.append(make_tx(spec, committed[sender]))
                committed[sender] += 1
            candidates = others + pending[:take]
        else:
            candidates = []
        applied, rejected = build_block(
            self.state,
            self.tip.header,
            self.tip.hash,
            candidates,
            V,
            self.tip.header.time + 1000,
            GENESIS,
        )
        block = applied.block
        before = {key: self.state.get(key) for key in applied.changes}
        self.state.update(applied.changes)
        self.tip = block
        # the node drops the block's transactions and, for its own blocks, those it refused
        drop = [tx.id for tx in block.txs]
        if shape != "foreign":
            drop += [tx.id for tx, _ in rejected]
        for who in (V.address, N.address):
            old = self.pools[(who, "full")].pending()
            want, want_dropped = rebuilt(who, self.state, block, old, set(drop))
            for how in ("incremental", "full"):
                pool = self.pools[(who, how)]
                dropped = pool.reset(
                    self.state,
                    drop,
                    tip_height=block.height,
                    tip_hash=block.hash,
                    before=before if how == "incremental" else None,
                )
                assert [tx.id for tx in dropped] == [tx.id for tx in want_dropped]
                assert_same_pool(pool, want)
            event(f"{shape} block: {'some' if want_dropped else 'none'} dropped")

    def _committed_nonce(self, address: str) -> int:
        acct = self.state.get("acct:" + address)
        return int(acct["nonce"]) if acct else 0

    def teardown(self) -> None:
        if hasattr(self, "real_withdraw"):
            RULES["escrow.withdraw"] = self.real_withdraw

    @invariant()
    def twins_agree(self) -> None:
        for who in (V.address, N.address):
            assert_same_pool(self.pools[(who, "incremental")], self.pools[(who, "full")])


RebaseMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestRebase = RebaseMachine.TestCase


# --- what the incremental rebase saves --------------------------------------------------------


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The kinds of the transactions the mempool applies (checks), in order."""
    seen: list[str] = []
    real = mempool_module.apply_tx

    def counting(state: Any, tx: Tx, *args: Any, **kwargs: Any) -> None:
        seen.append(tx.kind)
        real(state, tx, *args, **kwargs)

    monkeypatch.setattr(mempool_module, "apply_tx", counting)
    return seen


def _transfers(count: int) -> list[Tx]:
    out = []
    for nonce in range(count // len(USERS)):
        for i, kp in enumerate(USERS):
            to = USERS[(i + 1) % len(USERS)].address
            out.append(
                Tx.create(
                    kp,
                    chain_id=GENESIS.chain_id,
                    kind="transfer",
                    nonce=nonce,
                    fee=MIN_FEE,
                    payload={"to": to, "amount": 1000 + nonce},
                )
            )
    return out


@given(take=st.integers(min_value=0, max_value=40))
@settings(max_examples=15, deadline=None)
def test_behind_the_nodes_own_block_no_transfer_is_checked_again(take: int) -> None:
    """A block made from the mempool's first transactions (what `Node.produce` makes) changes
    nothing the rest read but what those transactions changed in the old view too: none of the
    rest is applied again, and the result is the full rebase's."""
    seen: list[str] = []
    state = DictState(genesis_state(GENESIS))
    tip = genesis_block(GENESIS)
    pool = Mempool(GENESIS, V.address, state, tip_height=0, tip_hash=tip.hash)
    full = Mempool(GENESIS, V.address, state, tip_height=0, tip_hash=tip.hash)
    for tx in _transfers(40):
        pool.add(tx)
        full.add(tx)
    applied, rejected = build_block(
        state, tip.header, tip.hash, pool.pending(take), V, 2000, GENESIS
    )
    assert rejected == []
    before = {key: state.get(key) for key in applied.changes}
    state.update(applied.changes)
    real = mempool_module.apply_tx

    def counting(view: Any, tx: Tx, *args: Any, **kwargs: Any) -> None:
        seen.append(tx.id)
        real(view, tx, *args, **kwargs)

    drop = [tx.id for tx in applied.block.txs]
    mempool_module.apply_tx = counting
    try:
        assert (
            pool.reset(state, drop, tip_height=1, tip_hash=applied.block.hash, before=before) == []
        )
    finally:
        mempool_module.apply_tx = real
    assert seen == []
    assert full.reset(state, drop, tip_height=1, tip_hash=applied.block.hash) == []
    assert_same_pool(pool, full)


def test_a_block_that_double_spends_a_nonce_drops_that_transaction_only(counted: list[str]) -> None:
    """Another node's block spends a sender's first nonce on something else: that transaction
    no longer applies; the sender's next ones do (the nonce they follow is spent), and so does
    everyone else's."""
    state = DictState(genesis_state(GENESIS))
    tip = genesis_block(GENESIS)
    pool = Mempool(GENESIS, N.address, state, tip_height=0, tip_hash=tip.hash)
    txs = _transfers(40)
    for tx in txs:
        pool.add(tx)
    rival = Tx.create(
        USERS[0], chain_id=GENESIS.chain_id, kind="transfer", nonce=0, fee=MIN_FEE,
        payload={"to": USERS[2].address, "amount": 5},
    )  # fmt: skip
    applied, _ = build_block(state, tip.header, tip.hash, [rival], V, 2000, GENESIS)
    before = {key: state.get(key) for key in applied.changes}
    state.update(applied.changes)
    counted.clear()
    dropped = pool.reset(
        state, [rival.id], tip_height=1, tip_hash=applied.block.hash, before=before
    )
    assert [tx.id for tx in dropped] == [txs[0].id]
    assert len(pool) == len(txs) - 1
    want, _ = rebuilt(N.address, state, applied.block, txs, set())
    assert_same_pool(pool, want)
    assert counted  # the supply and the fees differ from the old view: they are checked again
