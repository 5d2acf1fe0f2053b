"""API keys for LAN clients (issue 14, item 4), with the official `openai` client against a real
market, from a non-loopback address.

The test makes a network namespace of its own (lo, and a veth pair whose end `va` holds
10.213.9.1/24; nothing is added to the namespace the tests run in) and runs `test_inside` there
in a child pytest: the market (a gateway with `--gateway-wallet consumer --host 0.0.0.0` and two
`dn mine` processes on the SmolLM2 model) runs on that namespace's loopback as usual, while the
client calls the gateway at 10.213.9.1, so the gateway sees a LAN address. Keys are made and
revoked with `dn apikey` while the gateway runs. Needs root and iproute2's `ip`; skipped with the
reason otherwise (tests/functional/lan.py).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
import pytest

from dn.chain import tasks
from dn.encoding import format_dn
from tests.functional.lan import ip, skip_without_lan
from tests.functional.market import PASSWORD, PRICE, running_market

REPO = Path(__file__).resolve().parents[2]
ADDRESS_ENV = "DN_TEST_LAN_ADDRESS"
ADDRESS = "10.213.9.1"
MESSAGES: list[Any] = [{"role": "user", "content": "Name a colour."}]
MAX_TOKENS = 8


def test_keys_from_a_lan_address() -> None:
    skip_without_lan()
    ns = f"dnkey-{secrets.token_hex(3)}"
    ip("netns", "add", ns)
    try:
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "link", "add", "va", "type", "veth", "peer", "name", "vb")
        ip("-n", ns, "addr", "add", f"{ADDRESS}/24", "dev", "va")
        ip("-n", ns, "link", "set", "vb", "up")
        ip("-n", ns, "link", "set", "va", "up")
        env = {**os.environ, ADDRESS_ENV: ADDRESS}
        inner = f"{Path(__file__).relative_to(REPO)}::test_inside"
        done = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "pytest", "-q", "-x", inner]
            + ["-p", "no:cacheprovider"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=540,
            check=False,
        )
    finally:
        ip("netns", "del", ns, check=False)
    assert done.returncode == 0 and " passed" in done.stdout, done.stdout[-6000:] + done.stderr
    assert "skipped" not in done.stdout


def _dn(home: Path, *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "dn", "--json", *args],
        cwd=REPO,
        env={**os.environ, "DN_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


def test_inside(tmp_path: Path, smollm2_gguf: Path) -> None:
    address = os.environ.get(ADDRESS_ENV)
    if address is None:
        pytest.skip("runs inside the namespace that test_keys_from_a_lan_address makes")
    with running_market(
        tmp_path,
        smollm2_gguf,
        gateway_args=["--gateway-wallet", "consumer", "--host", "0.0.0.0"],
        gateway_env={"DN_PASSWORD": PASSWORD},
    ) as market:
        url = f"http://{address}:{market.gateway.port}/v1"

        def client(key: str) -> openai.OpenAI:
            return openai.OpenAI(base_url=url, api_key=key, max_retries=2, timeout=120)

        def ask(key: str) -> Any:
            return client(key).chat.completions.create(
                model="smollm2", messages=MESSAGES, max_tokens=MAX_TOKENS
            )

        # no key (the client's placeholder is not one) from a LAN address
        with pytest.raises(openai.PermissionDeniedError) as refused:
            ask("unused")
        assert refused.value.code == "not-local"
        # an unknown key
        with pytest.raises(openai.AuthenticationError) as unknown:
            ask("dn-key-00000000." + "0" * 64)
        assert unknown.value.code == "invalid_api_key"

        # a key, made while the node runs, with room for one query of MAX_TOKENS
        fee = int(market.genesis.param("min_fee"))
        most = tasks.price_of(PRICE, MAX_TOKENS) + 2 * fee  # the price, the slot, the settlement
        made = _dn(
            market.home, "apikey", "create", "--name", "gw", "--wallet", "consumer",
            "--budget", format_dn(most), "--expires", "1d",
        )  # fmt: skip
        answer = ask(made["key"])
        dn = (answer.model_extra or {})["dn"]
        assert dn["status"] == "confirmed" and dn["settle_tx"]
        assert answer.usage is not None and answer.usage.prompt_tokens > 0
        (listed,) = _dn(market.home, "apikey", "list", "--name", "gw")["keys"]
        assert listed["spent"] == dn["price_units"] + 2 * fee  # what the wallet paid, exactly

        # the second cannot be covered: refused before anything is signed, and not retried
        with pytest.raises(openai.RateLimitError) as poor:
            ask(made["key"])
        assert poor.value.code == "insufficient_quota"
        assert poor.value.response.headers["x-should-retry"] == "false"

        # revoked while the node runs: refused at the next request
        bigger = _dn(
            market.home, "apikey", "create", "--name", "gw", "--wallet", "consumer",
            "--budget", "1",
        )  # fmt: skip
        streamed = client(bigger["key"]).chat.completions.create(
            model="smollm2",
            messages=MESSAGES,
            max_tokens=MAX_TOKENS,
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = [c.usage for c in streamed if c.usage is not None]
        assert len(usage) == 1 and usage[0].prompt_tokens == answer.usage.prompt_tokens
        _dn(market.home, "apikey", "revoke", "--name", "gw", bigger["id"])
        with pytest.raises(openai.AuthenticationError) as revoked:
            ask(bigger["key"])
        assert revoked.value.code == "invalid_api_key"
        assert bigger["key"] not in market.gateway.log.read_text()
