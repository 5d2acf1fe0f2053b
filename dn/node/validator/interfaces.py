"""What the validator's duties (PoWR evaluation, refereeing) need of the node they run on, as
protocols: `dn.node.node.Node`, `dn.runner.modelstore.ModelStore` and `dn.runner.llama.Runner`
have all of it, and unit tests pass small fakes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from dn.chain.genesis import Genesis
from dn.chain.mempool import Mempool
from dn.chain.types import Block, Tx
from dn.wallet.keys import Keypair


class StateView(Protocol):
    def get(self, key: str) -> Any: ...

    def items(self) -> Any: ...


class BlockView(Protocol):
    def canonical_hash(self, height: int) -> str | None: ...

    def block(self, height: int) -> Block | None: ...


class HomeView(Protocol):
    @property
    def path(self) -> Path: ...


class ChainView(Protocol):
    """What a validator reads of a node and how it sends its own transactions."""

    @property
    def tip(self) -> Block: ...

    @property
    def state(self) -> StateView: ...

    @property
    def genesis(self) -> Genesis: ...

    @property
    def mempool(self) -> Mempool: ...

    @property
    def store(self) -> BlockView: ...

    @property
    def home(self) -> HomeView: ...

    def own_tx(self, keypair: Keypair, kind: str, payload: dict[str, Any]) -> Tx: ...


class ModelFiles(Protocol):
    """The part of `dn.runner.modelstore.ModelStore` the validator uses."""

    def has(self, sha: str) -> bool: ...

    def path(self, sha: str) -> Path: ...


class ModelRunner(Protocol):
    """The part of `dn.runner.llama.Runner` the validator uses."""

    def model(self, path: Path, role: str = "generate") -> Any: ...

    def close(self) -> None: ...
