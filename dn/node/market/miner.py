"""The miner role: generate answers and check other miners' answers, each ending in a signed
attestation (DESIGN.md section 7).

Both roles first accept the task the same way: the ticket is signed by its consumer on this
chain, names the input it is shown, has not expired or been settled, names a model this miner
holds, uses an unused slot of the consumer's book, in a block final here (`not-final`: a
reorganisation could change the draw), whose draw picks this miner for the role and whose
reservation of the consumer's escrow covers the ticket's `max_price` (`over-reserve`:
dn/chain/books.py, the escrow pays that slot whatever the consumer does elsewhere), and no
other open ticket here uses that slot (`slot-taken`: a slot pays for one task; `exposure`).
A miner never works unchosen or unbacked, so nobody can make it work for free or for nothing.

llama.cpp work runs in each model's engine (`dn.runner.engine`), which batches every stream and
check session of that model into one pass per step; the node's event loop only moves messages,
and a worker thread only ever waits for the engine, never for the network. A check is a session
over several requests (open, a chunk of tokens at a time, finish) because the tokens come from
the generator while it is still decoding. Each stream and session holds one of the model's
`slots` (`dn mine --slots`); beyond them a task is refused at once with `Busy` (HTTP 503), and a
session idle for `idle_s` is closed.

Every task is recorded (`dn.node.market.records`) before its attestation is returned: the ticket,
the input, the tokens and, for a checker, the per-token values it committed to, so a validator can
judge the task later (dn/node/validator/referee.py); the records are kept for the dispute window,
and a task with no room left for its record is refused (`records-full`). A checker also holds
the task's settlement and sends it itself if the gateway does not (dn/node/market/backstop.py).

At each point where a dishonest miner would act otherwise, the miner asks its `behaviour`
(`dn.node.market.behaviour`); the honest one changes nothing. Only the test harness installs
another (through `dn.node.hooks`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from dn.chain import books, tasks
from dn.chain.ledger import MINER, MODEL, TASK
from dn.chain.types import Tx
from dn.errors import InvalidTx, TaskError
from dn.node.market.backstop import Backstop
from dn.node.market.behaviour import HONEST, Behaviour, Check
from dn.node.market.exposure import Exposure
from dn.node.market.records import TaskRecords, request_ok
from dn.node.market.streaming import stream_answer
from dn.node.node import Node
from dn.node.taskio import decoding_for, input_hash, normalize_input, render
from dn.runner.check import Drift, Thresholds, TokenValue, commitment
from dn.runner.engine import DEFAULT_IDLE_S
from dn.runner.llama import CheckSession, Runner
from dn.runner.modelstore import ModelStore
from dn.wallet.keys import Keypair

T = TypeVar("T")
log = logging.getLogger("dn.miner")
RECORDS_FILE = "miner_tasks.db"
CATCH_UP_S = 5.0  # how long a task waits for the block its ticket refers to to be final


@dataclass
class _Job:
    task: str
    ticket: dict[str, Any]
    task_input: dict[str, Any]
    path: Path
    generator: str  # the miner the selection rule picked to generate


@dataclass
class _Session:
    job: _Job
    check: Check
    lock: threading.Lock = field(default_factory=threading.Lock)
    touched: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class MinerOptions:
    """What `dn mine` asks for: the wallet that bonds and signs, the models to serve (sha256),
    the bond (default: the genesis minimum) and llama.cpp settings; `slots`, the sequences each
    model serves at once (default: `dn.runner.capacity.default_slots`, from cores and memory)."""

    wallet: Keypair
    models: tuple[str, ...]
    bond: int | None = None
    threads: int | None = None
    gpu_layers: int | None = None
    n_ctx: int = 2048
    slots: int | None = None


class Miner:
    def __init__(
        self,
        node: Node,
        wallet: Keypair,
        store: ModelStore,
        runner: Runner,
        *,
        models: tuple[str, ...] = (),
        bond: int | None = None,
        idle_s: float = DEFAULT_IDLE_S,
        records: TaskRecords | None = None,
    ) -> None:
        self.node = node
        self.wallet = wallet
        self.models = tuple(sorted(set(models)))  # empty: every live model in the store
        self.bond = bond
        self._registering: str | None = None
        self.store = store
        self.runner = runner
        self.idle_s = idle_s
        self.behaviour: Behaviour = HONEST
        self._sessions: dict[str, _Session] = {}
        if records is None:
            records = TaskRecords.for_chain(node.home.path / RECORDS_FILE, node.genesis)
        self.records = records
        self.backstop = Backstop(node, wallet, records)
        self.exposure = Exposure.for_chain(node.home.path, node.genesis)

    @property
    def address(self) -> str:
        return self.wallet.address

    @property
    def chain_id(self) -> str:
        return self.node.genesis.chain_id

    def registration(self) -> dict[str, Any] | None:
        found = self.node.state.get(MINER + self.address)
        return found if found is not None and found["exited"] is None else None

    def stored_models(self) -> list[str]:
        """The live models on chain that this miner holds, for a miner started without --model."""
        live = []
        for key, record in self.node.state.items():
            sha = key[len(MODEL) :]
            if key.startswith(MODEL) and not record["retired"] and self.store.has(sha):
                live.append(sha)
        return sorted(live)

    def status(self) -> dict[str, Any]:
        reg = self.registration()
        return {
            "miner": self.address,
            "registered": reg is not None,
            "bond": reg["bond"] if reg else 0,
            "models": reg["models"] if reg else [],
            "local_models": [m["sha256"] for m in self.store.list()],
            "sessions": len(self._sessions),
            "slots": [
                {"model": Path(path).stem, "slots": model.slots, "active": model.engine.active}
                for path, model in self.runner.models()
            ],
            "records": self.records.count(),
            "unsettled": self.backstop.pending(),
            "loaded": [
                {"model": Path(path).stem, "role": role} for path, role in self.runner.loaded()
            ],
            "behaviour": self.behaviour.name,
        }

    def warm(self) -> int:
        """Load the models this miner is registered for, in both roles, before the first task
        asks (loading costs a few hundred milliseconds that would otherwise land on that task's
        first token). Only as many as the runner keeps loaded; returns how many it loaded."""
        reg = self.registration()
        loaded = set(self.runner.loaded())
        fresh = 0
        for sha in (reg["models"] if reg else [])[: self.runner.max_loaded]:
            if not self.store.has(sha):
                continue
            for role in ("generate", "check"):
                path = self.store.path(sha)
                if (str(path.resolve()), role) not in loaded:
                    self.runner.model(path, role)
                    fresh += 1
        return fresh

    def registration_tx(self, url: str) -> Tx | None:
        """The `miner.register` this miner still needs (new, or other url or models), unless one
        is pending already; None when the chain already has it right."""
        if self._registering is not None and self.node.mempool.get(self._registering) is not None:
            return None
        if any(self.node.state.get(MODEL + sha) is None for sha in self.models):
            return None  # not synced far enough to see the models yet
        models = list(self.models) or self.stored_models()
        if not models:
            return None
        reg = self.registration()
        bond = max(
            self.bond or self.node.genesis.param("miner_min_bond"), reg["bond"] if reg else 0
        )
        if reg and reg["url"] == url and reg["models"] == models and reg["bond"] >= bond:
            return None
        tx = self.node.own_tx(
            self.wallet, "miner.register", {"bond": bond, "url": url, "models": models}
        )
        self._registering = tx.id
        return tx

    # --- accepting a task -----------------------------------------------------------------

    def accept(self, ticket: Any, raw_input: Any, role: str) -> _Job:
        """Check that this miner should do `role` for this ticket (see the module docstring)."""
        if not isinstance(ticket, dict):
            raise TaskError("a task needs a ticket", reason="bad-ticket")
        try:
            tasks.verify_ticket(self.chain_id, ticket)
        except InvalidTx as exc:
            raise TaskError(exc.message, reason=exc.reason) from None
        task_input = normalize_input(raw_input)
        if input_hash(task_input) != ticket["prompt_hash"]:
            raise TaskError("the input is not the one the ticket names", reason="wrong-input")
        height = self.node.tip.height
        if ticket["expiry"] < height + 1:
            raise TaskError(
                f"the ticket expired at height {ticket['expiry']}", reason="expired-ticket"
            )
        if ticket["ref_height"] > height:
            raise TaskError(
                f"the ticket refers to height {ticket['ref_height']}; this miner is at {height}",
                reason="ahead",
            )
        task = tasks.task_id(self.chain_id, ticket)
        if self.node.state.get(TASK + task) is not None:
            raise TaskError(f"task {task[:12]}… is settled already", reason="ticket-used")
        model = ticket["model"]
        # not-final, over-reserve, no-book, bad-slot, slot-used: a slot draws one pair, and pays
        # for one task
        chosen = books.chosen(
            self.node.state, ticket, self.node.store.canonical_hash, final=self.node.final
        )
        if chosen[0 if role == tasks.GENERATOR else 1] != self.address:
            raise TaskError(f"this miner is not the task's {role}", reason="not-selected")
        if not self.store.has(model):
            raise TaskError(f"this miner does not hold model {model[:12]}…", reason="no-model")
        self.records.room(ticket, task_input)  # records-full: no work it cannot answer for
        self.exposure.admit(self.node.state, height, task, ticket)  # slot-taken: one task a slot
        return _Job(task, ticket, task_input, self.store.path(model), chosen[0])

    async def _caught_up(self, ticket: Any) -> None:
        """Wait a moment (at most `CATCH_UP_S`) for the block a ticket refers to, its book's,
        to be final here: the gateway may have seen it final a few milliseconds before."""
        ref = ticket.get("ref_height") if isinstance(ticket, dict) else None
        limit = time.monotonic() + CATCH_UP_S
        while isinstance(ref, int) and self.node.final < ref < 2**63:
            if time.monotonic() > limit:
                return
            await asyncio.sleep(0.05)

    def _attest(self, job: _Job, role: str, tokens: list[int], verdict: str, com: str) -> Any:
        return tasks.sign_attestation(
            self.chain_id,
            self.behaviour.signer(self.wallet),
            task=job.task,
            role=role,
            output_hash=tasks.output_hash(tokens),
            tokens=len(tokens),
            verdict=verdict,
            commitment=com,
        )

    # --- generating -----------------------------------------------------------------------

    async def generate(self, ticket: Any, raw_input: Any) -> AsyncIterator[dict[str, Any]]:
        """Accept the task and take a slot of its model now (errors, `Busy` among them, before
        any byte is streamed), then stream `{"tokens": [ids], "text"}` events (whatever was
        decoded since the last one was sent) and `{"done": true, "attestation"}` at the end."""
        await self._caught_up(ticket)
        job = self.accept(ticket, raw_input, tasks.GENERATOR)
        path = self.behaviour.generating_path(self, job)
        model = await asyncio.to_thread(self.runner.model, path, "generate")
        decoding = decoding_for(job.task_input, job.task)
        prompt = render(model, job.task_input)
        stream = model.generate(prompt, job.ticket["max_tokens"], decoding=decoding)
        return stream_answer(self, job, model, stream, decoding)

    # --- checking -------------------------------------------------------------------------

    async def check_open(self, ticket: Any, raw_input: Any) -> dict[str, Any]:
        await self._caught_up(ticket)
        job = self.accept(ticket, raw_input, tasks.CHECKER)
        if job.task in self._sessions:
            raise TaskError("a check of this task is open already", reason="busy")
        thresholds = Thresholds.from_params(self.node.genesis.param)
        drift = Drift.from_params(self.node.genesis.param)
        decoding = decoding_for(job.task_input, job.task)

        def honest() -> CheckSession:
            model = self.runner.model(job.path, "check")
            prompt = render(model, job.task_input)
            session = model.check(
                prompt, job.ticket["max_tokens"], thresholds, decoding=decoding, drift=drift
            )
            return session.__enter__()

        def open_session() -> Check:
            return self.behaviour.open_check(job.ticket["max_tokens"], honest)

        session = await self._checking(open_session)
        self._sessions[job.task] = _Session(job, session)
        return {
            "task": job.task,
            "checker": self.address,
            "prompt_tokens": len(session.prompt_tokens),
        }

    async def _checking(self, fn: Callable[[], T]) -> T:
        """Run check work in a worker thread. It waits only for the engine's next step or two
        (the work itself is batched there), never for a lock held across a network wait, so a
        bounded pool cannot wedge; a session beyond the model's slots is refused at once."""
        return await asyncio.to_thread(fn)

    def _session(self, task: str) -> _Session:
        found = self._sessions.get(task)
        if found is None:
            raise TaskError(f"no open check for task {task[:12]}…", reason="no-session")
        found.touched = time.monotonic()
        return found

    async def check_feed(
        self, task: str, offset: int, tokens: Any, logprobs: Any = None
    ) -> dict[str, Any]:
        """Score the next chunk; `offset` is the index of its first token (chunks must come in
        order, none twice). `logprobs`: the generator's log-probabilities of these tokens, when
        the task asks for them (checked against this checker's own)."""
        current = self._session(task)
        await self.behaviour.before_feed(self, task)
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise TaskError("tokens must be a list of integers", reason="bad-tokens")
        if logprobs is not None and not isinstance(logprobs, list):
            raise TaskError("logprobs must be a list, one entry per token", reason="bad-tokens")

        def feed() -> list[TokenValue]:
            with current.lock:
                if offset != len(current.check.tokens):
                    raise TaskError(
                        f"chunk at {offset}, expected {len(current.check.tokens)}",
                        reason="out-of-order",
                    )
                return current.check.feed(tokens, logprobs)

        values = await self._checking(feed)
        return {"task": task, "checked": len(current.check.tokens), "values": len(values)}

    async def check_finish(self, task: str, generator_attestation: Any) -> dict[str, Any]:
        """The verdict and the signed checker attestation. The generator's attestation must name
        exactly the tokens this checker was fed, or the answer is rejected."""
        current = self._session(task)

        def finish() -> dict[str, Any]:
            with current.lock:
                check = current.check
                verdict = check.finish()
                tokens = list(check.tokens)
                com = commitment(check.values)
                job = current.job
                self.records.put(
                    task,
                    tasks.CHECKER,
                    ticket=job.ticket,
                    task_input=job.task_input,
                    tokens=tokens,
                    values=[v.quantized() for v in check.values],
                )
                check.close()
            agreed, why = self._matches(current.job, generator_attestation, tokens)
            ok = self.behaviour.approves(verdict.ok and agreed)
            result = (
                verdict.to_json()
                if agreed
                else {**verdict.to_json(), "ok": False, "reason": "attestation", "message": why}
            )
            att = self._attest(
                current.job, tasks.CHECKER, tokens, tasks.CONFIRMED if ok else tasks.REJECTED, com
            )
            if agreed:  # else the chain would refuse the pair of attestations anyway
                self.backstop.hold(task, current.job.ticket, generator_attestation, att)
            return {"task": task, "verdict": result, "attestation": att}

        try:
            return await self._checking(finish)
        finally:
            self._sessions.pop(task, None)

    def _matches(self, job: _Job, att: Any, tokens: list[int]) -> tuple[bool, str]:
        if not isinstance(att, dict):
            return False, "no generator attestation"
        try:
            tasks.verify_attestation(self.chain_id, att)
        except InvalidTx as exc:
            return False, exc.message
        if att["miner"] != job.generator:
            return False, "the attestation is not signed by the task's generator"
        expected = (job.task, tasks.GENERATOR, tasks.output_hash(tokens), len(tokens))
        if (att["task"], att["role"], att["output_hash"], att["tokens"]) != expected:
            return False, "the generator attested to other tokens than the ones checked"
        return True, ""

    async def check_abort(self, task: str) -> dict[str, Any]:
        """The gateway gave up on the task (a generator that stalled or lied): free the context."""
        current = self._sessions.pop(task, None)
        if current is not None:
            await self._checking(current.check.close)
        return {"task": task, "closed": current is not None}

    def values(self, task: str) -> list[list[int]]:
        """The per-token values this miner committed to as the checker of `task`."""
        found = self.records.get(task)
        if found is None or found["values"] is None:
            raise TaskError(f"no values kept for task {task[:12]}…", reason="no-values")
        return list(found["values"])

    def record(self, task: str, request: Any) -> dict[str, Any]:
        """The whole record of `task` (ticket, input, tokens, values), for a validator whose
        signed `request` (`records.sign_request`) says who it is."""
        if not request_ok(self.chain_id, task, request, self.node.validators):
            raise TaskError(
                "only a validator may read a task's record (a signed request is needed)",
                reason="not-validator",
            )
        found = self.records.get(task)
        if found is None:
            raise TaskError(f"no record of task {task[:12]}…", reason="no-record")
        return found

    async def reap(self) -> None:
        """Close check sessions nobody has fed for `idle_s` (a gateway that went away), and
        forget the task records whose dispute window has closed below the final height."""
        await asyncio.to_thread(self.records.forget, self.node.final)
        now = time.monotonic()
        for task, current in list(self._sessions.items()):
            if now - current.touched > self.idle_s and not current.lock.locked():
                self._sessions.pop(task, None)
                log.info("closing idle check session %s", task[:12])
                await self._checking(current.check.close)

    def close(self) -> None:
        """Close every session and stop the engines (what still waits on them fails at once)."""
        for current in self._sessions.values():
            current.check.close()
        self._sessions.clear()
        self.runner.close()
        self.records.close()
        self.exposure.close()
