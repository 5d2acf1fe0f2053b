"""A small market on real processes: a validator that is also the gateway, two `dn mine`
processes serving the real SmolLM2 model, funded wallets, the model registered on chain. The
consumer's query escrow holds ESCROW from genesis (dn/chain/escrow.py): miners serve only
tickets an escrow covers; every other wallet has none."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dn.chain import books, tasks
from dn.chain.genesis import Genesis
from dn.chain.types import Tx
from dn.client.http import NodeClient
from dn.client.query import book
from dn.node.taskio import input_hash
from dn.runner.modelstore import ModelStore
from dn.wallet.keys import Keypair
from dn.wallet.keystore import KDF_FAST, Keystore
from tests.functional.harness import NodeProcess, make_keys, wait_until, write_genesis

PASSWORD = "market-test"
PRICE = 2_000_000  # units per 1,000 tokens
DN = 10**9
WALLETS = ("creator", "consumer", "poor", "m1", "m2", "m3")
ESCROW = 100 * DN  # the consumer's query escrow at genesis
FIND_SLOTS = 64  # find_ticket books this many (min_fee each): a wanted pair of 3 is 1 in 6
SLOT_PRICE = DN // 100  # what find_ticket's tickets pay at most (and each slot reserves)


@dataclass
class Market:
    home: Path
    genesis: Genesis
    gateway: NodeProcess
    miners: list[NodeProcess]
    wallets: dict[str, Keypair]
    model: str

    def client(self) -> NodeClient:
        return self.gateway.client()


def find_ticket(
    market: Market,
    task_input: dict[str, Any],
    eligible: list[str],
    wanted: Callable[[tuple[str, str]], bool],
    model: str | None = None,
    slots: int = FIND_SLOTS,
    wallet: str = "consumer",
    book_price: int | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A consumer ticket for `task_input` whose (generator, checker), chosen among `eligible`
    by the public selection rule, is `wanted`: the consumer books `slots` slots and the test
    looks for one whose draw is wanted (each slot a fair draw: dn/chain/books.py). `wallet`
    signs it; `fields` override the ticket's (max_tokens 24, max_price SLOT_PRICE, expiry +50).
    Each slot reserves the ticket's max_price of the escrow, or `book_price` where given."""
    sha = model or market.model
    consumer = market.wallets[wallet]
    max_price = int(fields.get("max_price", SLOT_PRICE))
    with market.client() as client:
        reserve = max_price if book_price is None else book_price
        booked, book_nonce = book(client, consumer, sha, slots, max_price=reserve)
        beacon = client.block(booked)["hash"]
    chain_id = market.genesis.chain_id
    for nonce in (books.ticket_nonce(book_nonce, slot) for slot in range(slots)):
        draw = books.draw(beacon, consumer.address, booked, nonce)
        if wanted(tasks.select_miners(eligible, draw)):
            values = {"max_tokens": 24, "max_price": max_price, "expiry": booked + 50, **fields}
            return tasks.sign_ticket(
                chain_id,
                consumer,
                model=sha,
                prompt_hash=input_hash(task_input),
                seed=0,
                ref_height=booked,
                nonce=nonce,
                **values,
            )
    raise AssertionError(f"none of {slots} slots drew the wanted miners")


def register_model(
    gateway: NodeProcess,
    creator: Keypair,
    chain_id: str,
    sha: str,
    size: int,
    nonce: int = 0,
    name: str = "smollm2",
) -> None:
    tx = Tx.create(
        creator,
        chain_id=chain_id,
        kind="model.register",
        nonce=nonce,
        fee=1_000,
        payload={
            "model": sha,
            "name": name,
            "domain": "general",
            "price": PRICE,
            "license": "Apache-2.0",
            "size": size,
        },
    )
    with gateway.client() as client:
        client.submit(tx.to_json())
        client.wait_for_tx(tx.id, timeout=30)


@contextmanager
def running_market(
    home: Path,
    model_file: Path,
    *,
    gateway_args: list[str] | None = None,
    gateway_env: dict[str, str] | None = None,
    miner_env: dict[str, dict[str, str]] | None = None,
    miners: tuple[str, ...] = ("m1", "m2"),
    miner_args: list[str] | None = None,
    params: dict[str, int] | None = None,
    extra_models: tuple[Path, ...] = (),
) -> Iterator[Market]:
    """Start the market in `home` (its own DN_HOME); stop every process on the way out.
    `miner_env` gives extra environment per miner name (e.g. test-only faults), `miner_args`
    extra `dn mine` options, `params` genesis parameters; `extra_models` are put in the model
    store too (not registered). The gateway's node key is funded, so it can pay fees as a
    validator."""
    keystore = Keystore(home / "wallets")
    wallets = {name: keystore.create(name, PASSWORD, KDF_FAST) for name in WALLETS}
    validator = make_keys(home, ["gw"])["gw"]
    allocations = {w.address: 1_000 * DN for n, w in wallets.items() if n != "poor"}
    allocations[wallets["poor"].address] = 2_000  # can pay a fee, not a query
    allocations[validator.address] = 10 * DN
    genesis = write_genesis(
        home,
        [validator.address],
        allocations,
        ["gw", *miners],
        escrows={wallets["consumer"].address: ESCROW},
        block_time_ms=200,
        max_block_interval_ms=1000,
        **(params or {}),
    )
    store = ModelStore(home / "models")
    sha = store.add_file(model_file, name="smollm2-135m", source="test")
    for extra in extra_models:
        store.add_file(extra, name=extra.stem, source="test")
    gateway = NodeProcess(home, "gw", None, ["--no-mdns", *(gateway_args or [])], env=gateway_env)
    procs: list[NodeProcess] = []
    try:
        gateway.start()
        register_model(
            gateway, wallets["creator"], genesis.chain_id, sha, model_file.stat().st_size
        )
        for name in miners:
            miner = NodeProcess(
                home,
                name,
                None,
                ["--no-mdns", "--peer", f"127.0.0.1:{gateway.port}", "--threads", "1"],
                command=["mine", "--wallet", name, "--model", "smollm2", *(miner_args or [])],
                env={"DN_PASSWORD": PASSWORD, **(miner_env or {}).get(name, {})},
            )
            procs.append(miner)
            miner.start(timeout=60)
        market = Market(home, genesis, gateway, procs, wallets, sha)
        n = len(miners)
        with market.client() as client:
            wait_until(lambda: len(client.model(sha)["miners"]) == n, 60, what=f"{n} miners")
        yield market
    finally:
        for proc in [*procs, gateway]:
            proc.stop(timeout=10)
