"""The genesis file: allocations, initial validators and every economic parameter.

`chain_id` is derived from the genesis hash, so two networks can never mix: a transaction signed
for one is invalid on every other. All numbers are integers; shares are in basis points
(1/10,000).
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
from dn.encoding import MAX_AMOUNT, hash_hex, merkle_root, pubkey_from_address
from dn.errors import DNError, GenesisError, InputError

FORMAT = 1
ZERO_HASH = "0" * 64

# name: (default, minimum, maximum)
PARAMS: dict[str, tuple[int, int, int]] = {
    "block_time_ms": (1000, 50, 600_000),  # a block at most this often when there is work
    "max_block_interval_ms": (30_000, 1000, 3_600_000),  # and at least this often regardless
    "max_future_ms": (15_000, 0, 600_000),  # how far ahead of a node's clock a block may be
    "max_block_txs": (10_000, 1, 100_000),
    "min_fee": (1_000, 0, MAX_AMOUNT),  # units
    "fee_burn_share": (
        2_000,
        0,
        10_000,
    ),  # basis points of each fee burned; the rest to the proposer
}

_NETWORK_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


def default_params(**overrides: int) -> dict[str, int]:
    params = {name: spec[0] for name, spec in PARAMS.items()}
    params.update(overrides)
    return params


def checked_params(overrides: Mapping[str, int]) -> dict[str, int]:
    """The default params with `overrides`, each a known name with a value in its range;
    InputError (naming the known names, or the allowed range) for any that is not."""
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
    return default_params(**overrides)


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
    ) -> Genesis:
        doc = {
            "format": FORMAT,
            "network": network,
            "time": time_ms,
            "validators": sorted(validators),
            "allocations": dict(sorted(allocations.items())),
            "params": params if params is not None else default_params(),
        }
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
    def supply(self) -> int:
        return sum(self.doc["allocations"].values())

    def param(self, name: str) -> int:
        return int(self.doc["params"][name])

    @cached_property
    def empty_txs_root(self) -> str:
        return merkle_root([]).hex()


def _validate(doc: Any) -> None:
    if not isinstance(doc, dict):
        raise GenesisError("genesis must be a JSON object")
    expected = {"format", "network", "time", "validators", "allocations", "params"}
    if doc.keys() != expected:
        raise GenesisError(f"genesis must have exactly the fields {sorted(expected)}")
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
    if sum(allocations.values()) > MAX_AMOUNT:
        raise GenesisError("total allocations must stay below 2^63 units")
    params = doc["params"]
    if not isinstance(params, dict) or params.keys() != PARAMS.keys():
        raise GenesisError(f"params must have exactly {sorted(PARAMS)}")
    for name, (_, low, high) in PARAMS.items():
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise GenesisError(f"param {name} must be an integer from {low} to {high}")
