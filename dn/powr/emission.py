"""Who is paid what at a PoWR epoch's close (DESIGN.md section 8), in integer units.

Step 4 of `dn.powr.consensus` (steps 1-3 give each model's score and each validator's
agreement):

4. Emission (`epoch_emission`, `split_emission`). E(epoch) = initial >> (epoch // halving), so
   it halves every `powr_halving_epochs` epochs and reaches 0; all epochs together emit less
   than 2 * initial * halving. The validator pot, E * `powr_validator_share_bps` // BPS, goes
   to validators by stake x agreement; the rest goes to models by score. A model's part is
   split by `powr_creator_share_bps`, `powr_miner_share_bps`, `powr_backer_share_bps` (summing
   to 10,000) and the backers' part by stake; a model without backers gives their part to its
   creator, as in `dn.chain.economics` (reason `creator-backers-share`).

5. The usage cap. The miners' part is the emission tied to usage, so it is bounded by what
   usage paid for: it is at most `usage_bound(burned)` = burned * `powr_usage_cap_bps` // BPS,
   where burned is what the fee split of the model's confirmed tasks of the epoch burned (the
   burn share of the prices consumers paid, and its rounding), and it is shared by the units
   each generator's tasks burned, not by the tokens claimed: a task weighs what its consumer
   paid to destroy, and one that burned nothing (unpaid) weighs nothing. A miner's part is at
   most `usage_bound` of what its own tasks burned (a largest remainder that would lift it a
   unit above is not paid). The rest of the miners' part (all of it when nothing was burned) is
   `unpaid`, never minted. Wash trading pays the burn and gets back at most
   `powr_usage_cap_bps` (<= 5,000, 3,333 by default) of it here, and as much again through
   the demand it earns the model (`dn.powr.consensus`), so it loses money.

Remainders. Every division is by `apportion`: Hamilton's largest-remainder method, whose parts
sum exactly to the whole, each within one unit of its exact proportional share; leftover units
go to the largest remainders, ties to the smaller key (address or model id). So the credits of
an epoch sum to its emission to the unit. The only exceptions are a pot with nobody to receive it
at all (no validator with stake x agreement > 0; no model with a score > 0) and what the usage
cap leaves of a miners' part: they are `unpaid`, and the state machine does not mint them
(emitted supply grows by `EpochResult.paid` only). Always: sum(credits) + unpaid == emission.

Everything is ordered by address or model id, never by the order of a mapping, and scaling
every validator stake (or every backer stake) by the same positive factor changes no result
(the units miners' tasks burned are money, not weights: they set the usage cap).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dn.encoding import BPS, MAX_AMOUNT
from dn.errors import InputError
from dn.powr.params import EpochParams, check_int

if TYPE_CHECKING:
    from dn.powr.consensus import EpochResult

REASON_VALIDATOR = "validator"
REASON_DELEGATOR = "delegator"  # a share of the reward of the validator it delegates to
REASON_POOL = "validator-pool"  # the validator pool (query fees' share, slashes) paid at a close
REASON_CREATOR = "creator"
REASON_MINER = "miner"
REASON_BACKER = "backer"
REASON_CREATOR_BACKERS = "creator-backers-share"  # the model has no backers: the creator takes it


def epoch_emission(epoch: int, initial: int, halving_epochs: int) -> int:
    """Units minted for `epoch` (0, 1, …): `initial`, halved (rounding down) every
    `halving_epochs` epochs, so eventually 0. All epochs together emit less than
    2 * initial * halving_epochs."""
    check_int(epoch, 0, MAX_AMOUNT, "epoch")
    check_int(initial, 0, MAX_AMOUNT, "initial emission")
    check_int(halving_epochs, 1, MAX_AMOUNT, "halving epochs")
    return initial >> (epoch // halving_epochs)


def apportion(total: int, weights: Mapping[str, int]) -> dict[str, int]:
    """Split `total` units in proportion to `weights` (key -> non-negative integer), exactly.

    Hamilton's largest-remainder method: each key with a positive weight gets the floor of its
    share, and the units left over (fewer than the number of keys) go one each to the largest
    remainders, ties to the smaller key. The parts sum to `total` and each is within one unit
    of its exact share. Keys with weight 0 are left out; {} when no weight is positive (nobody
    can receive). Keys come back sorted."""
    check_int(total, 0, MAX_AMOUNT, "amount to split")
    items = []
    for key in sorted(weights):
        weight = weights[key]
        if weight < 0:
            raise InputError(f"weight of {key} must not be negative, got {weight}")
        if weight:
            items.append((key, weight))
    whole = sum(weight for _, weight in items)
    if not whole:
        return {}
    parts: dict[str, int] = {}
    remainders = []
    for key, weight in items:
        part, remainder = divmod(total * weight, whole)
        parts[key] = part
        remainders.append((-remainder, key))
    remainders.sort()
    for _, key in remainders[: total - sum(parts.values())]:
        parts[key] += 1
    return parts


@dataclass(frozen=True)
class ModelEpoch:
    """What the chain saw of one model in the epoch."""

    creator: str
    tasks: int = 0  # tasks that ended in the epoch, confirmed or rejected
    confirmed: int = 0  # of those, confirmed
    miners: Mapping[str, int] = field(default_factory=dict)  # generator -> units its tasks burned
    backers: Mapping[str, int] = field(default_factory=dict)  # backer -> stake on the model

    def check(self, model: str) -> None:
        check_int(self.tasks, 0, MAX_AMOUNT, f"tasks of {model}")
        check_int(self.confirmed, 0, self.tasks, f"confirmed tasks of {model}")
        for miner, units in self.miners.items():
            check_int(units, 0, MAX_AMOUNT, f"units burned by {miner}'s tasks of {model}")
        check_int(self.burned, 0, MAX_AMOUNT, f"units burned by tasks of {model}")
        for backer, stake in self.backers.items():
            check_int(stake, 0, MAX_AMOUNT, f"stake of {backer} on {model}")

    @property
    def burned(self) -> int:
        """Units the fee split of the model's confirmed tasks burned in the epoch."""
        return sum(self.miners.values())


@dataclass(frozen=True)
class Credit:
    """Units paid to `address` for `reason`; `model` is the model that earned it (None for a
    validator's share)."""

    address: str
    amount: int
    reason: str
    model: str | None = None
    validator: str | None = None  # for a delegator's credit: whose reward it shares


@dataclass(frozen=True)
class EmissionSplit:
    credits: tuple[Credit, ...]
    unpaid: int  # no one to receive it, or over the usage cap: not minted
    validator_rewards: Mapping[str, int] = field(default_factory=dict)  # before delegators'
    capped: Mapping[str, int] = field(default_factory=dict)  # model -> miners' part not minted


def usage_bound(burned: int, params: EpochParams) -> int:
    """The most emission a model's usage of the epoch may earn through any one usage-tied part
    (its miners' pot; what the demand it adds to the model's score moves to the model):
    `powr_usage_cap_bps` of the units its confirmed tasks burned."""
    check_int(burned, 0, MAX_AMOUNT, "units burned")
    return burned * params.usage_cap_bps // BPS


def _model_credits(
    model: str, amount: int, info: ModelEpoch, params: EpochParams
) -> tuple[list[Credit], int]:
    """The credits of a model's part, and what the usage cap leaves of its miners' part."""
    roles = apportion(
        amount,
        {
            "creator": params.creator_share_bps,
            "miners": params.miner_share_bps,
            "backers": params.backer_share_bps,
        },
    )
    out = [Credit(info.creator, roles.get("creator", 0), REASON_CREATOR, model)]
    pot = roles.get("miners", 0)
    shared_out = apportion(min(pot, usage_bound(info.burned, params)), info.miners)
    # Largest remainders may give a miner one unit above its own bound: that unit stays unpaid.
    paid = {a: min(part, usage_bound(info.miners[a], params)) for a, part in shared_out.items()}
    out += [Credit(address, part, REASON_MINER, model) for address, part in paid.items()]
    capped = pot - sum(paid.values())
    backers = roles.get("backers", 0)
    shared = apportion(backers, info.backers)
    out += [Credit(address, part, REASON_BACKER, model) for address, part in shared.items()]
    if not shared:
        out.append(Credit(info.creator, backers, REASON_CREATOR_BACKERS, model))
    return [credit for credit in out if credit.amount], capped


def _validator_credits(
    validator: str, reward: int, own: int, delegations: Mapping[str, int]
) -> list[Credit]:
    """A validator's reward shared with its delegators pro rata to stake: `own` is the weight
    of its own stake, `delegations` what each delegator put on it."""
    holders = {address: amount for address, amount in delegations.items() if address != validator}
    parts = apportion(reward, {**holders, validator: max(own, 0)}) or {validator: reward}
    return [
        Credit(address, part, REASON_VALIDATOR)
        if address == validator
        else Credit(address, part, REASON_DELEGATOR, validator=validator)
        for address, part in parts.items()
        if part
    ]


def share_pool(
    pool: int, result: EpochResult, delegations: Mapping[str, Mapping[str, int]]
) -> tuple[Credit, ...]:
    """Pay out `pool` units (the validator pool: the validators' share of query fees and part
    of every slash) at the close of `result`'s epoch, by the same weights as the validators'
    emission (stake x agreement), each validator's part shared with its delegators pro rata to
    stake. () when no validator has weight: the pool waits for the next close."""
    weights = {v.address: v.stake * v.agreement_ppm for v in result.validators}
    paid = apportion(pool, weights)
    credits: list[Credit] = []
    for address, part in paid.items():
        if not part:
            continue
        stake = next(v.stake for v in result.validators if v.address == address)
        delegated = delegations.get(address, {})
        own = stake - sum(delegated.values())
        for credit in _validator_credits(address, part, own, delegated):
            reason = REASON_POOL if credit.reason == REASON_VALIDATOR else credit.reason
            credits.append(dataclasses.replace(credit, reason=reason))
    return tuple(credits)


def split_emission(
    emission: int,
    validator_weights: Mapping[str, int],
    model_scores: Mapping[str, int],
    models: Mapping[str, ModelEpoch],
    params: EpochParams,
    delegations: Mapping[str, Mapping[str, int]] | None = None,
    own_stakes: Mapping[str, int] | None = None,
) -> EmissionSplit:
    """Split `emission` units: E * validator_share // BPS to validators by `validator_weights`
    (stake x agreement), each validator's part shared with its `delegations` pro rata to stake
    (its own weight `own_stakes`), the rest to models by `model_scores` and, within each model,
    to its creator, miners (at most `usage_bound`) and backers. Credits with 0 units are left
    out; a pot that no one can receive, and what the usage cap leaves of a miners' part, are
    unpaid. sum(credits) + unpaid == emission."""
    validator_pot = emission * params.validator_share_bps // BPS
    model_pot = emission - validator_pot
    credits: list[Credit] = []
    unpaid = 0
    paid = apportion(validator_pot, validator_weights)
    if not paid:
        unpaid += validator_pot
    for address, part in paid.items():
        if part:
            own = (own_stakes or {}).get(address, 1)
            credits += _validator_credits(address, part, own, (delegations or {}).get(address, {}))
    shares = apportion(model_pot, model_scores)
    if not shares:
        unpaid += model_pot
    capped: dict[str, int] = {}
    for model, part in shares.items():
        earned, left = _model_credits(model, part, models[model], params)
        credits += earned
        if left:
            capped[model] = left
            unpaid += left
    rewards = {a: part for a, part in paid.items() if part}
    return EmissionSplit(tuple(credits), unpaid, rewards, capped)
