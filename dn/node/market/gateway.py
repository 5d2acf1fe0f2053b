"""The gateway: runs one paid query on two miners and streams the answer (DESIGN.md section 7).

Every node is a gateway for the queries its own user signs. Given a signed ticket and the input
it names, the gateway

1. checks what it can before anyone works: the ticket's signature and input, the model exists
   and is live (and takes a chat input only if it is a chat model: `base-model`), `max_price`
   covers `max_tokens` at the model's price, the ticket is fresh and unused, its book's block
   is final (`not-final`) and its slot's reservation of the consumer's escrow covers
   `max_price` (`over-reserve`: dn/chain/books.py), and the slot draws two miners
   (`select_miners` at the ticket's reference height: the same rule the chain re-checks, so the
   gateway cannot choose);
2. opens a check session on the checker (it prefills the prompt while the generator starts);
3. streams the generator's tokens to the caller as they come and forwards them to the checker in
   chunks (`chunk_size`), from a separate task, so the caller never waits on the checker;
4. ends with both signed attestations, each checked here (signature, miner, the tokens seen):
   a miner that stalls, answers garbage or signs with the wrong key ends the query with a
   TaskError and nothing to settle, so the consumer pays nothing.

A miner whose slots are all taken answers 503 (`Busy`, with Retry-After) instead of queueing.
That ends the query like a miner that does not answer in time: before any token, with reason
`miner-busy` and the other miner's session closed, nothing to settle and nobody at fault. The
pair of miners is fixed by the ticket (the chain re-checks it), so the next eligible pair is the
consumer's next ticket, drawn with a new nonce.

The result carries what `task.settle` needs; whoever holds the consumer's wallet submits it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from dn.chain import books, tasks
from dn.chain.ledger import MINER, MODEL, TASK
from dn.errors import Busy, DNError, InvalidTx, TaskError
from dn.node.node import Node
from dn.node.taskio import input_hash, normalize_input, require_kind

log = logging.getLogger("dn.gateway")
TASKS = "/dn/v1/tasks"
TIMEOUT_ENV = "DN_TASK_TIMEOUT_S"  # seconds a miner may stay silent (default 30)


def default_timeout() -> float:
    try:
        return float(os.environ.get(TIMEOUT_ENV, "30"))
    except ValueError:
        return 30.0


@dataclass(frozen=True)
class Plan:
    task: str
    ticket: dict[str, Any]
    task_input: dict[str, Any]
    model: dict[str, Any]
    generator: str
    checker: str
    generator_url: str
    checker_url: str
    max_cost: int


def _fail(message: str, reason: str) -> TaskError:
    return TaskError(message, reason=reason)


def _busy(who: str, response: httpx.Response) -> Busy:
    """A miner's 503: every slot of the model taken (dn.errors.Busy on its side)."""
    busy = Busy(
        f"the {who} is busy (it serves as many queries of this model as it has slots); "
        "try again shortly",
        reason="miner-busy",
    )
    try:
        busy.retry_after = max(1, int(response.headers.get("Retry-After", "1")))
    except ValueError:
        pass
    return busy


def chunk_size(sent: int, max_tokens: int, chunk: int) -> int:
    """How many tokens the checker's next chunk waits for, `sent` of them already forwarded.

    A chunk of k tokens is one batched pass on the checker, costing about as much as 1.4 + k
    tokens' worth of its time (bench/check.py), so single tokens would cost the checker as much
    CPU as generating did; but whatever is still waiting when the answer ends is checked after
    the last token, so chunks shrink as the answer nears `max_tokens` and the last is one token.
    (An answer that ends early, on an end-of-generation token, waits for at most `chunk`.)"""
    return max(1, min(chunk, (max_tokens - sent) // 4))


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Mark a helper task's failure as seen: a query ended early (the consumer left, the node
    stopped) may never await it, and asyncio would print its traceback at exit. Whoever awaits
    it still gets the exception."""
    if not task.cancelled():
        task.exception()


class Gateway:
    def __init__(
        self,
        node: Node,
        *,
        chunk: int = 16,
        stall_s: float | None = None,
        check_timeout_s: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.node = node
        self.chunk = chunk
        self.stall_s = stall_s or default_timeout()
        self.check_timeout_s = check_timeout_s or 2 * self.stall_s
        self.transport = transport
        self._running: dict[str, dict[str, Any]] = {}  # task -> its ticket, while it runs
        self._http: httpx.AsyncClient | None = None

    def _client(self) -> httpx.AsyncClient:
        """One client for every query: making one costs ~50 ms of the event loop (its TLS
        context), and its pool keeps the connections to the miners open between queries."""
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.check_timeout_s, read=self.stall_s),
                transport=self.transport,
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def chain_id(self) -> str:
        return self.node.genesis.chain_id

    # --- before any work ------------------------------------------------------------------

    def plan(self, ticket: Any, raw_input: Any) -> Plan:
        if not isinstance(ticket, dict):
            raise _fail("a query needs a signed ticket", "bad-ticket")
        try:
            tasks.verify_ticket(self.chain_id, ticket)
        except InvalidTx as exc:
            raise _fail(exc.message, exc.reason) from None
        task_input = normalize_input(raw_input)
        if input_hash(task_input) != ticket["prompt_hash"]:
            raise _fail("the ticket names another input", "wrong-input")
        sha = ticket["model"]
        model = self.node.state.get(MODEL + sha)
        if model is None:
            raise _fail(f"no model {sha[:12]}… on this chain", "unknown-model")
        if model["retired"]:
            raise _fail(f"model {model['name']!r} is retired", "model-retired")
        require_kind(model, task_input)  # chat messages to a base model: InputError base-model
        height = self.node.tip.height
        if ticket["expiry"] <= height:
            raise _fail(f"the ticket expired at height {ticket['expiry']}", "expired-ticket")
        window = self.node.genesis.param("ticket_window_blocks")
        if ticket["ref_height"] > height or height - ticket["ref_height"] >= window:
            raise _fail(
                f"the ticket refers to height {ticket['ref_height']}, the tip is {height}",
                "stale-ticket",
            )
        task = tasks.task_id(self.chain_id, ticket)
        if self.node.state.get(TASK + task) is not None or task in self._running:
            raise _fail(f"this ticket was used already (task {task[:12]}…)", "ticket-used")
        max_cost = tasks.price_of(model["price"], ticket["max_tokens"])
        max_price = ticket["max_price"]
        if max_cost > max_price:
            raise _fail(
                f"max_price {ticket['max_price']} units is below the {max_cost} units that "
                f"{ticket['max_tokens']} tokens of {model['name']!r} can cost",
                "price-too-low",
            )
        generator, checker = books.chosen(  # not-final, over-reserve, no-book, …
            self.node.state, ticket, self.node.store.canonical_hash, final=self.node.final
        )
        urls = []
        for miner in (generator, checker):
            record = self.node.state.get(MINER + miner)
            if record is None or record["exited"] is not None:
                raise _fail(f"miner {miner} has left", "no-miner")
            urls.append(str(record["url"]).rstrip("/"))
        return Plan(task, ticket, task_input, model, generator, checker, urls[0], urls[1], max_cost)

    # --- running it -----------------------------------------------------------------------

    def run(self, ticket: Any, raw_input: Any) -> AsyncIterator[dict[str, Any]]:
        """Plan now (errors before anything is streamed), then stream the query's events:
        `start`, `token`…, `done` (with `status` confirmed or rejected and both attestations)."""
        plan = self.plan(ticket, raw_input)
        self._running[plan.task] = plan.ticket
        return self._run(plan)

    async def _run(self, plan: Plan) -> AsyncIterator[dict[str, Any]]:
        opened = False
        http = self._client()
        try:
            body = {"ticket": plan.ticket, "input": plan.task_input}
            try:
                # The checker prefills the prompt while the generator starts decoding.
                opening = asyncio.create_task(
                    self._call(http, plan.checker_url + TASKS + "/check", body, "checker")
                )
                opening.add_done_callback(_retrieved)
                yield {
                    "event": "start",
                    "task": plan.task,
                    "model": plan.ticket["model"],
                    "model_name": plan.model["name"],
                    "generator": plan.generator,
                    "checker": plan.checker,
                    "price": plan.model["price"],
                }
                tokens: list[int] = []
                wants_logprobs = "logprobs" in plan.task_input.get("options", {})
                queue: asyncio.Queue[tuple[int, Any] | None] = asyncio.Queue()
                forwarder = asyncio.create_task(self._forward(http, plan, queue, opening))
                forwarder.add_done_callback(_retrieved)
                try:
                    gen_att = None
                    async for event in self._generate(http, plan, body):
                        failed = forwarder.exception() if forwarder.done() else None
                        if failed is not None:
                            raise failed
                        if event.get("done"):
                            gen_att = event.get("attestation")
                            break
                        fresh = event.get("tokens")
                        claims = event.get("logprobs") if wants_logprobs else None
                        if (
                            not isinstance(fresh, list)
                            or not all(isinstance(t, int) for t in fresh)
                            or len(tokens) + len(fresh) > plan.ticket["max_tokens"]
                            or (wants_logprobs and not _one_each(claims, fresh))
                        ):
                            raise _fail(
                                "the generator sent more or other than tokens", "miner-lied"
                            )
                        tokens.extend(fresh)
                        for i, token in enumerate(fresh):
                            queue.put_nowait((token, claims[i] if claims else None))
                        shown: dict[str, Any] = {
                            "event": "token",
                            "tokens": fresh,
                            "text": str(event.get("text", "")),
                        }
                        if wants_logprobs:
                            shown["logprobs"] = claims  # values the checker checks
                            texts = event.get("logprob_texts")  # for display, unchecked
                            ok = _one_each(texts, fresh)
                            shown["logprob_texts"] = texts if ok else [["", []]] * len(fresh)
                        yield shown
                    queue.put_nowait(None)
                    await forwarder
                finally:
                    if not forwarder.done():
                        forwarder.cancel()
                        with contextlib.suppress(BaseException):
                            await forwarder
                    opened = opening.done() and not opening.cancelled() and not opening.exception()
                    if not opening.done():
                        opening.cancel()
                        with contextlib.suppress(BaseException):
                            await opening
                        opened = True  # it may have opened on the checker: abort it
                if gen_att is None:
                    raise _fail("the generator ended without an attestation", "miner-lied")
                self._check_attestation(gen_att, plan, plan.generator, tasks.GENERATOR, tokens)
                url = f"{plan.checker_url}{TASKS}/check/{plan.task}/finish"
                finished = await self._call(http, url, {"generator": gen_att}, "checker")
                opened = False  # the checker closed the session itself
                chk_att = finished.get("attestation") if isinstance(finished, dict) else None
                self._check_attestation(chk_att, plan, plan.checker, tasks.CHECKER, tokens)
                assert isinstance(chk_att, dict)
                confirmed = chk_att["verdict"] == tasks.CONFIRMED
                yield {
                    "event": "done",
                    "task": plan.task,
                    "status": "confirmed" if confirmed else "rejected",
                    "tokens": len(tokens),
                    "prompt_tokens": _prompt_tokens(opening),
                    "price_units": tasks.price_of(plan.model["price"], len(tokens))
                    if confirmed
                    else 0,
                    "verdict": finished.get("verdict"),
                    "ticket": plan.ticket,
                    "generator": gen_att,
                    "checker": chk_att,
                }
            finally:
                if opened:  # free the checker's context now, not when it times out
                    with contextlib.suppress(Exception):
                        await http.post(f"{plan.checker_url}{TASKS}/check/{plan.task}/abort")
        finally:
            self._running.pop(plan.task, None)

    async def _call(self, http: httpx.AsyncClient, url: str, body: Any, who: str) -> Any:
        try:
            response = await http.post(url, json=body)
        except httpx.TimeoutException:
            raise _fail(f"the {who} did not answer in time", "miner-timeout") from None
        except httpx.TransportError as exc:
            raise _fail(
                f"cannot reach the {who} at {url}: {type(exc).__name__}", "miner-down"
            ) from None
        if response.status_code == 503:
            raise _busy(who, response)
        if response.status_code >= 400:
            try:
                reason = response.json().get("message", response.text)
            except ValueError:
                reason = response.text[:200]
            raise _fail(f"the {who} refused the task: {reason}", "miner-refused")
        try:
            return response.json()
        except ValueError:
            raise _fail(
                f"the {who} answered with something that is not JSON", "miner-lied"
            ) from None

    async def _generate(
        self, http: httpx.AsyncClient, plan: Plan, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        url = plan.generator_url + TASKS + "/generate"
        try:
            async with http.stream("POST", url, json=body) as response:
                if response.status_code == 503:
                    raise _busy("generator", response)
                if response.status_code >= 400:
                    await response.aread()
                    raise _fail(
                        f"the generator refused the task: {response.text[:200]}", "miner-refused"
                    )
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    try:
                        event = json.loads(line)
                    except ValueError:
                        raise _fail(
                            "the generator sent something that is not JSON", "miner-lied"
                        ) from None
                    if not isinstance(event, dict):
                        raise _fail(
                            "the generator sent something that is not an event", "miner-lied"
                        )
                    if "error" in event:
                        raise _fail(f"the generator failed: {event.get('message')}", "miner-failed")
                    yield event
        except httpx.TimeoutException:
            raise _fail(
                f"the generator sent nothing for {self.stall_s:.0f} s", "miner-timeout"
            ) from None
        except httpx.TransportError as exc:
            raise _fail(f"lost the generator: {type(exc).__name__}", "miner-down") from None

    async def _forward(
        self,
        http: httpx.AsyncClient,
        plan: Plan,
        queue: asyncio.Queue[tuple[int, Any] | None],
        opening: asyncio.Task[Any],
    ) -> None:
        """Once the checker's session is open, send it the tokens (with the generator's
        log-probabilities of them, when the task asks for those): each chunk waits for
        `chunk_size` of them (or the end of the answer) and takes whatever else has come by
        then, so a checker that fell behind catches up in one pass."""
        await opening
        url = f"{plan.checker_url}{TASKS}/check/{plan.task}/tokens"
        offset = 0
        done = False
        while not done:
            batch: list[tuple[int, Any]] = []
            size = chunk_size(offset, int(plan.ticket["max_tokens"]), self.chunk)
            while len(batch) < size or not queue.empty():
                item = await queue.get()
                if item is None:
                    done = True
                    break
                batch.append(item)
            if not batch:
                return
            body: dict[str, Any] = {"offset": offset, "tokens": [t for t, _ in batch]}
            if batch[0][1] is not None:
                body["logprobs"] = [claim for _, claim in batch]
            await self._call(http, url, body, "checker")
            offset += len(batch)

    def _check_attestation(
        self, att: Any, plan: Plan, miner: str, role: str, tokens: list[int]
    ) -> None:
        if not isinstance(att, dict):
            raise _fail(f"the {role} sent no attestation", "miner-lied")
        try:
            tasks.verify_attestation(self.chain_id, att)
        except InvalidTx as exc:
            raise _fail(
                f"the {role}'s attestation is invalid: {exc.message}", "miner-lied"
            ) from None
        if att["miner"] != miner or att["task"] != plan.task or att["role"] != role:
            raise _fail(f"the {role}'s attestation is not signed by the chosen miner", "miner-lied")
        if att["output_hash"] != tasks.output_hash(tokens) or att["tokens"] != len(tokens):
            raise _fail(f"the {role} attested to other tokens than it sent", "miner-lied")


def _one_each(items: Any, tokens: list[int]) -> bool:
    """Whether `items` is a list with one entry per token."""
    return isinstance(items, list) and len(items) == len(tokens)


def _prompt_tokens(opening: asyncio.Task[Any]) -> int:
    """The prompt's length in tokens as the checker's tokenizer counted it when it opened its
    session (the generator does not say); 0 when it did not say."""
    finished = opening.done() and not opening.cancelled() and opening.exception() is None
    reply = opening.result() if finished else None
    count = reply.get("prompt_tokens") if isinstance(reply, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else 0


def error_event(exc: BaseException) -> dict[str, Any]:
    """A stream's last line when something failed after streaming began."""
    if isinstance(exc, DNError):
        return {"event": "error", **exc.to_json()}
    log.exception("query failed", exc_info=exc)
    return {"event": "error", "error": "NodeError", "reason": "internal", "message": str(exc)}
