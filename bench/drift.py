"""How far two honest computations of a checker's values differ, next to the tolerance a
referee allows (`Drift`, DESIGN.md section 7, dn/node/validator/referee.py).

For each prompt an answer is generated with 1 thread and batch 8, then checked twice: by a
context with 2 threads and batch 512 fed chunks of 16, and by one with 1 thread and batch 8 fed
chunks of 3. The table shows, per model, the largest per-token |logit difference| and |gap
difference|, the largest per-answer mean |logit difference|, and the smallest mean |logit| of an
answer: what a lazy checker that writes down logit 0 would be off by. `docs/verification.md`
records a run. Numbers are printed, never asserted (tests/runner asserts the outcomes).

    .venv/bin/python bench/drift.py [--tokens N] [--no-gemma]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import model_file  # noqa: E402

from dn.chain.genesis import default_params  # noqa: E402
from dn.runner.check import Drift, Thresholds, TokenValue  # noqa: E402
from dn.runner.llama import LoadedModel  # noqa: E402

PROMPTS = [
    "Write a short paragraph about the history of bread.",
    "Explain in simple words why the sky is blue.",
    "List three tips for keeping a small vegetable garden healthy.",
    "What is the capital of France? Answer in one sentence.",
    "Describe a cat to a child.",
]


def values(model: LoadedModel, prompt: str, tokens: list[int], chunk: int) -> list[TokenValue]:
    with model.check(prompt, len(tokens), Thresholds(max_rank=10**9, max_gap=1e9)) as session:
        for i in range(0, len(tokens), chunk):
            session.feed(tokens[i : i + chunk])
        return list(session.values)


def measure(path: Path, max_tokens: int) -> dict[str, float]:
    a = LoadedModel(path, n_threads=2, n_batch=512)
    b = LoadedModel(path, n_threads=1, n_batch=8)
    worst = {"max_logit": 0.0, "max_gap": 0.0, "mean_logit": 0.0, "lazy": float("inf")}
    try:
        for text in PROMPTS:
            prompt = a.chat_prompt([{"role": "user", "content": text}])
            tokens = list(b.generate(prompt, max_tokens))
            mine, theirs = values(a, prompt, tokens, 16), values(b, prompt, tokens, 3)
            dl = [abs(x.logit - y.logit) for x, y in zip(mine, theirs, strict=True)]
            dg = [abs(x.gap - y.gap) for x, y in zip(mine, theirs, strict=True)]
            worst["max_logit"] = max(worst["max_logit"], *dl)
            worst["max_gap"] = max(worst["max_gap"], *dg)
            worst["mean_logit"] = max(worst["mean_logit"], sum(dl) / len(dl))
            worst["lazy"] = min(worst["lazy"], sum(abs(v.logit) for v in mine) / len(mine))
    finally:
        a.llm.close()
        b.llm.close()
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--no-gemma", action="store_true")
    args = parser.parse_args()
    drift = Drift.from_params(default_params().__getitem__)
    names = ["smollm2-135m"] + ([] if args.no_gemma else ["gemma3-270m"])
    print(
        f"tolerance: per-token |gap diff| <= {drift.max_gap}, mean |logit diff| <= "
        f"{drift.max_mean_logit}"
    )
    print(
        f"{'model':<14} {'max |dlogit|':>12} {'max |dgap|':>10} {'mean |dlogit|':>13} "
        f"{'lazy off by':>11}"
    )
    for name in names:
        w = measure(model_file(name), args.tokens)
        print(
            f"{name:<14} {w['max_logit']:>12.3f} {w['max_gap']:>10.3f} "
            f"{w['mean_logit']:>13.3f} {w['lazy']:>11.2f}"
        )


if __name__ == "__main__":
    main()
