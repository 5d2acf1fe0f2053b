"""Closing a PoWR epoch on 100 validators x 100 models: `dn.powr.consensus.close_epoch`, and the
whole close in the state machine.

Every validator reveals a quality score for every model (an honest value plus noise, and a few
validators that score at random), each model has a creator, 4 miners with confirmed tokens and 5
backers, and the whole epoch is closed: medians, clipping, agreement, scores, the emission split
and every credit. The inputs are built before the clock starts (they come from the chain state);
the clock times `close_epoch` alone, the median of `--runs` runs. Then the same epoch is closed the
way a node does it: the reveals, statistics, models, backers and the validator pool written into a
chain state, and `begin_block` timed at the epoch's boundary (reading the state, `close_epoch`,
crediting every reward, paying out the pool, writing the result).

The baseline, timed in the same run, is the least any implementation must do: per model, sort
its (score, stake) pairs and walk them to the stake-weighted median. It is the baseline, rather
than the pure math alone or a smaller epoch, because it is the part no design can skip and it
grows with the same validators x models as the close: `close_epoch / baseline` says what the rest
of the consensus math (checks, clipping, agreement, rewards) costs on top, `state / close_epoch`
what reading and writing the chain state adds, and `state / baseline`, the headline, the whole
close against the least. The three are timed in turns, run by run (one warm-up each), so a
machine whose load changes weighs on all three alike; medians of `--runs` runs.

Target: the close in the state machine <= 1 s (it runs inside one block). Numbers are printed,
never asserted.

    .venv/bin/python bench/epoch.py [--validators N] [--models N] [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from dn.chain import powr_rules
from dn.chain.genesis import Genesis, default_params
from dn.chain.ledger import MODEL, POOL_VALIDATORS, DictState, Overlay
from dn.chain.staking import BACKERS, STAKE
from dn.chain.state import begin_block, genesis_state
from dn.encoding import UNITS_PER_DN
from dn.powr.consensus import EpochInputs, close_epoch
from dn.powr.emission import ModelEpoch
from dn.powr.params import PPM, EpochParams
from dn.wallet.keys import Keypair

TARGET_S = 1.0
MINERS_PER_MODEL = 4
BACKERS_PER_MODEL = 5
RANDOM_VALIDATORS = 5  # validators that reveal noise instead of measurements


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def name(kind: str, i: int) -> str:
    """An address-shaped (dn1…, 62 characters) or hash-shaped (64 hex) identifier."""
    digest = hashlib.sha256(f"{kind}{i}".encode()).hexdigest()
    return digest if kind == "model" else "dn1" + digest[:59]


def build_inputs(validators: int, models: int, seed: int) -> EpochInputs:
    rnd = random.Random(seed)
    stakes = {
        name("validator", i): rnd.randrange(1, 10_000) * UNITS_PER_DN for i in range(validators)
    }
    model_ids = [name("model", i) for i in range(models)]
    people = [name("person", i) for i in range(4 * models)]
    truth = {m: rnd.randrange(PPM + 1) for m in model_ids}
    scores: dict[str, dict[str, int]] = {}
    for i, validator in enumerate(sorted(stakes)):
        if i < RANDOM_VALIDATORS:
            scores[validator] = {m: rnd.randrange(PPM + 1) for m in model_ids}
        else:
            scores[validator] = {
                m: min(PPM, max(0, q + rnd.randrange(-80_000, 80_001))) for m, q in truth.items()
            }
    info = {}
    for m in model_ids:
        tasks = rnd.randrange(0, 500)
        info[m] = ModelEpoch(
            creator=rnd.choice(people),
            tasks=tasks,
            confirmed=rnd.randrange(tasks + 1),
            miners={p: rnd.randrange(1, 100_000) for p in rnd.sample(people, MINERS_PER_MODEL)},
            backers={
                p: rnd.randrange(1, 1000) * UNITS_PER_DN
                for p in rnd.sample(people, BACKERS_PER_MODEL)
            },
        )
    return EpochInputs(epoch=7, scores=scores, validator_stakes=stakes, models=info)


def chain_state(inputs: EpochInputs, epoch_blocks: int) -> tuple[Genesis, DictState]:
    """A genesis with the inputs' validators (real keys, in the same order of stake) and a state
    at the end of the inputs' epoch holding everything its close reads."""
    keys = [
        Keypair.from_seed(hashlib.sha256(b"v%d" % i).digest()) for i in range(len(inputs.scores))
    ]
    rename = dict(
        zip(sorted(inputs.validator_stakes), sorted(k.address for k in keys), strict=True)
    )
    genesis = Genesis.build(
        network="bench",
        time_ms=0,
        validators=sorted(rename.values()),
        allocations={keys[0].address: UNITS_PER_DN},
        params=default_params(epoch_blocks=epoch_blocks),
    )
    state = DictState(genesis_state(genesis))
    e = inputs.epoch
    changes: dict[str, Any] = {POOL_VALIDATORS: {"balance": 1_234_567}}
    supply = state.get("supply")
    changes["supply"] = {**supply, "genesis": supply["genesis"] + 1_234_567}
    for validator, revealed in inputs.scores.items():
        changes[powr_rules.reveal_key(e, rename[validator])] = dict(revealed)
    changes[powr_rules.settled_key(e)] = sorted(inputs.models)
    for sha, info in inputs.models.items():
        changes[MODEL + sha] = {"creator": info.creator, "retired": False, "domain": "general"}
        changes[powr_rules.stats_key(e, sha)] = {
            "tasks": info.tasks,
            "confirmed": info.confirmed,
            "tokens": sum(info.miners.values()),  # not read by the close
            "miners": dict(info.miners),
            "burned": dict(info.miners),  # what the close weighs each generator by
        }
        changes[BACKERS + sha] = sorted(info.backers)
        for backer, amount in info.backers.items():
            changes[f"{STAKE}{sha}:{backer}"] = {"amount": amount}
    state.update(changes)
    return genesis, state


def baseline(inputs: EpochInputs) -> int:
    """Per model, sort the (score, stake) pairs and walk them to the weighted median."""
    stakes = inputs.validator_stakes
    by_model: dict[str, list[tuple[int, int]]] = {}
    for validator, revealed in inputs.scores.items():
        for model, score in revealed.items():
            by_model.setdefault(model, []).append((score, stakes[validator]))
    checksum = 0
    for pairs in by_model.values():
        pairs.sort()
        half = sum(stake for _, stake in pairs)
        running = 0
        for score, stake in pairs:
            running += stake
            if 2 * running >= half:
                checksum += score
                break
    return checksum


def timed_in_turns(fns: dict[str, Callable[[], object]], runs: int) -> dict[str, list[float]]:
    """Each function once to warm up, then `runs` rounds of each in turn (the order rotating)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {key: [] for key in fns}
    keys = list(fns)
    for r in range(runs):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            start = time.perf_counter()
            fns[key]()
            times[key].append(time.perf_counter() - start)
    return times


def run(args: argparse.Namespace) -> dict[str, Any]:
    say(f"building {args.validators} validators x {args.models} models ...")
    inputs = build_inputs(args.validators, args.models, args.seed)
    params = EpochParams()
    result = close_epoch(inputs, params)
    if result.paid + result.unpaid != result.emission:
        raise SystemExit("close_epoch lost units: paid + unpaid != emission")
    epoch_blocks = 100
    genesis, state = chain_state(inputs, epoch_blocks)
    boundary = (inputs.epoch + 1) * epoch_blocks + 1

    def close_in_state() -> None:
        overlay = Overlay(state)
        begin_block(overlay, boundary, genesis, "0" * 64)
        record = overlay.get(powr_rules.result_key(inputs.epoch))
        if record is None or record["paid"] + record["unpaid"] != record["emission"]:
            raise SystemExit("the state machine's close lost units")

    say(f"timing {args.runs} runs of each, in turns ...")
    times = timed_in_turns(
        {
            "baseline": lambda: baseline(inputs),
            "close": lambda: close_epoch(inputs, params),
            "state": close_in_state,
        },
        args.runs,
    )
    close_times, base_times, state_times = times["close"], times["baseline"], times["state"]
    close_s, base_s = statistics.median(close_times), statistics.median(base_times)
    state_s = statistics.median(state_times)
    return {
        "validators": args.validators,
        "models": args.models,
        "scores": sum(len(s) for s in inputs.scores.values()),
        "miners_per_model": MINERS_PER_MODEL,
        "backers_per_model": BACKERS_PER_MODEL,
        "credits": len(result.credits),
        "runs": args.runs,
        "close_epoch_s": close_s,
        "close_epoch_s_runs": close_times,
        "baseline_s": base_s,
        "baseline_s_runs": base_times,
        "ratio_to_baseline": close_s / base_s,
        "state_over_close_epoch": state_s / close_s,
        "state_over_baseline": state_s / base_s,
        "state_close_s": state_s,
        "state_close_s_runs": state_times,
        "target_s": TARGET_S,
        "ratio_to_target": state_s / TARGET_S,
        "meets_target": state_s <= TARGET_S,
    }


def render(r: dict[str, Any]) -> str:
    verdict = "PASS" if r["meets_target"] else "MISS"
    return "\n".join(
        [
            f"PoWR epoch close: {r['validators']} validators x {r['models']} models "
            f"({r['scores']:,} scores, {r['miners_per_model']} miners and "
            f"{r['backers_per_model']} backers per model, {r['credits']:,} credits); "
            f"median of {r['runs']} runs",
            "",
            f"  close_epoch   {r['close_epoch_s'] * 1000:>9.1f} ms",
            f"  baseline      {r['baseline_s'] * 1000:>9.1f} ms   sort each model's scores to "
            "its weighted median",
            f"  in the state  {r['state_close_s'] * 1000:>9.1f} ms   begin_block at the boundary: "
            "read the state, close, credit, pay the pool, write",
            "",
            f"  close_epoch / baseline  {r['ratio_to_baseline']:>6.1f}x  the consensus math on top "
            "of the medians",
            f"  state / close_epoch     {r['state_over_close_epoch']:>6.1f}x  the state machine on "
            "top of the math",
            f"  state / baseline        {r['state_over_baseline']:>6.1f}x  the whole close against "
            "the least",
            "",
            f"  target  close in the state machine <= {r['target_s']:.0f} s   "
            f"{r['state_close_s']:.3f} s ({r['ratio_to_target']:.3f} of the target)   {verdict}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--validators", type=int, default=100)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--runs", type=int, default=7, help="timed runs (plus one warm-up)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(argv)
    if args.validators < 1 or args.models < 1 or args.runs < 1:
        parser.error("--validators, --models and --runs must be at least 1")
    if args.validators <= RANDOM_VALIDATORS:
        parser.error(f"--validators must be more than {RANDOM_VALIDATORS}")
    results = run(args)
    print(json.dumps(results, indent=2) if args.json else render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
