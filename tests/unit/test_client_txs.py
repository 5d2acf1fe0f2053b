"""Writing to the chain through the client library (dn/client/txs.py): the next nonce, the fee
read from the genesis, submitting and waiting, against a real node's API in this process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dn.client.txs import send, sign_next, transfer
from dn.errors import InvalidAmount
from dn.wallet.keys import Keypair
from tests.unit.inprocess import DN, served_node

ALICE = Keypair.from_seed(bytes(range(32)))
BOB = Keypair.from_seed(bytes(range(1, 33)))


def test_the_genesis_parameters_the_file_leaves_out_are_their_defaults(tmp_path: Path) -> None:
    with served_node(tmp_path, {ALICE.address: DN}, min_fee=2_500) as (_, client):
        assert client.genesis()["params"] == {"min_fee": 2_500}  # the file names one
        assert client.param("min_fee") == 2_500
        # The parameter table's defaults (dn/chain/genesis.py): an unbonded stake comes back
        # after 100 blocks, a ticket may lag its block by 100 blocks.
        assert client.param("unbonding_blocks") == 100
        assert client.param("ticket_window_blocks") == 100


def test_send_pays_the_genesis_min_fee_and_numbers_the_nonces(tmp_path: Path) -> None:
    with served_node(tmp_path, {ALICE.address: 10 * DN}, min_fee=2_500) as (node, client):
        first = send(client, ALICE, "transfer", {"to": BOB.address, "amount": DN})
        second = send(client, ALICE, "transfer", {"to": BOB.address, "amount": 2 * DN})
        assert (first["status"], first["height"], first["fee"], first["nonce"]) == (
            "included",
            1,
            2_500,
            0,
        )
        assert (second["height"], second["nonce"]) == (2, 1)
        assert client.account(BOB.address)["balance"] == 3 * DN
        assert client.account(ALICE.address)["balance"] == 10 * DN - 3 * DN - 2 * 2_500
        assert node.tip.height == 2


def test_a_fee_is_taken_as_units_or_as_dn_text(tmp_path: Path) -> None:
    with served_node(tmp_path, {ALICE.address: 10 * DN}) as (_, client):
        assert (
            send(client, ALICE, "transfer", {"to": BOB.address, "amount": 1}, fee=7_000)["fee"]
            == 7_000
        )
        sent = send(client, ALICE, "transfer", {"to": BOB.address, "amount": 1}, fee="0.000005")
        assert sent["fee"] == 5_000
        with pytest.raises(InvalidAmount) as bad:
            send(client, ALICE, "transfer", {"to": BOB.address, "amount": 1}, fee="-1")
        assert bad.value.message == "fee must not be negative"


def test_without_wait_the_transaction_is_left_pending(tmp_path: Path) -> None:
    with served_node(tmp_path, {ALICE.address: 10 * DN}) as (_, client):
        sent = send(client, ALICE, "transfer", {"to": BOB.address, "amount": DN}, wait=False)
        assert sent["status"] == "pending" and "height" not in sent
        assert client.tx(sent["id"])["status"] == "included"  # this node blocks at once


def test_sign_next_signs_for_the_node_chain_with_the_next_nonce(tmp_path: Path) -> None:
    with served_node(tmp_path, {ALICE.address: 10 * DN}, min_fee=1_234) as (node, client):
        send(client, ALICE, "transfer", {"to": BOB.address, "amount": DN})
        tx = sign_next(client, ALICE, "transfer", {"to": BOB.address, "amount": DN})
        assert tx.chain_id == node.genesis.chain_id
        assert (tx.sender, tx.nonce, tx.fee) == (ALICE.address, 1, 1_234)
        assert tx.signature_valid
        assert node.tip.height == 1 and node.mempool.pending(10) == []  # signing sends nothing


def test_transfer_reports_who_paid_whom(tmp_path: Path) -> None:
    with served_node(tmp_path, {ALICE.address: 10 * DN}) as (_, client):
        result = transfer(client, ALICE, BOB.address, 3 * DN)
    assert list(result) == ["id", "status", "height", "from", "to", "amount", "fee", "nonce"]
    assert (result["from"], result["to"], result["amount"]) == (ALICE.address, BOB.address, 3 * DN)
    assert result["fee"] == 1_000  # the parameter table's default min_fee


def test_concurrent_senders_of_one_wallet_each_get_their_own_nonce(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two writers of one wallet read the same next nonce (two `dn query` at once, each booking
    its slot): the later one's transaction is refused, `duplicate` when the bytes are the very
    same (identical bookings) or `nonce-too-low`, and it signs again with the next nonce."""
    with served_node(tmp_path, {ALICE.address: 10 * DN}) as (node, client):
        real = client.account
        payload = {"to": BOB.address, "amount": DN}
        for other_payload in (payload, {"to": BOB.address, "amount": 2 * DN}):
            stale = real(ALICE.address)["next_nonce"]
            reads: list[int] = []

            def racing(address: str, stale: int = stale, reads: list[int] = reads) -> Any:
                reads.append(stale)  # the first read happens before the other writer's submit
                return {"next_nonce": stale} if len(reads) == 1 else real(address)

            early = sign_next(client, ALICE, "transfer", other_payload)
            client.submit(early.to_json())  # the other writer got there first
            monkeypatch.setattr(client, "account", racing)
            sent = send(client, ALICE, "transfer", payload, wait=False)
            monkeypatch.setattr(client, "account", real)
            assert len(reads) == 2 and sent["nonce"] == stale + 1 and sent["id"] != early.id
        assert node.mempool.pending_nonce(ALICE.address) == 4
