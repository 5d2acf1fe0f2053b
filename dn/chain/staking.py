"""The `stake` and `unstake` rules (DESIGN.md section 4): backing a model, delegating to a
validator. Both kinds carry `{target, amount}`; the target is a model's sha256 or a validator's
address.

    stake:<target>:<address>   {"amount": units}  what `address` has staked on `target`
    backers:<target>           [address, …] sorted: who holds a stake on `target`

- `stake`: the target is a registered, live model (`unknown-model`, `model-retired`) or a
  validator, present or past (`not-validator`); `amount ≥ stake_min` (`stake-too-low`); the
  balance after the fee covers it (`insufficient-funds`). The amount moves from the balance into the
  stake.
- `unstake`: the sender holds a stake on the target (`no-stake`) of at least `amount`
  (`insufficient-stake`), and what is left is 0 or at least `stake_min` (`stake-too-low`). The
  amount leaves the stake and waits under `unlock:<H + unbonding_blocks>`, as a miner's bond
  does after `miner.exit`: it comes back to the balance at the start of that block and stays in
  the supply meanwhile. A stake on a model retired since, or on any target, can always be
  withdrawn.

A model's backers share its query fees pro rata (`backers_of` here, `economics.split_fee`) and
its backers' part of the PoWR emission. Stake delegated to a validator adds to its weight in the
PoWR epoch close (`powr_rules.validator_stakes`), and its delegators share the validator's
reward pro rata to stake.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dn.chain.genesis import Genesis
from dn.chain.ledger import UNLOCK, Overlay, StateReader, debit
from dn.chain.models import is_model, live_model
from dn.chain.types import Tx
from dn.chain.validators import known
from dn.errors import InvalidTx

STAKE = "stake:"
BACKERS = "backers:"


def stake_key(target: str, address: str) -> str:
    return f"{STAKE}{target}:{address}"


def staked(state: StateReader, target: str, address: str) -> int:
    found = state.get(stake_key(target, address))
    return int(found["amount"]) if found is not None else 0


def _set_stake(state: Overlay, target: str, address: str, amount: int) -> None:
    """Write a stake (deleting it at 0) and keep `backers:<target>` the sorted set of holders."""
    state.set(stake_key(target, address), {"amount": amount} if amount else None)
    before = set(state.get(BACKERS + target) or [])
    after = before | {address} if amount else before - {address}
    if after != before:  # topping up a stake leaves the list (and the state root) alone
        state.set(BACKERS + target, sorted(after) or None)


def backers_of(state: StateReader, target: str) -> dict[str, int]:
    """Who holds a stake on `target` (a model's backers, a validator's delegators) and how much:
    `backers:<target>` lists them, `stake:<target>:<address>` holds each."""
    backers: dict[str, int] = {}
    for address in state.get(BACKERS + target) or []:
        stake = state.get(f"{STAKE}{target}:{address}")
        if stake is not None and stake["amount"] > 0:
            backers[address] = stake["amount"]
    return backers


def _check_target(state: StateReader, target: str, genesis: Genesis) -> None:
    if is_model(target):
        live_model(state, target, retired_reason="model-retired")
    elif not known(state, genesis, target):
        raise InvalidTx(f"{target} is not a validator", reason="not-validator")


def _check_floor(amount: int, genesis: Genesis, what: str) -> None:
    least = genesis.param("stake_min")
    if amount < least:
        raise InvalidTx(
            f"{what} of {amount} units is below the minimum stake of {least}",
            reason="stake-too-low",
        )


def stake(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    target, amount = tx.payload["target"], tx.payload["amount"]
    _check_target(state, target, genesis)
    _check_floor(amount, genesis, "a stake")
    debit(state, tx.sender, amount, f"stake {amount} after fee {tx.fee}")
    _set_stake(state, target, tx.sender, staked(state, target, tx.sender) + amount)


def unstake(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    target, amount = tx.payload["target"], tx.payload["amount"]
    held = staked(state, target, tx.sender)
    if held == 0:
        raise InvalidTx(f"the sender has no stake on {target}", reason="no-stake")
    if amount > held:
        raise InvalidTx(
            f"cannot unstake {amount} units: the sender has {held} staked on {target}",
            reason="insufficient-stake",
        )
    rest = held - amount
    if rest:
        _check_floor(rest, genesis, "the stake left")
    _set_stake(state, target, tx.sender, rest)
    key = UNLOCK + str(height + genesis.param("unbonding_blocks"))
    entry = {"address": tx.sender, "amount": amount, "what": "stake"}
    state.set(key, [*(state.get(key) or []), entry])


def stakes_of(
    items: Iterable[tuple[str, Any]], *, target: str | None = None, backer: str | None = None
) -> list[dict[str, Any]]:
    """Every stake in a state's `items()` as `{target, backer, amount}`, sorted by target then
    backer, optionally only those on `target` or by `backer`."""
    found = []
    for key, value in items:
        if not key.startswith(STAKE):
            continue
        on, _, by = key[len(STAKE) :].rpartition(":")
        if (target is None or on == target) and (backer is None or by == backer):
            found.append({"target": on, "backer": by, "amount": value["amount"]})
    return sorted(found, key=lambda s: (s["target"], s["backer"]))
