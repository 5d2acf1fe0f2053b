"""PoWR on the chain (DESIGN.md section 8): the `powr.commit` and `powr.reveal` rules, the
per-epoch task statistics, and the epoch close that mints the emission.

Epochs. With E = `epoch_blocks`, epoch e covers heights [e*E + 1, (e+1)*E] (height 0 is
genesis). Its commit phase is the first E // 2 of those heights, its reveal phase the rest
(`epochs.Epoch`). Epoch e is closed at the start of block (e+1)*E + 1, the first of epoch e+1,
after that block's unlocks and before its transactions (`state.begin_block`).

    powr:<e>:commit:<validator>  the commitment hash (deleted when the epoch closes)
    powr:<e>:reveal:<validator>  {model sha: quality in ppm}, as revealed
    powr:<e>:errors:<validator>  {model sha: standard error of that quality in ppm}, as revealed
                                 (only for a reveal that carries `errors`)
    powr:<e>:stats:<model sha>   {"tasks", "confirmed", "tokens", "miners": {generator: tokens},
                                  "burned": {generator: units}}
                                 tasks settled in the epoch (`tokens`: paid tokens of confirmed
                                 tasks; `miners`: confirmed tokens by generator; `burned`: units
                                 their fee split burned, by generator: what bounds the
                                 usage-tied emission and weighs the miners in it,
                                 `dn.powr.emission`)
    powr:<e>:settled             [model sha, …] sorted: the models with stats (deleted at close)
    powr:<e>:result              the epoch's outcome (`result_record`), written at close

Rules, checks in order:
- `powr.commit` {epoch, commitment}: the sender is in the active validator set of the block
  (`validators.active`: the genesis validators, changed by bonds and unbonds at epoch
  boundaries; `not-validator`); the block is in the commit phase of `epoch` (`wrong-phase`,
  also for any other epoch); the sender has not committed this epoch (`already-committed`); no
  other active validator committed the same hash this epoch (`copied-commitment`).
- `powr.reveal` {epoch, scores, salt, errors?}: the sender is an active validator
  (`not-validator`); the block is in the reveal phase of `epoch` (`wrong-phase`); the sender
  committed this epoch (`no-commitment`) and has not revealed (`already-revealed`); `errors`,
  when given, is an object whose models are exactly those of `scores` (`bad-errors`);
  `powr_commitment(epoch, sender, scores, salt, errors)` equals the commitment
  (`reveal-mismatch`); every scored model is registered (`unknown-model`). The commitment binds
  the validator's own address, so a copied commitment can never be revealed by the copier, and
  binds the errors too when there are any.

Standard errors. A reveal may carry, per model, the standard error of the quality it reveals
(the sample standard deviation of the item grades over sqrt(n), in ppm; `dn.powr.grading`).
At the close, a model's `error` in the result record is the voice-weighted lower median of the
errors revealed for it (`consensus.weighted_median`, the same voices as the quality's median),
present only when some validator revealed one: a result of an epoch without errors is exactly as
before. Errors move no reward; they say which differences in the leaderboard mean something.

Scores are quality q in ppm only: success and demand are what the chain itself saw
(`dn.powr.consensus` explains why). A validator's stake in the close (`validator_stakes`) is
its own weight (`validators.own_weight`: `validator_base_weight` if it is a genesis validator,
plus its bond) plus what is delegated to it (`stake:<validator>:<address>`), capped at
`MAX_AMOUNT`; its reward is shared pro rata between itself, for its own weight, and its
delegators, for their stakes.
"""

from __future__ import annotations

from typing import Any

from dn.chain.epochs import COMMIT, REVEAL, Epoch
from dn.chain.genesis import Genesis
from dn.chain.ledger import MODEL, POOL_VALIDATORS, SUPPLY, Overlay, StateReader, credit
from dn.chain.staking import backers_of
from dn.chain.types import Tx
from dn.chain.validators import active, own_weight
from dn.encoding import MAX_AMOUNT, hash_hex
from dn.errors import InvalidTx
from dn.powr.consensus import EpochInputs, EpochResult, close_epoch, weighted_median
from dn.powr.emission import Credit, ModelEpoch, share_pool
from dn.powr.params import EpochParams

POWR = "powr:"


def commit_key(epoch: int, validator: str) -> str:
    return f"{POWR}{epoch}:commit:{validator}"


def reveal_key(epoch: int, validator: str) -> str:
    return f"{POWR}{epoch}:reveal:{validator}"


def stats_key(epoch: int, model: str) -> str:
    return f"{POWR}{epoch}:stats:{model}"


def settled_key(epoch: int) -> str:
    return f"{POWR}{epoch}:settled"


def result_key(epoch: int) -> str:
    return f"{POWR}{epoch}:result"


def errors_key(epoch: int, validator: str) -> str:
    return f"{POWR}{epoch}:errors:{validator}"


def powr_commitment(
    epoch: int,
    validator: str,
    scores: dict[str, int],
    salt: str,
    errors: dict[str, int] | None = None,
) -> str:
    """The hash a validator commits to before revealing `scores` (and their standard `errors`,
    when it reveals any) with `salt` (hex). Without errors it is the hash commitments always
    had."""
    doc: dict[str, Any] = {"epoch": epoch, "validator": validator, "scores": scores, "salt": salt}
    if errors is not None:
        doc["errors"] = errors
    return hash_hex(doc)


# --- rules ------------------------------------------------------------------------------------


def _check_validator(state: StateReader, tx: Tx, genesis: Genesis) -> None:
    if tx.sender not in active(state, genesis):
        raise InvalidTx(f"{tx.sender} is not a validator", reason="not-validator")


def _check_phase(tx: Tx, genesis: Genesis, height: int, phase: str) -> int:
    blocks = genesis.param("epoch_blocks")
    wanted = tx.payload["epoch"]
    now = Epoch.at(height, blocks)
    if wanted != now.number or now.phase(height) != phase:
        low, high = Epoch(wanted, blocks).heights(phase)
        raise InvalidTx(
            f"{phase}s for epoch {wanted} go in blocks {low} to {high}; block {height} is in "
            f"the {now.phase(height)} phase of epoch {now.number}",
            reason="wrong-phase",
        )
    return int(wanted)


def commit(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    _check_validator(state, tx, genesis)
    epoch = _check_phase(tx, genesis, height, COMMIT)
    if state.get(commit_key(epoch, tx.sender)) is not None:
        raise InvalidTx(
            f"the sender has committed for epoch {epoch} already", reason="already-committed"
        )
    commitment = tx.payload["commitment"]
    for other in active(state, genesis):
        if other != tx.sender and state.get(commit_key(epoch, other)) == commitment:
            raise InvalidTx(
                f"validator {other} committed this hash for epoch {epoch} already",
                reason="copied-commitment",
            )
    state.set(commit_key(epoch, tx.sender), commitment)


def reveal(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    _check_validator(state, tx, genesis)
    epoch = _check_phase(tx, genesis, height, REVEAL)
    committed = state.get(commit_key(epoch, tx.sender))
    if committed is None:
        raise InvalidTx(f"the sender made no commitment for epoch {epoch}", reason="no-commitment")
    if state.get(reveal_key(epoch, tx.sender)) is not None:
        raise InvalidTx(
            f"the sender has revealed for epoch {epoch} already", reason="already-revealed"
        )
    scores, salt = dict(tx.payload["scores"]), tx.payload["salt"]
    errors = tx.payload.get("errors")
    if "errors" in tx.payload and (errors is None or set(errors) != set(scores)):
        raise InvalidTx(
            "errors, when given, must give one standard error for each scored model",
            reason="bad-errors",
        )
    if powr_commitment(epoch, tx.sender, scores, salt, errors) != committed:
        raise InvalidTx(
            "these scores and salt do not hash to the sender's commitment",
            reason="reveal-mismatch",
        )
    for sha in sorted(scores):
        if state.get(MODEL + sha) is None:
            raise InvalidTx(f"no model {sha[:12]}… is registered", reason="unknown-model")
    state.set(reveal_key(epoch, tx.sender), dict(sorted(scores.items())))
    if errors is not None:
        state.set(errors_key(epoch, tx.sender), dict(sorted(errors.items())))


# --- task statistics --------------------------------------------------------------------------


def record_task(
    state: Overlay,
    genesis: Genesis,
    height: int,
    model: str,
    generator: str,
    tokens: int,
    *,
    confirmed: bool,
    burned: int = 0,
) -> None:
    """Count one settled task of `model` in the epoch of block `height` (`task.settle`), whose
    fee split `burned` units."""
    epoch = Epoch.at(height, genesis.param("epoch_blocks")).number
    key = stats_key(epoch, model)
    found = state.get(key)
    if found is None:
        found = {"tasks": 0, "confirmed": 0, "tokens": 0, "miners": {}}
        settled = state.get(settled_key(epoch)) or []
        state.set(settled_key(epoch), sorted({*settled, model}))
    miners, weights = dict(found["miners"]), dict(found.get("burned", {}))
    if confirmed:
        miners[generator] = miners.get(generator, 0) + tokens
        if burned:
            weights[generator] = weights.get(generator, 0) + burned
    state.set(
        key,
        {
            "tasks": found["tasks"] + 1,
            "confirmed": found["confirmed"] + int(confirmed),
            "tokens": found["tokens"] + (tokens if confirmed else 0),
            "miners": dict(sorted(miners.items())),
            "burned": dict(sorted(weights.items())),
        },
    )


def unrecord_task(
    state: Overlay,
    genesis: Genesis,
    height: int,
    settled: int,
    model: str,
    generator: str,
    tokens: int,
    burned: int = 0,
) -> None:
    """A verdict in block `height` found that a task confirmed in block `settled` was a bad
    answer: if its epoch is still open, count it as not confirmed (its tokens, and the units it
    `burned`, earn the generator no emission and no longer count as usage). A closed epoch is
    paid and stays as it was."""
    blocks = genesis.param("epoch_blocks")
    epoch = Epoch.at(settled, blocks).number
    if epoch != Epoch.at(height, blocks).number:
        return
    key = stats_key(epoch, model)
    found = state.get(key)
    if found is None:
        return
    miners, weights = dict(found["miners"]), dict(found.get("burned", {}))
    for held, amount in ((miners, tokens), (weights, burned)):
        left = held.get(generator, 0) - amount
        if left > 0:
            held[generator] = left
        else:
            held.pop(generator, None)
    state.set(
        key,
        {
            **found,
            "confirmed": max(0, found["confirmed"] - 1),
            "tokens": max(0, found["tokens"] - tokens),
            "miners": miners,
            "burned": weights,
        },
    )


# --- the epoch close --------------------------------------------------------------------------


def validator_stakes(state: StateReader, genesis: Genesis) -> dict[str, int]:
    """Each active validator's stake: its own weight (`validators.own_weight`: the base weight
    of a genesis validator, plus its bond) and what is delegated to it."""
    return {
        v: min(MAX_AMOUNT, own_weight(state, genesis, v) + sum(backers_of(state, v).values()))
        for v in active(state, genesis)
    }


def validator_voices(stakes: dict[str, int], genesis: Genesis) -> dict[str, int]:
    """Each validator's say over models' quality (the median, the clipped mean, the quorum):
    the voice of one minimum bond (`validator_min_bond`) each, a genesis validator's included
    whatever its stake, a validator with less stake than that only as much as it has. More
    stake earns more reward, never more say: one newcomer's minimum bond weighed 100 times a
    genesis validator's base weight and set every model's median alone."""
    cap = genesis.param("validator_min_bond")
    return {v: cap if v in genesis.validators else min(stake, cap) for v, stake in stakes.items()}


def epoch_inputs(state: StateReader, epoch: int, genesis: Genesis) -> EpochInputs:
    """What `close_epoch` needs, from the state at the end of `epoch`. The models are those with
    a task settled in the epoch or a revealed score; a retired model's scores are left out, so
    it gets quality 0 (and nothing)."""
    members = active(state, genesis)
    reveals = {}
    for v in members:
        revealed = state.get(reveal_key(epoch, v))
        if revealed is not None:  # committed but not revealed: missing
            reveals[v] = revealed
    shas = set(state.get(settled_key(epoch)) or [])
    shas.update(sha for scores in reveals.values() for sha in scores)
    models: dict[str, ModelEpoch] = {}
    retired = set()
    for sha in sorted(shas):
        record = state.get(MODEL + sha)  # registered: reveals and settlements check it
        if record["retired"]:
            retired.add(sha)
        stats = state.get(stats_key(epoch, sha)) or {}
        models[sha] = ModelEpoch(
            creator=record["creator"],
            tasks=stats.get("tasks", 0),
            confirmed=stats.get("confirmed", 0),
            miners=stats.get("burned", {}),
            backers=backers_of(state, sha),
        )
    scores = {
        v: {sha: q for sha, q in revealed.items() if sha not in retired}
        for v, revealed in reveals.items()
    }
    delegations = {v: backers_of(state, v) for v in members}
    stakes = validator_stakes(state, genesis)
    return EpochInputs(
        epoch,
        scores,
        stakes,
        models,
        delegations=delegations,
        voices=validator_voices(stakes, genesis),
    )


def model_errors(state: StateReader, epoch: int, inputs: EpochInputs) -> dict[str, int]:
    """Per model with a revealed standard error: the voice-weighted lower median of the errors
    revealed for it, by the validators whose scores count in `inputs` (a retired model's are
    dropped with its scores)."""
    voices = inputs.voices if inputs.voices is not None else inputs.validator_stakes
    by_model: dict[str, list[tuple[int, int]]] = {}
    for validator in sorted(inputs.scores):
        revealed = state.get(errors_key(epoch, validator)) or {}
        for sha, error in sorted(revealed.items()):
            if sha in inputs.scores[validator]:
                by_model.setdefault(sha, []).append((error, voices.get(validator, 0)))
    return {
        sha: weighted_median(pairs) for sha, pairs in by_model.items() if any(w for _, w in pairs)
    }


def result_record(result: EpochResult) -> dict[str, Any]:
    """The compact form of an epoch's outcome kept under `powr:<e>:result`."""
    return {
        "emission": result.emission,
        "paid": result.paid,
        "unpaid": result.unpaid,
        "models": {
            m.model: {
                "median": m.median_ppm,
                "quality": m.quality_ppm,
                "success": m.success_ppm,
                "demand": m.demand_ppm,
                "score": m.score_ppm,
                "reward": m.reward,
                "capped": m.capped,
            }
            for m in result.models
        },
        "validators": {
            v.address: {
                "stake": v.stake,
                "revealed": v.revealed,
                "agreement": v.agreement_ppm,
                "reward": v.reward,
            }
            for v in result.validators
        },
        "credits": [_credit_record(c) for c in result.credits],
    }


def _credit_record(credit: Credit) -> dict[str, Any]:
    out = {
        "address": credit.address,
        "amount": credit.amount,
        "reason": credit.reason,
        "model": credit.model,
    }
    if credit.validator is not None:
        out["validator"] = credit.validator
    return out


def close(state: Overlay, epoch: int, genesis: Genesis) -> EpochResult:
    """Close `epoch` (`dn.powr.consensus.close_epoch`): credit every reward to its address's
    balance, add what was paid to `supply.emitted` (the unpaid rest is never minted), store
    `powr:<e>:result` and delete the epoch's commitments and `settled` index (reveals and stats
    stay). A validator's reward is shared with its delegators pro rata to stake. The validator
    pool (`pool:validators`) is paid out by the same weights (`share_pool`), recorded under the
    result's `pool`; it was minted already, so it does not count as emitted."""

    inputs = epoch_inputs(state, epoch, genesis)
    result = close_epoch(inputs, EpochParams.from_params(genesis.params))
    for entry in result.credits:
        credit(state, entry.address, entry.amount)
    if result.paid:
        supply = state.get(SUPPLY)
        state.set(SUPPLY, {**supply, "emitted": supply["emitted"] + result.paid})
    record = result_record(result)
    for sha, error in model_errors(state, epoch, inputs).items():
        if sha in record["models"]:
            record["models"][sha]["error"] = error
    pool = state.get(POOL_VALIDATORS)
    shared = share_pool(pool["balance"], result, inputs.delegations) if pool else ()
    if shared:
        for entry in shared:
            credit(state, entry.address, entry.amount)
        paid = sum(entry.amount for entry in shared)
        left = pool["balance"] - paid
        state.set(POOL_VALIDATORS, {"balance": left} if left else None)
        record["pool"] = {"paid": paid, "credits": [_credit_record(c) for c in shared]}
    state.set(result_key(epoch), record)
    for v in active(state, genesis):
        if state.get(commit_key(epoch, v)) is not None:
            state.set(commit_key(epoch, v), None)
    if state.get(settled_key(epoch)) is not None:
        state.set(settled_key(epoch), None)
    return result
