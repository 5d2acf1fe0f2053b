"""Cheating miners on a devnet (DESIGN.md section 7, issue 5): each is caught by the validator's
referee, slashed, and loses its share; the honest miner keeps its bond; the consumer is not
charged for a bad answer.

Real processes, real llama.cpp on SmolLM2: a validator that is also the gateway (`--validate`:
it judges every rejected task and, here, every confirmed one: `spot_check_bps` 10,000), and three
miners. The test-only faults are role-specific, so two cheats carry one generator fault and one
checker fault each, and m3 is honest:

    m1  tamper (changes one token of its answers)   lazy-check (approves without computing)
    m2  other-model (answers with Gemma)            spiteful (rejects every answer)

Bonds are three times the minimum, so two slashes of 20% leave each cheat still serving. The
validator is the chain's only one: its vote holds all the voice, so it is the quorum and rules
alone (votes among several validators: tests/unit/test_chain_dispute_votes.py).

The same devnet then runs PoWR epochs with both models (Gemma registered too): emission is paid,
every node's store verifies (supply invariant included), and `dn chain explain` accounts for
every unit of every address."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dn.chain import disputes
from dn.chain.explain import explain
from dn.chain.powr_rules import result_key
from dn.chain.store import Store
from dn.client.query import settle_tx, stream_query
from dn.node.node import NodeHome
from tests.functional.harness import verify_offline, wait_until
from tests.functional.market import (
    DN,
    FIND_SLOTS,
    Market,
    find_ticket,
    register_model,
    running_market,
)

QUESTION = {"messages": [{"role": "user", "content": "Name two colours of the sea."}]}
BOND = 30 * DN
SLASH_BPS = 2_000
EPOCH = 12  # blocks: a second each when idle, so the validator has 6 s to evaluate and commit


@pytest.fixture(scope="module")
def market(
    tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path, gemma_gguf: Path
) -> Iterator[Market]:
    with running_market(
        tmp_path_factory.mktemp("disputes"),
        smollm2_gguf,
        gateway_args=["--validate", "--powr-items", "1"],
        miners=("m1", "m2", "m3"),
        miner_args=["--bond", str(BOND // DN)],
        miner_env={
            "m1": {"DN_TEST_MINER_FAULTS": "tamper,lazy-check"},
            "m2": {"DN_TEST_MINER_FAULTS": "other-model,spiteful"},
        },
        params={"spot_check_bps": 10_000, "epoch_blocks": EPOCH, "slash_bps": SLASH_BPS},
        extra_models=(gemma_gguf,),
    ) as running:
        yield running


def ticket_for(market: Market, generator: str, checker: str) -> dict[str, Any]:
    """A consumer ticket whose task the selection rule gives to these two miners."""
    with market.client() as client:
        eligible = [m["address"] for m in client.model(market.model)["miners"]]
    wanted = (market.wallets[generator].address, market.wallets[checker].address)
    return find_ticket(market, QUESTION, eligible, lambda chosen: chosen == wanted)


def miner_bonds(market: Market) -> dict[str, tuple[int, int]]:
    """(bond, slashed) of each serving miner, by wallet name."""
    names = {market.wallets[n].address: n for n in ("m1", "m2", "m3")}
    with market.client() as client:
        miners = client.model(market.model)["miners"]
    return {names[m["address"]]: (m["bond"], m["slashed"]) for m in miners}


def balance(market: Market, name: str) -> int:
    """The wallet's balance plus its query escrow, which pays the price (dn/chain/escrow.py)."""
    with market.client() as client:
        found = client.account(market.wallets[name].address)
        return int(found["balance"]) + int(found["escrow"]["amount"])


@pytest.mark.parametrize(
    ("generator", "checker", "status", "cheat", "fault"),
    [
        ("m1", "m3", "rejected", "m1", disputes.INVALID_ANSWER),  # tampered token
        ("m2", "m3", "rejected", "m2", disputes.INVALID_ANSWER),  # another model's answer
        ("m3", "m1", "confirmed", "m1", disputes.VALUES_MISMATCH),  # lazy checker
        ("m3", "m2", "rejected", "m2", disputes.REJECTED_VALID),  # spiteful checker
    ],
    ids=["tampering-generator", "other-model-generator", "lazy-checker", "spiteful-checker"],
)
def test_a_cheating_miner_is_caught_and_slashed(
    market: Market, generator: str, checker: str, status: str, cheat: str, fault: str
) -> None:
    bonds = miner_bonds(market)
    consumer = balance(market, "consumer")
    ticket = ticket_for(market, generator, checker)
    with market.client() as client:
        done = list(stream_query(client, ticket, QUESTION))[-1]
        assert done["status"] == status, done.get("verdict")
        tx = settle_tx(client, market.wallets["consumer"], done)
        client.submit(tx.to_json())
        client.wait_for_tx(tx.id, timeout=30)
        task = done["task"]
        wait_until(lambda: client.task(task).get("verdict") is not None, 90, what="a verdict")
        record = client.task(task)
    cheat_address = market.wallets[cheat].address
    verdict = record["verdict"]
    assert verdict["faults"] == {cheat_address: fault}, verdict
    assert verdict["by"] == market.genesis.validators == list(record["votes"])
    assert verdict["outvoted"] == {}
    lost = bonds[cheat][0] * SLASH_BPS // 10_000
    assert verdict["slashed"] == {cheat_address: lost} and verdict["refund"] == 0
    if status == "confirmed":  # the lazy checker was paid its share of a valid answer: it is
        # taken back. 2,000 units a token, of which the checker's 15% (genesis fee_split_checker,
        # 1,500 basis points) is 300.
        assert record["paid"] == 2_000 * record["tokens"] > 0
        assert verdict["forfeited"] == {cheat_address: 300 * record["tokens"]}
    else:
        assert verdict["forfeited"] == {}
    after = miner_bonds(market)
    assert after[cheat] == (bonds[cheat][0] - lost, bonds[cheat][1] + lost)
    assert after["m3"] == (BOND, 0)  # the honest miner keeps its bond
    fee = market.genesis.param("min_fee")
    spent = consumer - balance(market, "consumer")
    fees = fee * (FIND_SLOTS + 1)  # the book the ticket was found in, and the settlement
    if status == "rejected":
        assert record["paid"] == 0 and spent == fees  # a bad answer costs only the fees
    else:
        assert record["paid"] > 0 and spent == fees + record["paid"]  # a valid answer is paid

    # The validator's chain with the ruling replays from genesis: every state root, the supply.
    report = verify_offline(market.home, "gw")
    assert report["ok"], report
    # `dn chain task` shows the ruling, as JSON and as text.
    shown = json.loads(dn_chain_task(market, task, "--json"))
    assert shown["verdict"]["faults"] == {cheat_address: fault}
    assert f"{cheat_address}: {fault}, slashed" in dn_chain_task(market, task)


def dn_chain_task(market: Market, task: str, *flags: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "dn", *flags, "--node", market.gateway.url, "chain", "task", task],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def paid_epochs(market: Market) -> dict[int, dict[str, Any]]:
    """The closed epochs whose emission was (at least partly) paid, by number."""
    with market.client() as client:
        height = client.status()["height"]
    store = Store.open(NodeHome.named("gw", market.home).store_file, readonly=True)
    try:
        state = store.load_state()
        found = {e: state.get(result_key(e)) for e in range(max(0, (height - 1) // EPOCH))}
    finally:
        store.close()
    return {e: r for e, r in found.items() if r is not None and r["paid"] > 0}


def test_epochs_with_both_models_pay_and_every_unit_is_explained(
    market: Market, gemma_gguf: Path
) -> None:
    creator = market.wallets["creator"]
    with market.client() as client:
        nonce = client.account(creator.address)["next_nonce"]
    gemma = gemma_gguf.stat().st_size
    sha = hashlib.sha256(gemma_gguf.read_bytes()).hexdigest()
    register_model(
        market.gateway, creator, market.genesis.chain_id, sha, gemma, nonce=nonce, name="gemma"
    )
    with market.client() as client:
        start = client.status()["height"]
    # Two epochs that began after Gemma was registered, both closed and paid.
    first = start // EPOCH + 1
    wait_until(
        lambda: len([e for e in paid_epochs(market) if e >= first]) >= 2,
        150,
        interval=1.0,
        what="two paid epochs",
    )
    paid = paid_epochs(market)
    assert any(len(r["models"]) == 2 for e, r in paid.items() if e >= first), paid
    for name in ("gw", "m1", "m2", "m3"):
        report = verify_offline(market.home, name)  # state roots, signatures, supply invariant
        assert report["ok"], (name, report)
    addresses = [w.address for w in market.wallets.values()]
    store = Store.open(NodeHome.named("gw", market.home).store_file, readonly=True)
    try:
        addresses.append(store.genesis.validators[0])
        for address in addresses:
            explained = explain(store, address)
            assert explained.unexplained == 0, address
            totals = explained.totals()
            assert totals["opening"] + totals["received"] - totals["spent"] == totals["balance"]
        creator_entries = explain(store, creator.address).entries
        rewards = [e for e in creator_entries if e.kind == "powr-reward" and e.epoch in paid]
        assert rewards, "the creator earns from quality, with or without tasks"
    finally:
        store.close()
