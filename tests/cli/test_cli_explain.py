"""`dn chain explain` against the store of a real `dn node start`: every unit of a balance traced
to its cause, as a table and as JSON, and a mistyped address refused with a clear message."""

from __future__ import annotations

from dn.encoding import format_dn
from tests.cli.helpers import mistype, said
from tests.cli.test_cli_chain import Devnet, devnet  # noqa: F401

DN = 10**9


def test_explain_traces_a_transfer_on_both_sides(devnet: Devnet) -> None:  # noqa: F811
    sent = devnet.send_json("alice", "bob", "1.5")
    height, fee = sent["height"], sent["fee"]
    validator = devnet.genesis["validator"]
    staked = devnet.dn_json(
        "stake", "add", validator, "2", "--wallet", "alice", "--password-file",
        devnet.password_file,
    )  # fmt: skip
    assert staked["status"] == "included"
    with devnet.node.client() as client:
        alice_now = client.account(devnet.alice)["balance"]

    alice = devnet.dn_json("chain", "explain", "alice")  # a wallet name or an address
    assert alice["address"] == devnet.alice and alice["height"] >= height
    got = [(e["height"], e["tx"], e["kind"], e["amount"]) for e in alice["entries"]]
    assert got == [
        (0, None, "genesis", 1000 * DN),
        (height, sent["id"], "fee", -fee),
        (height, sent["id"], "transfer-out", -1_500_000_000),
        (staked["height"], staked["tx"], "fee", -staked["fee"]),
        (staked["height"], staked["tx"], "stake", -2 * DN),
    ]
    assert alice["totals"] == {
        "opening": 0,
        "received": 1000 * DN,
        "spent": 3_500_000_000 + fee + staked["fee"],
        "unexplained": 0,
        "balance": alice_now,
        "locked": 2 * DN,
    }
    assert alice["locked"] == [{"kind": "stake", "amount": 2 * DN, "target": validator}]

    bob = devnet.dn_json("chain", "explain", devnet.bob, "--name", "default")
    assert [(e["kind"], e["amount"], e["tx"]) for e in bob["entries"]] == [
        ("transfer-in", 1_500_000_000, sent["id"])
    ]
    assert devnet.alice in bob["entries"][0]["cause"]
    assert bob["totals"]["balance"] == 1_500_000_000

    proposer = devnet.dn_json("chain", "explain", validator)
    earned = [(e["height"], e["kind"], e["amount"]) for e in proposer["entries"]]
    assert earned == [
        (height, "proposer-fee", fee - fee * 2000 // 10_000),
        (staked["height"], "proposer-fee", staked["fee"] - staked["fee"] * 2000 // 10_000),
    ]

    later = devnet.dn_json("chain", "explain", "alice", "--from", str(staked["height"] + 1))
    assert later["entries"] == [] and later["totals"]["opening"] == alice_now

    table = said(devnet.dn("chain", "explain", "alice"))
    for text in (
        "genesis allocation",
        f"transfer to {devnet.bob}",
        "+1000",
        "-1.5",
        f"staked on validator {validator}",
        "locked (not in the balance)",
        f"stake on validator {validator}",
        f"balance {format_dn(alice_now)} DN, locked 2 DN",
    ):
        assert text in table, text
    assert "every unit explained" in table


def test_a_mistyped_address_is_refused(devnet: Devnet) -> None:  # noqa: F811
    wrong = mistype(devnet.alice)
    refused = devnet.dn("chain", "explain", wrong, code=2)
    assert f"invalid address '{wrong}': checksum mismatch (a typo?)" in said(refused)
    unknown = devnet.dn("chain", "explain", devnet.alice, "--name", "nobody", code=None)
    assert "no chain store" in said(unknown)
