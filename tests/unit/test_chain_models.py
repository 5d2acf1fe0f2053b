"""Models and miners on the pure state machine (DESIGN.md sections 4 and 7): `model.register`,
`model.retire`, `miner.register`, `miner.exit`, and bonds released through `apply_block`.

Every invalid case asserts the exact rejection reason, from apply_tx and from the mempool, and
that nothing changed. `Chain` is shared with test_chain_tasks.py.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any

import pytest

from dn.chain.genesis import Genesis, checked_params
from dn.chain.ledger import DictState
from dn.chain.mempool import Mempool
from dn.chain.state import (
    apply_block,
    build_block,
    genesis_block,
    genesis_state,
    supply_holds,
    supply_report,
)
from dn.chain.tasks import eligible_miners
from dn.chain.types import Block, Tx, txs_root
from dn.encoding import UNITS_PER_DN
from dn.errors import InvalidBlock, InvalidTx
from dn.wallet.keys import Keypair
from tests.unit.test_chain_state import Env, V, assert_rejected, forge

DN = UNITS_PER_DN
CREATOR = Keypair.from_seed(b"creator".ljust(32, b"."))
OTHER = Keypair.from_seed(b"other".ljust(32, b"."))
M1 = Keypair.from_seed(b"miner-1".ljust(32, b"."))
M2 = Keypair.from_seed(b"miner-2".ljust(32, b"."))
M3 = Keypair.from_seed(b"miner-3".ljust(32, b"."))
CONSUMER = Keypair.from_seed(b"consumer".ljust(32, b"."))
GATEWAY = Keypair.from_seed(b"gateway".ljust(32, b"."))
POOR = Keypair.from_seed(b"poor".ljust(32, b"."))  # 1 DN: a fee, never a bond
FUNDED = (CREATOR, OTHER, M1, M2, M3, CONSUMER, GATEWAY)
BOND = 10 * DN  # the default miner_min_bond
UNBONDING = 3
WINDOW = 5


def model_sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


SMOL = model_sha("smollm2-135m")
GEMMA = model_sha("gemma3-270m")


ESCROWED = 100 * DN  # CONSUMER's query escrow at genesis


def make_genesis(**params: int) -> Genesis:
    allocations = {kp.address: 100 * DN for kp in FUNDED}
    allocations[POOR.address] = DN
    overrides = {"unbonding_blocks": UNBONDING, "ticket_window_blocks": WINDOW, **params}
    return Genesis.build(
        network="devnet",
        time_ms=1000,
        validators=[V.address],
        allocations=allocations,
        params=checked_params(overrides),
        escrows={CONSUMER.address: ESCROWED},  # what pays CONSUMER's queries (escrow.py)
    )


@dataclass
class Chain(Env):
    """Env from test_chain_state, plus a mempool that follows the tip and typed transactions."""

    def send(
        self,
        kp: Keypair,
        kind: str,
        payload: dict[str, Any],
        *,
        nonce: int | None = None,
        fee: int | None = None,
    ) -> Tx:
        return Tx.create(
            kp,
            chain_id=self.genesis.chain_id,
            kind=kind,
            nonce=self.nonce(kp) if nonce is None else nonce,
            fee=self.min_fee if fee is None else fee,
            payload=payload,
        )

    def register_model(
        self, kp: Keypair = CREATOR, sha: str = SMOL, name: str = "smollm2", **fields: Any
    ) -> Tx:
        payload = {
            "model": sha,
            "name": name,
            "domain": "general",
            "price": 1000,
            "license": "apache-2.0",
            "size": 98_362_432,
        }
        return self.send(kp, "model.register", {**payload, **fields})

    def register_miner(
        self,
        kp: Keypair,
        models: list[str] | None = None,
        bond: int = BOND,
        url: str | None = None,
        **kw: Any,
    ) -> Tx:
        payload = {"bond": bond, "url": url or f"http://{kp.address[:10]}:8000", "models": models}
        payload["models"] = models if models is not None else [SMOL]
        return self.send(kp, "miner.register", payload, **kw)

    def exit_miner(self, kp: Keypair, **kw: Any) -> Tx:
        return self.send(kp, "miner.exit", {}, **kw)

    def commit(self, txs: list[Tx], time_ms: int | None = None) -> Block:
        block = super().commit(txs, time_ms)
        dropped = self.mempool.reset(
            self.state, [t.id for t in block.txs], tip_height=block.height, tip_hash=block.hash
        )
        assert dropped == []
        assert supply_holds(self.state.items())
        return block

    def advance_to(self, height: int) -> None:
        while self.tip.height < height:
            self.commit([])

    def fees_paid(self, txs: list[Tx]) -> int:
        return sum(t.fee for t in txs)


def new_chain(**params: int) -> Chain:
    genesis = make_genesis(**params)
    state = DictState(genesis_state(genesis))
    tip = genesis_block(genesis)
    mempool = Mempool(genesis, V.address, state, tip_height=0, tip_hash=tip.hash)
    return Chain(genesis, state, mempool, tip)


@pytest.fixture
def chain() -> Chain:
    return new_chain()


@pytest.fixture
def served(chain: Chain) -> Chain:
    """SMOL registered at height 1, served by M1 and M2 from height 2."""
    chain.commit([chain.register_model()])
    chain.commit([chain.register_miner(M1), chain.register_miner(M2)])
    return chain


# --- model.register -------------------------------------------------------------------------


def test_register_a_model(chain: Chain) -> None:
    tx = chain.register_model(price=2500, license="")
    chain.commit([tx])
    assert chain.state.get("model:" + SMOL) == {
        "creator": CREATOR.address,
        "name": "smollm2",
        "domain": "general",
        "price": 2500,
        "license": "",
        "size": 98_362_432,
        "kind": "chat",  # a payload without `kind` registers a chat model
        "height": 1,
        "retired": False,
        "tasks": 0,
        "tokens": 0,
        "rejected": 0,
    }
    assert chain.state.get("model-name:smollm2") == SMOL
    assert chain.balance(CREATOR) == 100 * DN - tx.fee  # registering costs only the fee
    assert chain.nonce(CREATOR) == 1


def test_the_same_model_cannot_be_registered_twice(chain: Chain) -> None:
    chain.commit([chain.register_model()])
    assert_rejected(chain, chain.register_model(OTHER, name="mine-now"), "model-exists")
    assert_rejected(chain, chain.register_model(name="again"), "model-exists")
    chain.commit([chain.send(CREATOR, "model.retire", {"model": SMOL})])
    assert_rejected(chain, chain.register_model(name="revived"), "model-exists")  # retired too


def test_a_live_model_name_is_taken(chain: Chain) -> None:
    chain.commit([chain.register_model()])
    assert_rejected(chain, chain.register_model(OTHER, sha=GEMMA, name="smollm2"), "name-taken")
    assert_rejected(chain, chain.register_model(sha=GEMMA, name="smollm2"), "name-taken")


def test_a_retired_model_frees_its_name(chain: Chain) -> None:
    chain.commit([chain.register_model()])
    chain.commit([chain.send(CREATOR, "model.retire", {"model": SMOL})])
    assert chain.state.get("model-name:smollm2") is None
    chain.commit([chain.register_model(OTHER, sha=GEMMA, name="smollm2")])
    assert chain.state.get("model-name:smollm2") == GEMMA
    assert chain.state.get("model:" + SMOL)["retired"] is True


# Names are compared by their key (`models.name_key`): runs of whitespace made one space, none at
# the ends, A-Z read as a-z. So nobody can register a look-alike of a live model's name that a
# user would take for it.
@pytest.mark.parametrize(
    "lookalike",
    ["Smol LM2", "SMOL LM2", " smol lm2", "smol lm2\t", "smol   lm2", "smol\u00a0lm2", "sMoL\nLm2"],
)
def test_a_name_differing_only_in_case_or_spacing_is_taken(chain: Chain, lookalike: str) -> None:
    chain.commit([chain.register_model(name="smol lm2")])
    assert_rejected(chain, chain.register_model(OTHER, sha=GEMMA, name=lookalike), "name-taken")


def test_the_first_spelling_of_a_name_is_kept_and_every_spelling_is_freed_on_retire(
    chain: Chain,
) -> None:
    chain.commit([chain.register_model(name="SmolLM2  Instruct")])
    assert chain.state.get("model:" + SMOL)["name"] == "SmolLM2  Instruct"  # shown as given
    assert chain.state.get("model-name:SmolLM2  Instruct") == SMOL  # looked up as given
    assert chain.state.get("model-name-key:smollm2 instruct") == SMOL
    assert_rejected(
        chain, chain.register_model(OTHER, sha=GEMMA, name="smollm2 instruct"), "name-taken"
    )
    chain.commit([chain.send(CREATOR, "model.retire", {"model": SMOL})])
    assert chain.state.get("model-name:SmolLM2  Instruct") is None
    assert chain.state.get("model-name-key:smollm2 instruct") is None
    chain.commit([chain.register_model(OTHER, sha=GEMMA, name="smollm2 instruct")])
    assert chain.state.get("model-name:smollm2 instruct") == GEMMA
    assert chain.state.get("model-name-key:smollm2 instruct") == GEMMA


@pytest.mark.parametrize("other", ["smol-lm2", "smollm2", "smol lm2 2", "smöl lm2"])
def test_names_that_differ_otherwise_are_free(chain: Chain, other: str) -> None:
    chain.commit([chain.register_model(name="smol lm2")])
    chain.commit([chain.register_model(OTHER, sha=GEMMA, name=other)])
    assert chain.state.get("model:" + GEMMA)["name"] == other


def test_register_needs_the_fee(chain: Chain) -> None:
    broke = Keypair.from_seed(b"broke".ljust(32, b"."))
    assert_rejected(chain, chain.register_model(broke), "insufficient-funds")


def test_two_registrations_in_one_block_the_second_is_left_out(chain: Chain) -> None:
    first = chain.register_model()
    rival = chain.register_model(OTHER, name="other-name")
    applied, rejected = build_block(
        chain.state, chain.tip.header, chain.tip.hash, [first, rival], V, 2000, chain.genesis
    )
    assert [t.id for t in applied.block.txs] == [first.id]
    assert [(t.id, e.reason) for t, e in rejected] == [(rival.id, "model-exists")]


# --- model.retire ---------------------------------------------------------------------------


def test_retire_rules(chain: Chain) -> None:
    assert_rejected(chain, chain.send(CREATOR, "model.retire", {"model": SMOL}), "unknown-model")
    chain.commit([chain.register_model()])
    assert_rejected(chain, chain.send(OTHER, "model.retire", {"model": SMOL}), "not-creator")
    chain.commit([chain.send(CREATOR, "model.retire", {"model": SMOL})])
    assert chain.state.get("model:" + SMOL)["retired"] is True
    again = chain.send(CREATOR, "model.retire", {"model": SMOL})
    assert_rejected(chain, again, "already-retired")


# --- miner.register -------------------------------------------------------------------------


def test_register_a_miner_moves_the_bond(served: Chain) -> None:
    assert served.state.get("miner:" + M1.address) == {
        "bond": BOND,
        "url": f"http://{M1.address[:10]}:8000",
        "models": [SMOL],
        "since": 2,
        "exited": None,
    }
    assert served.balance(M1) == 100 * DN - BOND - served.min_fee
    assert eligible_miners(served.state, SMOL, 2) == sorted([M1.address, M2.address])
    assert eligible_miners(served.state, SMOL, 1) == []  # not yet at height 1
    report = supply_report(served.state.items())
    assert report["bonds"] == 2 * BOND and report["held"] == report["created"]


def test_miner_register_rejections(chain: Chain) -> None:
    chain.commit([chain.register_model(), chain.register_model(OTHER, sha=GEMMA, name="gemma")])
    chain.commit([chain.send(OTHER, "model.retire", {"model": GEMMA})])
    low = chain.register_miner(M1, bond=BOND - 1)
    assert_rejected(chain, low, "bond-too-low")
    assert_rejected(chain, chain.register_miner(M1, [SMOL, model_sha("nope")]), "unknown-model")
    assert_rejected(chain, chain.register_miner(M1, [SMOL, GEMMA]), "model-retired")
    assert_rejected(chain, chain.register_miner(POOR), "insufficient-funds")
    # All of the balance is enough: fee + bond exactly.
    exact = new_chain(miner_min_bond=DN - 1000)
    exact.commit([exact.register_model()])
    exact.commit([exact.register_miner(POOR, bond=DN - 1000)])
    assert exact.balance(POOR) == 0


def test_register_needs_the_fee_and_the_bond_together(chain: Chain) -> None:
    rich = 100 * DN
    chain.commit([chain.register_model()])
    too_much = chain.register_miner(M1, bond=rich - chain.min_fee + 1)
    assert_rejected(chain, too_much, "insufficient-funds")
    chain.commit([chain.register_miner(M1, bond=rich - chain.min_fee)])
    assert chain.balance(M1) == 0


def test_a_live_miner_updates_url_and_models_and_tops_up(served: Chain) -> None:
    served.commit([served.register_model(OTHER, sha=GEMMA, name="gemma")])  # height 3
    before = served.balance(M1)
    update = served.register_miner(M1, [GEMMA, GEMMA], bond=BOND + 5, url="http://new:1")
    served.commit([update])  # height 4
    assert served.state.get("miner:" + M1.address) == {
        "bond": BOND + 5,
        "url": "http://new:1",
        "models": [GEMMA],
        "since": 2,
        "exited": None,
    }
    assert served.balance(M1) == before - 5 - update.fee  # only the top-up moves
    # SMOL was served by M1 up to block 3, GEMMA from block 4.
    assert eligible_miners(served.state, SMOL, 3) == sorted([M1.address, M2.address])
    assert eligible_miners(served.state, SMOL, 4) == [M2.address]
    assert eligible_miners(served.state, GEMMA, 3) == []
    assert eligible_miners(served.state, GEMMA, 4) == [M1.address]
    # The same bond again is a free update; less is refused.
    same = served.register_miner(M1, [SMOL, GEMMA], bond=BOND + 5)
    served.commit([same])
    assert served.state.get("miner:" + M1.address)["bond"] == BOND + 5
    assert eligible_miners(served.state, GEMMA, 5) == [M1.address]
    assert eligible_miners(served.state, SMOL, 5) == sorted([M1.address, M2.address])
    assert_rejected(served, served.register_miner(M1, bond=BOND + 4), "bond-decrease")


# --- miner.exit and unbonding ---------------------------------------------------------------


def test_exit_rules(served: Chain) -> None:
    assert_rejected(served, served.exit_miner(M3), "not-miner")
    served.commit([served.exit_miner(M1)])
    assert_rejected(served, served.exit_miner(M1), "not-miner")


def test_exit_releases_the_bond_exactly_after_unbonding(served: Chain) -> None:
    exit_tx = served.exit_miner(M1)
    served.commit([exit_tx])  # height 3
    release = 3 + UNBONDING
    assert served.state.get("miner:" + M1.address) == {
        "bond": 0,
        "url": f"http://{M1.address[:10]}:8000",
        "models": [SMOL],
        "since": 2,
        "exited": 3,
    }
    assert served.state.get(f"unlock:{release}") == [
        {"address": M1.address, "amount": BOND, "what": "bond"}
    ]
    after_exit = served.balance(M1)
    report = supply_report(served.state.items())
    assert (report["bonds"], report["unbonding"]) == (BOND, BOND)
    # Still eligible for tickets that refer to heights before the exit, not from it on.
    assert eligible_miners(served.state, SMOL, 2) == sorted([M1.address, M2.address])
    assert eligible_miners(served.state, SMOL, 3) == [M2.address]
    served.advance_to(release - 1)
    assert served.balance(M1) == after_exit
    assert served.state.get(f"unlock:{release}") is not None
    block = served.commit([])
    assert block.height == release
    assert served.balance(M1) == after_exit + BOND
    assert served.state.get(f"unlock:{release}") is None
    assert supply_report(served.state.items())["unbonding"] == 0


def test_released_bond_can_be_spent_in_the_block_that_releases_it(served: Chain) -> None:
    served.commit([served.exit_miner(M1)])  # height 3
    served.advance_to(3 + UNBONDING - 1)
    everything = served.balance(M1) + BOND - served.min_fee
    spend = served.send(M1, "transfer", {"to": OTHER.address, "amount": everything})
    served.mempool.add(spend)  # the mempool checks against the next block, which releases it
    served.commit([spend])
    assert served.balance(M1) == 0


def test_exits_in_one_block_share_the_unlock_entry(served: Chain) -> None:
    served.commit([served.exit_miner(M1), served.exit_miner(M2)])
    assert served.state.get(f"unlock:{3 + UNBONDING}") == [
        {"address": M1.address, "amount": BOND, "what": "bond"},
        {"address": M2.address, "amount": BOND, "what": "bond"},
    ]
    served.advance_to(3 + UNBONDING)
    assert served.balance(M1) == served.balance(M2) == 100 * DN - 2 * served.min_fee


def test_an_exited_miner_can_register_again(served: Chain) -> None:
    served.commit([served.exit_miner(M1)])  # height 3
    served.commit([served.register_miner(M1, bond=BOND + 1)])  # height 4
    assert served.state.get("miner:" + M1.address) == {
        "bond": BOND + 1,
        "url": f"http://{M1.address[:10]}:8000",
        "models": [SMOL],
        "since": 4,
        "exited": None,
    }
    assert eligible_miners(served.state, SMOL, 3) == [M2.address]
    assert eligible_miners(served.state, SMOL, 4) == sorted([M1.address, M2.address])
    served.advance_to(3 + UNBONDING)  # the old bond still comes back on time
    assert served.balance(M1) == 100 * DN - BOND - 1 - 3 * served.min_fee
    assert supply_report(served.state.items())["bonds"] == 2 * BOND + 1


def test_serving_intervals_older_than_the_ticket_window_are_pruned(served: Chain) -> None:
    served.commit([served.exit_miner(M1)])  # height 3: M1 served SMOL in [2, 3)
    served.advance_to(3 + WINDOW)
    served.commit([served.register_miner(M3)])  # height 9: 9 - 5 = 4 >= 3, so [2, 3) goes
    assert served.state.get("serving:" + SMOL) == [
        {"miner": M2.address, "from": 2, "until": None},
        {"miner": M3.address, "from": 9, "until": None},
    ]


# --- blocks ---------------------------------------------------------------------------------


def test_a_block_of_model_and_miner_txs_round_trips(chain: Chain) -> None:
    txs = [
        chain.register_model(),
        chain.register_model(OTHER, sha=GEMMA, name="gemma"),
        chain.register_miner(M1, [SMOL, GEMMA]),
        chain.register_miner(M2, [SMOL]),
        chain.send(OTHER, "model.retire", {"model": GEMMA}, nonce=1),
    ]
    applied, rejected = build_block(
        chain.state, chain.tip.header, chain.tip.hash, txs, V, 2000, chain.genesis
    )
    assert rejected == [] and len(applied.block.txs) == 5
    wire = Block.from_json(applied.block.to_json())
    assert wire.hash == applied.block.hash
    fresh = DictState(genesis_state(chain.genesis))
    replayed = apply_block(fresh, chain.tip.header, chain.tip.hash, wire, chain.genesis)
    assert replayed.changes == applied.changes
    fresh.update(replayed.changes)
    assert supply_holds(fresh.items())
    assert fresh.get("model:" + GEMMA)["retired"] is True
    assert fresh.get("miner:" + M1.address)["models"] == sorted([SMOL, GEMMA])


def test_a_block_whose_miner_tx_does_not_apply_is_invalid(chain: Chain) -> None:
    """The state rules run inside apply_block: a block with a bond its sender cannot pay is
    refused whole, and changes nothing."""
    chain.commit([chain.register_model()])
    good = chain.register_miner(M1)
    applied, _ = build_block(
        chain.state, chain.tip.header, chain.tip.hash, [good], V, 5000, chain.genesis
    )
    broke = chain.register_miner(POOR)
    forged = forge(applied.block, txs=[broke], txs_root=txs_root([broke]))
    before = copy.deepcopy(chain.state.data)
    with pytest.raises(InvalidBlock) as caught:
        apply_block(chain.state, chain.tip.header, chain.tip.hash, forged, chain.genesis)
    assert caught.value.reason == "bad-tx"
    assert "cannot pay" in caught.value.message
    assert chain.state.data == before


@pytest.mark.parametrize(
    "url",
    [
        "http://router.local:80/admin?reboot=1",  # a path and a query: gateways would call it
        "http://127.0.0.1:8780/dn/v1/tx",
        "file:///etc/passwd",
        "ftp://miner.local:21",
        "http://user:secret@miner.local:8780",
        "http://miner.local:99999",
        "http://miner.local:8780#x",
        "miner.local:8780",
        "http://",
        "http://mïner.local:8780",
    ],
)
def test_a_miner_registers_only_a_plain_http_address(chain: Chain, url: str) -> None:
    """Gateways and referees call `{url}/dn/v1/…`: a miner may name a scheme, a host and a port,
    nothing else (issue 12, attack 7: any URL was taken)."""
    with pytest.raises(InvalidTx) as caught:
        chain.register_miner(M1, url=url)
    assert caught.value.reason == "bad-payload"


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.5:8780", "https://miner.local:443", "http://[::1]:8780", "http://m1:8780/"],
)
def test_plain_http_addresses_are_taken(chain: Chain, url: str) -> None:
    chain.commit([chain.register_model()])
    chain.commit([chain.register_miner(M1, url=url)])
    assert chain.state.get("miner:" + M1.address)["url"] == url
