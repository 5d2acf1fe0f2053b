"""A base model in a real market: Gemma 3 270M (the pretrained model, no chat template) submitted
with `dn model submit`, which reads its kind from the file, and served by the two `dn mine`
processes next to SmolLM2. The official `openai` client gets completions from it, paid and
confirmed, and a clear 400 naming /v1/completions for a chat request; `dn query` refuses chat
messages to it and answers with `--raw`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from dn.client.query import stream_query
from dn.errors import InputError
from tests.cli.helpers import dn, dn_json, said
from tests.functional.harness import wait_until
from tests.functional.market import PASSWORD, PRICE, Market, find_ticket, running_market
from tests.functional.test_openai_api import balance, settled

PROMPT = "Here are three colours of the rainbow: red,"
CHAT: list[Any] = [{"role": "user", "content": "Name three colours of the rainbow."}]


@dataclass
class BaseMarket:
    market: Market
    gemma: str  # its sha256
    submitted: dict[str, Any]  # what `dn --json model submit` printed


@pytest.fixture(scope="module")
def based(
    tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path, gemma_gguf: Path
) -> Iterator[BaseMarket]:
    with running_market(
        tmp_path_factory.mktemp("openai-base"),
        smollm2_gguf,
        gateway_args=["--gateway-wallet", "consumer"],
        gateway_env={"DN_PASSWORD": PASSWORD},
        extra_models=(gemma_gguf,),
    ) as market:
        submitted = dn_json(
            "--home", market.home, "--node", market.gateway.url, "model", "submit", gemma_gguf,
            "--name", "gemma3", "--domain", "general", "--price", f"{PRICE / 10**9:.9f}",
            "--wallet", "creator", env={"DN_PASSWORD": PASSWORD},
        )  # fmt: skip
        sha = submitted["model"]
        for miner in market.miners:  # both miners serve Gemma too
            miner.stop(timeout=10)
            miner.command = [*miner.command, "--model", "gemma3"]
            miner.start(timeout=60)
        with market.client() as client:
            wait_until(lambda: len(client.model(sha)["miners"]) == 2, 60, what="gemma served")
        yield BaseMarket(market, sha, submitted)


@pytest.fixture
def client(based: BaseMarket) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{based.market.gateway.url}/v1", api_key="unused", max_retries=0, timeout=120
    ) as made:
        yield made


def test_submit_reads_the_kind_from_the_file_and_the_chain_records_it(
    based: BaseMarket, client: openai.OpenAI
) -> None:
    assert based.submitted["kind"] == "base"
    with based.market.client() as node:
        tx = node.tx(based.submitted["tx"])["tx"]
        assert tx["kind"] == "model.register" and tx["payload"]["kind"] == "base"
        assert node.model("gemma3")["kind"] == "base"
        assert node.model("smollm2")["kind"] == "chat"  # registered without a kind
    kinds = {m.id: (m.model_extra or {})["dn"]["kind"] for m in client.models.list().data}
    assert kinds == {"smollm2": "chat", "gemma3": "base"}


def test_a_completion_from_a_base_model_is_answered_and_confirmed(
    based: BaseMarket, client: openai.OpenAI
) -> None:
    answer = client.completions.create(model="gemma3", prompt=PROMPT, max_tokens=8)
    dn_extra = (answer.model_extra or {})["dn"]
    assert dn_extra["status"] == "confirmed"
    assert answer.object == "text_completion" and answer.id == f"cmpl-{dn_extra['task']}"
    assert answer.model == "gemma3"
    assert "orange" in answer.choices[0].text.lower()  # " orange, and yellow." (greedy)
    assert answer.usage is not None
    assert dn_extra["price_units"] == PRICE * answer.usage.completion_tokens // 1000 > 0
    assert dn_extra["settle_tx"], dn_extra.get("settle_error")
    record = settled(based.market, dn_extra)
    assert record["model"] == based.gemma and record["status"] == "confirmed"
    assert record["paid"] == dn_extra["price_units"]


def test_a_chat_request_to_a_base_model_is_a_400_naming_the_completions_route(
    based: BaseMarket, client: openai.OpenAI
) -> None:
    market = based.market
    before = balance(market)
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(
                model="gemma3", messages=CHAT, max_tokens=8, stream=stream
            )
        assert refused.value.status_code == 400
        assert refused.value.code == "base-model"
        assert "/v1/completions" in refused.value.message
        assert "base model" in refused.value.message
    body = {"model": based.gemma, "messages": CHAT}
    response = httpx.post(f"{market.gateway.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "base-model"
    assert balance(market) == before  # nothing was run, so nothing was paid


def test_dn_query_refuses_chat_messages_to_a_base_model_and_answers_raw(
    based: BaseMarket,
) -> None:
    market = based.market
    common = ["--home", market.home, "--node", market.gateway.url, "query", "gemma3"]
    env = {"DN_PASSWORD": PASSWORD}
    refused = dn(*common, "Name three colours of the rainbow.", "--wallet", "consumer", env=env,
                 code=2)  # fmt: skip
    assert "is a base model" in said(refused) and "--raw" in said(refused)

    answered = dn_json(*common, PROMPT, "--raw", "--wallet", "consumer", "--max-tokens", "8",
                       env=env)  # fmt: skip
    assert answered["status"] == "confirmed" and answered["model"] == based.gemma
    assert "orange" in answered["text"].lower()


def test_the_gateway_refuses_chat_messages_to_a_base_model_whoever_signed_them(
    based: BaseMarket,
) -> None:
    """A client that skips the check (not `dn query`) is refused by the gateway itself."""
    market = based.market
    task_input = {"messages": CHAT}
    with market.client() as client:
        eligible = sorted(m["address"] for m in client.model(based.gemma)["miners"])
    ticket = find_ticket(market, task_input, eligible, lambda _: True, based.gemma)
    with market.client() as client, pytest.raises(InputError) as refused:
        list(stream_query(client, ticket, task_input))
    assert refused.value.reason == "base-model"
