"""Rolling the canonical chain back with the undo log, as a branch switch needs."""

from __future__ import annotations

import pytest

from dn.chain.genesis import Genesis
from dn.chain.ledger import DictState
from dn.chain.state import apply_block, build_block
from dn.chain.store import Store
from dn.chain.types import Tx
from dn.chain.verify import verify_store
from dn.errors import StoreError
from dn.wallet.keys import Keypair


@pytest.fixture
def chain(tmp_path):
    validator, alice, bob = Keypair.generate(), Keypair.generate(), Keypair.generate()
    genesis = Genesis.build(
        network="devnet",
        time_ms=1000,
        validators=[validator.address],
        allocations={alice.address: 10**12},
    )
    store = Store.create(tmp_path / "chain.sqlite", genesis)
    return store, genesis, validator, alice, bob


def _extend(store, genesis, validator, sender, to, amounts, nonce0, t0):
    """Append one block per amount; return the state snapshot after each block."""
    state = DictState(store.load_state())
    snapshots = []
    for i, amount in enumerate(amounts):
        tip = store.tip()
        tx = Tx.create(
            sender,
            chain_id=genesis.chain_id,
            kind="transfer",
            nonce=nonce0 + i,
            fee=1000,
            payload={"to": to, "amount": amount},
        )
        applied, rejected = build_block(
            state, tip.header, tip.hash, [tx], validator, t0 + i, genesis
        )
        assert not rejected
        store.commit_block(applied.block, applied.changes)
        state.update(applied.changes)
        snapshots.append(dict(state.data))
    return snapshots


def test_rollback_restores_the_state_of_the_ancestor(chain):
    store, genesis, validator, alice, bob = chain
    snaps = _extend(store, genesis, validator, alice, bob.address, [1, 2, 3, 4, 5], 0, 2000)
    main_tip = store.tip()
    removed = store.rollback_to(2)
    assert [b.height for b in removed] == [5, 4, 3]
    assert store.tip().height == 2
    assert store.load_state() == snaps[1]  # the state after block 2
    # The removed blocks stay stored as a side chain; their transactions are no longer canonical.
    assert store.block(main_tip.hash) is not None
    assert store.tx(removed[0].txs[0].id) is None
    # A different branch from the ancestor.
    other = _extend(store, genesis, validator, alice, validator.address, [7, 8], 2, 9000)
    assert store.load_state() == other[-1]
    assert verify_store(store)["ok"]


def test_a_branch_taken_off_can_be_adopted_again(chain):
    store, genesis, validator, alice, bob = chain
    snaps = _extend(store, genesis, validator, alice, bob.address, [1, 2, 3], 0, 2000)
    removed = store.rollback_to(1)
    for block in reversed(removed):
        state = DictState(store.load_state())
        parent = store.tip()
        applied = apply_block(state, parent.header, parent.hash, block, genesis)
        store.commit_block(block, applied.changes)
    assert store.load_state() == snaps[-1]
    assert store.tip().hash == removed[0].hash
    report = verify_store(store)
    assert report["ok"], report["problems"]


def test_rollback_past_the_tip_or_below_genesis_is_refused(chain):
    store, genesis, validator, alice, bob = chain
    _extend(store, genesis, validator, alice, bob.address, [1], 0, 2000)
    before = (store.tip().hash, store.load_state())
    for height in (-1, 5):
        with pytest.raises(StoreError):
            store.rollback_to(height)
    assert (store.tip().hash, store.load_state()) == before
