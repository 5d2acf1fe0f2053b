"""PoWR consensus at an epoch boundary (DESIGN.md section 8), as pure integer arithmetic.

No I/O, no clock, no floats: every number that reaches the chain state is an integer, so every
node computes the same rewards to the unit (units and parameters: `dn.powr.params`).
`close_epoch` is the one entry point the state machine calls; the pieces below it are public so
that the CLI and tests can show and check each step. Step 4, who is paid what, is
`dn.powr.emission`.

What validators reveal. Each validator reveals, per model, the quality q it measured with the
benchmark suites. Success and demand are not revealed: the chain saw them itself, so there is
nothing to disagree about, and the formula is applied once, to the consensus quality.

1. Consensus quality (`clip`). What weighs here is each validator's *voice*
   (`EpochInputs.voices`; the chain gives every validator the voice of one minimum bond, see
   dn/chain/powr_rules.py): more stake earns more reward, never more say over a model's
   quality, so one newcomer's bond cannot outweigh the genesis set. Per model, the consensus
   median M is the voice-weighted median of the revealed q (`weighted_median`: the *lower*
   weighted median, the smallest revealed value at or below which sits at least half the
   voice). Each validator's q is clipped into [M - band, M + band] (`powr_clip_band_ppm`) in
   both directions, so a validator can neither inflate a friend's model nor bury a rival's by
   more than the band. The model's quality is the voice-weighted mean of the clipped scores,
   rounded down; with band 0 it is the median. Bound, tested: if validators holding more than
   half of the voice reveal the same h for a model, any other validators together holding
   voice share W move its quality at most ceil(W x band) away from h, whatever they reveal (an
   unclipped mean: W x PPM).
   Quorum: a model has a consensus only if the validators that scored it hold at least
   `powr_quorum_bps` of the voice of the whole set (missing validators included). A model that
   no quorum scored (say, one only its creator's validator can evaluate, because nobody else
   can fetch its file) has no consensus and quality 0, and does not count in anyone's
   agreement.

2. Score (`powr_score`), the one formula:

       score = q * (W_Q * PPM + W_S * s + W_D * d) // (BPS * PPM)
       W_Q = 5,000   W_S = 2,500   W_D = 2,500   (basis points, summing to 10,000)
       s = min((confirmed + 1) * PPM // (tasks + 2), PPM / 2)       (`success_ppm`)
       d = min(PPM, U * W_Q * PPM // (P * W_D)), 0 when P is 0      (`demand_ppm`)
       U = `usage_bound(burned)`: `powr_usage_cap_bps` of what the fee split of the model's
           confirmed tasks burned in the epoch;  P = the models' pot, E - E *
           `powr_validator_share_bps` // BPS

   s is Laplace's rule of succession, capped at the neutral 50 %: a model with no tasks gets
   50 %, and one with more rejected tasks than confirmed ones less (one failed task does not
   zero it). Properties, tested: the score never falls when q, s or d rises; q = 0 gives 0;
   score <= q; a model with no tasks keeps 5/8 of its quality (q * 0.625), so it still earns.

   Why d is *paid for*, not a share, and s only ever a penalty: both moved emission with tasks,
   and tasks can be washed (issue 11, attack 3: a consumer that runs both miners confirms its
   own tasks). A confirmation proves nothing, so success above neutral earns nothing; a
   rejection an honest checker made still costs. Raising a model's score by x moves to it at
   most P * x / a of the pot, a >= q * W_Q its score before, so demand d moves at most
   P * d * W_D / W_Q <= U. With the miners' part capped at U (`dn.powr.emission`), a
   self-dealer who is consumer, both miners, creator and sole backer gets back at most 2U of
   what it burned, up to the ppm steps of d and the score (a step is worth at most P / 10^6).
   Residual: tasks confirmed at any price can lift a model whose success is below 50 % back
   toward 50 %, never above it.

3. Agreement (`agreement`). With span = `powr_agreement_span_ppm`, over the n models that have
   a consensus median M_m, validator v with raw revealed score r_vm gets

       agreement_v = sum_m max(0, span - |r_vm - M_m|) * PPM // (span * n)

   in [0, PPM]: full marks for revealing the median, falling linearly to nothing at `span`
   away. A model it did not score counts as 0 (skipping hard models does not pay), and a
   validator in the set that revealed nothing is *missing*: agreement 0.

4. Emission and its split: `dn.powr.emission`.

Everything is ordered by address or model id, never by the order of a mapping, and scaling
every validator stake (or every backer stake) by the same positive factor changes no result
(the units miners' tasks burned are money, not weights: they set the usage cap).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from dn.encoding import BPS, MAX_AMOUNT
from dn.errors import InputError
from dn.powr.emission import Credit, ModelEpoch, epoch_emission, split_emission, usage_bound
from dn.powr.params import PPM, EpochParams, check_int

# The score formula's weights (basis points, summing to BPS): fixed here, in one place.
SCORE_WEIGHT_QUALITY_BPS = 5_000
SCORE_WEIGHT_SUCCESS_BPS = 2_500
SCORE_WEIGHT_DEMAND_BPS = 2_500


# --- the score ----------------------------------------------------------------------------------


def success_ppm(confirmed: int, tasks: int) -> int:
    """Task success s by Laplace's rule of succession, (confirmed + 1) / (tasks + 2) in PPM:
    500,000 for a model with no tasks, the observed rate as tasks accumulate."""
    check_int(tasks, 0, MAX_AMOUNT, "tasks")
    check_int(confirmed, 0, tasks, "confirmed tasks")
    return (confirmed + 1) * PPM // (tasks + 2)


def demand_ppm(usage: int, model_pot: int) -> int:
    """Demand d in PPM: what the model's usage paid for (`usage`: `usage_bound` of what its
    tasks burned) against the models' pot, min(PPM, usage * W_Q * PPM // (model_pot * W_D)),
    0 when the pot is 0. Demand this big moves at most `usage` units of the pot to the model."""
    check_int(usage, 0, MAX_AMOUNT, "paid-for usage")
    whole = check_int(model_pot, 0, MAX_AMOUNT, "the models' pot") * SCORE_WEIGHT_DEMAND_BPS
    return min(PPM, usage * SCORE_WEIGHT_QUALITY_BPS * PPM // whole) if whole else 0


def powr_score(quality_ppm: int, success_ppm: int, demand_ppm: int) -> int:
    """The PoWR score in PPM: q * (W_Q * PPM + W_S * s + W_D * d) // (BPS * PPM).

    Non-decreasing in each argument, 0 when q is 0, never above q. `success_ppm` should come from
    `success_ppm()` so that a model without tasks gets the neutral value."""
    q = check_int(quality_ppm, 0, PPM, "quality")
    s = check_int(success_ppm, 0, PPM, "success")
    d = check_int(demand_ppm, 0, PPM, "demand")
    mix = (
        SCORE_WEIGHT_QUALITY_BPS * PPM + SCORE_WEIGHT_SUCCESS_BPS * s + SCORE_WEIGHT_DEMAND_BPS * d
    )
    return q * mix // (BPS * PPM)


# --- medians, clipping, agreement ----------------------------------------------------------------


def weighted_median(values_and_stakes: Iterable[tuple[int, int]]) -> int:
    """The lower stake-weighted median: the smallest value v such that the values <= v hold at
    least half of the total stake. Entries with stake 0 are ignored; the order of the entries
    does not matter, nor does scaling every stake by the same factor. The result is always one
    of the values. InputError for a negative stake or no positive stake at all."""
    pairs = []
    for value, stake in values_and_stakes:
        if stake < 0:
            raise InputError(f"stakes must not be negative, got {stake}")
        if stake:
            pairs.append((value, stake))
    total = sum(stake for _, stake in pairs)
    if total == 0:
        raise InputError("a weighted median needs some positive stake")
    pairs.sort()
    running = 0
    for value, stake in pairs:
        running += stake
        if 2 * running >= total:
            return value
    raise AssertionError("unreachable: the running stake reaches the total")


@dataclass(frozen=True)
class ClippedScore:
    """One validator's revealed score for one model, before and after clipping."""

    validator: str
    stake: int
    raw_ppm: int
    clipped_ppm: int


@dataclass(frozen=True)
class ModelConsensus:
    """The consensus on one model's quality: the median of the raw scores, and the quality, the
    stake-weighted mean of the clipped scores (rounded down)."""

    model: str
    median_ppm: int
    quality_ppm: int
    scores: tuple[ClippedScore, ...]  # by validator address


def clip(
    scores_by_validator: Mapping[str, Mapping[str, int]],
    stakes: Mapping[str, int],
    band_ppm: int,
    quorum_bps: int = 1,
) -> dict[str, ModelConsensus]:
    """Per model (sorted by id): the weighted median of the revealed scores, each score clipped
    into [median - band, median + band] and the weighted mean of those.

    `scores_by_validator` is {validator: {model: score in PPM}}; `stakes` gives each validator
    of the set its weight here (its voice); only validators with a positive weight count. Models
    that the validators holding `quorum_bps` of the total weight did not score are left out."""
    check_int(band_ppm, 0, PPM, "the clip band")
    check_int(quorum_bps, 1, BPS, "the quorum")
    by_model: dict[str, list[tuple[str, int, int]]] = {}
    total_weight = 0
    for validator in sorted(stakes):
        total_weight += check_int(stakes[validator], 0, MAX_AMOUNT, f"stake of {validator}")
    for validator in sorted(scores_by_validator):
        stake = check_int(stakes.get(validator, 0), 0, MAX_AMOUNT, f"stake of {validator}")
        if not stake:
            continue
        for model, raw in scores_by_validator[validator].items():
            check_int(raw, 0, PPM, f"score of {validator} for {model}")
            by_model.setdefault(model, []).append((validator, stake, raw))
    out: dict[str, ModelConsensus] = {}
    for model in sorted(by_model):
        entries = by_model[model]  # in validator order: the outer loop is sorted
        scored = sum(stake for _, stake, _ in entries)
        if scored * BPS < total_weight * quorum_bps:
            continue  # no quorum: no consensus
        median = weighted_median((raw, stake) for _, stake, raw in entries)
        low, high = max(0, median - band_ppm), min(PPM, median + band_ppm)
        scores = tuple(
            ClippedScore(validator, stake, raw, min(max(raw, low), high))
            for validator, stake, raw in entries
        )
        total = sum(s.stake for s in scores)
        quality = sum(s.stake * s.clipped_ppm for s in scores) // total
        out[model] = ModelConsensus(model, median, quality, scores)
    return out


def agreement(
    scores_by_validator: Mapping[str, Mapping[str, int]],
    consensus: Mapping[str, ModelConsensus],
    validators: Iterable[str],
    span_ppm: int,
) -> dict[str, int]:
    """Each validator's agreement with consensus in [0, PPM] (by address):
    sum over the models of `consensus` of max(0, span - |raw - median|) * PPM // (span * n).
    A model it did not score counts as 0; a validator that revealed nothing gets 0."""
    check_int(span_ppm, 1, PPM, "the agreement span")
    n = len(consensus)
    out: dict[str, int] = {}
    for validator in sorted(validators):
        revealed = scores_by_validator.get(validator) or {}
        close = 0
        for model, found in consensus.items():
            raw = revealed.get(model)
            if raw is not None:
                check_int(raw, 0, PPM, f"score of {validator} for {model}")
                close += max(0, span_ppm - abs(raw - found.median_ppm))
        out[validator] = close * PPM // (span_ppm * n) if n else 0
    return out


# --- the epoch ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpochInputs:
    """Everything an epoch's close needs, as the chain holds it at the boundary."""

    epoch: int
    # {validator: {model: quality in PPM}}, the reveals that arrived in time
    scores: Mapping[str, Mapping[str, int]]
    # the validator set of the epoch: address -> stake (bond and delegations)
    validator_stakes: Mapping[str, int]
    # every model of the epoch: model id -> what the chain saw of it
    models: Mapping[str, ModelEpoch]
    # validator -> {delegator: stake}: who shares each validator's reward (the validator's own
    # weight is its stake less these)
    delegations: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    # the validator set's say over models' quality (step 1); None: their stakes
    voices: Mapping[str, int] | None = None


@dataclass(frozen=True)
class ModelResult:
    model: str
    creator: str
    median_ppm: int | None  # None: no validator with stake scored it
    quality_ppm: int
    success_ppm: int
    demand_ppm: int
    score_ppm: int
    reward: int  # the model's part of the emission: creator, miners and backers together
    scores: tuple[ClippedScore, ...]
    capped: int = 0  # its miners' part over the usage cap: not minted (in `unpaid`)


@dataclass(frozen=True)
class ValidatorResult:
    address: str
    stake: int
    revealed: bool  # False: missing, agreement 0
    agreement_ppm: int
    reward: int


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    emission: int
    models: tuple[ModelResult, ...]  # by model id
    validators: tuple[ValidatorResult, ...]  # by address
    credits: tuple[Credit, ...]  # validators by address, then models by id
    unpaid: int  # not minted; paid + unpaid == emission

    @property
    def paid(self) -> int:
        return sum(credit.amount for credit in self.credits)

    @property
    def missing(self) -> tuple[str, ...]:
        """Validators of the set that revealed nothing (or too late)."""
        return tuple(v.address for v in self.validators if not v.revealed)

    def to_json(self) -> dict[str, Any]:
        """Integers, strings, booleans and None only: what `--json` and the HTTP API show."""
        return {
            "epoch": self.epoch,
            "emission": self.emission,
            "paid": self.paid,
            "unpaid": self.unpaid,
            "missing": list(self.missing),
            "models": [
                {
                    "model": m.model,
                    "creator": m.creator,
                    "median_ppm": m.median_ppm,
                    "quality_ppm": m.quality_ppm,
                    "success_ppm": m.success_ppm,
                    "demand_ppm": m.demand_ppm,
                    "score_ppm": m.score_ppm,
                    "reward": m.reward,
                    "capped": m.capped,
                    "scores": [asdict(s) for s in m.scores],
                }
                for m in self.models
            ],
            "validators": [asdict(v) for v in self.validators],
            "credits": [
                {k: v for k, v in asdict(c).items() if k != "validator" or v is not None}
                for c in self.credits
            ],
        }


def close_epoch(inputs: EpochInputs, params: EpochParams) -> EpochResult:
    """The PoWR outcome of an epoch: consensus quality, score and reward of every model,
    agreement and reward of every validator, and every credit. Pure and deterministic.

    Reveals from addresses outside `validator_stakes` and scores for models outside `models` are
    ignored. InputError for any number out of range."""
    check_int(inputs.epoch, 0, MAX_AMOUNT, "epoch")
    stakes = {
        v: check_int(stake, 0, MAX_AMOUNT, f"stake of validator {v}")
        for v, stake in sorted(inputs.validator_stakes.items())
    }
    for model, info in inputs.models.items():
        info.check(model)
    scores = {
        validator: {m: raw for m, raw in revealed.items() if m in inputs.models}
        for validator, revealed in inputs.scores.items()
        if validator in stakes
    }

    voices = stakes
    if inputs.voices is not None:
        voices = {
            v: check_int(inputs.voices.get(v, 0), 0, MAX_AMOUNT, f"voice of validator {v}")
            for v in stakes
        }
    consensus = clip(scores, voices, params.clip_band_ppm, params.quorum_bps)
    agreements = agreement(scores, consensus, stakes, params.agreement_span_ppm)

    emission = epoch_emission(inputs.epoch, params.epoch_emission, params.halving_epochs)
    model_pot = emission - emission * params.validator_share_bps // BPS
    quality, success, demand, score = {}, {}, {}, {}
    for model in sorted(inputs.models):
        info = inputs.models[model]
        found = consensus.get(model)
        quality[model] = found.quality_ppm if found else 0
        success[model] = min(success_ppm(info.confirmed, info.tasks), PPM // 2)
        demand[model] = demand_ppm(usage_bound(info.burned, params), model_pot)
        score[model] = powr_score(quality[model], success[model], demand[model])

    weights = {v: stake * agreements[v] for v, stake in stakes.items()}
    own = {v: stake - sum(inputs.delegations.get(v, {}).values()) for v, stake in stakes.items()}
    split = split_emission(emission, weights, score, inputs.models, params, inputs.delegations, own)

    validator_reward = dict(split.validator_rewards)  # before the delegators' shares
    model_reward: dict[str, int] = {}
    for credit in split.credits:
        if credit.model is not None:
            model_reward[credit.model] = model_reward.get(credit.model, 0) + credit.amount
    models = tuple(
        ModelResult(
            model=model,
            creator=inputs.models[model].creator,
            median_ppm=consensus[model].median_ppm if model in consensus else None,
            quality_ppm=quality[model],
            success_ppm=success[model],
            demand_ppm=demand[model],
            score_ppm=score[model],
            reward=model_reward.get(model, 0),
            scores=consensus[model].scores if model in consensus else (),
            capped=split.capped.get(model, 0),
        )
        for model in sorted(inputs.models)
    )
    validators = tuple(
        ValidatorResult(
            address=v,
            stake=stake,
            revealed=v in scores,
            agreement_ppm=agreements[v],
            reward=validator_reward.get(v, 0),
        )
        for v, stake in stakes.items()
    )
    return EpochResult(inputs.epoch, emission, models, validators, split.credits, split.unpaid)
