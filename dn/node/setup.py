"""Setting a node up before it runs: the genesis its folder is pinned to, a dev chain, a genesis
file for several validators, and the PoWR duty of a validator node.

A node folder keeps the first genesis it is given (`pin_genesis`); starting it later with
another is an error, so one folder never mixes two networks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dn.chain.genesis import Genesis
from dn.errors import GenesisError, InputError, StoreError
from dn.node.node import Node, NodeHome, now_ms

if TYPE_CHECKING:
    from dn.node.validator.powr import PowrValidator
    from dn.runner.modelstore import ModelStore

Notify = Callable[[str], None]


def pin_genesis(
    home: NodeHome, genesis: Genesis, *, source: str, notify: Notify | None = None
) -> bool:
    """Keep the node on the first genesis it was given: write `genesis` into a folder that has
    none (making the folder and its node key) and tell `notify`; a folder on a different
    genesis is a GenesisError naming both chains. True when it was pinned now."""
    if home.genesis_file.exists():
        pinned = Genesis.load(home.genesis_file)
        if pinned.hash != genesis.hash:
            raise GenesisError(
                f"node folder {home.path} is on chain {pinned.chain_id}, but {source} "
                f"is chain {genesis.chain_id}; use another --name for another network"
            )
        return False
    home.key()  # makes the folder (0700) and the node key on first use
    genesis.save(home.genesis_file)
    if notify is not None:
        notify(f"pinned genesis {genesis.chain_id} from {source}")
    return True


def require_genesis(home: NodeHome, name: str) -> None:
    """StoreError saying how to give node `name` a chain when its folder has no genesis."""
    if not home.genesis_file.exists():
        raise StoreError(
            f"node {name!r} has no chain yet: run 'dn chain init --dev', or start it with "
            "--genesis FILE or --join URL"
        )


def init_dev_chain(
    home: NodeHome,
    allocations: dict[str, int],
    *,
    network: str = "devnet",
    params: dict[str, int] | None = None,
    force: bool = False,
) -> Genesis:
    """Write a dev genesis whose one validator is this node's own key."""
    if home.store_file.exists() and not force:
        raise StoreError(
            f"{home.path} already holds a chain; use another --name, or --force to start over"
        )
    key = home.key()
    genesis = Genesis.build(
        network=network,
        time_ms=now_ms(),
        validators=[key.address],
        allocations=allocations,
        params=params,
    )
    if force:
        for suffix in ("", "-wal", "-shm"):
            Path(str(home.store_file) + suffix).unlink(missing_ok=True)
    genesis.save(home.genesis_file)
    return genesis


def init_dev(home: NodeHome, allocations: dict[str, int], **options: Any) -> Genesis:
    """A dev chain whose one validator is this node (`init_dev_chain`, same options), with its
    store made and holding block 0."""
    genesis = init_dev_chain(home, allocations, **options)
    Node(home, genesis).close()  # creates the store with block 0
    return genesis


def write_genesis(
    out: Path,
    validators: list[str],
    allocations: dict[str, int],
    *,
    network: str = "devnet",
    params: dict[str, int] | None = None,
    force: bool = False,
) -> Genesis:
    """A genesis for several validators, timed now and written to the file `out` (not over an
    existing file unless `force`, never over a folder)."""
    if out.is_dir():
        raise InputError(f"--out {out} is a folder: give a file name")
    if out.exists() and not force:
        raise InputError(f"{out} exists already; use --force to overwrite it")
    genesis = Genesis.build(
        network=network,
        time_ms=time.time_ns() // 1_000_000,
        validators=validators,
        allocations=allocations,
        params=params,
    )
    try:
        genesis.save(out)
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from None
    return genesis


def powr_duty(node: Node, name: str, models: ModelStore, items_per_model: int) -> PowrValidator:
    """The PoWR duty of a validator node, evaluating the models held in `models`; a node that is
    not in the validator set is closed and an InputError says how to join it."""
    from dn.node.validator.powr import for_node

    if not node.is_validator:
        node.close()
        raise InputError(
            f"--validate is for validators; node {name!r} ({node.key.address}) is not in "
            f"the validator set of chain {node.genesis.chain_id} (to join it with a "
            "wallet's bond: dn validate --wallet NAME)"
        )
    return for_node(node, models, items_per_model=items_per_model)
