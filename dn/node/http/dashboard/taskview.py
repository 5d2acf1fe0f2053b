"""What the task page shows of one task, and where each part comes from.

    the settlement      the chain's `task:` record (every node), once `task.settle` is in a block
    the checker's       per token [token, rank, gap_milli, logit_milli]: this node's own records
    values              if it was the checker, else GET /dn/v1/tasks/{task}/values on the
                        checker's registered URL (public: the checker committed to them)
    the answer's text   the tokens decoded with the model's vocabulary, where this node holds
                        the model file
    the prompt          only in the records of the two miners (the chain keeps its hash): shown
                        by a miner node to clients on its own machine, never to the LAN, as the
                        records' own HTTP route shows it only to validators

Whatever this node cannot show is named, with the reason, in `missing`.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from dn.chain.ledger import MINER, MODEL, TASK
from dn.errors import InputError
from dn.node.node import Node

if TYPE_CHECKING:
    from dn.node.http.dashboard.vocab import Vocabularies
    from dn.node.market.miner import Miner
    from dn.runner.modelstore import ModelStore

TASK_ID = re.compile(r"^[0-9a-f]{64}$")
FETCH_TIMEOUT_S = 3.0
MAX_VALUES = 65_536  # the longest answer a ticket allows


@dataclass
class TaskPage:
    task: str
    record: dict[str, Any] | None = None  # the chain's settlement record
    model: str | None = None
    model_name: str | None = None
    role: str | None = None  # this node's role in the task, if it worked on it
    prompt: dict[str, Any] | None = None
    tokens: list[dict[str, Any]] = field(default_factory=list)
    answer: str | None = None
    values_from: str | None = None
    summary: dict[str, Any] | None = None
    missing: list[str] = field(default_factory=list)


def check_task_id(task: str) -> str:
    task = task.strip().lower()
    if not TASK_ID.match(task):
        raise InputError("a task id is 64 hexadecimal digits", reason="bad-task")
    return task


def token_class(rank: int, gap_milli: int, max_rank: int, max_gap_milli: int) -> str:
    """How a token looks on the page: the checker's best (`t-top`), close to it (`t-near`),
    within the limits but far (`t-far`), or outside them (`t-bad`)."""
    if rank > max_rank or gap_milli > max_gap_milli:
        return "t-bad"
    if rank == 0:
        return "t-top"
    if rank <= 3 and gap_milli * 8 <= max_gap_milli:
        return "t-near"
    return "t-far"


def _valid_values(raw: Any) -> list[list[int]] | None:
    if not isinstance(raw, list) or len(raw) > MAX_VALUES:
        return None
    for row in raw:
        if not (
            isinstance(row, list)
            and len(row) == 4
            and all(isinstance(v, int) and not isinstance(v, bool) for v in row)
        ):
            return None
    return raw


async def fetch_values(
    url: str, task: str, transport: httpx.AsyncBaseTransport | None = None
) -> tuple[list[list[int]] | None, str]:
    """The checker's values from its node, or None and why not (`transport` signs the request
    on a keyed network, dn/node/p2p/session.py)."""
    try:
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_S, transport=transport) as client:
            answer = await client.get(f"{url.rstrip('/')}/dn/v1/tasks/{task}/values")
    except httpx.HTTPError as exc:
        return None, f"the checker at {url} did not answer ({type(exc).__name__})"
    if answer.status_code != 200:
        try:
            reason = answer.json().get("message") or answer.json().get("reason")
        except ValueError:
            reason = None
        return None, f"the checker at {url} answered {answer.status_code}: {reason or 'error'}"
    try:
        values = _valid_values(answer.json().get("values"))
    except (ValueError, AttributeError):
        values = None
    if values is None:
        return None, f"the checker at {url} sent values this page cannot read"
    return values, url


async def task_view(
    node: Node,
    task: str,
    *,
    miner: Miner | None,
    store: ModelStore | None,
    vocabs: Vocabularies,
    local_client: bool,
    transport: httpx.AsyncBaseTransport | None = None,
) -> TaskPage:
    page = TaskPage(task=check_task_id(task))
    page.record = node.state.get(TASK + page.task)
    mine = miner.records.get(page.task) if miner is not None else None
    if mine is not None:
        page.role = mine["role"]
    if page.record is not None:
        page.model = page.record["model"]
    elif mine is not None:
        page.model = mine["ticket"].get("model")
    else:
        page.missing.append(
            "this task is not settled on this node's chain (yet), and this node did not work on it"
        )
    if page.model:
        found = node.state.get(MODEL + page.model)
        page.model_name = found["name"] if found else None

    values: list[list[int]] | None = None
    if mine is not None and mine.get("values"):
        values, page.values_from = mine["values"], "this node (it was the checker)"
    elif page.record is not None:
        checker = node.state.get(MINER + page.record["checker"]) or {}
        url = checker.get("url")
        if url:
            values, where = await fetch_values(str(url), page.task, transport)
            if values is None:
                page.missing.append(f"the checker's values: {where}")
            else:
                page.values_from = f"the checker, {where}"
        else:
            page.missing.append("the checker's values: the checker has no URL on chain")

    token_ids: list[int] = [row[0] for row in values] if values else []
    if not token_ids and mine is not None:
        token_ids = list(mine.get("tokens") or [])
    texts = await _texts(page, token_ids, store, vocabs)
    _tokens(page, node, token_ids, values, texts)
    _prompt(page, mine, local_client)
    return page


async def _texts(
    page: TaskPage, tokens: list[int], store: ModelStore | None, vocabs: Vocabularies
) -> list[str | None] | None:
    if not tokens:
        if page.record is not None or page.role is not None:
            page.missing.append("the answer's tokens: neither this node nor the checker has them")
        return None
    if page.model is None or store is None or not store.has(page.model):
        page.missing.append(
            "the answer's text: this node does not hold the model file to decode the tokens "
            "(the token ids are shown instead)"
        )
        return None
    try:
        return await asyncio.to_thread(vocabs.texts, store.path(page.model), tokens)
    except (ValueError, OSError) as exc:
        page.missing.append(f"the answer's text: the model's vocabulary cannot be read ({exc})")
        return None


def _tokens(
    page: TaskPage,
    node: Node,
    tokens: list[int],
    values: list[list[int]] | None,
    texts: list[str | None] | None,
) -> None:
    max_rank = int(node.genesis.param("check_max_rank"))
    max_gap = int(node.genesis.param("check_max_gap_milli"))
    for i, token in enumerate(tokens):
        text = texts[i] if texts is not None else None
        item: dict[str, Any] = {"i": i, "id": token, "text": text}
        if values is not None:
            _, rank, gap, _logit = values[i]
            item.update(rank=rank, gap=gap / 1000, cls=token_class(rank, gap, max_rank, max_gap))
        else:
            item.update(rank=None, gap=None, cls="t-unknown")
        page.tokens.append(item)
    if texts is not None:
        page.answer = "".join(t or "" for t in texts)
    if values:
        ranks = [row[1] for row in values]
        gaps = [row[2] for row in values]
        page.summary = {
            "tokens": len(values),
            "top1": sum(1 for r in ranks if r == 0) / len(values),
            "mean_gap": sum(gaps) / len(gaps) / 1000,
            "max_rank": max(ranks),
            "max_gap": max(gaps) / 1000,
            "limit_rank": max_rank,
            "limit_gap": max_gap / 1000,
            "limit_top1": int(node.genesis.param("check_min_top1_bps")) / 10_000,
            "limit_mean_gap": int(node.genesis.param("check_max_mean_gap_milli")) / 1000,
        }
    elif tokens:
        page.missing.append("the checker's rank and gap of each token (not available here)")


def _prompt(page: TaskPage, mine: dict[str, Any] | None, local_client: bool) -> None:
    if mine is not None and local_client:
        page.prompt = mine.get("input")
    elif mine is not None:
        page.missing.append(
            "the prompt: this node holds it, but shows it only on its own machine "
            "(open this page as http://127.0.0.1:PORT/ there)"
        )
    else:
        page.missing.append(
            "the prompt: the chain keeps only its hash; only the consumer and the two miners "
            "hold it (a miner's dashboard shows it on the miner's own machine)"
        )
