"""The validator's referee duty (DESIGN.md section 7): judge settled tasks and vote `task.verdict`.

Which tasks. Every rejected task, and the confirmed tasks `disputes.spot_checked` picks (a
`spot_check_bps` share, by task id and the hash of the block that settled it), of the models
this validator holds, while their dispute window is open, unless this validator is a party to
the task (its consumer, generator or checker: the chain refuses its vote) or has voted on it
already. Every active validator judges every such task and votes: a ruling applies only once
validators holding a quorum of the voice agree (dn/chain/disputes.py), so no validator's word
is enough and none waits for another's.
The work is bounded per block: each block is scanned once (the last few again, for a
reorganisation), the open cases are those of one dispute window, one case is judged at a time,
the oldest first, and a case whose miners did not answer is tried again only after `RETRY_S`.

How. The referee asks the task's checker for its record (`dn.node.market.records`: the ticket's
input, the claimed tokens and the per-token values it committed to), and the generator when the
checker cannot give the input and tokens. Everything a miner sends is checked against the chain: the
input against the ticket's prompt hash, the tokens against the attested output hash, the values
against the checker's commitment. Then it runs its own prefill check of the tokens and decides
(`decide`):

- an answer whose shape is wrong (token ids outside the vocabulary, tokens after the end, too
  many, truncated, empty) is invalid whatever the hardware: the generator is at fault, and the
  checker too if it confirmed it;
- a checker whose values cannot be shown (after half the window) or are not what the answer
  gives (`check.consistent`: beyond the drift between honest hardware) did not compute them:
  the checker is at fault, and the generator too if the referee's own check rejects the answer;
- otherwise the checker computed honestly, and its verdict must follow from its own values (else
  it is at fault: a rejected valid answer, or an approved invalid one); the generator is at fault
  only when both the checker's values and the referee's reject the answer. An answer at the edge,
  rejected by one honest computation and accepted by the other, is floating-point drift: nobody
  is slashed.

When neither miner has shown the task's input and tokens by half the window, the answer cannot
be checked by anyone: both are at fault (`disputes.NO_RECORD`, `no_record`). Before that the
referee waits and asks again, since a miner may be restarting; a referee that cannot reach
miners others reach is outvoted, so a slash for a missing record needs a quorum of validators
that all failed to get it.

`evidence` is the commitment to the referee's own values (to none, for a missing record), so
anyone can re-run the check.

Threads, as for `PowrValidator`: `next_case()` reads the chain and `verdict_tx()` numbers and
signs (run them on the node's loop); `perform(case)` fetches and runs llama.cpp (run it in a
worker thread).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from dn.chain import disputes, tasks
from dn.chain.ledger import ACCT, MINER, TASK
from dn.chain.types import Tx
from dn.chain.validators import active
from dn.errors import DNError
from dn.node.market.records import sign_request
from dn.node.taskio import decoding_for, input_hash, normalize_input, render
from dn.node.validator.interfaces import ChainView, ModelFiles, ModelRunner
from dn.runner.check import (
    Drift,
    Thresholds,
    TokenValue,
    Verdict,
    commitment,
    consistent,
    judge,
    quantized_commitment,
)
from dn.wallet.keys import Keypair

log = logging.getLogger("dn.referee")

SHAPE_REASONS = frozenset({"bad-token", "after-end", "past-stop", "too-long", "truncated", "empty"})
RETRY_S = 3.0  # between two tries of one task whose miners did not answer
RESCAN = 10  # blocks below the last scanned height looked at again (a reorganisation)
GENERATOR, CHECKER = tasks.GENERATOR, tasks.CHECKER

Fetch = Callable[[str, str, dict[str, Any]], Any]  # (miner url, task, request body) -> record


@dataclass
class Case:
    """One settled task to judge, as the chain has it."""

    task: str
    ticket: dict[str, Any]
    confirmed: bool
    settled: int
    generator: str
    checker: str
    output_hash: str
    commitment: str
    tried: float = field(default=0.0)
    urls: dict[str, str] = field(default_factory=dict)  # miner address -> url, when chosen


@dataclass(frozen=True)
class Ruling:
    """What the referee found: the faults by role, the evidence, and a sentence for the log."""

    faults: dict[str, str]
    evidence: str
    why: str


def decide(
    *,
    confirmed: bool,
    own: Verdict,
    own_values: list[TokenValue],
    claimed: list[TokenValue] | None,
    thresholds: Thresholds,
    drift: Drift,
    max_tokens: int,
    ended: bool,
) -> tuple[dict[str, str], str]:
    """The faults by role (`generator`, `checker`) and why, from the referee's own check (`own`,
    `own_values`) and the values the checker committed to (`claimed`; None when it could not
    show them). See the module docstring."""
    faults: dict[str, str] = {}
    if own.reason in SHAPE_REASONS:
        faults[GENERATOR] = disputes.INVALID_ANSWER
        if confirmed:
            faults[CHECKER] = disputes.APPROVED_INVALID
        return faults, f"the answer's shape is wrong: {own.message}"
    if claimed is None:
        faults[CHECKER] = disputes.NO_VALUES
        if not own.ok:
            faults[GENERATOR] = disputes.INVALID_ANSWER
        return faults, f"the checker did not show its values; own check: {own.message}"
    agree, how = consistent(claimed, own_values, drift)
    if not agree:
        faults[CHECKER] = disputes.VALUES_MISMATCH
        if not own.ok:
            faults[GENERATOR] = disputes.INVALID_ANSWER
        return faults, f"the checker's values are not the answer's ({how}); own: {own.message}"
    theirs = judge(claimed, thresholds, max_tokens=max_tokens, ended=ended)
    if theirs.ok and not confirmed:
        faults[CHECKER] = disputes.REJECTED_VALID
    elif not theirs.ok and confirmed:
        faults[CHECKER] = disputes.APPROVED_INVALID
    if not theirs.ok and not own.ok:
        faults[GENERATOR] = disputes.INVALID_ANSWER
    if not faults and theirs.ok != own.ok:
        return faults, f"at the edge (checker: {theirs.message}; own: {own.message}): drift"
    return faults, f"checker: {theirs.message}; own: {own.message}"


def no_record() -> Ruling:
    """The ruling when neither miner showed the task's input and tokens by half the window."""
    faults = {GENERATOR: disputes.NO_RECORD, CHECKER: disputes.NO_RECORD}
    return Ruling(faults, commitment([]), "neither miner showed the task's record")


def http_fetch(
    url: str, task: str, body: dict[str, Any], transport: httpx.BaseTransport | None = None
) -> Any:
    """A miner's record of `task` (None when it cannot or will not give it); `transport` signs
    the request on a keyed network (dn.node.p2p.session)."""
    try:
        with httpx.Client(timeout=10.0, transport=transport) as http:
            response = http.post(f"{url}/dn/v1/tasks/{task}/record", json=body)
    except httpx.HTTPError as exc:
        log.info("task %s: %s did not answer: %s", task[:12], url, exc)
        return None
    if response.status_code != 200:
        log.info("task %s: %s answered %d", task[:12], url, response.status_code)
        return None
    try:
        return response.json()
    except ValueError:
        return None


class Referee:
    """Judges settled tasks for one validator (see the module docstring)."""

    def __init__(
        self,
        node: ChainView,
        keypair: Keypair,
        store: ModelFiles,
        runner: ModelRunner,
        *,
        fetch: Fetch = http_fetch,
    ) -> None:
        self.node = node
        self.keypair = keypair
        self.store = store
        self.runner = runner
        self.fetch = fetch
        self.cases: dict[str, Case] = {}
        self._scanned = -1
        self._sent: dict[str, tuple[str, int]] = {}  # task -> (tx id, tip height when made)
        self.rulings: dict[str, Ruling] = {}  # the latest few, for tests and the log

    @property
    def address(self) -> str:
        return self.keypair.address

    # --- reading the chain (on the node's loop) -------------------------------------------

    def next_case(self) -> Case | None:
        """The task to judge now, if any. Reads the chain only."""
        node = self.node
        genesis = node.genesis
        if self.address not in active(node.state, genesis):
            return None
        tip = node.tip.height
        window = disputes.dispute_window(genesis)
        self._scan(tip, window)
        now = time.monotonic()
        for task, case in sorted(self.cases.items(), key=lambda item: item[1].settled):
            record = node.state.get(TASK + task)
            if (
                record is None
                or record.get("verdict") is not None
                or self.address in record.get("votes", {})
                or tip + 1 > (case.settled + window)
            ):
                del self.cases[task]  # ruled on, voted on, reorganised away, or too late
                self._sent.pop(task, None)
                continue
            if self._in_flight(task, tip) or now - case.tried < RETRY_S:
                continue
            if not self._can_pay():
                return None
            for miner in (case.generator, case.checker):
                found = node.state.get(MINER + miner)
                if found is not None:
                    case.urls[miner] = str(found["url"])
            return case
        return None

    def _scan(self, tip: int, window: int) -> None:
        """Add the cases of the blocks not looked at yet (and the last few again)."""
        start = max(1, tip - window + 1, self._scanned - RESCAN + 1)
        genesis = self.node.genesis
        for height in range(start, tip + 1):
            block = self.node.store.block(height)
            if block is None:
                break
            for tx in block.txs:
                if tx.kind != "task.settle":
                    continue
                ticket, chk = tx.payload["ticket"], tx.payload["checker"]
                task = tasks.task_id(genesis.chain_id, ticket)
                confirmed = chk["verdict"] == tasks.CONFIRMED
                picked = disputes.spot_checked(task, block.hash, genesis)
                if task in self.cases or (confirmed and not picked):
                    continue
                involved = {ticket["consumer"], tx.payload["generator"]["miner"], chk["miner"]}
                if self.address in involved:
                    continue  # a party to the task: the chain would refuse its vote
                if not self.store.has(ticket["model"]):
                    continue
                self.cases[task] = Case(
                    task=task,
                    ticket=ticket,
                    confirmed=confirmed,
                    settled=height,
                    generator=tx.payload["generator"]["miner"],
                    checker=chk["miner"],
                    output_hash=chk["output_hash"],
                    commitment=chk["commitment"],
                )
        self._scanned = tip

    def _in_flight(self, task: str, tip: int) -> bool:
        sent = self._sent.get(task)
        if sent is None:
            return False
        tx_id, at = sent
        return self.node.mempool.get(tx_id) is not None or at == tip

    def _can_pay(self) -> bool:
        acct = self.node.state.get(ACCT + self.address)
        return bool(acct) and int(acct["balance"]) >= int(self.node.genesis.param("min_fee"))

    # --- the work (in a worker thread) ------------------------------------------------------

    def perform(self, case: Case) -> Ruling | None:
        """Judge `case` (in a worker thread): the ruling, or None when it cannot be decided yet
        (its miners did not answer; it is tried again in a few seconds)."""
        case.tried = time.monotonic()
        ruling = self.judge(case)
        if ruling is not None:
            self.rulings[case.task] = ruling
            while len(self.rulings) > 100:
                self.rulings.pop(next(iter(self.rulings)))
            log.info(
                "task %s (%s): %s; %s",
                case.task[:12],
                "confirmed" if case.confirmed else "rejected",
                ", ".join(f"{role} {why}" for role, why in ruling.faults.items()) or "no fault",
                ruling.why,
            )
        return ruling

    def verdict_tx(self, case: Case, ruling: Ruling) -> Tx:
        """The `task.verdict` for a ruling. Made on the node's loop, where the validator's other
        transactions are numbered too, so two of them never take the same nonce."""
        roles = {GENERATOR: case.generator, CHECKER: case.checker}
        faults = {roles[role]: reason for role, reason in ruling.faults.items()}
        tx = self.node.own_tx(
            self.keypair,
            "task.verdict",
            {"task": case.task, "faults": faults, "evidence": ruling.evidence},
        )
        self._sent[case.task] = (tx.id, self.node.tip.height)
        return tx

    def _records(self, case: Case) -> tuple[dict[str, Any] | None, list[list[int]] | None]:
        """(input and tokens, the checker's values), each None where no miner showed a good
        one. The checker is asked first; the generator only for the input and tokens."""
        body = sign_request(self.node.genesis.chain_id, case.task, self.keypair)
        found = self._fetch(case, case.checker, body)
        answer = self._checked(case, found)
        values = None
        if answer is not None:
            rows = found.get("values")
            if self._values_ok(case, rows, len(answer["tokens"])):
                values = rows
        else:
            answer = self._checked(case, self._fetch(case, case.generator, body))
        return answer, values

    def _fetch(self, case: Case, miner: str, body: dict[str, Any]) -> Any:
        url = case.urls.get(miner)
        return self.fetch(url, case.task, body) if url else None

    def _checked(self, case: Case, found: Any) -> dict[str, Any] | None:
        """The record's input and tokens, if they are the task's."""
        if not isinstance(found, dict):
            return None
        try:
            task_input = normalize_input(found.get("input"))
        except DNError:
            return None
        tokens = found.get("tokens")
        if not isinstance(tokens, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in tokens
        ):
            return None
        if input_hash(task_input) != case.ticket["prompt_hash"]:
            return None
        if tasks.output_hash(tokens) != case.output_hash:
            return None
        return {"input": task_input, "tokens": tokens}

    @staticmethod
    def _values_ok(case: Case, rows: Any, n_tokens: int) -> bool:
        if not isinstance(rows, list) or not all(
            isinstance(r, list) and len(r) == 4 and all(isinstance(x, int) for x in r) for r in rows
        ):
            return False
        return quantized_commitment(rows) == case.commitment and len(rows) <= n_tokens

    def judge(self, case: Case) -> Ruling | None:
        """Fetch, re-check and decide; None when it cannot be decided yet."""
        answer, rows = self._records(case)
        window = disputes.dispute_window(self.node.genesis)
        waited = self.node.tip.height - case.settled >= window // 2
        if answer is None:
            if waited:
                return no_record()
            log.info("task %s: no miner showed its input and tokens yet", case.task[:12])
            return None
        if rows is None and not waited:
            log.info("task %s: the checker has not shown its values yet", case.task[:12])
            return None
        genesis = self.node.genesis
        thresholds = Thresholds.from_params(genesis.param)
        max_tokens = int(case.ticket["max_tokens"])
        model = self.runner.model(self.store.path(case.ticket["model"]), "check")
        tokens = answer["tokens"]
        # Decoded as the task asked (sampled, stop strings); the generator's log-probabilities
        # are the consumer's business and were checked by the checker, not kept.
        decoding = replace(decoding_for(answer["input"], case.task), logprobs=None)
        prompt = render(model, answer["input"])
        with model.check(prompt, max_tokens, thresholds, decoding=decoding) as session:
            session.feed(tokens)
            own = session.finish()
            own_values = list(session.values)
            ended = session.ended()
        claimed = [TokenValue.from_quantized(r) for r in rows] if rows is not None else None
        faults, why = decide(
            confirmed=case.confirmed,
            own=own,
            own_values=own_values,
            claimed=claimed,
            thresholds=thresholds,
            drift=Drift.from_params(genesis.param),
            max_tokens=max_tokens,
            ended=ended,
        )
        return Ruling(faults, commitment(own_values), why)

    def close(self) -> None:
        self.runner.close()


def for_node(node: Any, store: ModelFiles, *, threads: int | None = None) -> Referee:
    """The referee of a running `Node`: its node key and a llama.cpp runner of its own."""
    from dn.runner.llama import Runner

    runner = Runner(n_threads=threads, max_loaded=2, slots=1)  # one task judged at a time
    return Referee(node, node.key, store, runner)
