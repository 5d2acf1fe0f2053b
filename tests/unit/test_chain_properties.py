"""Stateful property test: random transfers through a mempool into blocks on a real store.

A small independent model of balances and nonces predicts whether each submitted transfer is
accepted and, if not, with which reason. Invariants: supply is conserved, no balance goes
negative, nonces never go back, the store agrees with the in-memory state, and replaying the
store's canonical chain from genesis reproduces the same state and tip state root.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dn.chain.genesis import Genesis
from dn.chain.ledger import ACCT, SUPPLY, DictState
from dn.chain.mempool import Mempool
from dn.chain.state import apply_block, build_block, genesis_block, genesis_state, supply_holds
from dn.chain.store import Store
from dn.chain.types import Tx
from dn.encoding import MAX_AMOUNT, UNITS_PER_DN
from dn.errors import InvalidTx
from dn.wallet.keys import Keypair

DN = UNITS_PER_DN
KEYS = [Keypair.generate() for _ in range(4)]
VALIDATOR = KEYS[0]
GENESIS = Genesis.build(
    network="devnet",
    time_ms=1000,
    validators=[VALIDATOR.address],
    allocations={KEYS[1].address: 5 * DN, KEYS[2].address: 3 * DN, KEYS[3].address: DN},
)
MIN_FEE = GENESIS.param("min_fee")
BURN_BPS = GENESIS.param("fee_burn_share")

indices = st.integers(min_value=0, max_value=len(KEYS) - 1)
small_amounts = st.integers(min_value=1, max_value=2 * DN)
amounts = st.one_of(small_amounts, small_amounts, st.integers(min_value=1, max_value=MAX_AMOUNT))
fees = st.one_of(
    st.sampled_from([0, MIN_FEE - 1, MIN_FEE, 10 * MIN_FEE]),
    st.integers(min_value=MIN_FEE, max_value=DN),
)
nonce_offsets = st.sampled_from([0] * 8 + [-1, 1, 2])


class ChainMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="dn-chain-prop-"))
        self.store = Store.create(self.dir / "chain.db", GENESIS)
        self.state = DictState(genesis_state(GENESIS))
        self.tip = genesis_block(GENESIS)
        self.mempool = Mempool(
            GENESIS, VALIDATOR.address, self.state, tip_height=0, tip_hash=self.tip.hash
        )
        # The model: balances and nonces as the mempool should see them (committed + pending).
        self.balance = {kp.address: GENESIS.allocations.get(kp.address, 0) for kp in KEYS}
        self.nonce = {kp.address: 0 for kp in KEYS}
        self.burned = 0
        self.committed_nonce = dict(self.nonce)
        self.committed_txs: list[Tx] = []

    # --- rules ----------------------------------------------------------------------------

    @rule(batch=st.lists(st.tuples(indices, indices, amounts, fees, nonce_offsets), max_size=6))
    def submit_transfers(self, batch: list[tuple[int, int, int, int, int]]) -> None:
        for sender, to, amount, fee, offset in batch:
            self._submit(KEYS[sender], KEYS[to].address, amount, fee, offset)

    @rule(pick=st.integers(min_value=0))
    @precondition(lambda self: bool(self.committed_txs))
    def replay_committed(self, pick: int) -> None:
        tx = self.committed_txs[pick % len(self.committed_txs)]
        self._assert_refused(tx, "nonce-too-low")

    @rule(sender=indices, bump=st.integers(min_value=1, max_value=DN))
    def submit_forged(self, sender: int, bump: int) -> None:
        src = KEYS[sender]
        tx = Tx.create(
            src,
            chain_id=GENESIS.chain_id,
            kind="transfer",
            nonce=self.nonce[src.address],
            fee=MIN_FEE,
            payload={"to": KEYS[0].address, "amount": 1},
        )
        raw = tx.to_json()
        raw["payload"]["amount"] += bump
        self._assert_refused(Tx.from_json(raw), "bad-signature")

    @rule(take=st.one_of(st.none(), st.integers(min_value=0, max_value=5)))
    @precondition(lambda self: len(self.mempool) > 0)
    def commit_block(self, take: int | None) -> None:
        pending = self.mempool.pending()
        candidates = pending if take is None else pending[:take]
        applied, rejected = build_block(
            self.state,
            self.tip.header,
            self.tip.hash,
            candidates,
            VALIDATOR,
            self.tip.header.time + 1000,
            GENESIS,
        )
        # Acceptance order is a valid block order: nothing the mempool took is left out.
        assert rejected == []
        assert [t.id for t in applied.block.txs] == [t.id for t in candidates]
        checked = apply_block(self.state, self.tip.header, self.tip.hash, applied.block, GENESIS)
        assert checked.changes == applied.changes
        event(f"block with {'no' if not candidates else 'some'} txs")
        self.store.commit_block(applied.block, applied.changes)
        self.state.update(applied.changes)
        self.tip = applied.block
        self.committed_txs.extend(applied.block.txs)
        dropped = self.mempool.reset(
            self.state,
            [t.id for t in applied.block.txs],
            tip_height=applied.block.height,
            tip_hash=applied.block.hash,
        )
        assert dropped == []
        assert [t.id for t in self.mempool.pending()] == [t.id for t in pending[len(candidates) :]]
        if not self.mempool.pending():
            # With nothing pending, the committed state is exactly the model.
            for address, balance in self.balance.items():
                assert self._acct(address) == {"balance": balance, "nonce": self.nonce[address]}
            assert self.state.get(SUPPLY)["burned"] == self.burned

    # --- invariants -----------------------------------------------------------------------

    @invariant()
    def supply_is_conserved(self) -> None:
        assert supply_holds(self.state.items())
        assert sum(self.balance.values()) + self.burned == GENESIS.supply

    @invariant()
    def balances_are_never_negative(self) -> None:
        for key, value in self.state.items():
            if key.startswith(ACCT):
                assert 0 <= value["balance"] <= MAX_AMOUNT
                assert value["nonce"] >= 0

    @invariant()
    def nonces_never_go_back(self) -> None:
        for address, before in self.committed_nonce.items():
            now = self._acct(address)["nonce"]
            assert now >= before
            self.committed_nonce[address] = now

    @invariant()
    def store_matches_memory(self) -> None:
        assert self.store.tip().hash == self.tip.hash
        assert self.store.load_state() == self.state.data

    def teardown(self) -> None:
        try:
            self._check_replay()
        finally:
            self.store.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- helpers --------------------------------------------------------------------------

    def _acct(self, address: str) -> dict[str, int]:
        found = self.state.get(ACCT + address)
        return found if found is not None else {"balance": 0, "nonce": 0}

    def _submit(self, src: Keypair, dst: str, amount: int, fee: int, offset: int) -> None:
        nonce = self.nonce[src.address] + offset
        if nonce < 0:
            nonce = self.nonce[src.address] + 1
        tx = Tx.create(
            src,
            chain_id=GENESIS.chain_id,
            kind="transfer",
            nonce=nonce,
            fee=fee,
            payload={"to": dst, "amount": amount},
        )
        expected = self._predict(src.address, nonce, fee, amount)
        event(f"transfer: {expected or 'accepted'}")
        if expected is None:
            self.mempool.add(tx)
            self._apply_to_model(src.address, dst, fee, amount)
            assert self.mempool.pending_nonce(src.address) == self.nonce[src.address]
        else:
            self._assert_refused(tx, expected)

    def _predict(self, sender: str, nonce: int, fee: int, amount: int) -> str | None:
        """The reason the mempool must give, in apply_tx's order of checks; None if valid."""
        if fee < MIN_FEE:
            return "fee-too-low"
        if nonce < self.nonce[sender]:
            return "nonce-too-low"
        if nonce > self.nonce[sender]:
            return "nonce-gap"
        if self.balance[sender] < fee + amount:
            return "insufficient-funds"
        return None

    def _apply_to_model(self, sender: str, to: str, fee: int, amount: int) -> None:
        burned = fee * BURN_BPS // 10_000
        self.balance[sender] -= fee + amount
        self.nonce[sender] += 1
        self.balance[to] += amount
        self.balance[VALIDATOR.address] += fee - burned
        self.burned += burned

    def _assert_refused(self, tx: Tx, reason: str) -> None:
        before_state = copy.deepcopy(self.state.data)
        before_pending = [t.id for t in self.mempool.pending()]
        before_nonces = {a: self.mempool.pending_nonce(a) for a in self.nonce}
        try:
            self.mempool.add(tx)
        except InvalidTx as exc:
            assert exc.reason == reason, (exc.reason, reason, exc.message)
        else:
            raise AssertionError(f"accepted a transaction that should fail with {reason}")
        assert [t.id for t in self.mempool.pending()] == before_pending
        assert {a: self.mempool.pending_nonce(a) for a in self.nonce} == before_nonces
        assert self.state.data == before_state

    def _check_replay(self) -> None:
        """Replaying the canonical chain from genesis gives the same state and tip root."""
        replayed = DictState(genesis_state(GENESIS))
        parent = genesis_block(GENESIS)
        heights: list[int] = []
        for block in self.store.iter_canonical(1):
            applied = apply_block(replayed, parent.header, parent.hash, block, GENESIS)
            replayed.update(applied.changes)
            heights.append(block.height)
            parent = block
        assert heights == list(range(1, self.tip.height + 1))
        assert parent.hash == self.store.tip().hash == self.tip.hash
        assert parent.header.state_root == self.tip.header.state_root
        assert replayed.data == self.state.data == self.store.load_state()
        assert self.store.integrity_check() == "ok"


ChainMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=30, deadline=None)
TestChainMachine = ChainMachine.TestCase
