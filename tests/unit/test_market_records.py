"""The miner's task records (dn/node/market/records.py) on real SQLite files: each kept until no
validator can vote on its task any more, bounded in bytes per consumer, never pushed out by
another consumer's tasks.

Attack 7 (THREATS.md, "Nobody works unpaid", "Accountability"): a miner that kept only its newest
20,000 records could be made to drop an honest checker's values by anyone sending free tasks, and
the checker was then slashed for `no-values` (or both miners for `no-record`). The first test
plays it through to the vote: an honest task settled on real nodes, 100,000 junk tasks of one
consumer at the checker, then the referee asks for the record, finds it, re-checks it and votes
that nobody is at fault.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dn.chain import books, disputes, tasks
from dn.chain.ledger import MINER, TASK
from dn.errors import TaskError
from dn.node.market import miner as miner_module
from dn.node.market.miner import Miner
from dn.node.market.records import TaskRecords, request_ok
from dn.node.taskio import input_hash, normalize_input
from dn.node.validator.referee import Referee
from dn.runner.check import Thresholds, TokenValue, Verdict, judge, quantized_commitment
from dn.wallet.keys import Keypair
from tests.unit.test_backstop import BOOKED, MINERS, WINDOW, Lan
from tests.unit.test_chain_models import BOND, CONSUMER, CREATOR, DN, SMOL
from tests.unit.test_chain_state import V
from tests.unit.test_powr_validator import FakeStore

JUNK = Keypair.from_seed(b"junk consumer".ljust(32, b"."))
EOG = 2  # the scripted model's end-of-generation token
TOKENS = [11, 12, 13, 14, EOG]
VALUES = [TokenValue(t, 0, 0.0, 12.5 - i / 4) for i, t in enumerate(TOKENS)]  # all top-1
INPUT = {"prompt": "Why is the sky blue?"}
BUDGET = 64 * 1024  # bytes of one consumer's records in these tests


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[Lan]:
    made = Lan(tmp_path, spot_check_bps=10_000)  # validators re-check every confirmed task
    yield made
    made.close()


def records_at(path: Path, **bounds: int) -> TaskRecords:
    return TaskRecords(path, ticket_window=WINDOW, dispute_window=5, **bounds)


def junk_ticket(i: int, ref_height: int = 1) -> dict[str, Any]:
    """What a free task's ticket looks like to the records (the miner verified it before)."""
    return {
        "consumer": JUNK.address,
        "model": SMOL,
        "max_tokens": 3,
        "ref_height": ref_height,
        "expiry": 10 + i,
    }


def flood(records: TaskRecords, n: int, **ticket: Any) -> int:
    """`n` tasks of the junk consumer, each taken as a miner takes one (`room` before any work,
    then `put`); how many were refused."""
    refused = 0
    for i in range(n):
        task, signed, task_input = f"{i:064x}", {**junk_ticket(i), **ticket}, {"prompt": f"j{i}"}
        try:
            records.room(signed, task_input)
            records.put(
                task,
                "checker",
                ticket=signed,
                task_input=task_input,
                tokens=[1, 2, 3],
                values=[[1, 0, 0, 1000], [2, 0, 0, 900], [3, 0, 0, 800]],
            )
        except TaskError as exc:
            assert exc.reason == "records-full"
            refused += 1
    return refused


# --- attack 7, through to the vote ----------------------------------------------------------


@dataclass
class ScriptedModel:
    """A model whose prefill check gives VALUES: the referee's own computation of the answer."""

    n_vocab: int = 100

    def is_eog(self, token: int) -> bool:
        return token == EOG

    @contextmanager
    def check(
        self, prompt: str, max_tokens: int, thresholds: Thresholds, **options: Any
    ) -> Iterator[Any]:
        @dataclass
        class Session:
            values: list[TokenValue]

            def feed(self, tokens: list[int]) -> None:
                assert tokens == TOKENS

            def ended(self) -> bool:
                return TOKENS[-1] == EOG

            def finish(self) -> Verdict:
                return judge(self.values, thresholds, max_tokens=max_tokens, ended=True)

        yield Session(list(VALUES))


class ScriptedRunner:
    def model(self, path: Path, role: str = "check") -> ScriptedModel:
        return ScriptedModel()

    def close(self) -> None:
        pass


def spot_checked_task(lan: Lan) -> tuple[dict[str, Any], str, str, str]:
    """A ticket of CONSUMER for INPUT, in slot 0 of its book in block BOOKED (the `lan`'s tip),
    whose confirmed answer validators re-check (every one, at this `lan`'s spot_check_bps),
    and (ticket, task, generator, checker): the pair the slot draws."""
    chain_id, ref = lan.genesis.chain_id, BOOKED
    assert lan.miner.tip.height == ref
    for nonce in range(1):  # the book's one slot
        ticket = tasks.sign_ticket(
            chain_id,
            CONSUMER,
            model=SMOL,
            prompt_hash=input_hash(normalize_input(INPUT)),
            max_tokens=64,
            seed=0,
            max_price=DN,
            ref_height=ref,
            nonce=nonce,
            expiry=ref + 10,
        )
        task = tasks.task_id(chain_id, ticket)
        if disputes.spot_checked(task, "00" * 32, lan.genesis):  # any block: every task
            state, block_hash = lan.miner.state, lan.miner.store.canonical_hash
            generator, checker = books.chosen(state, ticket, block_hash, final=ref)
            return ticket, task, generator, checker
    raise AssertionError("no spot-checked ticket")


def test_one_consumers_junk_does_not_push_out_an_honest_checkers_record(
    lan: Lan, tmp_path: Path
) -> None:
    chain_id = lan.genesis.chain_id
    # An honest task: the checker records its values, then the answer is settled as confirmed.
    ticket, task, generator, checker = spot_checked_task(lan)
    rows = [v.quantized() for v in VALUES]
    common = {"task": task, "output_hash": tasks.output_hash(TOKENS), "tokens": len(TOKENS)}
    gen = tasks.sign_attestation(
        chain_id, MINERS[generator], role="generator", verdict="generated", commitment="", **common
    )
    chk = tasks.sign_attestation(
        chain_id,
        MINERS[checker],
        role="checker",
        verdict="confirmed",
        commitment=quantized_commitment(rows),
        **common,
    )
    records = TaskRecords.for_chain(tmp_path / "checker.db", lan.genesis, consumer_bytes=BUDGET)
    records.put(task, "checker", ticket=ticket, task_input=INPUT, tokens=TOKENS, values=rows)
    lan.block(
        lan.tx(CONSUMER, "task.settle", {"ticket": ticket, "generator": gen, "checker": chk}),
        lan.tx(CREATOR, "transfer", {"to": V.address, "amount": DN}),  # the referee's fees
    )
    assert lan.validator.state.get(TASK + task)["status"] == "confirmed"

    # The attack: 100,000 free tasks of one other consumer at the same checker.
    refused = flood(records, 100_000)
    assert refused > 99_000  # its budget took a few hundred; the rest were refused
    assert records.used(JUNK.address) <= BUDGET
    assert records.get(task) is not None
    records.room(ticket, INPUT)  # the honest consumer is still served

    # A referee asks the checker for the record, as over `POST /dn/v1/tasks/{task}/record`.
    checker_url = lan.validator.state.get(MINER + checker)["url"]

    def fetch(url: str, asked: str, body: dict[str, Any]) -> Any:
        assert request_ok(chain_id, asked, body, [V.address])
        return records.get(asked) if url == checker_url else None

    referee = Referee(lan.validator, V, FakeStore({SMOL}), ScriptedRunner(), fetch=fetch)
    case = referee.next_case()
    assert case is not None and case.task == task and case.checker == checker
    ruling = referee.perform(case)
    assert ruling is not None and ruling.faults == {}, ruling
    lan.block(referee.verdict_tx(case, ruling))
    verdict = lan.validator.state.get(TASK + task)["verdict"]
    assert verdict["faults"] == {} and verdict["slashed"] == {}
    for miner in (generator, checker):  # no honest miner slashed
        assert lan.validator.state.get(MINER + miner)["bond"] == BOND
    records.close()


def test_a_miner_refuses_a_consumer_at_its_budget_before_any_work(lan: Lan) -> None:
    ticket, task, generator, _ = spot_checked_task(lan)
    lan.block()  # one on top: the book's block is final (one validator)
    records = records_at(lan.tmp_path / "miner.db", consumer_bytes=BUDGET)
    miner = Miner(
        lan.miner,
        MINERS[generator],
        FakeStore({SMOL}),  # type: ignore[arg-type]
        ScriptedRunner(),  # type: ignore[arg-type]
        records=records,
    )
    assert miner.accept(ticket, INPUT, tasks.GENERATOR).task == task
    flood(records, 1_000, consumer=CONSUMER.address)  # this consumer's own tasks fill its budget
    with pytest.raises(TaskError) as refused:
        miner.accept(ticket, INPUT, tasks.GENERATOR)
    assert refused.value.reason == "records-full"
    miner.records.close()


# --- how long and how much ------------------------------------------------------------------


def test_a_record_is_kept_until_no_validator_can_vote_on_its_task(tmp_path: Path) -> None:
    records = records_at(tmp_path / "r.db")
    # The last block that can settle it is min(expiry, ref + WINDOW); votes may follow for 5 more.
    assert records.keep_until({"ref_height": 10, "expiry": 15}) == 15 + 5
    assert records.keep_until({"ref_height": 10, "expiry": 500}) == 10 + WINDOW + 5
    flood(records, 3, ref_height=10, expiry=15)
    assert records.forget(20) == 0 and records.count() == 3  # a vote may still come in block 20
    assert records.forget(21) == 3 and records.count() == 0
    assert records.used() == 0 and records.used(JUNK.address) == 0
    records.close()


def test_a_consumer_over_its_budget_is_refused_and_loses_nothing(tmp_path: Path) -> None:
    records = records_at(tmp_path / "r.db", consumer_bytes=BUDGET, total_bytes=3 * BUDGET // 2)
    first = flood(records, 1)
    assert first == 0
    kept = records.get(f"{0:064x}")
    refused = flood(records, 2_000)
    assert 0 < refused < 2_000
    assert records.get(f"{0:064x}") == kept  # its own oldest record stays: a refusal, no eviction
    stored = records.count()
    with pytest.raises(TaskError) as full:
        records.room(junk_ticket(0), {"prompt": "j0"})
    assert full.value.reason == "records-full"
    # Another consumer has its own budget; everyone's together are bounded too.
    other = {"consumer": CONSUMER.address, "max_tokens": 1, "ref_height": 1, "expiry": 10}
    n = 0
    with pytest.raises(TaskError) as total:
        while True:
            records.room(other, INPUT)
            records.put(f"{n:064x}ff", "generator", ticket=other, task_input=INPUT, tokens=[n])
            n += 1
    assert total.value.reason == "records-full" and n > 0
    assert records.used(CONSUMER.address) < BUDGET // 2 + 1000  # stopped by the total bound
    assert records.used() <= 3 * BUDGET // 2 and records.count() == stored + n
    records.close()


def test_records_and_their_budgets_survive_a_restart(tmp_path: Path) -> None:
    records = records_at(tmp_path / "r.db", consumer_bytes=BUDGET)
    flood(records, 5_000)
    used, count = records.used(JUNK.address), records.count()
    records.close()
    again = records_at(tmp_path / "r.db", consumer_bytes=BUDGET)  # what a restarted miner finds
    assert (again.used(JUNK.address), again.count()) == (used, count)
    with pytest.raises(TaskError):
        again.room(junk_ticket(0), {"prompt": "j0"})
    assert again.get(f"{0:064x}") == {
        "task": f"{0:064x}",
        "role": "checker",
        "ticket": junk_ticket(0),
        "input": {"prompt": "j0"},
        "tokens": [1, 2, 3],
        "values": [[1, 0, 0, 1000], [2, 0, 0, 900], [3, 0, 0, 800]],
    }
    again.close()


def test_a_store_from_before_the_window_rule_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "miner_tasks.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE records (task TEXT PRIMARY KEY, role TEXT, record TEXT, at FLOAT)")
    record = json.dumps({"ticket": junk_ticket(0), "input": INPUT, "tokens": [1], "values": None})
    old.execute("INSERT INTO records VALUES (?, 'generator', ?, 0.0)", ("ab" * 32, record))
    old.commit()
    old.close()
    records = records_at(path)
    assert records.get("ab" * 32) is not None
    assert records.used(JUNK.address) == len(record)
    assert records.forget(records.keep_until(junk_ticket(0))) == 0
    assert records.forget(records.keep_until(junk_ticket(0)) + 1) == 1
    records.close()


def test_a_miner_waits_a_moment_for_the_block_a_ticket_refers_to(
    lan: Lan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ticket's reference is its book's block, which the gateway may have seen final a moment
    before a miner: the miner waits for it to be final here too (up to CATCH_UP_S) instead of
    refusing `ahead` or `not-final` at once, and gives up after that."""
    miner = Miner(
        lan.miner,
        MINERS[sorted(MINERS)[0]],
        FakeStore({SMOL}),  # type: ignore[arg-type]
        ScriptedRunner(),  # type: ignore[arg-type]
        records=records_at(lan.tmp_path / "miner.db"),
    )
    tip = lan.miner.tip.height

    async def next_block_arrives() -> None:
        waiting = asyncio.create_task(miner._caught_up({"ref_height": tip + 1}))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # still waiting for block tip + 1
        lan.block()
        await asyncio.sleep(0.3)
        assert not waiting.done()  # it is here, not final yet: one block on top makes it so
        lan.block()
        await asyncio.wait_for(waiting, 1.0)

    asyncio.run(next_block_arrives())
    assert lan.miner.tip.height == tip + 2 and lan.miner.final == tip + 1
    monkeypatch.setattr(miner_module, "CATCH_UP_S", 0.3)
    started = time.monotonic()
    asyncio.run(miner._caught_up({"ref_height": tip + 5}))  # never comes: it gives up
    assert 0.3 <= time.monotonic() - started < 2.0
    miner.records.close()
