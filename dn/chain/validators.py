"""The validator set (DESIGN.md sections 4 and 5): the `validator.bond` and `validator.unbond`
rules and the set changes they schedule for the next epoch boundary.

    validators              [address, …] sorted: the active set (absent: the genesis validators)
    validators-probation    [address, …] sorted: members that joined and have not signed a block
                            since (absent when none)
    validator:<address>     {"bond": units, "since": height, "joins": epoch | null,
                             "leaves": epoch | null, "left": epoch | null}, and once jailed
                            (jailing.py) "jailed": height and "slashed": units
    validator-changes:<e>   [{"address", "change": "join" | "leave"}, …] in order: applied at the
                            start of epoch e's first block, after the previous epoch's close

- `validator.bond` {amount}: the sender is not leaving (`leaving`); if it was jailed at height J,
  H ≥ J + `unbonding_blocks` (`jailed`). A sender outside the set and not joining needs
  `held + amount ≥ validator_min_bond` (`bond-too-low`) and joins the set at the next epoch
  boundary (a jailed validator rejoins this way, its `jailed` mark cleared); anyone else adds to
  its bond. The amount moves from the balance into the bond (`insufficient-funds`).
- `validator.unbond` {amount}: the sender has a bond (`not-bonded`) of at least `amount`
  (`insufficient-bond`); what is left is 0 or at least `validator_min_bond` (`bond-too-low`).
  The amount waits under `unlock:<H + unbonding_blocks>` (`what`: "validator-bond"). Unbonding
  everything takes a bonded validator out of the set at the next epoch boundary, unless it is
  the last member the set would keep (`last-validator`); a genesis validator stays (its place is
  in the genesis); a join not yet applied is simply cancelled; a validator outside the set (a
  jailed one) just takes its bond back.

A validator that joins is on probation until it signs its first block: it takes its turns in
the in-turn order, but the recent-signer rule does not count it (`signing`), so joiners that
never sign cannot stop the validators that do (jailing.py has the reasoning).

Which set checks what. A block at height h is proposed by a validator of the set in the state
after block h-1 (its parent), with the in-turn order and the recent-signer rule of that set; a
transaction in block h (`powr.commit`, `task.verdict`, …) sees the set after that block's start,
so at an epoch's first block it already sees the epoch's set. A validator's weight in the PoWR
close is its own (`own_weight`: `validator_base_weight` for a genesis validator, plus its bond)
plus what is delegated to it (`powr_rules.validator_stakes`).
"""

from __future__ import annotations

from typing import Any

from dn.chain.epochs import Epoch
from dn.chain.genesis import Genesis
from dn.chain.ledger import UNLOCK, Overlay, StateReader, debit
from dn.chain.types import Tx
from dn.errors import InvalidTx

VALIDATORS = "validators"
PROBATION = "validators-probation"
VALIDATOR = "validator:"
CHANGES = "validator-changes:"
JOIN, LEAVE = "join", "leave"


def active(state: StateReader, genesis: Genesis) -> list[str]:
    """The active validator set (sorted addresses)."""
    found = state.get(VALIDATORS)
    return list(found) if found is not None else list(genesis.validators)


def on_probation(state: StateReader) -> list[str]:
    """Members that joined and have not signed a block since."""
    return list(state.get(PROBATION) or [])


def signing(state: StateReader, genesis: Genesis) -> list[str]:
    """The members the recent-signer rule counts: the active set less those on probation."""
    waiting = set(on_probation(state))
    return [v for v in active(state, genesis) if v not in waiting]


def signed(state: Overlay, proposer: str) -> None:
    """`proposer` signed a block: it is off probation."""
    waiting = on_probation(state)
    if proposer in waiting:
        waiting.remove(proposer)
        state.set(PROBATION, waiting or None)


def known(state: StateReader, genesis: Genesis, address: str) -> bool:
    """Whether `address` is or ever was a validator (a genesis one, or one that bonded)."""
    return address in genesis.validators or state.get(VALIDATOR + address) is not None


def bonded(state: StateReader, address: str) -> int:
    found = state.get(VALIDATOR + address)
    return int(found["bond"]) if found is not None else 0


def own_weight(state: StateReader, genesis: Genesis, address: str) -> int:
    """What a validator stands for by itself: `validator_base_weight` if it is a genesis
    validator, plus its bond."""
    base = genesis.param("validator_base_weight") if address in genesis.validators else 0
    return int(base) + bonded(state, address)


def _epoch(height: int, genesis: Genesis) -> int:
    return Epoch.at(height, genesis.param("epoch_blocks")).number


def _schedule(state: Overlay, epoch: int, address: str, change: str | None) -> None:
    """Set (or, with None, drop) `address`'s change at the start of `epoch`."""
    key = CHANGES + str(epoch)
    changes = [c for c in state.get(key) or [] if c["address"] != address]
    if change is not None:
        changes.append({"address": address, "change": change})
    state.set(key, changes or None)


def schedule_leave(state: Overlay, epoch: int, address: str) -> None:
    """Take `address` out of the set at the start of `epoch` (jailing.py)."""
    _schedule(state, epoch, address, LEAVE)
    state.set(VALIDATOR + address, {**state.get(VALIDATOR + address), "leaves": epoch})


def next_set(state: StateReader, genesis: Genesis, epoch: int) -> set[str]:
    """The set from the start of `epoch`, with the changes scheduled for it so far."""
    members = set(active(state, genesis))
    for change in state.get(CHANGES + str(epoch)) or []:
        if change["change"] == JOIN:
            members.add(change["address"])
        else:
            members.discard(change["address"])
    return members


def bond(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    amount, sender = tx.payload["amount"], tx.sender
    record = state.get(VALIDATOR + sender)
    if record is not None and record.get("leaves") is not None:
        raise InvalidTx(
            f"the sender leaves the validator set at epoch {record['leaves']}; bond again after",
            reason="leaving",
        )
    jailed = record.get("jailed") if record is not None else None
    if jailed is not None and height < jailed + genesis.param("unbonding_blocks"):
        free = jailed + genesis.param("unbonding_blocks")
        raise InvalidTx(
            f"the sender was jailed at block {jailed}; it may bond again from block {free}",
            reason="jailed",
        )
    held = int(record["bond"]) if record is not None else 0
    in_set = sender in active(state, genesis)
    joining = record is not None and record.get("joins") is not None
    minimum = genesis.param("validator_min_bond")
    if not in_set and not joining and held + amount < minimum:
        raise InvalidTx(
            f"a new validator bonds at least {minimum} units, not {held + amount}",
            reason="bond-too-low",
        )
    debit(state, sender, amount, f"bond {amount} after fee {tx.fee}")
    joins = record.get("joins") if record is not None else None
    if not in_set and not joining:
        joins = _epoch(height, genesis) + 1
        _schedule(state, joins, sender, JOIN)
    updated = {k: v for k, v in (record or {}).items() if k != "jailed"}
    updated.update(
        bond=held + amount,
        since=record["since"] if record is not None and held else height,
        joins=joins,
        leaves=None,
        left=record.get("left") if record is not None else None,
    )
    state.set(VALIDATOR + sender, updated)


def unbond(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    amount, sender = tx.payload["amount"], tx.sender
    record = state.get(VALIDATOR + sender)
    held = int(record["bond"]) if record is not None else 0
    if held == 0:
        raise InvalidTx("the sender has no validator bond", reason="not-bonded")
    if amount > held:
        raise InvalidTx(
            f"cannot unbond {amount} units: the sender's bond is {held}", reason="insufficient-bond"
        )
    rest, minimum = held - amount, genesis.param("validator_min_bond")
    if 0 < rest < minimum:
        raise InvalidTx(
            f"the bond left ({rest}) must be 0 or at least {minimum} units", reason="bond-too-low"
        )
    record = dict(record)
    if rest == 0 and sender not in genesis.validators:
        epoch = _epoch(height, genesis) + 1
        if record.get("joins") is not None:
            _schedule(state, record["joins"], sender, None)  # never joined: nothing to leave
            record["joins"] = None
        elif sender in active(state, genesis):
            if not next_set(state, genesis, epoch) - {sender}:
                raise InvalidTx(
                    "the last validator of the set cannot leave it", reason="last-validator"
                )
            _schedule(state, epoch, sender, LEAVE)
            record["leaves"] = epoch
    key = UNLOCK + str(height + genesis.param("unbonding_blocks"))
    entry = {"address": sender, "amount": amount, "what": "validator-bond"}
    state.set(key, [*(state.get(key) or []), entry])
    state.set(VALIDATOR + sender, {**record, "bond": rest})


def begin_epoch(state: Overlay, epoch: int, genesis: Genesis) -> None:
    """Apply the set changes scheduled for `epoch` (at the start of its first block)."""
    key = CHANGES + str(epoch)
    changes = state.get(key)
    if not changes:
        return
    members = next_set(state, genesis, epoch)
    state.set(VALIDATORS, sorted(members))
    waiting = set(on_probation(state))
    for change in changes:
        address = change["address"]
        record: dict[str, Any] = dict(state.get(VALIDATOR + address))
        if change["change"] == JOIN:
            record.update(joins=None, left=None)
            waiting.add(address)
        else:
            record.update(leaves=None, left=epoch)
            waiting.discard(address)
        state.set(VALIDATOR + address, record)
    state.set(key, None)
    if waiting != set(on_probation(state)):
        state.set(PROBATION, sorted(waiting) or None)
