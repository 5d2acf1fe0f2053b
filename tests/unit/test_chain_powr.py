"""PoWR on the pure state machine (DESIGN.md section 8): epochs and phases, `powr.commit` and
`powr.reveal`, per-epoch task statistics, and the epoch close that mints the emission.

The chain here has three validators taking turns and epochs of 4 blocks: epoch e is heights
4e+1 … 4e+4, commits in the first two, reveals in the last two, and epoch e is closed at the
start of block 4e+5. Every invalid case asserts the exact rejection reason, from apply_tx and
from the mempool, and that nothing changed; every committed block checks the supply invariant.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dn.chain import consensus
from dn.chain.epochs import Epoch
from dn.chain.genesis import PARAMS, Genesis, checked_params
from dn.chain.ledger import DictState, account
from dn.chain.mempool import Mempool
from dn.chain.powr_rules import powr_commitment
from dn.chain.state import apply_block, build_block, genesis_block, genesis_state, supply_holds
from dn.chain.types import Block, Tx
from dn.encoding import hash_hex
from dn.errors import GenesisError, InputError, InvalidTx
from dn.powr.params import POWR_PARAMS
from dn.wallet.keys import Keypair
from tests.unit.test_chain_models import (
    CONSUMER,
    CREATOR,
    DN,
    ESCROWED,
    FUNDED,
    GATEWAY,
    GEMMA,
    M1,
    M2,
    M3,
    OTHER,
    SMOL,
    Chain,
    model_sha,
)
from tests.unit.test_chain_state import assert_rejected
from tests.unit.test_chain_tasks import attest, book_tx, settle, ticket

VALS = sorted(
    (Keypair.from_seed(f"validator-{i}".encode().ljust(32, b".")) for i in range(3)),
    key=lambda kp: kp.address,
)
V0, V1, V2 = VALS
BY_ADDRESS = {kp.address: kp for kp in VALS}
E = 4  # epoch_blocks
SALT = "5a17"


@dataclass
class PowrChain(Chain):
    """A chain whose blocks are proposed by the in-turn validator; keeps every block."""

    blocks: list[Block] = field(default_factory=list)

    def commit(self, txs: list[Tx], time_ms: int | None = None) -> Block:
        parent = self.tip
        height = parent.header.height + 1
        proposer = self.proposer(height)
        applied, rejected = build_block(
            self.state,
            parent.header,
            parent.hash,
            txs,
            proposer,
            time_ms or parent.header.time + 1000,
            self.genesis,
        )
        assert rejected == []
        checked = apply_block(self.state, parent.header, parent.hash, applied.block, self.genesis)
        assert checked.changes == applied.changes
        self.state.update(applied.changes)
        self.tip = applied.block
        self.blocks.append(applied.block)
        dropped = self.mempool.reset(
            self.state, [t.id for t in txs], tip_height=height, tip_hash=applied.block.hash
        )
        assert dropped == []
        assert supply_holds(self.state.items())
        return applied.block

    def proposer(self, height: int) -> Keypair:
        """Who signs block `height`: the in-turn genesis validator."""
        return BY_ADDRESS[consensus.in_turn(self.genesis.validators, height)]

    def commit_scores(self, kp: Keypair, epoch: int, scores: dict[str, int], **kw: Any) -> Tx:
        commitment = powr_commitment(epoch, kp.address, scores, SALT)
        return self.send(kp, "powr.commit", {"epoch": epoch, "commitment": commitment}, **kw)

    def reveal(self, kp: Keypair, epoch: int, scores: dict[str, int], salt: str = SALT) -> Tx:
        return self.send(kp, "powr.reveal", {"epoch": epoch, "scores": scores, "salt": salt})

    def result(self, epoch: int) -> dict[str, Any]:
        found = self.state.get(f"powr:{epoch}:result")
        assert found is not None
        return dict(found)

    def emitted(self) -> int:
        return int(self.state.get("supply")["emitted"])


def make_genesis(**params: int) -> Genesis:
    allocations = {kp.address: 100 * DN for kp in (*FUNDED, *VALS)}
    overrides = {"unbonding_blocks": 3, "ticket_window_blocks": 5, "epoch_blocks": E, **params}
    return Genesis.build(
        network="devnet",
        time_ms=1000,
        validators=[kp.address for kp in VALS],
        allocations=allocations,
        params=checked_params(overrides),
        escrows={CONSUMER.address: ESCROWED},  # what pays CONSUMER's queries (escrow.py)
    )


def new_chain(**params: int) -> PowrChain:
    genesis = make_genesis(**params)
    state = DictState(genesis_state(genesis))
    tip = genesis_block(genesis)
    mempool = Mempool(genesis, V0.address, state, tip_height=0, tip_hash=tip.hash)
    return PowrChain(genesis, state, mempool, tip)


def market(**params: int) -> PowrChain:
    """SMOL (CREATOR) and GEMMA (OTHER) registered at height 1; M1, M2, M3 serve both from height
    2; M3 delegates 5 DN to V0 at height 2. The tip is height 4, the end of epoch 0."""
    chain = new_chain(**params)
    chain.commit([chain.register_model(), chain.register_model(OTHER, sha=GEMMA, name="gemma")])
    chain.commit(
        [chain.register_miner(kp, models=[SMOL, GEMMA]) for kp in (M1, M2, M3)]
        + [chain.send(M3, "stake", {"target": V0.address, "amount": 5 * DN}, nonce=1)]
    )
    chain.advance_to(E)
    return chain


GOOD = {SMOL: 800_000, GEMMA: 400_000}


@pytest.fixture
def chain() -> PowrChain:
    """A chain at genesis; tests start with `opened`."""
    return new_chain()


def opened(chain: PowrChain, *txs: Tx) -> PowrChain:
    """Block 1 (epoch 0's commit phase, like block 2): SMOL registered by CREATOR, and `txs`."""
    chain.commit([chain.register_model(), *txs])
    return chain


# --- params and epochs ----------------------------------------------------------------------


def test_powr_params_are_genesis_params_with_their_defaults() -> None:
    assert PARAMS["epoch_blocks"] == (100, 4, 1_000_000)
    assert PARAMS["validator_base_weight"][0] == DN
    for name, spec in POWR_PARAMS.items():
        assert PARAMS[name] == spec
    genesis = new_chain().genesis
    assert genesis.param("epoch_blocks") == E
    assert genesis.param("powr_epoch_emission") == 50 * DN


def test_a_genesis_without_the_powr_params_keeps_its_hash(tmp_path: Path) -> None:
    doc = {
        "format": 1,
        "network": "devnet",
        "time": 1000,
        "validators": [V0.address],
        "allocations": {CREATOR.address: DN},
        "params": {"min_fee": 1000, "fee_burn_share": 2000},
    }
    path = tmp_path / "genesis.json"
    path.write_text(json.dumps(doc))
    loaded = Genesis.load(path)
    assert loaded.hash == hash_hex(doc)
    assert loaded.param("epoch_blocks") == 100
    assert loaded.param("powr_creator_share_bps") == 3_000


def test_powr_shares_must_sum_to_a_whole() -> None:
    with pytest.raises(InputError, match="powr_creator_share_bps.*got 9000"):
        checked_params({"powr_creator_share_bps": 2_000})
    good = make_genesis().doc
    bad = {**good, "params": {**good["params"], "powr_miner_share_bps": 6_000}}
    with pytest.raises(GenesisError, match="must sum to 10000 basis points, got 11000"):
        Genesis.from_json(bad)
    even = {"powr_creator_share_bps": 4_000, "powr_miner_share_bps": 4_000}
    assert checked_params(even)["powr_backer_share_bps"] == 2_000


def test_epoch_heights_and_phases() -> None:
    zero = Epoch.at(1, 4)
    assert (zero.number, zero.first, zero.reveal_from, zero.last) == (0, 1, 3, 4)
    phases = [Epoch.at(h, 4).phase(h) for h in range(1, 9)]
    assert phases == ["commit", "commit", "reveal", "reveal"] * 2
    assert Epoch.at(4, 4).number == 0 and Epoch.at(5, 4).number == 1
    assert [Epoch.closed_at(h, 4) for h in range(0, 10)] == [None] * 5 + [0, None, None, None, 1]
    odd = Epoch(2, 5)
    assert odd.heights("commit") == (11, 12) and odd.heights("reveal") == (13, 15)
    with pytest.raises(ValueError):
        Epoch.at(0, 4)


# --- refusals -------------------------------------------------------------------------------


def test_a_commit_is_stored(chain: PowrChain) -> None:
    tx = chain.commit_scores(V0, 0, {SMOL: 5})
    opened(chain, tx)
    assert chain.state.get(f"powr:0:commit:{V0.address}") == tx.payload["commitment"]


def test_a_score_from_a_non_validator(chain: PowrChain) -> None:
    opened(chain)
    assert_rejected(chain, chain.commit_scores(CREATOR, 0, {SMOL: 5}), "not-validator")
    chain.advance_to(2)
    assert_rejected(chain, chain.reveal(CREATOR, 0, {SMOL: 5}), "not-validator")


def test_commit_in_the_reveal_phase(chain: PowrChain) -> None:
    opened(chain)
    chain.advance_to(2)  # the next block, 3, is in epoch 0's reveal phase
    tx = chain.commit_scores(V0, 0, {SMOL: 5})
    assert_rejected(chain, tx, "wrong-phase")
    with pytest.raises(InvalidTx, match="commits for epoch 0 go in blocks 1 to 2; block 3"):
        chain.mempool.add(tx)


def test_commit_for_another_epoch(chain: PowrChain) -> None:
    opened(chain)
    assert_rejected(chain, chain.commit_scores(V0, 1, {SMOL: 5}), "wrong-phase")
    chain.advance_to(E)  # the next block, 5, is in epoch 1's commit phase
    assert_rejected(chain, chain.commit_scores(V0, 0, {SMOL: 5}), "wrong-phase")
    chain.commit([chain.commit_scores(V0, 1, {SMOL: 5})])


def test_reveal_in_the_commit_phase(chain: PowrChain) -> None:
    opened(chain, chain.commit_scores(V0, 0, {SMOL: 5}))  # the next block, 2, takes commits
    assert_rejected(chain, chain.reveal(V0, 0, {SMOL: 5}), "wrong-phase")


def test_reveal_for_another_epoch(chain: PowrChain) -> None:
    opened(chain, chain.commit_scores(V0, 0, {SMOL: 5}))
    chain.advance_to(2)
    assert_rejected(chain, chain.reveal(V0, 1, {SMOL: 5}), "wrong-phase")
    chain.advance_to(E)
    assert_rejected(chain, chain.reveal(V0, 0, {SMOL: 5}), "wrong-phase")  # too late


def test_reveal_not_matching_its_commitment(chain: PowrChain) -> None:
    opened(chain, chain.commit_scores(V0, 0, {SMOL: 5}))
    chain.advance_to(2)
    assert_rejected(chain, chain.reveal(V0, 0, {SMOL: 6}), "reveal-mismatch")
    assert_rejected(chain, chain.reveal(V0, 0, {SMOL: 5}, salt="00"), "reveal-mismatch")
    chain.commit([chain.reveal(V0, 0, {SMOL: 5})])
    assert chain.state.get(f"powr:0:reveal:{V0.address}") == {SMOL: 5}


def test_reveal_without_a_commitment(chain: PowrChain) -> None:
    opened(chain)
    chain.advance_to(2)
    assert_rejected(chain, chain.reveal(V0, 0, {SMOL: 5}), "no-commitment")


def test_double_commit_and_double_reveal(chain: PowrChain) -> None:
    opened(chain, chain.commit_scores(V0, 0, {SMOL: 5}))
    assert_rejected(chain, chain.commit_scores(V0, 0, {SMOL: 6}), "already-committed")
    chain.advance_to(2)
    chain.commit([chain.reveal(V0, 0, {SMOL: 5})])
    assert_rejected(chain, chain.reveal(V0, 0, {SMOL: 5}), "already-revealed")


def test_a_copied_commitment(chain: PowrChain) -> None:
    first = chain.commit_scores(V0, 0, {SMOL: 5})
    opened(chain, first)
    copied = chain.send(V1, "powr.commit", {"epoch": 0, "commitment": first.payload["commitment"]})
    assert_rejected(chain, copied, "copied-commitment")
    # the commitment binds the validator: the same scores and salt hash differently for another
    assert powr_commitment(0, V1.address, {SMOL: 5}, SALT) != first.payload["commitment"]


def test_a_score_for_an_unknown_model(chain: PowrChain) -> None:
    scores = {SMOL: 5, model_sha("nope"): 7}
    opened(chain, chain.commit_scores(V0, 0, scores))
    chain.advance_to(2)
    assert_rejected(chain, chain.reveal(V0, 0, scores), "unknown-model")


# --- statistics and the epoch close ---------------------------------------------------------


def run_epoch_one(chain: PowrChain) -> list[Block]:
    """Epoch 1 (heights 5-8) on a `market`: V0, V1 and V2 commit at 5, where CONSUMER books three
    SMOL slots; it books one GEMMA slot at 6 (one book a block); three SMOL tasks (one
    rejected) and one GEMMA task settle at 7; V0 and V1 reveal at 8, V2 never does."""
    scores = {
        V0: GOOD,
        V1: {SMOL: 820_000, GEMMA: 380_000},
        V2: {SMOL: 100_000, GEMMA: 900_000},
    }
    commits = [chain.commit_scores(kp, 1, s) for kp, s in scores.items()]
    chain.commit([*commits, book_tx(chain, slots=3, model=SMOL)])
    smol = chain.tip.height
    chain.commit([book_tx(chain, slots=1, model=GEMMA)])
    gemma = chain.tip.height
    n = chain.nonce(GATEWAY)
    settles = []
    for i, (model, ref, slot, verdict) in enumerate(
        [
            (SMOL, smol, 0, "confirmed"),
            (SMOL, smol, 1, "confirmed"),
            (SMOL, smol, 2, "rejected"),
            (GEMMA, gemma, 0, "confirmed"),
        ]
    ):
        t = ticket(chain, nonce=slot, model=model, ref_height=ref)
        settles.append(settle(chain, t, attest(chain, t, verdict=verdict), nonce=n + i))
    chain.commit(settles)
    assert chain.tip.height == 7
    chain.commit([chain.reveal(V0, 1, scores[V0]), chain.reveal(V1, 1, scores[V1])])
    assert chain.tip.height == 2 * E
    return chain.blocks


def test_settled_tasks_are_counted_per_epoch() -> None:
    chain = market()
    run_epoch_one(chain)
    stats = chain.state.get(f"powr:1:stats:{SMOL}")
    assert (stats["tasks"], stats["confirmed"], stats["tokens"]) == (3, 2, 2 * 77)
    assert sum(stats["miners"].values()) == 2 * 77
    assert set(stats["miners"]) <= {M1.address, M2.address, M3.address}
    # what the fee split of the two confirmed tasks (77 units each) burned, by generator (5 %,
    # 3 units, and 4 of rounding, each): the bound on the usage-tied emission
    assert sum(stats["burned"].values()) == 2 * 7 and set(stats["burned"]) == set(stats["miners"])
    gemma = chain.state.get(f"powr:1:stats:{GEMMA}")
    assert (gemma["tasks"], gemma["confirmed"], gemma["tokens"]) == (1, 1, 77)
    assert chain.state.get("powr:1:settled") == sorted([SMOL, GEMMA])
    assert chain.state.get("powr:0:settled") is None


def test_a_full_epoch_pays_its_emission() -> None:
    chain = market()
    run_epoch_one(chain)
    emitted = chain.emitted()
    before = {a: account(chain.state, a)["balance"] for a in _everyone()}
    assert chain.state.get("powr:1:result") is None
    pool_before = chain.state.get("pool:validators")["balance"]
    chain.commit([])  # height 9: epoch 1 closes
    record = chain.result(1)
    models = record["models"]
    capped = sum(m["capped"] for m in models.values())
    assert record["emission"] == 50 * DN and record["unpaid"] == capped
    credits = record["credits"]
    assert sum(c["amount"] for c in credits) == record["paid"] == chain.emitted() - emitted
    # all of it but the miners' parts over the usage cap: the tasks paid for 231 tokens, so
    # their miners may take at most a third of what those burned
    assert record["paid"] == 50 * DN - capped
    assert capped > 19 * DN
    # The validator pool (the validators' share of the epoch's query fees) is paid out too, by
    # the same weights, and is not new emission.
    assert record["pool"]["paid"] == pool_before > 0
    assert chain.state.get("pool:validators") is None
    pool_credits = record["pool"]["credits"]
    assert {c["address"] for c in pool_credits} <= {V0.address, V1.address, M3.address}
    for address in _everyone():  # the close block holds no transactions: only credits moved
        paid = sum(c["amount"] for c in credits + pool_credits if c["address"] == address)
        assert account(chain.state, address)["balance"] - before[address] == paid
    validators = record["validators"]
    assert validators[V2.address] == {"stake": DN, "revealed": False, "agreement": 0, "reward": 0}
    assert not any(c["address"] == V2.address for c in credits)
    assert validators[V0.address]["stake"] == DN + 5 * DN  # base weight + M3's delegation
    assert validators[V0.address]["revealed"] and validators[V0.address]["reward"] > 0
    # V0 shares its reward with M3, pro rata to stake: 5 of 6 parts (to the unit).
    v0_reward = validators[V0.address]["reward"]
    shared = [c for c in credits if c.get("validator") == V0.address]
    assert [(c["address"], c["reason"], c["model"]) for c in shared] == [
        (M3.address, "delegator", None)
    ]
    assert v0_reward * 5 // 6 <= shared[0]["amount"] <= v0_reward * 5 // 6 + 1
    own = [c["amount"] for c in credits if c["address"] == V0.address]
    assert own == [v0_reward - shared[0]["amount"]]
    assert validators[V1.address]["reward"] > 0
    assert validators[V0.address]["reward"] + validators[V1.address]["reward"] == 10 * DN
    assert models[SMOL]["quality"] > models[GEMMA]["quality"] > 0
    assert models[SMOL]["reward"] > models[GEMMA]["reward"] > 0
    assert models[SMOL]["reward"] + models[GEMMA]["reward"] + capped == 40 * DN
    mined = sum(c["amount"] for c in credits if c["reason"] == "miner")
    # SMOL's tasks burned 14 units, GEMMA's 7: their miners' parts are capped at a third of that
    assert mined == 14 * 3_333 // 10_000 + 7 * 3_333 // 10_000
    assert {c["reason"] for c in credits if c["model"] == SMOL} == {
        "creator",
        "miner",
        "creator-backers-share",
    }
    # commitments are gone, reveals and stats stay
    assert all(chain.state.get(f"powr:1:commit:{kp.address}") is None for kp in VALS)
    assert chain.state.get(f"powr:1:reveal:{V0.address}") == GOOD
    assert chain.state.get(f"powr:1:stats:{SMOL}") is not None


def _everyone() -> list[str]:
    return [kp.address for kp in (*FUNDED, *VALS)]


def test_replaying_the_blocks_gives_the_same_state() -> None:
    chain = market()
    run_epoch_one(chain)
    chain.commit([])
    replay = DictState(genesis_state(chain.genesis))
    parent = genesis_block(chain.genesis)
    for block in chain.blocks:
        applied = apply_block(replay, parent.header, parent.hash, block, chain.genesis)
        replay.update(applied.changes)
        parent = block
    assert replay.data == chain.state.data
    assert parent.header.state_root == chain.tip.header.state_root


def test_an_epoch_without_reveals_mints_nothing() -> None:
    chain = new_chain()
    chain.commit([chain.register_model()])
    chain.advance_to(E + 1)
    record = chain.result(0)
    assert record["paid"] == 0 and record["unpaid"] == 50 * DN and record["models"] == {}
    assert chain.emitted() == 0
    assert all(not v["revealed"] for v in record["validators"].values())


def test_a_retired_model_gets_nothing() -> None:
    chain = market()
    chain.commit([chain.commit_scores(V0, 1, GOOD), chain.commit_scores(V1, 1, GOOD)])
    chain.commit([chain.send(OTHER, "model.retire", {"model": GEMMA})])
    chain.commit([chain.reveal(V0, 1, GOOD), chain.reveal(V1, 1, GOOD)])
    chain.advance_to(2 * E + 1)
    models = chain.result(1)["models"]
    assert models[GEMMA]["reward"] == 0 and models[GEMMA]["quality"] == 0
    assert models[GEMMA]["median"] is None
    assert models[SMOL]["reward"] + models[SMOL]["capped"] == 40 * DN
    assert models[SMOL]["capped"] == 40 * DN // 2  # no task paid: no miners' part is minted


def test_emission_halves() -> None:
    chain = market(powr_halving_epochs=1)  # epoch e emits 50 DN >> e
    for epoch in (1, 2):
        # blocks 5 and 9; block 9 also closes epoch 1 before its transactions
        chain.commit([chain.commit_scores(kp, epoch, GOOD) for kp in (V0, V1)])
        chain.commit([])
        chain.commit([chain.reveal(kp, epoch, GOOD) for kp in (V0, V1)])
        chain.commit([])
    before = chain.emitted()
    chain.commit([])  # closes epoch 2
    one, two = chain.result(1), chain.result(2)
    assert (one["emission"], two["emission"]) == (25 * DN, 25 * DN // 2)
    for result in (one, two):  # all of it but the miners' parts: no task was paid for
        capped = sum(m["capped"] for m in result["models"].values())
        assert result["paid"] + capped == result["emission"] == result["paid"] + result["unpaid"]
    assert chain.emitted() - before == two["paid"]
    assert chain.emitted() == one["paid"] + two["paid"]
