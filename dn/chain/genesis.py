"""The genesis file: allocations, initial validators and every economic parameter.

`chain_id` is derived from the genesis hash, so two networks can never mix: a transaction signed
for one is invalid on every other. All numbers are integers; shares are in basis points
(1/10,000).

A file may leave out any parameter: it then has its default (`Genesis.param`). That is how a
genesis written before a parameter existed keeps loading, with the same hash and chain id, when
a later version adds one. The six `fee_split_*` shares must sum to exactly 10,000, and so must
the three `powr_*_share_bps` that split a model's part of the PoWR emission.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from dn.config import atomic_write
from dn.encoding import BPS, MAX_AMOUNT, UNITS_PER_DN, hash_hex, merkle_root, pubkey_from_address
from dn.errors import DNError, GenesisError, InputError
from dn.powr.params import POWR_PARAMS

FORMAT = 1
ZERO_HASH = "0" * 64

# name: (default, minimum, maximum)
PARAMS: dict[str, tuple[int, int, int]] = {
    "block_time_ms": (1000, 50, 600_000),  # a block at most this often when there is work
    "max_block_interval_ms": (30_000, 1000, 3_600_000),  # and at least this often regardless
    "max_future_ms": (15_000, 0, 600_000),  # how far ahead of a node's clock a block may be
    "max_block_txs": (10_000, 1, 100_000),
    "min_fee": (1_000, 0, MAX_AMOUNT),  # units
    # basis points of each fee burned; the rest to the proposer
    "fee_burn_share": (2_000, 0, BPS),
    # How a paid query is split (basis points of the charge; the six sum to 10,000).
    "fee_split_creator": (3_000, 0, BPS),
    "fee_split_generator": (3_500, 0, BPS),
    "fee_split_checker": (1_500, 0, BPS),
    "fee_split_validators": (1_000, 0, BPS),  # into the validator pool
    "fee_split_backers": (500, 0, BPS),  # the model's backers pro rata (the creator if none)
    "fee_split_burn": (500, 0, BPS),
    # Miners.
    "miner_min_bond": (10 * UNITS_PER_DN, 1, MAX_AMOUNT),  # units
    "unbonding_blocks": (100, 1, 1_000_000),  # an exited miner's bond comes back after this
    "ticket_window_blocks": (100, 1, 100_000),  # how far a ticket's ref_height may lag its block
    # An escrow withdrawal completes this many blocks after it (dn/chain/escrow.py), and never
    # sooner than ticket_window_blocks + 1, so every ticket accepted before it can settle from it.
    "escrow_unlock_blocks": (200, 2, 1_000_000),
    # Staking (backing a model, delegating to a validator); unstaked funds wait unbonding_blocks.
    "stake_min": (UNITS_PER_DN, 1, MAX_AMOUNT),  # units: the least stake, and the least left
    # PoWR (DESIGN.md section 8): epoch e is heights e*epoch_blocks+1 … (e+1)*epoch_blocks,
    # commits in its first half, reveals in its second (dn/chain/epochs.py).
    "epoch_blocks": (100, 4, 1_000_000),
    # units of stake a genesis validator counts for by itself (its bond and delegations add)
    "validator_base_weight": (UNITS_PER_DN, 1, MAX_AMOUNT),
    # the least bond of a validator that joins after genesis (dn/chain/validators.py)
    "validator_min_bond": (100 * UNITS_PER_DN, 1, MAX_AMOUNT),
    # Downtime jailing (dn/chain/jailing.py): a validator that misses more than this share of
    # its turns in an epoch leaves the set at the next boundary (10,000: never), losing this
    # share of its bond (slash_pool_bps of it to the validator pool, the rest burned).
    "jail_max_missed_bps": (5_000, 0, BPS),
    "jail_slash_bps": (100, 0, BPS),
    # The epoch close: emission and its halving, how it is shared, and how validators' scores
    # are clipped and judged (the powr_* parameters, defined in dn/powr/params.py).
    **POWR_PARAMS,
    # The checker's verification thresholds (DESIGN.md section 7; read by the runner).
    "check_max_rank": (64, 0, 1_000_000),  # every claimed token within this rank …
    "check_max_gap_milli": (8_000, 0, 1_000_000),  # … and this logit gap (thousandths)
    "check_min_top1_bps": (3_000, 0, BPS),  # share of tokens that are the checker's top-1
    "check_max_mean_gap_milli": (2_000, 0, 1_000_000),  # mean logit gap (thousandths)
    # Disputes (dn/chain/disputes.py): validators re-check every rejected task and this share of
    # confirmed ones, within this many blocks of settlement (never longer than unbonding_blocks,
    # so a miner cannot exit and take its bond back before it is judged); a miner at fault loses
    # slash_bps of its bond, of which slash_pool_bps goes to the validator pool, the rest burned.
    "spot_check_bps": (1_000, 0, BPS),
    "dispute_window_blocks": (50, 1, 1_000_000),
    "slash_bps": (2_000, 0, BPS),
    "slash_pool_bps": (5_000, 0, BPS),
    # A ruling needs the votes of validators holding this share of the voice of those that may
    # vote on the task (more than half, so two rulings can never both have a quorum); each
    # validator whose vote the ruling overturns loses verdict_slash_bps of its bond.
    "dispute_quorum_bps": (5_001, 5_001, BPS),
    "verdict_slash_bps": (100, 0, BPS),
    # How far an honest checker's committed values may differ from a validator's own
    # (dn/runner/check.py `Drift`): per-token gap, and mean |logit| difference (thousandths).
    "dispute_max_gap_milli": (4_000, 0, 1_000_000),
    "dispute_max_mean_logit_milli": (1_000, 0, 1_000_000),
}

FEE_SPLIT = (
    "fee_split_creator",
    "fee_split_generator",
    "fee_split_checker",
    "fee_split_validators",
    "fee_split_backers",
    "fee_split_burn",
)

POWR_SHARES = ("powr_creator_share_bps", "powr_miner_share_bps", "powr_backer_share_bps")

_NETWORK_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


def default_params(**overrides: int) -> dict[str, int]:
    params = {name: spec[0] for name, spec in PARAMS.items()}
    params.update(overrides)
    return params


def fee_split_problem(params: Mapping[str, int]) -> str | None:
    """Why the `fee_split_*` shares in `params` (defaults for those missing) are not a whole,
    or None when they sum to exactly 10,000 basis points."""
    total = sum(params.get(name, PARAMS[name][0]) for name in FEE_SPLIT)
    if total == BPS:
        return None
    return f"the fee_split_* shares must sum to {BPS} basis points, got {total}"


def powr_share_problem(params: Mapping[str, int]) -> str | None:
    """Why the three `powr_*_share_bps` that split a model's reward (defaults for those missing)
    are not a whole, or None when they sum to exactly 10,000 basis points."""
    total = sum(params.get(name, PARAMS[name][0]) for name in POWR_SHARES)
    if total == BPS:
        return None
    return f"the {', '.join(POWR_SHARES)} shares must sum to {BPS} basis points, got {total}"


def params_problem(params: Mapping[str, int]) -> str | None:
    """The first reason the shares in `params` do not add up, or None."""
    return fee_split_problem(params) or powr_share_problem(params)


def checked_params(overrides: Mapping[str, int]) -> dict[str, int]:
    """The default params with `overrides`, each a known name with a value in its range, and the
    fee split and the PoWR shares each summing to 10,000; InputError (naming the known names,
    the allowed range, or the split's total) for any that is not."""
    for name, value in overrides.items():
        if name not in PARAMS:
            raise InputError(
                f"unknown genesis parameter {name!r}; known parameters: {', '.join(PARAMS)}"
            )
        _, low, high = PARAMS[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InputError(
                f"genesis parameter {name} must be an integer from {low} to {high}, got {value!r}"
            )
    params = default_params(**overrides)
    problem = params_problem(params)
    if problem is not None:
        raise InputError(f"genesis parameters: {problem}")
    return params


@dataclass(frozen=True)
class Genesis:
    doc: dict[str, Any]

    @classmethod
    def build(
        cls,
        *,
        network: str,
        time_ms: int,
        validators: list[str],
        allocations: dict[str, int],
        params: dict[str, int] | None = None,
        escrows: dict[str, int] | None = None,
    ) -> Genesis:
        """`escrows`: units set aside at genesis in each address's query escrow
        (dn/chain/escrow.py), on top of `allocations`; written only when there are some, so a
        genesis without them keeps its hash."""
        doc: dict[str, Any] = {
            "format": FORMAT,
            "network": network,
            "time": time_ms,
            "validators": sorted(validators),
            "allocations": dict(sorted(allocations.items())),
            "params": params if params is not None else default_params(),
        }
        if escrows:
            doc["escrows"] = dict(sorted(escrows.items()))
        return cls.from_json(doc)

    @classmethod
    def from_json(cls, doc: Any) -> Genesis:
        _validate(doc)
        return cls(doc)

    @classmethod
    def load(cls, path: Path) -> Genesis:
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise GenesisError(f"no genesis file at {path}") from None
        except ValueError as exc:
            raise GenesisError(f"{path} is not valid JSON: {exc}") from None
        return cls.from_json(doc)

    def save(self, path: Path) -> None:
        """Write the file whole or not at all (temp file, fsync, rename): a crash never leaves
        a half-written genesis that a node would refuse to start from."""
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, (json.dumps(self.doc, indent=2, sort_keys=True) + "\n").encode())

    @cached_property
    def hash(self) -> str:
        return hash_hex(self.doc)

    @cached_property
    def chain_id(self) -> str:
        return f"{self.doc['network']}-{self.hash[:12]}"

    @property
    def network(self) -> str:
        return str(self.doc["network"])

    @property
    def time(self) -> int:
        return int(self.doc["time"])

    @property
    def validators(self) -> list[str]:
        return list(self.doc["validators"])

    @property
    def allocations(self) -> dict[str, int]:
        return dict(self.doc["allocations"])

    @property
    def escrows(self) -> dict[str, int]:
        """Query escrows funded at genesis (none in most files)."""
        return dict(self.doc.get("escrows", {}))

    @property
    def supply(self) -> int:
        return sum(self.doc["allocations"].values()) + sum(self.escrows.values())

    def param(self, name: str) -> int:
        """The value of parameter `name`: the file's, or the default where the file has none."""
        return int(self.doc["params"].get(name, PARAMS[name][0]))

    @property
    def params(self) -> dict[str, int]:
        """Every parameter with its value in force (defaults filled in)."""
        return {name: self.param(name) for name in PARAMS}

    @cached_property
    def empty_txs_root(self) -> str:
        return merkle_root([]).hex()


def _validate(doc: Any) -> None:
    if not isinstance(doc, dict):
        raise GenesisError("genesis must be a JSON object")
    expected = {"format", "network", "time", "validators", "allocations", "params"}
    if doc.keys() - {"escrows"} != expected:
        raise GenesisError(
            f"genesis must have exactly the fields {sorted(expected)} (and optionally escrows)"
        )
    if doc["format"] != FORMAT:
        raise GenesisError(f"unsupported genesis format {doc['format']!r}")
    if not isinstance(doc["network"], str) or not _NETWORK_RE.match(doc["network"]):
        raise GenesisError("network must be lowercase letters, digits and '-', at most 32")
    if isinstance(doc["time"], bool) or not isinstance(doc["time"], int) or doc["time"] < 0:
        raise GenesisError("time must be milliseconds since the epoch")
    validators = doc["validators"]
    if not isinstance(validators, list) or not validators:
        raise GenesisError("genesis needs at least one validator")
    if len(set(validators)) != len(validators) or validators != sorted(validators):
        raise GenesisError("validators must be sorted and unique")
    allocations = doc["allocations"]
    if not isinstance(allocations, dict):
        raise GenesisError("allocations must map addresses to amounts")
    try:
        for address in [*validators, *allocations]:
            pubkey_from_address(address)
    except DNError as exc:
        raise GenesisError(f"genesis: {exc.message}") from None
    for address, amount in allocations.items():
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= MAX_AMOUNT:
            raise GenesisError(f"allocation for {address} must be a positive integer of units")
    escrows = doc.get("escrows", {})
    if not isinstance(escrows, dict):
        raise GenesisError("escrows must map addresses to amounts")
    for address, amount in escrows.items():
        try:
            pubkey_from_address(address)
        except DNError as exc:
            raise GenesisError(f"genesis escrows: {exc.message}") from None
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= MAX_AMOUNT:
            raise GenesisError(f"escrow for {address} must be a positive integer of units")
    if sum(allocations.values()) + sum(escrows.values()) > MAX_AMOUNT:
        raise GenesisError("total allocations must stay below 2^63 units")
    params = doc["params"]
    if not isinstance(params, dict):
        raise GenesisError("params must map parameter names to integers")
    unknown = sorted(params.keys() - PARAMS.keys())
    if unknown:
        raise GenesisError(f"unknown params {unknown}; known: {sorted(PARAMS)}")
    for name, value in params.items():
        _, low, high = PARAMS[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise GenesisError(f"param {name} must be an integer from {low} to {high}")
    problem = params_problem(params)
    if problem is not None:
        raise GenesisError(f"genesis params: {problem}")
