"""The validator's PoWR duty (`dn/node/validator/powr.py`) on the pure state machine.

The chain is test_chain_powr's: three validators, epochs of 4 blocks (epoch 1 is heights 5 … 8,
commits in 5 and 6, reveals in 7 and 8, closed at the start of block 9). Every transaction the
validator makes goes through the real mempool and the real block rules. Evaluation is faked: a
function that records which items it was given and how the model was asked, and returns fixed
grades per model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dn.chain.genesis import Genesis, checked_params
from dn.chain.ledger import DictState
from dn.chain.mempool import Mempool
from dn.chain.powr_rules import commit_key, powr_commitment, reveal_key
from dn.chain.state import genesis_block, genesis_state
from dn.chain.types import Tx
from dn.node.node import Node
from dn.node.validator.powr import STATE_FILE, PowrValidator
from dn.powr.evaluate import Evaluation, ItemResult
from dn.powr.suites import Item, builtin_suite, sample_items, sample_seed
from dn.wallet.keys import Keypair
from tests.unit.test_chain_models import CREATOR, DN, FUNDED, GEMMA, OTHER, SMOL, model_sha
from tests.unit.test_chain_powr import V0, V1, V2, VALS, E, PowrChain, new_chain

LEGAL = model_sha("legal-model")
QUALITY = {SMOL: 0.75, GEMMA: 0.5, LEGAL: 0.125}
# Grades with those means, and their standard errors (sample sd / sqrt(n)) worked by hand:
# SMOL 1,1,1,0: sd = sqrt((3 * 0.25**2 + 0.75**2) / 3) = 0.5, se = 0.5 / 2 = 0.25.
# GEMMA 1,1,0,0: sd = sqrt(4 * 0.5**2 / 3) = 0.57735…, se = 0.288675….
# LEGAL 1 and seven 0: sd = sqrt((0.875**2 + 7 * 0.125**2) / 7) = sqrt(0.125), se = 0.125.
GRADES = {SMOL: [1, 1, 1, 0], GEMMA: [1, 1, 0, 0], LEGAL: [1] + [0] * 7}
ERRORS_PPM = {SMOL: 250_000, GEMMA: 288_675, LEGAL: 125_000}
LEGAL_MODEL = {"name": "legal", "domain": "legal", "price": 1000, "license": "mit", "size": 1000}


@dataclass
class FakeStore:
    held: set[str]

    def has(self, sha: str) -> bool:
        return sha in self.held

    def path(self, sha: str) -> Path:
        return Path(f"/models/{sha}.gguf")


class FakeRunner:
    def model(self, path: Path, role: str = "generate") -> Any:
        return path

    def close(self) -> None:
        pass


@dataclass
class FakeEvaluate:
    """Records (model sha, item ids) per call; `during` runs inside each call."""

    calls: list[tuple[str, list[str]]] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)  # model sha -> the kind it was asked as
    during: Any = None

    def __call__(
        self, model: Path, items: list[Item], *, max_tokens: int, progress: Any, model_kind: str
    ) -> Evaluation:
        sha = model.stem
        self.calls.append((sha, [item.id for item in items]))
        self.kinds[sha] = model_kind
        if self.during is not None:
            self.during()
        for done in range(len(items) + 1):
            progress(done, len(items))
        results = tuple(
            ItemResult(f"i{n}", "exact", float(g), "", None, 1, 0.0, 0.0)
            for n, g in enumerate(GRADES[sha])
        )
        return Evaluation(results=results, quality=QUALITY[sha], seconds=0.0, llama_s=0.0)


@dataclass
class ChainNode:
    """What PowrValidator reads of a node, over a PowrChain."""

    chain: PowrChain

    @property
    def tip(self) -> Any:
        return self.chain.tip

    @property
    def state(self) -> Any:
        return self.chain.state

    @property
    def genesis(self) -> Genesis:
        return self.chain.genesis

    @property
    def mempool(self) -> Mempool:
        return self.chain.mempool

    @property
    def store(self) -> ChainNode:
        return self

    own_tx = Node.own_tx  # the real one: it reads only genesis and mempool

    def canonical_hash(self, height: int) -> str | None:
        if height == 0:
            return genesis_block(self.chain.genesis).hash
        return self.chain.blocks[height - 1].hash if height <= len(self.chain.blocks) else None


def registered(chain: PowrChain) -> PowrChain:
    """SMOL (general), GEMMA (finance, a base model) and LEGAL (a domain with no suite, and no
    kind: chat) registered at height 1;
    the tip is height 4, the end of epoch 0."""
    chain.commit(
        [
            chain.register_model(),
            chain.register_model(OTHER, sha=GEMMA, name="gemma", domain="finance", kind="base"),
            chain.send(OTHER, "model.register", {**LEGAL_MODEL, "model": LEGAL}, nonce=1),
        ]
    )
    chain.advance_to(E)
    return chain


@pytest.fixture
def chain() -> PowrChain:
    return registered(new_chain())


def validator(
    chain: PowrChain,
    folder: Path,
    kp: Keypair = V0,
    held: set[str] | None = None,
    evaluate: FakeEvaluate | None = None,
) -> PowrValidator:
    return PowrValidator(
        ChainNode(chain),
        kp,
        FakeStore({SMOL, GEMMA, LEGAL} if held is None else held),
        FakeRunner(),
        items_per_model=3,
        state_file=folder / STATE_FILE,
        evaluate=evaluate or FakeEvaluate(),
    )


def send(chain: PowrChain, txs: list[Tx]) -> None:
    for tx in txs:
        chain.mempool.add(tx)  # raises InvalidTx if the chain would refuse it


def next_block(chain: PowrChain) -> None:
    chain.commit(chain.mempool.pending())


def test_commits_in_the_commit_phase_then_reveals_in_the_reveal_phase(
    chain: PowrChain, tmp_path: Path
) -> None:
    fake = FakeEvaluate()
    val = validator(chain, tmp_path, evaluate=fake)
    txs = val.tick()  # the next block, 5, opens epoch 1's commit phase
    assert [tx.kind for tx in txs] == ["powr.commit"]
    assert txs[0].payload["epoch"] == 1 and txs[0].fee == chain.min_fee
    assert sorted(sha for sha, _ in fake.calls) == sorted([SMOL, GEMMA, LEGAL])
    # V1 scores SMOL the same, so SMOL has a quorum (half of the set's voice) at the close
    other = {SMOL: 750_000}
    send(chain, [*txs, chain.commit_scores(V1, 1, other)])
    assert val.tick() == []  # pending: no second commit
    next_block(chain)
    assert chain.state.get(commit_key(1, V0.address)) == txs[0].payload["commitment"]
    assert val.tick() == []  # block 6: still the commit phase, committed already
    next_block(chain)
    reveal = val.tick()  # block 7: the reveal phase
    assert [tx.kind for tx in reveal] == ["powr.reveal"]
    assert reveal[0].payload["scores"] == {SMOL: 750_000, GEMMA: 500_000, LEGAL: 125_000}
    assert reveal[0].payload["errors"] == ERRORS_PPM
    send(chain, [*reveal, chain.reveal(V1, 1, other)])
    assert val.tick() == []
    next_block(chain)
    assert chain.state.get(reveal_key(1, V0.address)) == reveal[0].payload["scores"]
    assert val.tick() == []
    chain.advance_to(2 * E + 1)  # epoch 1 closed
    result = chain.result(1)
    assert result["validators"][V0.address]["revealed"]
    assert result["models"][SMOL]["quality"] == 750_000
    assert result["models"][GEMMA]["median"] is None  # V0 alone: no quorum, no consensus
    # V1 revealed no errors: the model's error is the median of V0's alone
    assert result["models"][SMOL]["error"] == ERRORS_PPM[SMOL]
    assert len(fake.calls) == 3  # one evaluation per model, once


def test_each_model_is_asked_as_its_records_kind_says(chain: PowrChain, tmp_path: Path) -> None:
    fake = FakeEvaluate()
    validator(chain, tmp_path, evaluate=fake).tick()
    assert fake.kinds == {SMOL: "chat", GEMMA: "base", LEGAL: "chat"}


def test_items_come_from_the_domains_suite_or_general(chain: PowrChain, tmp_path: Path) -> None:
    fake = FakeEvaluate()
    validator(chain, tmp_path, evaluate=fake).tick()
    ids = dict(fake.calls)
    assert all(i.startswith("gen-") for i in ids[SMOL]) and len(ids[SMOL]) == 3
    assert all(i.startswith("fin-") for i in ids[GEMMA])
    assert all(i.startswith("gen-") for i in ids[LEGAL])  # no "legal" suite ships


def test_every_validator_runs_the_same_sample_seeded_by_the_block_before_the_epoch(
    chain: PowrChain, tmp_path: Path
) -> None:
    """Sampled with sample_seed(hash of block 4): one shared exam, the same for every validator
    of the epoch (issue 11, attack 8: a sample of each validator's own made honest validators
    disagree)."""
    runs = {}
    for name, kp in (("a", V0), ("b", V0), ("c", V1)):
        fake = FakeEvaluate()
        (tmp_path / name).mkdir()
        validator(chain, tmp_path / name, kp=kp, evaluate=fake).tick()
        runs[name] = dict(fake.calls)[SMOL]
    expected = sample_items(builtin_suite("general"), 3, sample_seed(chain.tip.hash))
    assert runs["a"] == runs["b"] == runs["c"] == [item.id for item in expected]
    saved = json.loads((tmp_path / "a" / STATE_FILE).read_text())
    assert saved["seed_block"] == chain.tip.hash and saved["epoch"] == 1


def test_scores_and_salt_are_kept_on_disk_privately(chain: PowrChain, tmp_path: Path) -> None:
    txs = validator(chain, tmp_path).tick()
    path = tmp_path / STATE_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    saved = json.loads(path.read_text())
    assert len(saved["salt"]) == 32
    assert (
        powr_commitment(1, V0.address, saved["scores"], saved["salt"], saved["errors"])
        == (txs[0].payload["commitment"])
    )
    assert saved["errors"] == ERRORS_PPM


def test_a_restart_between_commit_and_reveal_still_reveals(
    chain: PowrChain, tmp_path: Path
) -> None:
    send(chain, validator(chain, tmp_path).tick())
    next_block(chain)
    fake = FakeEvaluate()
    restarted = validator(chain, tmp_path, evaluate=fake)
    assert restarted.tick() == []  # committed on chain: no second commit, no evaluation
    next_block(chain)
    again = validator(chain, tmp_path, evaluate=fake)
    reveal = again.tick()
    assert [tx.kind for tx in reveal] == ["powr.reveal"]
    send(chain, reveal)
    next_block(chain)
    assert chain.state.get(reveal_key(1, V0.address)) is not None
    assert fake.calls == []


def test_a_lost_commit_is_sent_again_without_evaluating_again(
    chain: PowrChain, tmp_path: Path
) -> None:
    first = validator(chain, tmp_path).tick()  # made, never sent (a crash before the submit)
    fake = FakeEvaluate()
    restarted = validator(chain, tmp_path, evaluate=fake)
    again = restarted.tick()
    assert [tx.kind for tx in again] == ["powr.commit"]
    assert again[0].payload == first[0].payload
    assert fake.calls == []
    send(chain, again)
    next_block(chain)
    assert chain.state.get(commit_key(1, V0.address)) == first[0].payload["commitment"]


def test_a_state_file_from_before_errors_reveals_without_errors(
    chain: PowrChain, tmp_path: Path
) -> None:
    # committed by a validator that revealed no errors yet: its file has none, its commitment
    # is the old hash, and after an upgrade it must still reveal what it committed to
    scores, salt = {SMOL: 750_000}, "ab" * 16
    old = {"epoch": 1, "scores": scores, "salt": salt, "seed_block": chain.tip.hash}
    (tmp_path / STATE_FILE).write_text(json.dumps(old))
    commitment = powr_commitment(1, V0.address, scores, salt)
    chain.commit([chain.send(V0, "powr.commit", {"epoch": 1, "commitment": commitment})])
    next_block(chain)
    fake = FakeEvaluate()
    reveal = validator(chain, tmp_path, evaluate=fake).tick()
    assert [tx.kind for tx in reveal] == ["powr.reveal"] and fake.calls == []
    assert "errors" not in reveal[0].payload
    send(chain, reveal)
    next_block(chain)
    assert chain.state.get(reveal_key(1, V0.address)) == scores


def test_a_validator_that_holds_no_model_commits_nothing(
    chain: PowrChain, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeEvaluate()
    val = validator(chain, tmp_path, held=set(), evaluate=fake)
    with caplog.at_level(logging.WARNING, logger="dn.validator"):
        for _ in range(E):
            assert val.tick() == []
            assert val.tick() == []
            next_block(chain)
    assert fake.calls == []
    assert chain.state.get(reveal_key(1, V0.address)) is None
    assert not (tmp_path / STATE_FILE).exists()
    said = [r.getMessage() for r in caplog.records if "holds none" in r.getMessage()]
    assert len(said) == 1  # once per epoch, not once per tick


def test_models_not_held_are_skipped(chain: PowrChain, tmp_path: Path) -> None:
    fake = FakeEvaluate()
    txs = validator(chain, tmp_path, held={GEMMA}, evaluate=fake).tick()
    assert [sha for sha, _ in fake.calls] == [GEMMA]
    assert len(txs) == 1


def test_retired_models_are_skipped(tmp_path: Path) -> None:
    chain = new_chain()
    chain.commit(
        [
            chain.register_model(),
            chain.register_model(OTHER, sha=GEMMA, name="gemma", domain="finance"),
        ]
    )
    chain.commit([chain.send(OTHER, "model.retire", {"model": GEMMA})])
    chain.advance_to(E)
    fake = FakeEvaluate()
    val = validator(chain, tmp_path, evaluate=fake)
    send(chain, val.tick())
    next_block(chain)
    next_block(chain)
    reveal = val.tick()
    assert [sha for sha, _ in fake.calls] == [SMOL]
    assert reveal[0].payload["scores"] == {SMOL: 750_000}


def test_an_evaluation_that_outlasts_the_commit_phase_commits_nothing(
    chain: PowrChain, tmp_path: Path
) -> None:
    fake = FakeEvaluate()
    fake.during = lambda: chain.advance_to(E + 2)
    val = validator(chain, tmp_path, held={SMOL}, evaluate=fake)
    assert val.tick() == []  # the chain reached the reveal phase meanwhile
    assert chain.tip.height == E + 2
    assert val.tick() == []  # nothing was committed, so nothing to reveal
    assert len(fake.calls) == 1


def test_a_validator_that_cannot_pay_the_fee_skips_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    allocations = {kp.address: 100 * DN for kp in (*FUNDED, V0, V1)}  # V2 has nothing
    genesis = Genesis.build(
        network="devnet",
        time_ms=1000,
        validators=[kp.address for kp in VALS],
        allocations=allocations,
        params=checked_params({"epoch_blocks": E}),
    )
    state = DictState(genesis_state(genesis))
    tip = genesis_block(genesis)
    pool = Mempool(genesis, V0.address, state, tip_height=0, tip_hash=tip.hash)
    chain = PowrChain(genesis, state, pool, tip)
    registered(chain)
    fake = FakeEvaluate()
    val = validator(chain, tmp_path, kp=V2, evaluate=fake)
    with caplog.at_level(logging.WARNING, logger="dn.validator"):
        assert val.tick() == []
        assert val.tick() == []
    assert fake.calls == []
    said = [r.getMessage() for r in caplog.records if "cannot pay" in r.getMessage()]
    assert len(said) == 1 and V2.address in said[0]


def test_a_node_that_is_not_a_validator_does_nothing(chain: PowrChain, tmp_path: Path) -> None:
    fake = FakeEvaluate()
    assert validator(chain, tmp_path, kp=CREATOR, evaluate=fake).tick() == []
    assert fake.calls == []


def test_a_stop_ends_the_evaluation_and_commits_nothing(chain: PowrChain, tmp_path: Path) -> None:
    fake = FakeEvaluate()
    val = validator(chain, tmp_path, evaluate=fake)
    fake.during = val.stop  # Ctrl-C while the first model is evaluated
    assert val.tick() == []
    assert len(fake.calls) == 1
    assert not (tmp_path / STATE_FILE).exists()
