"""`dn powr status | scores | leaderboard` against a real `dn node start` whose one validator
commits and reveals scores for two models through the real rules, in short epochs.

The validator's transactions are signed here with the node's own key (what the validator loop
does); everything shown is read back through the node's API and the CLI.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dn.chain.powr_rules import powr_commitment
from dn.client.http import NodeClient
from dn.client.txs import send
from dn.node.node import NodeHome
from dn.wallet.keystore import Keystore
from tests.cli.conftest import PASSWORD
from tests.cli.helpers import said
from tests.cli.test_cli_chain import Devnet, make_wallet
from tests.functional.harness import NodeProcess, init_chain, wait_until

DN = 10**9
EPOCH = 8  # blocks: commits in the first 4, reveals in the last 4
GOOD, CLOSE, POOR = "ab" * 32, "ef" * 32, "cd" * 32
SCORES = {GOOD: 800_000, CLOSE: 700_000, POOR: 200_000}
# Standard errors of those qualities. With no tasks a score is q * 0.625 (s = 0.5, d = 0:
# (5,000 + 2,500 * 0.5) / 10,000), and so is its error: scores 0.5, 0.4375, 0.125 with errors
# 0.0625, 0.0625, 0.03125. good - close = 0.0625 <= 1.96 * sqrt(2) * 0.0625 = 0.173: tied;
# close - poor = 0.3125 > 1.96 * sqrt(0.0625² + 0.03125²) = 0.137: poor is below both.
ERRORS = {GOOD: 100_000, CLOSE: 100_000, POOR: 50_000}
SALT = "5a" * 16


def _register(client: NodeClient, keypair: Any, sha: str, name: str) -> None:
    payload = {"model": sha, "name": name, "domain": "general", "price": 1000, "license": "",
               "size": 1234}  # fmt: skip
    send(client, keypair, "model.register", payload)


def _wait_phase(client: NodeClient, phase: str) -> dict[str, Any]:
    """The status once the block being built next is in `phase` with at least two blocks of the
    phase left (room for the transaction to land in it)."""

    def ready() -> dict[str, Any] | None:
        status = client.powr_status()
        left = status["phase_to"] - status["height"]
        return status if status["phase"] == phase and left >= 2 else None

    return dict(wait_until(ready, 40, what=f"the {phase} phase"))


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Devnet, int]]:
    """One closed epoch, shared by the tests here (they only read)."""
    dn_home = tmp_path_factory.mktemp("powr-board")
    password_file = dn_home / "password.txt"
    password_file.write_text(PASSWORD + "\n")
    alice = make_wallet("alice", password_file, dn_home)
    bob = make_wallet("bob", password_file, dn_home)
    made = init_chain(
        dn_home, {alice: 1000 * DN}, block_time_ms=100, max_block_interval_ms=1000,
        epoch_blocks=EPOCH,
    )  # fmt: skip
    node = NodeProcess(dn_home).start()
    devnet = Devnet(dn_home, node, {"chain_id": made.chain_id}, alice, bob, password_file)
    validator = NodeHome.named("default", dn_home).key()
    keypair = Keystore(dn_home / "wallets").load("alice", PASSWORD)
    try:
        with node.client() as client:
            _register(client, keypair, GOOD, "good")
            _register(client, keypair, POOR, "poor")
            _register(client, keypair, CLOSE, "close")
            send(client, keypair, "transfer", {"to": validator.address, "amount": DN})
            status = _wait_phase(client, "commit")
            epoch = status["epoch"]
            commitment = powr_commitment(epoch, validator.address, SCORES, SALT, ERRORS)
            sent = send(
                client, validator, "powr.commit", {"epoch": epoch, "commitment": commitment}
            )
            assert sent["status"] == "included"
            _wait_phase(client, "reveal")
            payload = {"epoch": epoch, "scores": SCORES, "salt": SALT, "errors": ERRORS}
            assert send(client, validator, "powr.reveal", payload)["status"] == "included"
            wait_until(
                lambda: (client.powr_status()["last_closed"] or -1) >= epoch, 40, what="the close"
            )
        yield devnet, epoch
    finally:
        node.stop(timeout=5)


def test_leaderboard_scores_and_status_show_the_closed_epoch(board: tuple[Devnet, int]) -> None:
    devnet, epoch = board
    status = devnet.dn_json("powr", "status")
    assert status["last_closed"] >= epoch and status["epoch_blocks"] == EPOCH

    ranked = devnet.dn_json("powr", "leaderboard", "--epoch", str(epoch))
    assert [r["name"] for r in ranked["rows"]] == ["good", "close", "poor"]
    assert [r["rank"] for r in ranked["rows"]] == [1, 1, 3]
    assert [r["rank_label"] for r in ranked["rows"]] == ["=1", "=1", "3"]
    good, close, poor = ranked["rows"]
    assert good["quality"] == 800_000 and poor["quality"] == 200_000  # one validator: its scores
    assert [r["quality_error"] for r in ranked["rows"]] == [100_000, 100_000, 50_000]
    assert [r["score"] for r in ranked["rows"]] == [500_000, 437_500, 125_000]
    assert [r["error"] for r in ranked["rows"]] == [62_500, 62_500, 31_250]
    assert good["score"] > poor["score"] > 0 and good["reward"] > poor["reward"] > 0
    # No task was settled, so the usage cap mints none of the models' miner share: paid are the
    # validators' 20 % and, of the models' 80 %, the creator's 30 % and the backers' 20 % (the
    # genesis defaults, docs/protocol.md "The usage cap").
    assert ranked["emission"] > 0
    # Up to a unit per model: each model's share is rounded on its own.
    expected = ranked["emission"] * (2_000 + 8_000 * (3_000 + 2_000) // 10_000) // 10_000
    assert abs(ranked["paid"] - expected) <= len(ranked["rows"])
    # The default is the last closed epoch; a domain nobody uses is empty.
    assert devnet.dn_json("powr", "leaderboard")["epoch"] == status["last_closed"]
    assert (
        devnet.dn_json("powr", "leaderboard", "--domain", "code", "--epoch", str(epoch))["rows"]
        == []
    )
    table = said(devnet.dn("powr", "leaderboard", "--epoch", str(epoch)))
    assert "good" in table and "poor" in table and f"epoch {epoch}" in table
    assert "0.500 ± 0.062" in table and "=1" in table

    shown = devnet.dn_json("powr", "scores", "--epoch", str(epoch))
    assert shown["closed"] is True
    assert {m: [e["raw"] for e in entries] for m, entries in shown["scores"].items()} == {
        GOOD: [800_000],
        CLOSE: [700_000],
        POOR: [200_000],
    }
    assert all(e["clipped"] == e["raw"] for entries in shown["scores"].values() for e in entries)
    assert {m: [e["error"] for e in entries] for m, entries in shown["scores"].items()} == {
        m: [error] for m, error in ERRORS.items()
    }
    (record,) = shown["result"]["validators"].values()
    assert record["revealed"] is True and record["reward"] > 0
    credited = sum(c["amount"] for c in shown["result"]["credits"])
    assert credited == shown["result"]["paid"]
    assert "validators" in said(devnet.dn("powr", "scores", "--epoch", str(epoch)))


def test_epochs_not_closed_or_not_started_are_explained(board: tuple[Devnet, int]) -> None:
    devnet, _ = board
    with devnet.node.client() as client:
        current = client.powr_status()["epoch"]
    future = devnet.dn("powr", "scores", "--epoch", str(current + 50), code=None)
    assert "has not started" in said(future)
    open_now = devnet.dn("powr", "leaderboard", "--epoch", str(current + 1), code=None)
    assert "not closed" in said(open_now)
    devnet.dn("powr", "scores", "--epoch", "-1", code=2)
    assert devnet.dn_json("powr", "scores", "--epoch", str(current))["closed"] is False
