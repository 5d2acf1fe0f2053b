"""The units and parameters of a PoWR epoch (DESIGN.md section 8).

Scores are parts per million (`PPM` = 1,000,000 is a perfect score), shares are basis points
(`dn.encoding.BPS` = 10,000), money is in units (1 DN = 10^9). `POWR_PARAMS` defines the genesis
parameters named `powr_*` (`dn.chain.genesis.PARAMS` takes them from here, with every other
parameter); `EpochParams` holds their values, each checked against its range. Used by
`dn.powr.consensus` (scores and the epoch's close) and `dn.powr.emission` (who is paid what).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from dn.encoding import BPS, MAX_AMOUNT, UNITS_PER_DN
from dn.errors import InputError

PPM = 1_000_000  # a perfect score

# The genesis parameters the PoWR epoch reads: name: (default, minimum, maximum). The epoch
# close (dn/powr/consensus.py, emission.py): emission and its halving, how it is shared, and how
# validators' scores are clipped and judged. Shares in basis points, scores in ppm. Across
# parameters, the shares of a model's reward sum to BPS and the emission of all epochs, under
# 2 * powr_epoch_emission * powr_halving_epochs, must leave the supply below 2^63 units.
POWR_PARAMS: dict[str, tuple[int, int, int]] = {
    "powr_epoch_emission": (50 * UNITS_PER_DN, 0, MAX_AMOUNT),  # units minted in epochs 0, 1, …
    "powr_halving_epochs": (10_000, 1, 1_000_000_000),  # … halved every this many epochs
    "powr_validator_share_bps": (2_000, 0, BPS),  # of the emission, to validators
    "powr_creator_share_bps": (3_000, 0, BPS),  # of a model's part, to its creator
    "powr_miner_share_bps": (5_000, 0, BPS),  # … to its miners by confirmed tokens served
    "powr_backer_share_bps": (2_000, 0, BPS),  # … to its backers by stake (the creator if none)
    "powr_clip_band_ppm": (100_000, 0, PPM),  # scores clipped to the median ± this
    "powr_agreement_span_ppm": (200_000, 1, PPM),  # agreement reaches 0 this far from the median
    # a model has a consensus only if validators with this share of the set's voice scored it
    "powr_quorum_bps": (5_000, 1, BPS),
    # The usage-tied emission is bounded by what was paid for: a model's miners' pot, and what
    # its demand moves to it, are each worth at most this share U of the units its confirmed
    # tasks burned (dn/powr/emission.py, consensus.py). A self-dealer who is consumer, both
    # miners, creator and sole backer at once gets back at most 2U of what it burns: at 5,000
    # all of it (up to the ppm steps of the score), so no more is allowed; the default 3,333
    # keeps a third of every washed burn lost, a margin over those steps and the rounding.
    "powr_usage_cap_bps": (3_333, 0, 5_000),
}


def check_int(value: object, low: int, high: int, what: str) -> int:
    """`value` if it is an int (not a bool) from `low` to `high`; InputError naming `what`."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"{what} must be an integer from {low} to {high}, got {value!r}")
    return value


# --- parameters -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpochParams:
    """The economic parameters of an epoch; field `x` is genesis parameter `powr_x`."""

    epoch_emission: int = POWR_PARAMS["powr_epoch_emission"][0]
    halving_epochs: int = POWR_PARAMS["powr_halving_epochs"][0]
    validator_share_bps: int = POWR_PARAMS["powr_validator_share_bps"][0]
    creator_share_bps: int = POWR_PARAMS["powr_creator_share_bps"][0]
    miner_share_bps: int = POWR_PARAMS["powr_miner_share_bps"][0]
    backer_share_bps: int = POWR_PARAMS["powr_backer_share_bps"][0]
    clip_band_ppm: int = POWR_PARAMS["powr_clip_band_ppm"][0]
    agreement_span_ppm: int = POWR_PARAMS["powr_agreement_span_ppm"][0]
    quorum_bps: int = POWR_PARAMS["powr_quorum_bps"][0]
    usage_cap_bps: int = POWR_PARAMS["powr_usage_cap_bps"][0]

    def __post_init__(self) -> None:
        for f in fields(self):
            _, low, high = POWR_PARAMS[f"powr_{f.name}"]
            check_int(getattr(self, f.name), low, high, f"powr_{f.name}")
        shares = self.creator_share_bps + self.miner_share_bps + self.backer_share_bps
        if shares != BPS:
            raise InputError(
                "powr_creator_share_bps + powr_miner_share_bps + powr_backer_share_bps must "
                f"sum to {BPS} basis points, got {shares}"
            )

    @classmethod
    def from_params(cls, params: Mapping[str, int]) -> EpochParams:
        """From a genesis params mapping (`Genesis.params`); defaults for names it lacks."""
        return cls(
            **{
                f.name: params.get(f"powr_{f.name}", POWR_PARAMS[f"powr_{f.name}"][0])
                for f in fields(cls)
            }
        )
