"""Many people at once on a real network: a validator that is the gateway and two `dn mine`
processes serving SmolLM2 (tests/functional/market.py), hit with bursts of concurrent queries.

What a devnet hit before the miners batched (ten concurrent queries: every one failed with "the
checker did not answer in time", and every later one too, until the miners restarted): now each
query of a burst ends confirmed and settled, or is refused cleanly as busy (a miner beyond its
`--slots`, reason `miner-busy`, nothing to settle), and a query right after the burst is
confirmed. A miner or gateway asked to stop in the middle of a burst stops within 10 s.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dn.client.query import chat_input, run_query
from dn.errors import TaskError
from tests.functional.harness import wait_until
from tests.functional.market import Market, running_market

SLOTS = 4  # per miner and model; each query takes one on each miner (generating, checking)
MAX_TOKENS = 48  # the burst
STOP_S = 10  # SIGINT/SIGTERM to exit, whatever the miners are doing
TEXTS = [
    "Name three colours of the rainbow.",
    "What is the capital of France?",
    "Give me two words that rhyme with cat.",
    "Count from one to five.",
    "Name a fruit that is yellow.",
]


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[Market]:
    with running_market(
        tmp_path_factory.mktemp("burst"), smollm2_gguf, miner_args=["--slots", str(SLOTS)]
    ) as running:
        yield running


def query(market: Market, i: int, results: list[Any]) -> None:
    """One consumer's whole query (ticket, answer, settlement in a block): its outcome."""
    try:
        with market.client() as client:
            result = run_query(
                client,
                market.wallets["consumer"],
                "smollm2",
                chat_input(TEXTS[i % len(TEXTS)]),
                max_tokens=MAX_TOKENS,
            )
        results[i] = ("confirmed", result) if result["status"] == "confirmed" else ("no", result)
    except TaskError as exc:
        results[i] = ("busy", exc) if exc.reason == "miner-busy" else ("failed", exc)
    except Exception as exc:  # noqa: BLE001 - the test reports every outcome
        results[i] = ("failed", exc)


def burst(market: Market, n: int, timeout: float) -> list[Any]:
    results: list[Any] = [("unfinished", None)] * n
    threads = [threading.Thread(target=query, args=(market, i, results)) for i in range(n)]
    for thread in threads:
        thread.start()
    end = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.1, end - time.monotonic()))
    return results


def idle(market: Market) -> bool:
    """Every miner has given back every slot (streams and check sessions)."""
    for miner in market.miners:
        with miner.client() as client:
            status = client.status()["miner"]
        if status["sessions"] or any(s["active"] for s in status["slots"]):
            return False
    return True


def settles_and_the_next_query_is_confirmed(market: Market, results: list[Any]) -> None:
    outcomes = [kind for kind, _ in results]
    assert all(kind in {"confirmed", "busy"} for kind in outcomes), results
    assert "confirmed" in outcomes, results
    for kind, result in results:
        if kind == "confirmed":
            assert result["settlement"]["status"] == "included", result
            assert result["tokens"] >= 1 and result["price_units"] > 0
    wait_until(lambda: idle(market), 30, what="every slot given back")
    after: list[Any] = [None]
    query(market, 0, after)
    assert after[0][0] == "confirmed", after


def test_five_concurrent_queries_end_confirmed_or_busy_and_settle(market: Market) -> None:
    settles_and_the_next_query_is_confirmed(market, burst(market, 5, 240))


def test_twenty_concurrent_queries_end_confirmed_or_busy_and_settle(market: Market) -> None:
    results = burst(market, 20, 600)
    settles_and_the_next_query_is_confirmed(market, results)
    # Twenty queries want forty slots of the miners' eight: some were refused, cleanly.
    assert [kind for kind, _ in results].count("busy") >= 1


def test_a_stop_signal_in_the_middle_of_a_burst_ends_every_process_in_time(
    tmp_path: Path, smollm2_gguf: Path
) -> None:
    with running_market(tmp_path, smollm2_gguf, miner_args=["--slots", str(SLOTS)]) as market:
        results: list[Any] = [("unfinished", None)] * 6
        threads = [
            threading.Thread(target=query, args=(market, i, results), daemon=True) for i in range(6)
        ]
        for thread in threads:
            thread.start()
        wait_until(lambda: not idle(market), 60, 0.1, what="the miners at work")
        procs = [p.proc for p in [*market.miners, market.gateway]]
        for proc, sig in zip(procs, (signal.SIGTERM, signal.SIGINT, signal.SIGTERM), strict=True):
            assert proc is not None
            proc.send_signal(sig)
        start = time.monotonic()
        for proc in procs:
            assert proc is not None
            try:
                proc.wait(max(0.1, start + STOP_S - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"a node still ran {STOP_S} s after the signal: {proc.args}")
            assert proc.returncode == 0, proc.args
        for thread in threads:
            thread.join(30)
