"""The mempool's bounds (THREATS.md: bounded cost): one sender may not fill it for everyone."""

from __future__ import annotations

import pytest

from dn.chain import mempool as mempool_module
from dn.chain.ledger import DictState
from dn.chain.mempool import Mempool
from dn.chain.state import genesis_block, genesis_state
from dn.errors import InvalidTx
from tests.unit.test_chain_state import DN, A, B, Env, V, make_genesis

CAP = 3  # a small cap for the test; the module's own is MAX_PENDING_PER_SENDER


@pytest.fixture
def env() -> Env:
    genesis = make_genesis()
    state = DictState(genesis_state(genesis))
    tip = genesis_block(genesis)
    return Env(
        genesis, state, Mempool(genesis, V.address, state, tip_height=0, tip_hash=tip.hash), tip
    )


def test_one_sender_may_have_only_so_many_transactions_pending(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mempool_module, "MAX_PENDING_PER_SENDER", CAP)
    txs = [env.transfer(A, B.address, DN, nonce=n) for n in range(CAP + 1)]
    for tx in txs[:CAP]:
        env.mempool.add(tx)
    with pytest.raises(InvalidTx) as refused:
        env.mempool.add(txs[CAP])
    assert refused.value.reason == "sender-full"
    assert len(env.mempool) == CAP
    env.mempool.add(env.transfer(B, A.address, DN))  # another sender is not held back
    # once the sender's transactions are in a block, it may send again
    block = env.commit(env.mempool.pending())
    dropped = env.mempool.reset(
        env.state, [tx.id for tx in block.txs], tip_height=block.height, tip_hash=block.hash
    )
    assert dropped == [] and len(env.mempool) == 0
    env.mempool.add(txs[CAP])
    assert txs[CAP].id in env.mempool


def test_the_cap_counts_only_what_is_pending(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rebase that keeps some of a sender's transactions counts them again, no more."""
    monkeypatch.setattr(mempool_module, "MAX_PENDING_PER_SENDER", CAP)
    txs = [env.transfer(A, B.address, DN, nonce=n) for n in range(CAP)]
    for tx in txs:
        env.mempool.add(tx)
    block = env.commit(txs[:1])
    env.mempool.reset(env.state, [txs[0].id], tip_height=block.height, tip_hash=block.hash)
    assert len(env.mempool) == CAP - 1
    env.mempool.add(env.transfer(A, B.address, DN, nonce=CAP))  # one slot came free
    with pytest.raises(InvalidTx) as refused:
        env.mempool.add(env.transfer(A, B.address, DN, nonce=CAP + 1))
    assert refused.value.reason == "sender-full"
