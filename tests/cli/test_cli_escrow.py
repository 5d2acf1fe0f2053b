"""`dn escrow deposit | withdraw | show` against a real `dn node start`.

A one-validator chain with a short ticket window (so a withdrawal unlocks after a few blocks) that
makes blocks only for transactions. Every rejected command is checked for its exit code, a
message that says what was wrong, and a chain that did not move.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import said
from tests.cli.test_cli_chain import Devnet, make_wallet
from tests.functional.harness import NodeProcess, init_chain

DN = 10**9
WINDOW = 2
UNLOCK = WINDOW + 1  # escrow_unlock_blocks may not be shorter than the window + 1


@pytest.fixture
def devnet(dn_home: Path, password_file: Path) -> Iterator[Devnet]:
    alice = make_wallet("alice", password_file, dn_home)
    bob = make_wallet("bob", password_file, dn_home)
    made = init_chain(
        dn_home,
        {alice: 1000 * DN},
        block_time_ms=100,
        max_block_interval_ms=3_600_000,
        ticket_window_blocks=WINDOW,
        escrow_unlock_blocks=2,
    )
    node = NodeProcess(dn_home).start()
    genesis = {"chain_id": made.chain_id, "allocations": made.allocations}
    try:
        yield Devnet(dn_home, node, genesis, alice, bob, password_file)
    finally:
        node.stop(timeout=5)


def escrow(devnet: Devnet, verb: str, *args: str, json: bool = True, **kw: Any) -> Any:
    argv = ["escrow", verb, *args]
    if verb != "show":
        argv += ["--password-file", str(devnet.password_file)]
    return devnet.dn_json(*argv, **kw) if json else devnet.dn(*argv, **kw)


def test_deposit_show_and_withdraw(devnet: Devnet) -> None:
    start = devnet.dn_json("wallet", "balance", "alice")["balance"]
    put = escrow(devnet, "deposit", "2.5", "--wallet", "alice")
    assert {k: put[k] for k in ("address", "amount", "status")} == {
        "address": devnet.alice,
        "amount": 2_500_000_000,
        "status": "included",
    }
    assert put["escrow"]["amount"] == put["escrow"]["available"] == 2_500_000_000
    human = said(escrow(devnet, "deposit", "0.5", "--wallet", "alice", json=False))
    assert "deposited 0.5 DN into the escrow, in block" in human
    assert "3 DN in escrow, 3 DN available" in human
    assert devnet.dn_json("wallet", "balance", "alice")["balance"] == start - 3 * DN - 2_000

    shown = escrow(devnet, "show", "--wallet", "alice")
    assert {k: shown[k] for k in ("address", "amount", "available", "unlocking", "unlock_at")} == {
        "address": devnet.alice,
        "amount": 3 * DN,
        "available": 3 * DN,
        "unlocking": 0,
        "unlock_at": None,
    }
    assert escrow(devnet, "show", devnet.alice) == shown  # an address works too
    assert escrow(devnet, "show", "alice") == shown  # and a wallet name
    table = said(escrow(devnet, "show", "--wallet", "alice", json=False))
    cells = ("in escrow", "available for new queries", "reserved by booked slots", "unlocking")
    for cell in (*cells, "wallet balance"):
        assert cell in table
    nothing = escrow(devnet, "show", "bob")
    assert (nothing["amount"], nothing["available"], nothing["unlocking"]) == (0, 0, 0)

    taken = escrow(devnet, "withdraw", "1", "--wallet", "alice")
    assert taken["unlock_blocks"] == UNLOCK
    due = taken["height"] + UNLOCK
    assert taken["escrow"] == {
        "address": devnet.alice,
        "height": taken["escrow"]["height"],
        "balance": taken["escrow"]["balance"],
        "amount": 3 * DN,
        "available": 2 * DN,
        "unlocking": DN,
        "unlock_at": due,
        "reserved": 0,  # no slots booked
    }
    human = said(escrow(devnet, "show", "--wallet", "alice", json=False))
    assert f"unlocking (back at block {due})" in human
    # It comes back only at the unlock height: make blocks until then.
    held = devnet.dn_json("wallet", "balance", "alice")["balance"]
    sent = 0
    while devnet.dn_json("node", "status")["height"] < due:
        devnet.send("alice", devnet.bob, "0.001")
        sent += 1
    back = devnet.dn_json("wallet", "balance", "alice")["balance"]
    assert back == held + DN - sent * (DN // 1000 + 1_000)
    assert escrow(devnet, "show", "alice")["amount"] == 2 * DN


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["deposit", "5000", "--wallet", "alice"], "cannot pay"),  # insufficient-funds
        (["withdraw", "1", "--wallet", "alice"], "has no escrow"),  # no-escrow
    ],
)
def test_refused_commands_say_why_and_change_nothing(
    devnet: Devnet, args: list[str], reason: str
) -> None:
    before = devnet.snapshot()
    result = escrow(devnet, args[0], *args[1:], json=False, code=None)
    assert reason in said(result)
    assert devnet.snapshot() == before


def test_withdrawing_more_than_is_available_is_refused(devnet: Devnet) -> None:
    escrow(devnet, "deposit", "1", "--wallet", "alice")
    escrow(devnet, "withdraw", "0.75", "--wallet", "alice")
    before = devnet.snapshot()
    result = escrow(devnet, "withdraw", "0.5", "--wallet", "alice", json=False, code=None)
    assert "250000000 of the escrow's 1000000000 are available" in said(result)
    assert devnet.snapshot() == before


def test_show_needs_one_address(devnet: Devnet) -> None:
    result = escrow(devnet, "show", json=False, code=None)
    assert "give an ADDRESS or --wallet NAME" in said(result)
    result = escrow(devnet, "show", "alice", "--wallet", "bob", json=False, code=None)
    assert "one of them" in said(result)


def test_help_explains_each_command(devnet: Devnet) -> None:
    for verb, words in (
        ("deposit", "query escrow"),
        ("withdraw", "escrow_unlock_blocks"),
        ("show", "available"),
    ):
        assert words in said(devnet.dn("escrow", verb, "--help"))
    assert "Query escrow" in said(devnet.dn("escrow", "--help"))
