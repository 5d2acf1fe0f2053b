"""Whether batching changes what the protocol verifies: the same prompts answered and checked
alone and in batches of 4 on one model's engine (dn/runner/engine.py, docs/verification.md).

For each of `--prompts` prompts (default 50, taken in turn from the built-in PoWR suites) a greedy
answer of up to `--tokens` tokens (default 64) is generated alone, then again with three other
prompts decoding in the same steps. The table shows:

- *greedy*: how many batched answers are token for token the answers alone, and where the first
  differing one diverges;
- *batched answer, checker alone*: the worst rank and gap of any claimed token of a batched
  answer under a checker running alone, and whether every one is accepted (genesis thresholds);
- *checker in a batch*: the answers alone checked four at a time (chunks of 16) against the same
  checks run alone: the largest per-token |gap difference| and |logit difference| and the largest
  per-answer mean |logit difference|, next to the drift a referee allows (`Drift`).

One context, 2 threads (`--threads`), 4 slots. Numbers are printed, never asserted
(tests/runner/test_runner_engine.py asserts the outcome the protocol needs).

    .venv/bin/python bench/batch_drift.py [--prompts N] [--tokens N] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import model_file  # noqa: E402

from dn.chain.genesis import default_params  # noqa: E402
from dn.powr.suites import builtin_suite  # noqa: E402
from dn.runner.check import Drift, Thresholds, TokenValue  # noqa: E402
from dn.runner.llama import LoadedModel  # noqa: E402

SUITES = ("general", "code", "finance", "health")
BATCH = 4
CHUNK = 16


def prompts(n: int) -> list[str]:
    """`n` prompts, round-robin over the suites, each suite in file order."""
    suites = [[item.prompt for item in builtin_suite(name)] for name in SUITES]
    picked: list[str] = []
    for i in range(max(len(s) for s in suites)):
        for suite in suites:
            if i < len(suite) and len(picked) < n:
                picked.append(suite[i])
    return picked


def in_batches(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Run the jobs `BATCH` at a time, each group's jobs at once on their own threads."""
    out: list[Any] = [None] * len(jobs)
    for start in range(0, len(jobs), BATCH):

        def run(i: int) -> None:
            out[i] = jobs[i]()

        group = [threading.Thread(target=run, args=(i,)) for i in range(start, start + BATCH)]
        group = group[: len(jobs) - start]
        for thread in group:
            thread.start()
        for thread in group:
            thread.join(600)
    return out


def check(model: LoadedModel, prompt: str, tokens: list[int], limits: Thresholds) -> Any:
    with model.check(prompt, len(tokens), limits) as session:
        for i in range(0, len(tokens), CHUNK):
            session.feed(tokens[i : i + CHUNK])
        return session.finish(), list(session.values)


def run(args: argparse.Namespace) -> dict[str, Any]:
    model = LoadedModel(model_file("smollm2-135m"), n_threads=args.threads, slots=BATCH)
    limits = Thresholds.from_params(default_params().__getitem__)
    try:
        chats = [model.chat_prompt([{"role": "user", "content": p}]) for p in prompts(args.prompts)]
        print(f"{len(chats)} prompts, answers alone", file=sys.stderr)
        alone = [list(model.generate(p, args.tokens)) for p in chats]
        print("answers in batches of 4", file=sys.stderr)
        batched = in_batches([_gen(model, p, args.tokens) for p in chats])
        print("checks alone", file=sys.stderr)
        checked_alone = [check(model, p, a, limits) for p, a in zip(chats, alone, strict=True)]
        batched_checked = [check(model, p, b, limits) for p, b in zip(chats, batched, strict=True)]
        print("checks in batches of 4", file=sys.stderr)
        checked_batched = in_batches(
            [_chk(model, p, a, limits) for p, a in zip(chats, alone, strict=True)]
        )
    finally:
        model.close()
    diverged = [
        next(i for i, (x, y) in enumerate(zip(a + [-1], b + [-2], strict=False)) if x != y)
        for a, b in zip(alone, batched, strict=True)
        if a != b
    ]
    drifts = [_drift(x[1], y[1]) for x, y in zip(checked_alone, checked_batched, strict=True)]
    drift = Drift.from_params(default_params().__getitem__)
    return {
        "prompts": len(chats),
        "tokens": sum(len(a) for a in alone),
        "identical": len(chats) - len(diverged),
        "first_divergence": min(diverged, default=None),
        "batched_max_rank": max(v.max_rank for v, _ in batched_checked),
        "batched_max_gap": round(max(v.max_gap for v, _ in batched_checked), 3),
        "batched_accepted": sum(v.ok for v, _ in batched_checked),
        "alone_max_rank": max(v.max_rank for v, _ in checked_alone),
        "alone_max_gap": round(max(v.max_gap for v, _ in checked_alone), 3),
        "check_batch_max_rank": max(v.max_rank for v, _ in checked_batched),
        "check_batch_max_gap": round(max(v.max_gap for v, _ in checked_batched), 3),
        "values_max_gap_diff": round(max(d[0] for d in drifts), 4),
        "values_max_logit_diff": round(max(d[1] for d in drifts), 4),
        "values_max_mean_logit_diff": round(max(d[2] for d in drifts), 4),
        "drift_allows_gap": drift.max_gap,
        "drift_allows_mean_logit": drift.max_mean_logit,
    }


def _gen(model: LoadedModel, prompt: str, tokens: int) -> Callable[[], list[int]]:
    return lambda: list(model.generate(prompt, tokens))


def _chk(model: LoadedModel, prompt: str, tokens: list[int], limits: Thresholds) -> Any:
    return lambda: check(model, prompt, tokens, limits)


def _drift(a: list[TokenValue], b: list[TokenValue]) -> tuple[float, float, float]:
    dg = [abs(x.gap - y.gap) for x, y in zip(a, b, strict=True)] or [0.0]
    dl = [abs(x.logit - y.logit) for x, y in zip(a, b, strict=True)] or [0.0]
    return max(dg), max(dl), sum(dl) / len(dl)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    r = run(args)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"{r['prompts']} prompts, {r['tokens']} tokens answered alone")
    print(
        f"greedy: {r['identical']}/{r['prompts']} batched answers identical to alone"
        + (f" (first divergence at token {r['first_divergence']})" if r["first_divergence"] else "")
    )
    print(
        f"batched answers, checker alone: max rank {r['batched_max_rank']}, max gap "
        f"{r['batched_max_gap']}, accepted {r['batched_accepted']}/{r['prompts']}"
        f"   (answers alone: max rank {r['alone_max_rank']}, max gap {r['alone_max_gap']})"
    )
    print(
        f"checker in batches of {BATCH}: max rank {r['check_batch_max_rank']}, max gap "
        f"{r['check_batch_max_gap']}; against the same checks alone: max gap diff "
        f"{r['values_max_gap_diff']} (referee allows {r['drift_allows_gap']}), max logit diff "
        f"{r['values_max_logit_diff']}, max mean logit diff {r['values_max_mean_logit_diff']} "
        f"(allows {r['drift_allows_mean_logit']})"
    )


if __name__ == "__main__":
    main()
