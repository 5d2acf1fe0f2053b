"""Downtime jailing (issue 12, attack 2): a validator that bonds and then never signs must not
halt the chain. A real `Node` on a temporary SQLite file produces every block, by hand, on a
controlled clock."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dn.chain import consensus
from dn.chain.genesis import Genesis, checked_params, default_params
from dn.chain.jailing import judge, over_limit, turns
from dn.chain.ledger import DictState, Overlay, account
from dn.chain.state import (
    apply_block,
    apply_tx,
    build_block,
    genesis_block,
    genesis_state,
    supply_holds,
)
from dn.chain.types import Block, Tx
from dn.chain.validators import VALIDATOR, active, on_probation, signing
from dn.chain.verify import verify_store
from dn.errors import InvalidTx
from dn.node.node import Node, NodeHome, now_ms
from dn.wallet.keys import Keypair

DN = 10**9
EPOCH = 4  # epoch 0 is heights 1-4, epoch 1 is 5-8, …
MIN_BOND = 100 * DN  # the default validator_min_bond


def _home(path: Path, key: Keypair) -> NodeHome:
    path.mkdir(parents=True, mode=0o700)
    (path / "node_key.json").write_text(
        json.dumps({"address": key.address, "seed": key.seed().hex()})
    )
    (path / "node_key.json").chmod(0o600)
    return NodeHome(path)


class SoloChain:
    """The README's one-validator chain: one node, its key the only genesis validator, and a
    funded stranger who may bond."""

    def __init__(self, tmp_path: Path, **params: int) -> None:
        self.key = Keypair.generate()
        self.stranger = Keypair.generate()
        self.genesis = Genesis.build(
            network="devnet",
            time_ms=now_ms() - 60_000,
            validators=[self.key.address],
            allocations={self.key.address: 10 * DN, self.stranger.address: 1000 * DN},
            params=default_params(epoch_blocks=EPOCH, **params),
        )
        self.node = Node(_home(tmp_path / "v", self.key), self.genesis, rng=random.Random(1))
        self.clock = now_ms() - 30_000

    def produce(self) -> int:
        self.clock += 10
        return self.node.produce(self.clock).height

    def send(self, kp: Keypair, kind: str, payload: dict, nonce: int) -> None:
        tx = Tx.create(
            kp,
            chain_id=self.genesis.chain_id,
            kind=kind,
            nonce=nonce,
            fee=self.genesis.param("min_fee"),
            payload=payload,
        )
        assert self.node.submit([tx.to_json()])[0]["accepted"]


def test_a_joiner_that_never_signs_does_not_halt_a_one_validator_chain(tmp_path: Path) -> None:
    chain = SoloChain(tmp_path)
    node, joiner = chain.node, chain.stranger.address
    chain.send(chain.stranger, "validator.bond", {"amount": MIN_BOND}, 0)
    assert chain.produce() == 1
    while node.tip.height < EPOCH + 1:  # height 5: the joiner is in the set from here on
        chain.produce()
    assert active(node.state, chain.genesis) == sorted([chain.key.address, joiner])
    # The genesis validator goes on alone: every block is its own, the joiner's turns included.
    while node.tip.height < 3 * EPOCH + 1:
        height = node.tip.height + 1
        assert node.due(now_ms() + 10**9), f"the validator may not propose block {height}"
        assert chain.produce() == height
    # The joiner missed every turn it had in epoch 1: it left the set at epoch 2's first block.
    assert active(node.state, chain.genesis) == [chain.key.address]
    record = node.state.get(VALIDATOR + joiner)
    assert record["jailed"] == 2 * EPOCH + 1
    assert record["bond"] == 99 * DN  # jail_slash_bps: 100 of 10,000 (1 DN of 100) taken
    assert node.final == node.tip.height - 1  # one validator again: final once built upon
    proposers = {node.store.block(h).header.proposer for h in range(1, 3 * EPOCH + 2)}  # type: ignore[union-attr]
    assert proposers == {chain.key.address}
    assert consensus.in_turn(node.validators, node.tip.height + 1) == chain.key.address
    assert supply_holds(node.state.items())
    report = verify_store(node.store)
    assert report["ok"], report["problems"]


# --- the rule on the pure state machine ------------------------------------------------------

E = 8  # epoch_blocks: epoch 1 is heights 9-16, its set is judged on 10-16 at block 17
U = 6  # unbonding_blocks


def _key(name: str) -> Keypair:
    return Keypair.from_seed(name.encode().ljust(32, b"."))


class PureChain:
    """Blocks built by `build_block` and checked by `apply_block` on a dict state; the test says
    who signs each one."""

    def __init__(self, validators: list[Keypair], funded: list[Keypair], **params: int) -> None:
        self.keys = {k.address: k for k in [*validators, *funded]}
        allocations = {k.address: 1000 * DN for k in funded}
        allocations.update({k.address: DN for k in validators if k.address not in allocations})
        self.genesis = Genesis.build(
            network="devnet",
            time_ms=1000,
            validators=[k.address for k in validators],
            allocations=allocations,
            params=checked_params({"epoch_blocks": E, "unbonding_blocks": U, **params}),
        )
        self.state = DictState(genesis_state(self.genesis))
        self.tip = genesis_block(self.genesis)

    @property
    def height(self) -> int:
        return self.tip.height

    def send(self, kp: Keypair, kind: str, payload: dict) -> Tx:
        return Tx.create(
            kp,
            chain_id=self.genesis.chain_id,
            kind=kind,
            nonce=account(self.state, kp.address)["nonce"],
            fee=self.genesis.param("min_fee"),
            payload=payload,
        )

    def may_sign(self, address: str) -> bool:
        recent = self.state.get("signers") or []
        return consensus.may_sign(recent, address, len(signing(self.state, self.genesis)))

    def produce(self, proposer: str, txs: list[Tx] | None = None) -> Block:
        parent = self.tip
        applied, rejected = build_block(
            self.state,
            parent.header,
            parent.hash,
            txs or [],
            self.keys[proposer],
            parent.header.time + 1000,
            self.genesis,
        )
        assert rejected == []
        checked = apply_block(self.state, parent.header, parent.hash, applied.block, self.genesis)
        assert checked.changes == applied.changes
        self.state.update(applied.changes)
        self.tip = applied.block
        assert supply_holds(self.state.items())
        return applied.block

    def step(self, up: set[str], pick: random.Random, txs: list[Tx] | None = None) -> Block:
        """The next block as validators that are up make it: the in-turn one if it is up and may
        sign, else any member that is up and may sign (out of turn)."""
        members = active(self.state, self.genesis)
        due = consensus.in_turn(members, self.height + 1)
        if due in up and self.may_sign(due):
            return self.produce(due, txs)
        ready = sorted(v for v in members if v in up and self.may_sign(v))
        assert ready, f"nobody may sign block {self.height + 1}"
        return self.produce(pick.choice(ready), txs)

    def run_to(self, height: int, up: set[str], pick: random.Random | None = None) -> None:
        pick = pick or random.Random(0)
        while self.height < height:
            self.step(up, pick)

    def record(self, address: str) -> dict:
        return self.state.get(VALIDATOR + address)

    def rejected(self, tx: Tx, reason: str) -> None:
        """`tx` is refused with `reason` in the next block, and changes nothing."""
        overlay = Overlay(self.state)
        with pytest.raises(InvalidTx) as refused:
            apply_tx(overlay, tx, self.genesis, self.tip.header.proposer, height=self.height + 1)
        assert refused.value.reason == reason, refused.value.message
        assert overlay.changes == {}


G1, G2, G3 = _key("genesis-1"), _key("genesis-2"), _key("genesis-3")
S1, S2, S3 = _key("silent-1"), _key("silent-2"), _key("silent-3")
H1, H2 = _key("honest-1"), _key("honest-2")


def test_silent_joiners_as_many_as_the_signers_are_jailed_and_slashed() -> None:
    chain = PureChain(
        [G1, G2], [S1, S2], jail_slash_bps=250, slash_pool_bps=4_000, validator_min_bond=100 * DN
    )
    up = {G1.address, G2.address}
    bonds = [chain.send(s, "validator.bond", {"amount": 100 * DN}) for s in (S1, S2)]
    chain.step(up, random.Random(0), bonds)
    chain.run_to(E + 1, up)  # height 9: both joiners are in the set, on probation
    members = sorted([G1.address, G2.address, S1.address, S2.address])
    assert active(chain.state, chain.genesis) == members
    assert signing(chain.state, chain.genesis) == sorted([G1.address, G2.address])
    # Without probation the rule would count four (a window of two) and the two signers would
    # be stuck after two blocks; they go on, signing every turn of the joiners too.
    chain.run_to(2 * E, up)
    assert {chain.record(s.address).get("jailed") for s in (S1, S2)} == {None}
    # The set in address order is G2, S2, G1, S1: of the judged heights 10-16, S2 is in turn
    # at 13 (13 % 4 == 1) and S1 at 11 and 15; each of those turns was signed by another.
    assert chain.state.get("downtime:1") == {S1.address: 2, S2.address: 1}
    pool_before = (chain.state.get("pool:validators") or {"balance": 0})["balance"]
    burned_before = chain.state.get("supply")["burned"]

    chain.step(up, random.Random(0))  # height 17: epoch 2's first block
    assert active(chain.state, chain.genesis) == sorted([G1.address, G2.address])
    for silent in (S1, S2):
        record = chain.record(silent.address)
        assert record["jailed"] == 2 * E + 1
        assert record["bond"] == 100 * DN - 2_500_000_000  # 250 bps of 100 DN
        assert record["slashed"] == 2_500_000_000
        assert record["left"] == 2 and record["leaves"] is None
    assert chain.state.get("pool:validators")["balance"] - pool_before == 2 * 1_000_000_000
    assert chain.state.get("supply")["burned"] - burned_before == 2 * 1_500_000_000
    assert chain.state.get("downtime:1") is None
    assert signing(chain.state, chain.genesis) == sorted([G1.address, G2.address])
    assert on_probation(chain.state) == []
    # Out of the in-turn order: from here on, every block is in turn.
    for _ in range(E):
        block = chain.step(up, random.Random(0))
        assert block.header.difficulty == 2
    assert supply_holds(chain.state.items())


def test_a_jailed_validator_may_bond_again_only_after_unbonding_blocks() -> None:
    chain = PureChain([G1, G2], [S1], jail_slash_bps=250, validator_min_bond=100 * DN)
    up = {G1.address, G2.address}
    chain.step(up, random.Random(0), [chain.send(S1, "validator.bond", {"amount": 100 * DN})])
    chain.run_to(2 * E + 1, up)
    jailed_at = chain.record(S1.address)["jailed"]
    assert jailed_at == 17 and S1.address not in active(chain.state, chain.genesis)
    held = chain.record(S1.address)["bond"]
    assert held == 97_500_000_000
    top_up = chain.send(S1, "validator.bond", {"amount": 2_500_000_000})
    while chain.height + 1 < jailed_at + U:  # blocks 18-22 refuse it
        chain.rejected(top_up, "jailed")
        chain.step(up, random.Random(0))
    assert chain.height + 1 == 23
    chain.rejected(chain.send(S1, "validator.bond", {"amount": DN}), "bond-too-low")  # 98.5 DN
    chain.step(up, random.Random(0), [top_up])  # block 23: accepted, joins at epoch 3 (block 25)
    record = chain.record(S1.address)
    assert "jailed" not in record and record["joins"] == 3 and record["bond"] == 100 * DN
    assert record["slashed"] == 2_500_000_000
    chain.run_to(3 * E + 1, up)
    assert S1.address in active(chain.state, chain.genesis)
    assert on_probation(chain.state) == [S1.address]
    # Up this time: it signs its turns, counts for the signing rule from its first block, and
    # stays in the set at the next boundary.
    up.add(S1.address)
    chain.run_to(4 * E + 1, up)
    assert on_probation(chain.state) == []
    assert len(signing(chain.state, chain.genesis)) == 3
    assert S1.address in active(chain.state, chain.genesis)
    assert "jailed" not in chain.record(S1.address)


def test_a_jailed_validator_may_take_its_bond_back() -> None:
    chain = PureChain([G1, G2], [S1], jail_slash_bps=250, validator_min_bond=100 * DN)
    up = {G1.address, G2.address}
    chain.step(up, random.Random(0), [chain.send(S1, "validator.bond", {"amount": 100 * DN})])
    chain.run_to(2 * E + 1, up)
    before = account(chain.state, S1.address)["balance"]
    out = chain.send(S1, "validator.unbond", {"amount": 97_500_000_000})
    at = chain.step(up, random.Random(0), [out]).height
    assert chain.state.get("validator-changes:3") is None  # not in the set: nothing to leave
    chain.run_to(at + U, up)
    balance = account(chain.state, S1.address)["balance"]
    assert balance == before - out.fee + 97_500_000_000


def test_a_silent_genesis_validator_is_jailed_and_the_others_go_on() -> None:
    chain = PureChain([G1, G2, G3], [], jail_slash_bps=250)
    up = {G1.address, G2.address}  # G3 never signs; two of three still may
    chain.run_to(E + 1, up)  # epoch 0's set is judged on heights 1-8 at block 9
    assert active(chain.state, chain.genesis) == sorted([G1.address, G2.address])
    record = chain.record(G3.address)
    assert record == {
        "bond": 0,
        "since": 0,
        "joins": None,
        "leaves": None,
        "left": 1,
        "jailed": E + 1,
        "slashed": 0,  # a genesis validator's place holds no bond to slash
    }
    chain.run_to(2 * E + 1, up)
    assert active(chain.state, chain.genesis) == sorted([G1.address, G2.address])
    # A genesis validator rejoins like anyone else: with at least validator_min_bond.
    chain.rejected(chain.send(G3, "validator.bond", {"amount": DN // 2}), "bond-too-low")


def test_a_chain_whose_validators_sign_their_turns_writes_nothing_new() -> None:
    """No miss, no join: not one key of the jailing rule, so the state roots are those of a
    chain without the rule."""
    chain = PureChain([G1, G2, G3], [])
    written: set[str] = set()
    for _ in range(3 * E + 1):
        block = chain.step({G1.address, G2.address, G3.address}, random.Random(0))
        assert block.header.difficulty == 2
        written |= set(chain.state.data)
    assert not any(k.startswith(("downtime:", "validator")) for k in written)


def test_the_limit_is_more_than_the_share_of_turns() -> None:
    chain = PureChain([G1, G2], [], jail_max_missed_bps=5_000)
    members = active(chain.state, chain.genesis)  # 2: each in turn at 4 of heights 1-8
    assert [turns(members, v, 1, E) for v in members] == [4, 4]
    chain.state.update({"downtime:0": {members[0]: 2, members[1]: 3}})
    assert over_limit(chain.state, 0, chain.genesis) == [members[1]]  # 2 of 4 is not over half


def test_jailing_never_empties_the_set() -> None:
    chain = PureChain([G1], [])
    chain.run_to(E, {G1.address})
    chain.state.update({"downtime:0": {G1.address: 5}})  # as if it had missed its turns
    overlay = Overlay(chain.state)
    assert judge(overlay, 0, E + 1, chain.genesis) == []
    assert overlay.changes == {"downtime:0": None}
    assert over_limit(chain.state, 0, chain.genesis) == [G1.address]


def test_the_last_validator_cannot_unbond_out_of_the_set() -> None:
    chain = PureChain([G1], [S1], validator_min_bond=100 * DN)
    chain.step(
        {G1.address}, random.Random(0), [chain.send(S1, "validator.bond", {"amount": 100 * DN})]
    )
    chain.run_to(E + 1, {G1.address, S1.address})
    # A set whose genesis validator was jailed: the bonded one is all that is left.
    chain.state.update({"validators": [S1.address]})
    chain.rejected(chain.send(S1, "validator.unbond", {"amount": 100 * DN}), "last-validator")


@settings(max_examples=40, deadline=None)
@given(
    genesis_count=st.integers(1, 3),
    honest_joiners=st.integers(0, 2),
    silent_joiners=st.integers(0, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_validators_that_sign_their_turns_are_never_jailed(
    genesis_count: int, honest_joiners: int, silent_joiners: int, seed: int
) -> None:
    """Whatever the mix, validators that sign every turn they may sign are never jailed, the
    chain never stops, and joiners that never sign leave at the end of their first epoch."""
    assume(genesis_count + honest_joiners + silent_joiners < E)  # each has a turn an epoch
    genesis_keys = [G1, G2, G3][:genesis_count]
    honest, silent = [H1, H2][:honest_joiners], [S1, S2, S3][:silent_joiners]
    chain = PureChain(genesis_keys, [*honest, *silent], validator_min_bond=100 * DN)
    up = {k.address for k in [*genesis_keys, *honest]}
    pick = random.Random(seed)
    bonds = [chain.send(k, "validator.bond", {"amount": 100 * DN}) for k in [*honest, *silent]]
    chain.step(up, pick, bonds)
    while chain.height < 4 * E + 1:
        chain.step(up, pick)
        for address in up:
            record = chain.record(address)
            assert record is None or "jailed" not in record
    assert active(chain.state, chain.genesis) == sorted(up)
    for key in silent:
        assert chain.record(key.address)["jailed"] == 2 * E + 1
    assert supply_holds(chain.state.items())
