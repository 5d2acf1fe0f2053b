"""Validators that try to capture the PoWR emission (issue 11, attacks 1 and 2), played on the
pure state machine with the three-validator chain of test_chain_powr.py (epochs of 4 blocks).

1. One validator registers three hash-only models (no file anywhere, so nobody else can
   evaluate them) and reveals 1.0 for each. Before: each fake's median was its word alone, and
   it took 40 of a 50 DN epoch. Now a model counts only when validators holding half of the
   set's voice scored it: the attacker takes no more than its honest share of the validators'
   pot, and the real model's reward moves less than 5 %.
2. A newcomer bonds the minimum and reveals 0 for the real models and 1.0 for its own fake.
   Before: its bond weighed 100 genesis validators' base weight and set every median alone.
   Now every validator has the voice of one minimum bond at most (genesis validators that
   much), so the real models' rewards stay within 5 % of the run without the newcomer.
Every run ends with the supply invariant and a replay of its blocks to the same state.
"""

from __future__ import annotations

import hashlib

from dn.chain import consensus
from dn.chain.ledger import DictState
from dn.chain.state import apply_block, genesis_block, genesis_state, supply_holds
from dn.chain.types import Tx
from dn.chain.validators import active
from dn.encoding import BPS
from dn.wallet.keys import Keypair
from tests.unit.test_chain_models import CREATOR, DN, GEMMA, OTHER, SMOL
from tests.unit.test_chain_powr import BY_ADDRESS, V0, V1, V2, E, PowrChain, market

EMISSION = 50 * DN  # the default powr_epoch_emission
VALIDATOR_SHARE_BPS = 2_000  # the default powr_validator_share_bps
HONEST = {
    V0: {SMOL: 800_000, GEMMA: 400_000},
    V1: {SMOL: 820_000, GEMMA: 380_000},
    V2: {SMOL: 790_000, GEMMA: 410_000},
}
NEWCOMER = Keypair.from_seed(b"newcomer".ljust(32, b"."))
MIN_BOND = 50 * DN  # the newcomer's bond: 50 times a genesis validator's base weight of 1 DN


def fake(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def register(chain: PowrChain, kp: Keypair, sha: str, name: str, nonce: int) -> Tx:
    """A hash-only model: registered on chain, its file nowhere."""
    payload = {
        "model": sha,
        "name": name,
        "domain": "general",
        "price": 1000,
        "license": "",
        "size": 1,
    }
    return chain.send(kp, "model.register", payload, nonce=nonce)


def credits_to(chain: PowrChain, epoch: int, address: str) -> int:
    return sum(c["amount"] for c in chain.result(epoch)["credits"] if c["address"] == address)


def replayed(chain: PowrChain) -> None:
    state = DictState(genesis_state(chain.genesis))
    parent = genesis_block(chain.genesis)
    for block in chain.blocks:
        applied = apply_block(state, parent.header, parent.hash, block, chain.genesis)
        state.update(applied.changes)
        parent = block
    assert state.data == chain.state.data
    assert supply_holds(chain.state.items())


def epoch_one(attack: bool) -> PowrChain:
    """Epoch 1 (heights 5-8) of a `market`, closed at 9; with `attack`, V2 registers three
    hash-only models at 5 and scores them 1.0 besides its honest scores."""
    chain = market()
    fakes = [fake(f"fake-{i}") for i in range(3)]
    scores = {kp: dict(s) for kp, s in HONEST.items()}
    txs: list[Tx] = []
    if attack:
        for i, sha in enumerate(fakes):
            txs.append(register(chain, V2, sha, f"fake-{i}", chain.nonce(V2) + i))
        scores[V2].update(dict.fromkeys(fakes, 1_000_000))
    chain.commit(
        [*txs]
        + [
            chain.commit_scores(kp, 1, s, nonce=chain.nonce(kp) + (len(txs) if kp is V2 else 0))
            for kp, s in scores.items()
        ]
    )
    chain.advance_to(E + 2)
    chain.commit([chain.reveal(kp, 1, s) for kp, s in scores.items()])
    chain.advance_to(2 * E + 1)  # epoch 1 closes at the start of block 9
    replayed(chain)
    return chain


def test_scores_for_models_only_one_validator_can_evaluate_earn_nothing() -> None:
    clean, attacked = epoch_one(attack=False), epoch_one(attack=True)
    honest_share = EMISSION * VALIDATOR_SHARE_BPS // BPS // 3  # 1/n of the validators' pot
    take = credits_to(attacked, 1, V2.address)
    assert take <= honest_share + 1, (take, honest_share)
    for sha in (fake(f"fake-{i}") for i in range(3)):
        assert attacked.result(1)["models"][sha]["reward"] == 0
        assert attacked.result(1)["models"][sha]["median"] is None  # no quorum: no consensus
    real = clean.result(1)["models"][SMOL]["reward"]
    assert abs(attacked.result(1)["models"][SMOL]["reward"] - real) * 20 <= real
    # the honest validators' agreement is what it was without the attack
    for kp in (V0, V1):
        before = clean.result(1)["validators"][kp.address]["agreement"]
        assert attacked.result(1)["validators"][kp.address]["agreement"] == before


class JoinedChain(PowrChain):
    """Blocks proposed by the in-turn validator of the *active* set, the newcomer included (so
    it signs its turns and is not jailed for downtime)."""

    def proposer(self, height: int) -> Keypair:
        keys = {**BY_ADDRESS, NEWCOMER.address: NEWCOMER}
        return keys[consensus.in_turn(active(self.state, self.genesis), height)]


def epoch_two(newcomer: bool) -> PowrChain:
    """Epoch 2 (heights 9-12) of a `market` with validator_min_bond = MIN_BOND, closed at 13.
    With `newcomer`, NEWCOMER is funded and bonds MIN_BOND at 5 (it joins at epoch 2), then
    reveals 0 for SMOL and GEMMA and 1.0 for its own hash-only model."""
    base = market(validator_min_bond=MIN_BOND)
    chain = JoinedChain(base.genesis, base.state, base.mempool, base.tip, blocks=base.blocks)
    own = fake("newcomer-model")
    if newcomer:
        chain.commit(
            [
                chain.send(CREATOR, "transfer", {"to": NEWCOMER.address, "amount": 40 * DN}),
                chain.send(OTHER, "transfer", {"to": NEWCOMER.address, "amount": 40 * DN}),
            ]
        )
        chain.commit(
            [
                chain.send(NEWCOMER, "validator.bond", {"amount": MIN_BOND}),
                register(chain, NEWCOMER, own, "newcomer-model", 1),
            ]
        )
    chain.advance_to(2 * E)
    scores = {kp: dict(s) for kp, s in HONEST.items()}
    if newcomer:
        scores[NEWCOMER] = {SMOL: 0, GEMMA: 0, own: 1_000_000}
    chain.commit([chain.commit_scores(kp, 2, s) for kp, s in scores.items()])  # block 9
    assert (NEWCOMER.address in active(chain.state, chain.genesis)) is newcomer
    chain.advance_to(2 * E + 2)
    chain.commit([chain.reveal(kp, 2, s) for kp, s in scores.items()])
    chain.advance_to(3 * E + 1)  # epoch 2 closes at the start of block 13
    replayed(chain)
    return chain


def test_a_newcomer_with_a_minimum_bond_does_not_outweigh_the_genesis_validators() -> None:
    clean, attacked = epoch_two(newcomer=False), epoch_two(newcomer=True)
    result = attacked.result(2)
    assert result["validators"][NEWCOMER.address]["revealed"]
    for sha in (SMOL, GEMMA):
        real = clean.result(2)["models"][sha]["reward"]
        assert real > 0
        assert abs(result["models"][sha]["reward"] - real) * 20 <= real, sha
    assert result["models"][fake("newcomer-model")]["reward"] == 0
