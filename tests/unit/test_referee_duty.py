"""The referee duty (dn/node/validator/referee.py `Referee`) on the pure state machine: which
validators judge which task, and the vote for a task whose miners never show their record.

The chain is test_chain_dispute_votes's: three validators of one voice each, so a ruling needs
two votes. Miners are reached through a fake `fetch`; a task whose record nobody shows never
reaches llama.cpp, so the runner is a fake too. Every vote goes through the real mempool and
the real block rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dn.chain import disputes
from dn.chain.tasks import eligible_miners
from dn.chain.types import Block
from dn.node.validator.referee import Referee
from dn.wallet.keys import Keypair
from tests.unit.test_chain_dispute_votes import BOND, SLASH, new_market, settled
from tests.unit.test_chain_models import SMOL
from tests.unit.test_chain_powr import V0, V1, V2, PowrChain
from tests.unit.test_powr_validator import ChainNode, FakeRunner, FakeStore


@dataclass
class BlockNode(ChainNode):
    """ChainNode, with the blocks the referee scans."""

    def block(self, height: int) -> Block | None:
        blocks = self.chain.blocks
        return blocks[height - 1] if 0 < height <= len(blocks) else None


def silent(url: str, task: str, body: dict[str, Any]) -> Any:
    """Miners that show no record."""
    return None


def referee(chain: PowrChain, kp: Keypair) -> Referee:
    return Referee(BlockNode(chain), kp, FakeStore({SMOL}), FakeRunner(), fetch=silent)


def test_every_validator_that_is_not_a_party_judges_every_task_at_once() -> None:
    chain = new_market()
    task, _, _ = settled(chain, "rejected", consumer=V0)
    cases = {kp.address: referee(chain, kp).next_case() for kp in (V0, V1, V2)}
    assert cases[V0.address] is None  # the consumer: its vote would be refused
    for kp in (V1, V2):  # no waiting for half the window behind another referee
        found = cases[kp.address]
        assert found is not None and found.task == task


def test_a_validator_that_voted_judges_the_task_no_more() -> None:
    chain = new_market()
    task, _, _ = settled(chain, "rejected")
    chain.commit(
        [chain.send(V1, "task.verdict", {"task": task, "faults": {}, "evidence": "0" * 64})]
    )
    assert chain.state.get("task:" + task).get("verdict") is None  # one vote of three
    assert referee(chain, V1).next_case() is None
    found = referee(chain, V2).next_case()
    assert found is not None and found.task == task


def test_when_neither_miner_shows_its_record_the_quorum_slashes_both() -> None:
    chain = new_market()
    task, gen, chk = settled(chain, "rejected")
    referees = [referee(chain, kp) for kp in (V0, V1)]
    cases = [r.next_case() for r in referees]
    assert all(c is not None for c in cases)
    # Before half the window a silent miner may be restarting: no vote yet.
    assert [r.perform(c) for r, c in zip(referees, cases, strict=True) if c] == [None, None]
    window = disputes.dispute_window(chain.genesis)
    chain.advance_to(chain.tip.height + window // 2)
    for r, c in zip(referees, cases, strict=True):
        assert c is not None
        c.tried = 0.0
        ruling = r.perform(c)
        assert ruling is not None
        assert ruling.faults == {"generator": disputes.NO_RECORD, "checker": disputes.NO_RECORD}
        chain.mempool.add(r.verdict_tx(c, ruling))
    chain.commit(chain.mempool.pending())
    verdict = chain.state.get("task:" + task)["verdict"]
    assert verdict["faults"] == {gen.address: disputes.NO_RECORD, chk.address: disputes.NO_RECORD}
    assert verdict["slashed"] == {gen.address: SLASH, chk.address: SLASH}
    assert chain.state.get("miner:" + gen.address)["bond"] == 0 < BOND  # out of service
    assert eligible_miners(chain.state, SMOL, chain.tip.height) == []
