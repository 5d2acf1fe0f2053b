"""Running nodes: each node's HTTP server and block producer as tasks on one asyncio loop.

A node's blocks are built and stored in a worker thread of its own (`NodeService._make`), through
that thread's own connection to the store, and adopted back on the loop (`Node.land`): the loop
goes on answering meanwhile. While a block is out the node's state does not change (whatever
would change it lands the block first: `Node.settle`) and the mempool only takes transactions.
The same thread persists the transactions a batch brought (`persist`), so the loop never waits
on SQLite's fsync for them, and they never contend with a block for the store's write lock.

Signals are handled here, not by uvicorn (which re-raises SIGINT after shutting down, turning a
clean Ctrl-C into an error exit): SIGINT or SIGTERM asks every node on the loop to stop, and each
closes its store after its last request. Several nodes can share one loop (the devnet).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import uvicorn

from dn.chain.ledger import ACCT
from dn.chain.state import Applied, build_block
from dn.chain.store import Store
from dn.chain.types import Block, Tx
from dn.chain.validators import VALIDATOR
from dn.errors import DNError, NodeError
from dn.node import hooks
from dn.node.http.app import create_app, landed
from dn.node.market.gateway import Gateway
from dn.node.market.miner import Miner, MinerOptions
from dn.node.node import Node, now_ms
from dn.node.p2p.network import NetOptions, Network
from dn.node.p2p.session import MemberTransport
from dn.node.validator.powr import PowrValidator
from dn.node.validator.referee import Referee, http_fetch
from dn.node.validator.referee import for_node as referee_for_node
from dn.runner.modelstore import ModelStore
from dn.wallet.keys import Keypair

log = logging.getLogger("dn.node")
TICK_S = 0.05
GRACE_S = 5  # on Ctrl-C, requests still running after this long (a stalled stream) are cut


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the loop owner handles signals for every server at once


class NodeService:
    """One node served on host:port, with its block producer and its network side."""

    def __init__(
        self,
        node: Node,
        host: str,
        port: int,
        net: NetOptions | None = None,
        *,
        mine: MinerOptions | None = None,
        store: ModelStore | None = None,
        gateway_wallet: Keypair | None = None,
        gateway_max_price: int | None = None,
        validate: PowrValidator | None = None,
        bond: int | None = None,
    ) -> None:
        self.node = node
        self.bond = bond
        self.host = host
        self.port = port
        self.network = Network(node, url=self.url, options=net)
        self.store = store or ModelStore.default()
        # On a keyed network a miner answers only members: the gateway and the referee sign
        # their requests as this node (dn/node/p2p/session.py), handshaking first if need be.
        member = self.network.member if self.network.network_key is not None else None
        self.gateway = Gateway(node, transport=MemberTransport(member) if member else None)
        self.miner: Miner | None = None
        if mine is not None:
            from dn.runner.llama import Runner

            runner = Runner(
                n_threads=mine.threads,
                n_gpu_layers=mine.gpu_layers,
                n_ctx=mine.n_ctx,
                slots=mine.slots,
            )
            node.extra_roles.append("miner")
            self.miner = Miner(
                node,
                mine.wallet,
                self.store,
                runner,
                models=mine.models,
                bond=mine.bond,
            )
        self._maker = ThreadPoolExecutor(1, thread_name_prefix=f"dn-produce-{port}")
        self._maker_store: Store | None = None  # the maker thread's own connection
        self.validator = validate
        self.referee: Referee | None = None
        if validate is not None:
            node.extra_roles.append("powr")
            self.referee = referee_for_node(node, self.store)
            if member is not None:
                self.referee.fetch = lambda url, task, body: http_fetch(
                    url, task, body, MemberTransport(member)
                )
        config = uvicorn.Config(
            create_app(
                node,
                self.network,
                gateway=self.gateway,
                miner=self.miner,
                store=self.store,
                gateway_wallet=gateway_wallet,
                gateway_max_price=gateway_max_price,
                persist=self.persist,
            ),
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=GRACE_S,
        )
        self.server = _Server(config)
        self._stop = asyncio.Event()
        hooks.install(self)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.network.stop()
        self._stop.set()
        if self.validator is not None:
            self.validator.stop()

    async def _produce(self) -> None:
        while not self._stop.is_set():
            at = now_ms()
            if self.node.due(at) and not self.network.behind():
                try:
                    block = await self.produce(at)
                except DNError as exc:
                    log.warning("could not produce a block: %s", exc)
                else:
                    log.info("block %d %s, %d txs", block.height, block.hash[:12], len(block.txs))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), TICK_S)

    async def produce(self, at: int) -> Block:
        """Our next block, built and stored in the maker thread, adopted here on the loop."""
        node = self.node
        node.settle()
        candidates = node.mempool.pending(node.genesis.param("max_block_txs"))
        job = node.job = self._maker.submit(self._make, node.tip, candidates, at)
        await asyncio.wait([asyncio.wrap_future(job)])
        return node.land(job)

    def _make(self, tip: Block, candidates: list[Tx], at: int) -> tuple[Applied, list[str]]:
        """In the maker thread: our block on `tip` (only reads the node's state, which stays put
        while a block is out), committed through this thread's connection (the loop's own
        keeps serving reads meanwhile: WAL); and the ids of the candidates it left out."""
        node = self.node
        applied, rejected = build_block(
            node.state, tip.header, tip.hash, candidates, node.key, at, node.genesis
        )
        self._writer().commit_block(applied.block, applied.changes)
        return applied, [tx.id for tx, _ in rejected]

    def _writer(self) -> Store:
        if self._maker_store is None:
            self._maker_store = Store.open(self.node.store.path, genesis=self.node.genesis)
        return self._maker_store

    async def persist(self, txs: list[Tx]) -> None:
        """Put accepted transactions in the store's mempool, in the maker thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._maker, lambda: self._writer().mempool_add(txs))

    def _close_maker(self) -> None:
        self._maker.shutdown(wait=True)
        if self._maker_store is not None:
            self._maker_store.close()

    async def _mine(self, miner: Miner) -> None:
        """Keep the miner registered as it wants to be, settle the tasks it checked that their
        gateways left unsettled, and close abandoned check sessions."""
        while not self._stop.is_set():
            await landed(self.node)  # not to wait on the store's write lock on the loop
            tx = miner.registration_tx(self.network.url)
            if tx is not None:
                result = self.node.submit([tx.to_json()])[0]
                if result["accepted"]:
                    log.info("miner.register sent (%s)", tx.id[:12])
                else:
                    log.warning("miner.register refused: %s", result.get("message"))
            try:
                miner.backstop.step()
            except DNError as exc:
                log.warning("could not settle a held task: %s", exc.message)
            await miner.reap()
            try:
                await asyncio.to_thread(miner.warm)
            except DNError as exc:  # a model that will not load: its tasks will say so
                log.warning("could not load a served model: %s", exc.message)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 1.0)

    async def _validate(self, validator: PowrValidator) -> None:
        """The PoWR duty: once a second, see what the epoch asks of this validator; evaluate (in
        a worker thread: it runs llama.cpp for seconds) and send the commit or the reveal.
        Reading the chain (`next_step`) stays on this loop, beside the code that changes it."""
        while not self._stop.is_set():
            try:
                step = validator.next_step()
                txs = await asyncio.to_thread(validator.perform, step) if step else []
            except DNError as exc:
                log.warning("PoWR validation failed: %s", exc.message)
                txs = []
            except Exception:  # a bug here must not stop the validator's other work
                log.exception("PoWR validation failed")
                txs = []
            await self._send(txs, lambda tx: f"{tx.kind} for epoch {tx.payload['epoch']}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 1.0)

    async def _send(self, txs: list[Tx], what: Callable[[Tx], str]) -> None:
        """Submit a duty's transactions to this node, logging each as `what(tx)`."""
        for tx in txs:
            if self._stop.is_set():
                return
            await landed(self.node)
            result = self.node.submit([tx.to_json()])[0]
            if result["accepted"]:
                log.info("%s sent (%s)", what(tx), tx.id[:12])
            else:
                log.warning("%s refused: %s", what(tx), result["message"])

    async def _judge(self, referee: Referee) -> None:
        """The referee duty: judge the rejected and spot-checked tasks
        (dn/node/validator/referee.py), one at a time, the llama.cpp work in a worker thread."""
        while not self._stop.is_set():
            case = None
            try:
                case = referee.next_case()
                ruling = await asyncio.to_thread(referee.perform, case) if case else None
                txs = [referee.verdict_tx(case, ruling)] if case and ruling else []
            except DNError as exc:
                log.warning("judging a task failed: %s", exc.message)
                txs = []
            except Exception:  # a bug here must not stop the validator's other work
                log.exception("judging a task failed")
                txs = []
            await self._send(txs, lambda tx: f"task.verdict for {tx.payload['task'][:12]}")
            pause = 0.2 if txs or case else 1.0
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), pause)

    async def _bond_validator(self, amount: int) -> None:
        """`dn validate`: send `validator.bond` once this node's chain shows the key can pay it,
        unless the key is a validator already (or joining); then stay quiet."""
        node, sent, said = self.node, None, False
        fee = int(node.genesis.param("min_fee"))
        while not self._stop.is_set():
            address = node.key.address
            record = node.state.get(VALIDATOR + address)
            joining = record is not None and record.get("joins") is not None
            if address in node.validators or joining:
                log.info("validator %s is %s", address, "joining" if joining else "in the set")
                return
            balance = int((node.state.get(ACCT + address) or {"balance": 0})["balance"])
            if sent is None or node.mempool.get(sent) is None:
                if balance >= amount + fee and not self.network.behind():
                    await landed(node)
                    tx = node.own_tx(node.key, "validator.bond", {"amount": amount})
                    result = node.submit([tx.to_json()])[0]
                    if result["accepted"]:
                        log.info("validator.bond sent (%s)", tx.id[:12])
                        sent = tx.id
                    else:
                        log.warning("validator.bond refused: %s", result["message"])
                elif not said:
                    log.warning(
                        "waiting to bond: %s has %d units here, the bond and fee need %d "
                        "(syncing, or fund it)",
                        address,
                        balance,
                        amount + fee,
                    )
                    said = True
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 1.0)

    async def run(self) -> None:
        producer = asyncio.create_task(self._produce())
        network = asyncio.create_task(self.network.run())
        miner = asyncio.create_task(self._mine(self.miner)) if self.miner else None
        validator = self.validator
        validating = asyncio.create_task(self._validate(validator)) if validator else None
        referee = self.referee
        judging = asyncio.create_task(self._judge(referee)) if referee else None
        bonding = asyncio.create_task(self._bond_validator(self.bond)) if self.bond else None
        try:
            await self.server.serve()
        except SystemExit:
            raise NodeError(
                f"could not listen on {self.host}:{self.port}: is the port in use?"
            ) from None
        finally:
            self._stop.set()
            self.network.stop()
            await producer
            await asyncio.gather(network, return_exceptions=True)
            await self.gateway.aclose()
            if bonding is not None:
                await asyncio.gather(bonding, return_exceptions=True)
            if miner is not None and self.miner is not None:
                await asyncio.gather(miner, return_exceptions=True)
                # Off the loop: the other nodes of a devnet stop meanwhile; its engines end
                # within a step, failing whatever still waits on them.
                await asyncio.to_thread(self.miner.close)
            if validator is not None and validating is not None:
                await asyncio.gather(validating, return_exceptions=True)
                validator.close()
            if referee is not None and judging is not None:
                await asyncio.gather(judging, return_exceptions=True)
                referee.close()
            self.node.settle()
            await asyncio.to_thread(self._close_maker)
            self.node.close()


async def serve_all(services: list[NodeService]) -> None:
    """Run the services until SIGINT/SIGTERM, then stop them all and wait for them."""
    loop = asyncio.get_running_loop()

    def stop_all() -> None:
        for service in services:
            service.stop()

    async def guarded(service: NodeService) -> None:
        try:
            await service.run()
        except BaseException:
            stop_all()  # one node failing (a port in use) takes the others down with it
            raise

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_all)
    # What is built by now (modules, the apps, the chain state) lives as long as the process:
    # out of the cyclic collector's full passes, which otherwise walk all of it and held the
    # loop for 50-80 ms each, several times during a 10,000-transaction batch.
    gc.collect()
    gc.freeze()
    try:
        results = await asyncio.gather(*(guarded(s) for s in services), return_exceptions=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def run_foreground(
    node: Node,
    host: str,
    port: int,
    net: NetOptions | None = None,
    *,
    mine: MinerOptions | None = None,
    gateway_wallet: Keypair | None = None,
    gateway_max_price: int | None = None,
    validate: PowrValidator | None = None,
    bond: int | None = None,
) -> None:
    async def main() -> None:
        service = NodeService(
            node,
            host,
            port,
            net,
            mine=mine,
            gateway_wallet=gateway_wallet,
            gateway_max_price=gateway_max_price,
            validate=validate,
            bond=bond,
        )
        await serve_all([service])

    asyncio.run(main())
