"""Verifiable sampling against tampering: how often an honest sampled answer is confirmed and
a tampered one caught, beside the greedy case, in the same run.

SmolLM2-135M answers `--prompts` chat prompts (default 50) greedily, and with verifiable
sampling at `--temperature` (default 0.7, top_p `--top-p`, default 1) under `--keys` sampler keys
each (default 4: 200 sampled answers), `--tokens` tokens each (default 32). The generator runs
with 1 thread and the checker with 2 (their logits drift apart as two machines' do), the checker
fed in chunks of 16 as a miner is. Groups, each checked with the genesis-default thresholds:

    honest     the answer as the generator decoded it: confirmation rate
    foreign    one token in the middle replaced by " banana" (as bench/calibrate.py does)
    steered    at the middle the decoding rule's runner-up (greedy: the second-highest logit;
               sampled: the second-highest perturbed score) and then the rule's own continuation:
               the most plausible single change a generator could make
    own-dice   (sampled only) the answer sampled with another key: a generator that samples
               from the model but not with the ticket's noise

Prints the rate of each group (accepted for honest, rejected for the others). Numbers are
printed, never asserted; docs/verification.md records a run.

    .venv/bin/python bench/sampling.py [--prompts N] [--keys N] [--tokens N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import model_file  # noqa: E402

from dn.chain.genesis import default_params  # noqa: E402
from dn.runner.check import Thresholds, Verdict  # noqa: E402
from dn.runner.llama import LoadedModel  # noqa: E402
from dn.runner.sampling import GREEDY, Decoding, sampler_key, scores  # noqa: E402
from dn.runner.sessions import Picker  # noqa: E402

TOPICS = [
    "bread", "the moon", "volcanoes", "bicycles", "honey bees", "the ocean", "trains",
    "chess", "rain", "libraries",
]  # fmt: skip
FORMS = [
    "Write a short paragraph about {}.",
    "Explain {} to a ten-year-old.",
    "Give three interesting facts about {}.",
    "Describe {} in a few sentences.",
    "Why do people like {}?",
]
LIMITS = Thresholds.from_params(default_params().__getitem__)


def prompts(n: int) -> list[str]:
    texts = [form.format(topic) for form in FORMS for topic in TOPICS]
    return texts[:n]


def check(
    model: LoadedModel, prompt: str, tokens: list[int], decoding: Decoding, n: int
) -> Verdict:
    with model.check(prompt, n, LIMITS, decoding=decoding) as session:
        for i in range(0, len(tokens), 16):
            session.feed(tokens[i : i + 16])
        return session.finish()


def continue_from(
    model: LoadedModel, prompt: str, prefix: list[int], decoding: Decoding, n: int
) -> list[int]:
    """`prefix`, then what the decoding rule generates after it up to `n` tokens in all."""
    if len(prefix) >= n or model.is_eog(prefix[-1]):
        return list(prefix)
    picker = Picker(decoding)
    picker.index = len(prefix)
    with model.engine.open() as seq:
        seq.generate(model.tokenize(prompt) + prefix, n - len(prefix), model.is_eog, picker)
        rest = []
        while (token := seq.next_token()) is not None:
            rest.append(token)
    return list(prefix) + rest


def runner_up(model: LoadedModel, prompt: str, prefix: list[int], decoding: Decoding) -> int:
    """The token the decoding rule ranks second after `prefix` (its choice is the first)."""
    import numpy as np

    with model.lock:
        row = model._decode(model.tokenize(prompt) + prefix, 0, all_rows=False)
    ranked = scores(row, decoding, len(prefix)) if decoding.sampled else row
    return int(np.argsort(ranked)[-2])


class Group:
    def __init__(self, name: str, honest: bool) -> None:
        self.name, self.honest = name, honest
        self.verdicts: list[Verdict] = []

    def row(self) -> dict[str, Any]:
        n = len(self.verdicts)
        good = sum(v.ok == self.honest for v in self.verdicts)
        reasons: dict[str, int] = {}
        for v in self.verdicts:
            reasons[v.reason] = reasons.get(v.reason, 0) + 1
        scored = [v for v in self.verdicts if v.tokens] or self.verdicts
        return {
            "group": self.name,
            "answers": n,
            "rate": round(good / n, 3) if n else None,
            "measures": "confirmed" if self.honest else "caught",
            "reasons": reasons,
            "top1": [round(min(v.top1 for v in scored), 3), round(max(v.top1 for v in scored), 3)],
            "mean_gap": [
                round(min(v.mean_gap for v in scored), 3),
                round(max(v.mean_gap for v in scored), 3),
            ],
            "max_gap": round(max(v.max_gap for v in scored), 3),
        }


def run(args: argparse.Namespace) -> dict[str, Any]:
    path = model_file("smollm2-135m")
    generator = LoadedModel(path, n_threads=1, slots=2)
    checker = LoadedModel(path, n_threads=2, slots=2)
    banana = checker.tokenize(" banana")[-1]
    groups: dict[str, Group] = {}

    def add(mode: str, name: str, honest: bool, verdict: Verdict) -> None:
        groups.setdefault(f"{mode} {name}", Group(f"{mode} {name}", honest)).verdicts.append(
            verdict
        )

    start = time.monotonic()
    try:
        for p, text in enumerate(prompts(args.prompts)):
            prompt = generator.chat_prompt([{"role": "user", "content": text}])
            cases = [("greedy", GREEDY)] + [
                (
                    "sampled",
                    Decoding(
                        temperature=args.temperature,
                        top_p=args.top_p,
                        key=sampler_key(seed=None, task=f"{p}-{k}"),
                    ),
                )
                for k in range(args.keys)
            ]
            for k, (mode, decoding) in enumerate(cases):
                n = args.tokens
                tokens = list(generator.generate(prompt, n, decoding=decoding))
                add(mode, "honest", True, check(checker, prompt, tokens, decoding, n))
                middle = len(tokens) // 2
                foreign = list(tokens)
                foreign[middle] = banana if foreign[middle] != banana else banana + 1
                add(mode, "foreign token", False, check(checker, prompt, foreign, decoding, n))
                if k <= 1:  # greedy, and the first key: the plausible changes cost generations
                    second = runner_up(generator, prompt, tokens[:middle], decoding)
                    steered = continue_from(
                        generator, prompt, tokens[:middle] + [second], decoding, n
                    )
                    add(mode, "steered", False, check(checker, prompt, steered, decoding, n))
                    if decoding.sampled:
                        dice = replace(decoding, key=sampler_key(seed=None, task=f"own-{p}"))
                        own = list(generator.generate(prompt, n, decoding=dice))
                        if own != tokens:
                            add(mode, "own dice", False, check(checker, prompt, own, decoding, n))
            print(f"  prompt {p + 1}: {time.monotonic() - start:.0f} s", file=sys.stderr)
    finally:
        generator.close()
        checker.close()
    return {
        "tokens": args.tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "seconds": round(time.monotonic() - start, 1),
        "groups": [g.row() for g in groups.values()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--keys", type=int, default=4, help="sampler keys per prompt")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{'group':24} {'answers':>7} {'rate':>6}  measures   top-1 share   mean gap     reasons")
    for g in result["groups"]:
        top1, mean = g["top1"], g["mean_gap"]
        print(
            f"{g['group']:24} {g['answers']:>7} {g['rate']:>6}  {g['measures']:9}  "
            f"{top1[0]:.2f}-{top1[1]:.2f}   {mean[0]:.2f}-{mean[1]:.2f}   {g['reasons']}"
        )


if __name__ == "__main__":
    main()
