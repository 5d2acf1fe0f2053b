"""The OpenAI-compatible API, driven by the official `openai` client against a real market: a
gateway node started with `--gateway-wallet consumer` and two `dn mine` processes serving the real
SmolLM2 model. The node signs each ticket and its `task.settle` with the consumer's wallet.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from dn.node.http.local import is_local
from tests.functional import hooks
from tests.functional.harness import wait_until
from tests.functional.market import PASSWORD, PRICE, Market, running_market

MESSAGES: list[Any] = [{"role": "user", "content": "Name three colours of the rainbow."}]


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[Market]:
    with running_market(
        tmp_path_factory.mktemp("openai"),
        smollm2_gguf,
        gateway_args=["--gateway-wallet", "consumer"],
        # one slot booked per query (dn/node/market/slots.py), so each query's cost is exact
        gateway_env={"DN_PASSWORD": PASSWORD, "DN_BOOK_SLOTS": "1"},
    ) as running:
        yield running


@pytest.fixture
def client(market: Market) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{market.gateway.url}/v1", api_key="unused", max_retries=0, timeout=120
    ) as made:
        yield made


def balance(market: Market, name: str = "consumer") -> int:
    """The wallet's balance plus its query escrow, which pays the price (dn/chain/escrow.py),
    once none of its transactions is pending (an earlier test's settlements, slot bookings)."""
    address = market.wallets[name].address
    with market.client() as node:

        def settled_down() -> bool:
            found = node.account(address)
            return bool(found["nonce"] == found["next_nonce"])

        wait_until(settled_down, 30, what="no pending transaction of the wallet")
        found = node.account(address)
        return int(found["balance"]) + int(found["escrow"]["amount"])


def settled(market: Market, dn: dict[str, Any]) -> dict[str, Any]:
    """Wait until the node's own `task.settle` is in a block; the task's record on chain."""
    assert dn["settle_tx"], dn
    with market.client() as node:
        found = node.wait_for_tx(dn["settle_tx"], timeout=30)
        assert found["tx"]["kind"] == "task.settle"
        assert found["tx"]["sender"] == market.wallets["consumer"].address
        return node.task(dn["task"])


def restart_m1(market: Market, faults: str) -> None:
    miner = market.miners[0]
    miner.stop()
    miner.extra_env[hooks.FAULTS_ENV] = faults
    miner.start(timeout=60)
    with market.client() as gateway, miner.client() as node:
        wait_until(
            lambda: node.status()["height"] >= gateway.status()["height"], 30, what="m1 in sync"
        )


def test_models_lists_the_live_model_with_its_market_data(
    market: Market, client: openai.OpenAI
) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["smollm2"]
    model = models.data[0]
    assert model.object == "model"
    assert model.owned_by == market.wallets["creator"].address
    assert model.created >= 1  # the height of the block that registered it
    extra = model.model_extra or {}
    assert extra["dn"]["sha256"] == market.model
    assert extra["dn"]["price"] == PRICE
    assert extra["dn"]["miners"] == 2


def test_a_chat_completion_is_paid_by_the_gateway_wallet_exactly(
    market: Market, client: openai.OpenAI
) -> None:
    before = balance(market)
    answer = client.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=24)
    dn = (answer.model_extra or {})["dn"]
    assert dn["status"] == "confirmed"
    assert answer.id == f"chatcmpl-{dn['task']}"
    assert answer.object == "chat.completion" and answer.model == "smollm2"
    choice = answer.choices[0]
    assert choice.message.role == "assistant" and (choice.message.content or "").strip()
    assert choice.finish_reason in ("stop", "length")
    assert answer.usage is not None
    tokens = answer.usage.completion_tokens
    assert (choice.finish_reason == "length") == (tokens == 24)
    assert dn["price_units"] == PRICE * tokens // 1000 > 0
    assert {dn["generator"], dn["checker"]} == {
        market.wallets["m1"].address,
        market.wallets["m2"].address,
    }

    settled(market, dn)
    fee = market.genesis.param("min_fee")
    assert before - balance(market) == dn["price_units"] + 2 * fee  # its slot and settlement


def test_a_streamed_chat_sends_tokens_then_the_status(
    market: Market, client: openai.OpenAI
) -> None:
    before = balance(market)
    stream = client.chat.completions.create(
        model=market.model[:12], messages=MESSAGES, max_tokens=16, stream=True
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2
    last = chunks[-1]
    assert last.choices[0].finish_reason in ("stop", "length")
    dn = (last.model_extra or {})["dn"]
    assert dn["status"] == "confirmed" and last.id == f"chatcmpl-{dn['task']}"
    assert all("dn" not in (c.model_extra or {}) for c in chunks[:-1])
    settled(market, dn)
    assert before - balance(market) == dn["price_units"] + 2 * market.genesis.param("min_fee")


def test_completions_take_raw_text_both_ways(market: Market, client: openai.OpenAI) -> None:
    prompt = "The capital of France is"
    answer = client.completions.create(model="smollm2", prompt=prompt, max_tokens=8)
    dn = (answer.model_extra or {})["dn"]
    assert answer.object == "text_completion" and answer.id == f"cmpl-{dn['task']}"
    assert answer.choices[0].text.strip() and dn["status"] == "confirmed"
    assert answer.usage is not None and answer.usage.completion_tokens <= 8

    chunks = list(
        client.completions.create(model="smollm2", prompt=prompt, max_tokens=8, stream=True)
    )
    assert "".join(c.choices[0].text for c in chunks).strip()
    final = (chunks[-1].model_extra or {})["dn"]
    assert final["status"] == "confirmed" and final["task"] != dn["task"]
    settled(market, final)


def test_usage_counts_the_prompt_as_the_models_tokenizer_does(
    market: Market, client: openai.OpenAI, smollm2_gguf: Path
) -> None:
    """`usage` in both endpoints, streamed (with `include_usage`) and not: the prompt's tokens as
    SmolLM2's tokenizer counts the prompt the miners ran (the chat template applied), the
    tokens generated, and their sum."""
    from dn.node.taskio import normalize_input, render
    from dn.runner.llama import LoadedModel

    model = LoadedModel(smollm2_gguf, n_threads=1, n_ctx=512)
    try:
        chat_prompt = len(model.tokenize(render(model, normalize_input({"messages": MESSAGES}))))
        text = "The capital of France is"
        text_prompt = len(model.tokenize(render(model, normalize_input({"prompt": text}))))
    finally:
        model.llm.close()
    assert chat_prompt > text_prompt > 0

    def exact(usage: Any, prompt: int, completion: int) -> None:
        assert usage is not None
        assert (usage.prompt_tokens, usage.completion_tokens) == (prompt, completion)
        assert usage.total_tokens == prompt + completion

    chat = client.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=6)
    exact(chat.usage, chat_prompt, (chat.model_extra or {})["dn"]["price_units"] * 1000 // PRICE)
    completion = client.completions.create(model="smollm2", prompt=text, max_tokens=6)
    assert completion.usage is not None
    exact(completion.usage, text_prompt, completion.usage.completion_tokens)
    assert completion.usage.completion_tokens == 6  # greedy: the same six every time
    streamed = list(
        client.chat.completions.create(
            model="smollm2",
            messages=MESSAGES,
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    final = [c for c in streamed if c.usage is not None]
    assert len(final) == 1 and final[0].choices == [] and streamed[-1] is final[0]
    assert chat.usage is not None
    exact(final[0].usage, chat_prompt, chat.usage.completion_tokens)


def test_errors_have_openais_shape_and_our_reason(market: Market, client: openai.OpenAI) -> None:
    before = balance(market)
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES, max_tokens=8)
    assert unknown.value.status_code == 404
    assert unknown.value.code == "unknown-model"
    assert "no-such-model" in unknown.value.message

    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="smollm2", messages=[{"role": "tool", "content": "x"}], max_tokens=8
        )
    assert bad.value.code == "bad-input"

    with pytest.raises(openai.BadRequestError) as many:
        client.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=8, n=2)
    assert many.value.code == "bad-request"

    assert balance(market) == before  # nothing was run, so nothing was paid


def test_a_node_without_a_gateway_wallet_refuses_to_pay(market: Market) -> None:
    miner = openai.OpenAI(base_url=f"{market.miners[0].url}/v1", api_key="unused", max_retries=0)
    with miner:
        assert [m.id for m in miner.models.list().data] == ["smollm2"]  # reading is free
        with pytest.raises(openai.APIStatusError) as refused:
            miner.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=8)
    assert refused.value.status_code == 503
    assert refused.value.code == "no-gateway-wallet"
    assert "--gateway-wallet" in refused.value.message
    response = httpx.post(
        f"{market.miners[0].url}/v1/completions", json={"model": "smollm2", "prompt": "Hi"}
    )
    assert response.status_code == 503 and response.json()["error"]["code"] == "no-gateway-wallet"


def test_sse_framing_is_what_openai_clients_parse(market: Market) -> None:
    body = {"model": "smollm2", "messages": MESSAGES, "max_tokens": 4, "stream": True}
    url = f"{market.gateway.url}/v1/chat/completions"
    with httpx.stream("POST", url, json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    assert '"role":"assistant"' in lines[0]
    settled(market, json.loads(lines[-2][len("data: ") :])["dn"])


def test_a_lying_miner_ends_the_query_unpaid_and_a_bad_answer_is_returned_unpaid(
    market: Market, client: openai.OpenAI
) -> None:
    fee = market.genesis.param("min_fee")
    try:
        # m1 signs its attestations with another key: found after the tokens have streamed.
        restart_m1(market, "wrong-key")
        before = balance(market)
        with pytest.raises(openai.InternalServerError) as failed:
            client.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=8)
        assert failed.value.status_code == 503 and failed.value.code == "miner-lied"
        stream = client.chat.completions.create(
            model="smollm2", messages=MESSAGES, max_tokens=8, stream=True
        )
        chunks = []
        with pytest.raises(openai.APIError) as mid_stream:
            for chunk in stream:
                chunks.append(chunk)
        assert any(c.choices and c.choices[0].delta.content for c in chunks)
        assert mid_stream.value.code == "miner-lied"
        assert "attestation" in mid_stream.value.message
        assert before - balance(market) == 2 * fee  # the two slots the tickets used, no price

        # m1 generates garbage: when it is the generator, the checker rejects the answer; the
        # answer still comes back, marked rejected, and only the fees (slot, settlement) are paid.
        restart_m1(market, "garbage")
        for _ in range(12):  # the generator is drawn from the ticket's hash: half the time m1
            before = balance(market)
            answer = client.chat.completions.create(
                model="smollm2", messages=MESSAGES, max_tokens=8
            )
            dn = (answer.model_extra or {})["dn"]
            record = settled(market, dn)
            if dn["status"] == "rejected":
                break
            assert before - balance(market) == dn["price_units"] + 2 * fee
        else:
            raise AssertionError("m1 was never the generator in 12 tasks")
        assert dn["generator"] == market.wallets["m1"].address and dn["price_units"] == 0
        assert answer.choices[0].message.content is not None
        assert record["status"] == "rejected" and record["paid"] == 0
        assert before - balance(market) == 2 * fee
    finally:
        restart_m1(market, "")


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1", True),
        ("127.0.0.53", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("testclient", False),  # a name, not an address: not known to be this machine
        ("192.168.1.20", False),
        ("10.0.0.1", False),
        ("fe80::1", False),
        ("0.0.0.0", False),
        (None, False),
        ("", False),
    ],
)
def test_only_clients_on_this_machine_may_spend_the_wallet(host: str | None, local: bool) -> None:
    assert is_local(host) is local
