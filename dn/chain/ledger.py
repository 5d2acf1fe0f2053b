"""The state's keys and the few operations every rule uses: accounts, credit, debit, burn.

The state machine (`state.py`) and every kind's rules (`models.py`, `miners.py`, `market.py`,
`staking.py`, `validators.py`, `disputes.py`, `powr_rules.py`) read and write the state through
these; `state.py` documents the whole key layout.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from dn.errors import InvalidTx

ACCT = "acct:"
SUPPLY = "supply"
MODEL = "model:"
MODEL_NAME = "model-name:"
MODEL_NAME_KEY = "model-name-key:"  # a live model's name folded (models.name_key): names unique
MINER = "miner:"
UNLOCK = "unlock:"
POOL = "pool:"
POOL_VALIDATORS = "pool:validators"
TASK = "task:"
SIGNERS = "signers"  # proposers of the latest blocks, for the floor(n/2)+1 signing rule


class StateReader(Protocol):
    def get(self, key: str) -> Any: ...


class Overlay:
    """Writes collected on top of a read-only base; `changes` is what a block did."""

    def __init__(self, base: StateReader) -> None:
        self.base = base
        self.changes: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        if key in self.changes:
            return self.changes[key]
        return self.base.get(key)

    def set(self, key: str, value: Any) -> None:
        self.changes[key] = value

    def merge(self, child: Overlay) -> None:
        self.changes.update(child.changes)


class DictState:
    """A whole state in memory."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data: dict[str, Any] = data if data is not None else {}

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def update(self, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(self.data.items())


def account(state: StateReader, address: str) -> dict[str, int]:
    found = state.get(ACCT + address)
    return found if found is not None else {"balance": 0, "nonce": 0}


def credit(state: Overlay, address: str, amount: int) -> None:
    acct = account(state, address)
    state.set(ACCT + address, {"balance": acct["balance"] + amount, "nonce": acct["nonce"]})


def debit(
    state: Overlay, address: str, amount: int, what: str, reason: str = "insufficient-funds"
) -> None:
    acct = account(state, address)
    if acct["balance"] < amount:
        raise InvalidTx(f"balance {acct['balance']} cannot pay {what}", reason=reason)
    state.set(ACCT + address, {"balance": acct["balance"] - amount, "nonce": acct["nonce"]})


def burn(state: Overlay, amount: int) -> None:
    supply = state.get(SUPPLY)
    state.set(SUPPLY, {**supply, "burned": supply["burned"] + amount})
