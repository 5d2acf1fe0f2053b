"""`dn devnet up` with two miners, stopped in the middle of a burst of queries: every node of
the devnet (one process) is gone within 10 s of SIGTERM, with a clean exit, whatever its miners
were doing (streams, check sessions, answers waiting on a step of the model's engine)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

from dn.client.http import NodeClient
from dn.client.query import chat_input, run_query
from dn.config import wallets_dir
from dn.node.devnet import DEVNET_PASSWORD
from dn.wallet.keystore import Keystore
from tests.functional.harness import wait_until
from tests.functional.test_devnet import DevnetProcess, dn_json, free_base

STOP_S = 10.0


def test_sigterm_during_a_burst_stops_the_devnet_within_10_s(
    dn_home: Path, smollm2_gguf: Path
) -> None:
    base = free_base(3)
    devnet = DevnetProcess(
        dn_home,
        *("--nodes", "3", "--validators", "1", "--miners", "2", "--slots", "2"),
        *("--port-base", str(base), "--block-time", "200"),
    )
    try:
        info = devnet.start()
        gateway, miners = info["nodes"][0]["url"], [n["url"] for n in info["nodes"][1:]]
        dn_json(
            dn_home,
            *("--node", gateway, "model", "submit", str(smollm2_gguf), "--name", "smollm2"),
            *("--domain", "general", "--price", "0.002", "--wallet", "devnet-alice"),
            password=True,
        )
        with NodeClient(gateway, timeout=10) as client:
            wait_until(
                lambda: len(client.model("smollm2")["miners"]) == 2, 60, 0.2, what="two miners"
            )
        bob = Keystore(wallets_dir(dn_home)).load("devnet-bob", DEVNET_PASSWORD)
        outcomes: list[Any] = []

        def ask(i: int) -> None:
            try:
                question = chat_input(f"Count to {i + 3}.")
                with NodeClient(gateway, timeout=30) as client:
                    run_query(client, bob, "smollm2", question, max_tokens=96)
                outcomes.append("answered")
            except Exception as exc:  # noqa: BLE001 - cut off by the stop: any error will do
                outcomes.append(type(exc).__name__)

        askers = [threading.Thread(target=ask, args=(i,), daemon=True) for i in range(6)]
        for asker in askers:
            asker.start()

        def at_work() -> bool:
            for url in miners:
                with NodeClient(url, timeout=5) as client:
                    if any(s["active"] for s in client.status()["miner"]["slots"]):
                        return True
            return False

        wait_until(at_work, 60, 0.1, what="the miners at work")
        code, took = devnet.stop(signal.SIGTERM)
        assert code == 0, devnet.stderr()[-3000:]
        assert took < STOP_S, f"took {took:.1f} s to stop"
        assert "Traceback" not in devnet.stderr()
        for asker in askers:
            asker.join(60)
        assert len(outcomes) == 6
    finally:
        devnet.kill()
