"""Who gets what of a paid query (DESIGN.md section 7), as pure integer arithmetic.

A charge is split by the genesis `fee_split_*` shares (basis points): the model's creator, the
generator, the checker, the validator pool, the model's backers pro rata to their stake, and a
burned share. Every share is rounded down, and every unit of rounding goes to the burn, so the
parts always sum to exactly the charge: nothing is created or lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dn.chain.genesis import FEE_SPLIT, PARAMS, Genesis, fee_split_problem
from dn.encoding import BPS
from dn.errors import InputError

SHARES = ("creator", "generator", "checker", "validators", "backers", "burn")


def fee_split(source: Genesis | Mapping[str, int]) -> dict[str, int]:
    """The split in basis points by share name, from a genesis or a params mapping (defaults for
    names it lacks); InputError when the shares do not sum to 10,000."""
    params = source.params if isinstance(source, Genesis) else source
    problem = fee_split_problem(params)
    if problem is not None:
        raise InputError(problem)
    split = {
        share: int(params.get(name, PARAMS[name][0]))
        for share, name in zip(SHARES, FEE_SPLIT, strict=True)
    }
    if any(bps < 0 for bps in split.values()):
        raise InputError(f"fee split shares must not be negative, got {split}")
    return split


def split_fee(
    amount: int, genesis_or_params: Genesis | Mapping[str, int], backers: Mapping[str, int]
) -> dict[str, Any]:
    """Split `amount` units: {"creator", "generator", "checker", "validators", "burn": units,
    "backers": {address: units}}.

    Each share is `amount * bps // 10_000`. The backers' share is divided pro rata to `backers`
    (address -> stake), each rounded down; backers whose part rounds to zero are left out. With
    no backers (or no stake at all) the backers' share goes to the creator, who then stands
    behind the model alone. Whatever rounding leaves over is burned, so the parts sum to exactly
    `amount`."""
    bps = fee_split(genesis_or_params)
    parts = {share: amount * bps[share] // BPS for share in SHARES}
    pot = parts.pop("backers")
    stakes = {address: stake for address, stake in sorted(backers.items()) if stake > 0}
    total = sum(stakes.values())
    paid: dict[str, int] = {}
    if total == 0:
        parts["creator"] += pot
    else:
        for address, stake in stakes.items():
            part = pot * stake // total
            if part:
                paid[address] = part
    parts["burn"] += amount - sum(parts.values()) - sum(paid.values())
    return {**parts, "backers": paid}
