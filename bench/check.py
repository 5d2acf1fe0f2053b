"""The prefill check's cost, as a ratio to generating the same answer.

For each prompt, a 256-token greedy answer (`--tokens`) is generated with SmolLM2-135M, timed
(*generate*: prompt prefill + decoding). Then the same tokens are checked, timed:

- *incremental*: `CheckSession.feed` in chunks of `--chunk` tokens (default 16), as a checker
  receives them while the answer streams: one batched pass per chunk, reusing the KV cache;
- *naive*: the reference design, one whole-sequence pass of prompt + answer with llama-cpp-python's
  `logits_all=True` (every position's logits copied into `Llama.scores`) and the ranks computed
  from that matrix afterwards.

Generator and checker use the same thread count (`--threads`, default: all cores up to 8) and
their own contexts. Target: incremental / generate <= 0.5 on a 2-core CPU machine, <= 0.15 on a
GPU.

The sampled case: each prompt is also answered with verifiable sampling at `--temperature`
(default 0.7; `--top-p`, default 1) and checked incrementally with the same decoding, timed the
same way. Target: its check / generate within 1.1x of the greedy case's, same run.

Each prompt runs `--rounds` times (default 3) and the medians are reported: a 2-core machine
shared with others is noisy. Numbers are printed, never asserted.

    .venv/bin/python bench/check.py [--tokens N] [--chunk N] [--rounds N] [--threads N]
                                    [--gpu-layers N] [--temperature T] [--top-p P] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import model_file  # noqa: E402

from dn.runner.check import Thresholds  # noqa: E402
from dn.runner.llama import LoadedModel, auto_gpu_layers, default_threads  # noqa: E402
from dn.runner.sampling import GREEDY, Decoding, sampler_key  # noqa: E402

PROMPTS = [
    "Write a long story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a bicycle works, part by part, in detail.",
    "Describe a walk through a busy market in a coastal town.",
]
CPU_TARGET = 0.5
GPU_TARGET = 0.15
SAMPLED_TARGET = 1.1  # sampled check / generate over greedy's


def naive_check(path: Path, prompt_tokens: list[int], answer: list[int], args: Any) -> float:
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=1024,
        n_batch=512,
        n_ubatch=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        n_gpu_layers=auto_gpu_layers(args.gpu_layers),
        logits_all=True,
        verbose=False,
    )
    try:
        start = time.perf_counter()
        llm.eval(prompt_tokens + answer)
        scores = llm.scores[len(prompt_tokens) - 1 : len(prompt_tokens) + len(answer) - 1]
        claimed = scores[np.arange(len(answer)), answer]
        (scores > claimed[:, None]).sum(axis=1)
        return time.perf_counter() - start
    finally:
        llm.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    path = model_file("smollm2-135m")
    generator = LoadedModel(path, n_threads=args.threads, n_ctx=1024, n_gpu_layers=args.gpu_layers)
    checker = LoadedModel(path, n_threads=args.threads, n_ctx=1024, n_gpu_layers=args.gpu_layers)
    rows = []
    try:
        for round_, text in enumerate(PROMPTS * args.rounds):
            prompt = generator.chat_prompt([{"role": "user", "content": text}])
            list(generator.generate(prompt, 8))  # warm the context and the page cache
            gen_s, check_s, tokens, ok = timed(generator, checker, prompt, GREEDY, args)
            naive_s = naive_check(path, checker.tokenize(prompt), tokens, args)
            key = sampler_key(seed=round_, task="")
            sampled = Decoding(temperature=args.temperature, top_p=args.top_p, key=key)
            s_gen_s, s_check_s, s_tokens, s_ok = timed(generator, checker, prompt, sampled, args)
            rows.append(
                {
                    "prompt": text[:40],
                    "tokens": len(tokens),
                    "generate_s": round(gen_s, 3),
                    "check_s": round(check_s, 3),
                    "naive_s": round(naive_s, 3),
                    "ratio": round(check_s / gen_s, 3),
                    "naive_ratio": round(naive_s / gen_s, 3),
                    "accepted": ok,
                    "sampled_tokens": len(s_tokens),
                    "sampled_ratio": round(s_check_s / s_gen_s, 3),
                    "sampled_accepted": s_ok,
                }
            )
            print(f"  {rows[-1]}", file=sys.stderr)
    finally:
        generator.llm.close()
        checker.llm.close()
    gpu = generator.n_gpu_layers != 0
    target = GPU_TARGET if gpu else CPU_TARGET
    ratio = statistics.median(r["ratio"] for r in rows)
    sampled_ratio = statistics.median(r["sampled_ratio"] for r in rows)
    return {
        "threads": args.threads,
        "chunk": args.chunk,
        "gpu_layers": generator.n_gpu_layers,
        "rows": rows,
        "median_ratio": ratio,
        "median_naive_ratio": statistics.median(r["naive_ratio"] for r in rows),
        "target": target,
        "pass": ratio <= target,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "median_sampled_ratio": sampled_ratio,
        "sampled_vs_greedy": round(sampled_ratio / ratio, 3),
        "sampled_target": SAMPLED_TARGET,
        "sampled_pass": sampled_ratio / ratio <= SAMPLED_TARGET,
        "sampled_accepted": sum(r["sampled_accepted"] for r in rows),
    }


def timed(
    generator: LoadedModel, checker: LoadedModel, prompt: str, decoding: Decoding, args: Any
) -> tuple[float, float, list[int], bool]:
    """(generate seconds, incremental check seconds, the tokens, accepted) for one answer."""
    start = time.perf_counter()
    tokens = list(generator.generate(prompt, args.tokens, decoding=decoding))
    gen_s = time.perf_counter() - start
    start = time.perf_counter()
    with checker.check(prompt, args.tokens, Thresholds(), decoding=decoding) as session:
        for i in range(0, len(tokens), args.chunk):
            session.feed(tokens[i : i + args.chunk])
        verdict = session.finish()
    return gen_s, time.perf_counter() - start, tokens, verdict.ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each prompt")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--gpu-layers", type=int, default=None, help="default: automatic")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{'prompt':42} {'tokens':>6} {'gen s':>7} {'check s':>8} {'naive s':>8} {'ratio':>6}")
    for r in result["rows"]:
        print(
            f"{r['prompt']:42} {r['tokens']:>6} {r['generate_s']:>7} {r['check_s']:>8} "
            f"{r['naive_s']:>8} {r['ratio']:>6}"
        )
    verdict = "PASS" if result["pass"] else "MISS"
    print(
        f"check / generate (median): {result['median_ratio']:.3f}  target <= {result['target']}"
        f"  {verdict}   (naive whole-sequence logits_all: {result['median_naive_ratio']:.3f})"
    )
    print(
        f"sampled (temperature {result['temperature']}, top_p {result['top_p']}): check / "
        f"generate {result['median_sampled_ratio']:.3f}, {result['sampled_vs_greedy']:.3f}x "
        f"greedy's  target <= {SAMPLED_TARGET}x  "
        f"{'PASS' if result['sampled_pass'] else 'MISS'}   "
        f"({result['sampled_accepted']} of {len(result['rows'])} sampled answers accepted)"
    )


if __name__ == "__main__":
    main()
