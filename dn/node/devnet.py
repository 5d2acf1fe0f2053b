"""The one-command local cluster: N nodes in one process, on one asyncio loop.

Everything lives under `$DN_HOME`, so a second `dn devnet up` resumes the same chain:

    devnet.json            the devnet's shape (nodes, validators, block time) and genesis hash
    devnet.lock            held while a devnet runs, so two cannot share one home
    nodes/devnet-<i>/      node i: its key, the shared devnet genesis, its chain store
    wallets/devnet-*.json  the funded devnet wallets (ordinary keystores)

Node i listens on 127.0.0.1:(port base + i) and has every other node as a static peer; mDNS is
off, so nothing leaves loopback. The first K nodes are the validators. The node names
`devnet-<i>` belong to the devnet: starting over removes those folders and `devnet.json`, and
nothing else (wallets are kept, so their addresses stay the same across restarts).

Each validator's node key is funded too (VALIDATOR_FUNDS), so that with `--powr` it can pay the
fees of its PoWR commits and reveals. The three consumer wallets (alice, bob, carol) also start
with ESCROW_FUNDS in their query escrow, set at genesis (`Genesis.escrows`), so `dn query`, the
OpenAI routes and the dashboard playground work on a fresh devnet without a `dn escrow deposit`.

The devnet wallets are sealed with the fast KDF and the published password `DEVNET_PASSWORD`:
they are for trying things out and must never hold anything of value.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dn.chain.genesis import PARAMS, Genesis, default_params
from dn.config import atomic_write, private_dir, wallets_dir
from dn.encoding import UNITS_PER_DN
from dn.errors import DNError, InputError, NodeError, WalletError, WrongPassword
from dn.node.node import NodeHome, now_ms
from dn.wallet.keystore import KDF_FAST, Keystore

HOST = "127.0.0.1"
NETWORK = "devnet"
DEVNET_PASSWORD = "devnet"
WALLETS = ("devnet-alice", "devnet-bob", "devnet-carol")
FUNDS = 1_000_000 * UNITS_PER_DN  # each devnet wallet's allocation at genesis
VALIDATOR_FUNDS = 1_000 * UNITS_PER_DN  # each validator node key's: the fees of its PoWR duty
ESCROW_FUNDS = 10_000 * UNITS_PER_DN  # each devnet wallet's query escrow at genesis
DEFAULT_PORT_BASE = 8780
DEFAULT_NODES = 3
DEFAULT_BLOCK_TIME_MS = 1000
IDLE_INTERVAL_MS = 5000  # an empty block at least this often, so time moves on a quiet devnet
MAX_NODES = 32
RECORD_FORMAT = 1
RECORD_FILE = "devnet.json"
LOCK_FILE = "devnet.lock"
READY_POLL_S = 0.02

_NODE_RE = re.compile(r"devnet-[0-9]+")

Notify = Callable[[str], None]


def miner_threads(miners: int) -> int:
    """llama.cpp threads per devnet miner: the cores shared out, so the generator and the
    checker of a task (always two different miners) run side by side."""
    return max(1, min(8, (os.cpu_count() or 2) // max(1, miners)))


def node_name(index: int) -> str:
    return f"devnet-{index}"


@dataclass(frozen=True)
class Shape:
    """What makes one devnet different from another: a different shape is a different chain."""

    nodes: int
    validators: int
    block_time_ms: int
    miners: int = 0  # the last M nodes run the miner role with the devnet-miner<j> wallets
    epoch_blocks: int = PARAMS["epoch_blocks"][0]  # PoWR epoch length
    idle_ms: int = IDLE_INTERVAL_MS  # an empty block at least this often

    @classmethod
    def check(
        cls,
        nodes: int,
        validators: int | None,
        block_time_ms: int,
        miners: int = 0,
        epoch_blocks: int | None = None,
        idle_ms: int | None = None,
    ) -> Shape:
        """The shape for these options; InputError for any value that cannot make a devnet."""
        if nodes < 1:
            raise InputError(f"--nodes must be at least 1, got {nodes}")
        if nodes > MAX_NODES:
            raise InputError(f"--nodes must be at most {MAX_NODES}, got {nodes}")
        # by default every node that does not mine validates (the README's `--nodes 3 --miners 2`)
        count = max(1, nodes - max(miners, 0)) if validators is None else validators
        if count < 1:
            raise InputError(f"--validators must be at least 1 (a chain needs one), got {count}")
        if count > nodes:
            raise InputError(
                f"--validators {count} is more than --nodes {nodes}: "
                "validators are the first K of the nodes"
            )
        _, low, high = PARAMS["block_time_ms"]
        if not low <= block_time_ms <= high:
            raise InputError(f"--block-time must be from {low} to {high} ms, got {block_time_ms}")
        if miners < 0 or miners > nodes - count:
            raise InputError(
                f"--miners must be from 0 to {nodes - count} (the nodes that are not "
                f"validators), got {miners}"
            )
        _, low, high = PARAMS["epoch_blocks"]
        epoch = PARAMS["epoch_blocks"][0] if epoch_blocks is None else epoch_blocks
        if not low <= epoch <= high:
            raise InputError(f"--epoch-blocks must be from {low} to {high}, got {epoch}")
        idle = max(IDLE_INTERVAL_MS if idle_ms is None else idle_ms, block_time_ms)
        _, low, high = PARAMS["max_block_interval_ms"]
        if not low <= idle <= high:
            raise InputError(f"--idle-interval must be from {low} to {high} ms, got {idle}")
        return cls(nodes, count, block_time_ms, miners, epoch, idle)

    def describe(self) -> str:
        miners = f", {self.miners} miner{'s' * (self.miners != 1)}" if self.miners else ""
        return (
            f"{self.nodes} node{'s' * (self.nodes != 1)}, {self.validators} "
            f"validator{'s' * (self.validators != 1)}{miners}, block time {self.block_time_ms} ms"
        )

    def miner_wallets(self) -> dict[int, str]:
        """Node index -> the devnet wallet its miner role bonds, signs and is paid with."""
        first = self.nodes - self.miners
        return {first + j: f"devnet-miner{j + 1}" for j in range(self.miners)}


@dataclass(frozen=True)
class Record:
    """`$DN_HOME/devnet.json`: the devnet's shape and the genesis it made."""

    shape: Shape
    genesis_hash: str
    chain_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RECORD_FORMAT,
            **asdict(self.shape),
            "genesis_hash": self.genesis_hash,
            "chain_id": self.chain_id,
        }

    @classmethod
    def from_json(cls, doc: Any) -> Record:
        if not isinstance(doc, dict) or doc.get("format") != RECORD_FORMAT:
            raise ValueError("not a devnet record")
        numbers: list[int] = []
        for key in ("nodes", "validators", "block_time_ms"):
            value = doc.get(key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"devnet record has a malformed {key}")
            numbers.append(value)
        defaults = (
            ("miners", 0),
            ("epoch_blocks", PARAMS["epoch_blocks"][0]),
            ("idle_ms", max(IDLE_INTERVAL_MS, numbers[2])),
        )
        for key, default in defaults:
            value = doc.get(key, default)  # records written before these existed
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"devnet record has a malformed {key}")
            numbers.append(value)
        genesis_hash, chain_id = doc.get("genesis_hash"), doc.get("chain_id")
        if not (isinstance(genesis_hash, str) and isinstance(chain_id, str)):
            raise ValueError("devnet record has malformed fields")
        return cls(Shape(*numbers), genesis_hash, chain_id)


@dataclass(frozen=True)
class Devnet:
    """A devnet ready to run: its folders, its genesis and its funded wallets."""

    base: Path
    shape: Shape
    genesis: Genesis
    wallets: dict[str, str]  # name -> address
    resumed: bool

    @property
    def homes(self) -> list[NodeHome]:
        return [NodeHome.named(node_name(i), self.base) for i in range(self.shape.nodes)]

    def describe(self, port_base: int) -> dict[str, Any]:
        """What `dn devnet up --json` prints once every node listens."""
        validators = set(self.genesis.validators)
        nodes = []
        for i, home in enumerate(self.homes):
            address = home.key(create=False).address
            nodes.append(
                {
                    "name": node_name(i),
                    "url": f"http://{HOST}:{port_base + i}",
                    "address": address,
                    "validator": address in validators,
                    "miner": self.shape.miner_wallets().get(i),
                }
            )
        return {
            "nodes": nodes,
            "wallets": [{"name": n, "address": a} for n, a in self.wallets.items()],
            "password": DEVNET_PASSWORD,
            "chain_id": self.genesis.chain_id,
            "genesis_hash": self.genesis.hash,
        }


# --- before anything is touched ----------------------------------------------------------------


def ports(port_base: int, nodes: int) -> list[int]:
    if port_base < 1024 or port_base + nodes - 1 > 65535:
        raise InputError(
            f"--port-base must leave room for {nodes} ports from 1024 to 65535, got {port_base}"
        )
    return [port_base + i for i in range(nodes)]


def check_ports(port_base: int, nodes: int) -> list[int]:
    """The devnet's ports, each checked free on 127.0.0.1; NodeError naming the first one taken.

    The probe binds as the node's server will (SO_REUSEADDR), so connections of an earlier run
    that linger in TIME_WAIT do not count as taken, while a listening socket does."""
    wanted = ports(port_base, nodes)
    for i, port in enumerate(wanted):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, port))
            except OSError as exc:
                why = "in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
                raise NodeError(
                    f"port {port} on {HOST} (for {node_name(i)}) is {why}: stop what listens "
                    f"there, or pick another --port-base (the devnet needs ports {wanted[0]} "
                    f"to {wanted[-1]})"
                ) from None
    return wanted


@contextlib.contextmanager
def lock(base: Path) -> Iterator[None]:
    """Hold `$DN_HOME/devnet.lock` while a devnet runs; NodeError if another one holds it."""
    import fcntl

    private_dir(base)
    with (base / LOCK_FILE).open("a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise NodeError(
                f"a devnet is already running with this DN_HOME ({base}, pid {holder}); "
                "stop it first, or use another DN_HOME"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# --- wallets, genesis, record ------------------------------------------------------------------


def ensure_wallets(base: Path, notify: Notify, miners: int = 0) -> dict[str, str]:
    """Create the devnet wallets that are missing (and one per miner); check the others open
    with the devnet password. Returns name -> address."""
    store = Keystore(wallets_dir(base))
    out: dict[str, str] = {}
    made = []
    for name in (*WALLETS, *(f"devnet-miner{j + 1}" for j in range(miners))):
        if store.exists(name):
            try:
                out[name] = store.load(name, DEVNET_PASSWORD).address
            except WrongPassword:
                raise WalletError(
                    f"wallet {name!r} exists but the devnet password does not open it: it is "
                    f"not a devnet wallet. Rename {store.path(name)} and run this again"
                ) from None
        else:
            out[name] = store.create(name, DEVNET_PASSWORD, KDF_FAST).address
            made.append(name)
    if made:
        notify(f"created devnet wallets {', '.join(made)} (fast KDF, password {DEVNET_PASSWORD!r})")
    return out


def read_record(base: Path) -> Record | None:
    path = base / RECORD_FILE
    if not path.exists():
        return None
    try:
        return Record.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _write_record(base: Path, record: Record) -> None:
    text = json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n"
    atomic_write(base / RECORD_FILE, text.encode())


def _problem(base: Path, record: Record, shape: Shape, wallets: dict[str, str]) -> str | None:
    """Why the stored devnet cannot be resumed as `shape`, or None if it can."""
    if record.shape != shape:
        return f"the stored devnet has {record.shape.describe()}"
    keys = []
    for i in range(shape.nodes):
        home = NodeHome.named(node_name(i), base)
        try:
            keys.append(home.key(create=False).address)
            genesis = home.genesis()
        except DNError:
            return f"the folder of {node_name(i)} is missing or damaged"
        if genesis.hash != record.genesis_hash:
            return f"{node_name(i)} is on another chain than the devnet record"
    if sorted(keys[: shape.validators]) != genesis.validators:
        return "the validators in its genesis are not its first nodes"
    funded, escrowed = genesis.allocations, genesis.escrows
    for name, address in wallets.items():
        if funded.get(address) != FUNDS:
            return f"wallet {name} is not the one its genesis funded"
        if name in WALLETS and escrowed.get(address) != ESCROW_FUNDS:
            return f"wallet {name} has no query escrow in its genesis"
    return None


def _node_folders(base: Path) -> list[Path]:
    nodes = base / "nodes"
    if not nodes.is_dir():
        return []
    return sorted(p for p in nodes.iterdir() if p.is_dir() and _NODE_RE.fullmatch(p.name))


def remove(base: Path) -> list[str]:
    """Remove the devnet's node folders and its record (never wallets). Returns what went."""
    gone = []
    for folder in _node_folders(base):
        shutil.rmtree(folder)
        gone.append(folder.name)
    (base / RECORD_FILE).unlink(missing_ok=True)
    return gone


def _create(base: Path, shape: Shape, wallets: dict[str, str]) -> Genesis:
    homes = [NodeHome.named(node_name(i), base) for i in range(shape.nodes)]
    keys = [home.key() for home in homes]
    params = default_params(
        block_time_ms=shape.block_time_ms,
        max_block_interval_ms=shape.idle_ms,
        epoch_blocks=shape.epoch_blocks,
    )
    genesis = Genesis.build(
        network=NETWORK,
        time_ms=now_ms(),
        validators=[key.address for key in keys[: shape.validators]],
        allocations={
            **dict.fromkeys(wallets.values(), FUNDS),
            **{key.address: VALIDATOR_FUNDS for key in keys[: shape.validators]},
        },
        params=params,
        escrows={wallets[name]: ESCROW_FUNDS for name in WALLETS},
    )
    for home in homes:
        genesis.save(home.genesis_file)
    _write_record(base, Record(shape, genesis.hash, genesis.chain_id))  # last: marks it complete
    return genesis


def prepare(
    base: Path,
    *,
    nodes: int,
    validators: int | None = None,
    block_time_ms: int | None = None,
    fresh: bool = False,
    miners: int = 0,
    epoch_blocks: int | None = None,
    idle_ms: int | None = None,
    notify: Notify = lambda _: None,
) -> Devnet:
    """Resume the devnet stored under `base` if it has this shape, else make a new one.

    `block_time_ms`, `epoch_blocks` and `idle_ms` None keep the stored devnet's (the defaults
    for a new one). Starting over removes only the devnet's node folders and record (see
    `remove`)."""
    record = read_record(base)
    if block_time_ms is None:
        block_time_ms = record.shape.block_time_ms if record else DEFAULT_BLOCK_TIME_MS
    if record is not None:
        epoch_blocks = record.shape.epoch_blocks if epoch_blocks is None else epoch_blocks
        idle_ms = record.shape.idle_ms if idle_ms is None else idle_ms
    shape = Shape.check(nodes, validators, block_time_ms, miners, epoch_blocks, idle_ms)
    private_dir(base)
    wallets = ensure_wallets(base, notify, shape.miners)
    if record is not None and not fresh:
        problem = _problem(base, record, shape, wallets)
        if problem is None:
            genesis = NodeHome.named(node_name(0), base).genesis()
            return Devnet(base, shape, genesis, wallets, resumed=True)
        notify(f"{problem}: starting a new devnet with {shape.describe()}")
    elif record is None and (base / RECORD_FILE).exists():
        notify(f"{base / RECORD_FILE} is unreadable: starting a new devnet")
    gone = remove(base)
    if gone:
        why = "--fresh" if fresh else "starting over"
        notify(f"{why}: removed the old devnet's node folders ({', '.join(gone)}); wallets kept")
    genesis = _create(base, shape, wallets)
    return Devnet(base, shape, genesis, wallets, resumed=False)
