"""PoWR evaluation speed: how much of a validator's benchmark run is llama.cpp itself.

One evaluation (`dn.powr.evaluate.evaluate`, what `dn powr eval` and a validator run) of
SmolLM2-135M on `--items` items (default 40) sampled by `--seed` from a built-in suite
(`--domain`, default general): exact, contains and numeric items by greedy answers of at most
`--max-tokens` tokens (default 32) to the model's chat prompt, choice items by the
log-probability of each choice. The model is loaded and warmed before the clock starts.

The baseline is the time spent inside llama.cpp in the same run (each `generate` step and each
`_decode`, logits copies included); `llama share = llama.cpp seconds / evaluation seconds`, the
rest being the evaluator's own Python (chat templates, tokenizing, log-softmax, decoding text,
grading). Target: llama share >= 0.9. Items/s and the quality score q are printed beside it,
per item kind too. Numbers are printed, never asserted.

    .venv/bin/python bench/powr.py [--domain D] [--items N] [--seed TEXT] [--max-tokens N]
                                   [--threads N] [--gpu-layers N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import model_file  # noqa: E402

from dn.powr.evaluate import evaluate  # noqa: E402
from dn.powr.suites import builtin_suite, sample_items  # noqa: E402
from dn.runner.llama import LoadedModel, default_threads  # noqa: E402

TARGET = 0.9


def run(args: argparse.Namespace) -> dict[str, Any]:
    path = model_file("smollm2-135m")
    suite = builtin_suite(args.domain)
    items = sample_items(suite, args.items, args.seed.encode("utf-8"))
    model = LoadedModel(path, n_threads=args.threads, n_gpu_layers=args.gpu_layers)
    try:
        warm = model.chat_prompt([{"role": "user", "content": "Hello"}])
        list(model.generate(warm, 8))  # the page cache and llama.cpp's first-call set-up
        print(f"evaluating {len(items)} items of {suite.name} …", file=sys.stderr)
        evaluation = evaluate(model, items, max_tokens=args.max_tokens)
    finally:
        model.llm.close()
    kinds = []
    for kind in ("exact", "contains", "choice", "numeric"):
        results = [r for r in evaluation.results if r.kind == kind]
        if not results:
            continue
        seconds = sum(r.seconds for r in results)
        kinds.append(
            {
                "kind": kind,
                "items": len(results),
                "right": sum(1 for r in results if r.score == 1.0),
                "tokens": sum(r.tokens for r in results),
                "seconds": round(seconds, 3),
                "items_per_s": round(len(results) / seconds, 3),
                "llama_share": round(sum(r.llama_s for r in results) / seconds, 4),
            }
        )
    share = evaluation.llama_share
    return {
        "model": "smollm2-135m",
        "suite": suite.name,
        "items": len(items),
        "seed": args.seed,
        "max_tokens": args.max_tokens,
        "threads": args.threads,
        "gpu_layers": model.n_gpu_layers,
        "quality": round(evaluation.quality, 4),
        "seconds": round(evaluation.seconds, 3),
        "llama_s": round(evaluation.llama_s, 3),
        "items_per_s": round(evaluation.items_per_s, 3),
        "llama_share": round(share, 4),
        "kinds": kinds,
        "target": TARGET,
        "pass": share >= TARGET,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--domain", default="general")
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--seed", default="bench")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--gpu-layers", type=int, default=None, help="default: automatic")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    header = ("kind", "items", "right", "tokens", "s", "items/s", "llama")
    print("{:9} {:>5} {:>5} {:>6} {:>7} {:>8} {:>6}".format(*header))
    for k in result["kinds"]:
        print(
            f"{k['kind']:9} {k['items']:>5} {k['right']:>5} {k['tokens']:>6} {k['seconds']:>7} "
            f"{k['items_per_s']:>8} {k['llama_share']:>6.1%}"
        )
    verdict = "PASS" if result["pass"] else "MISS"
    print(
        f"{result['items']} items of {result['suite']} in {result['seconds']} s: "
        f"{result['items_per_s']} items/s, quality {result['quality']}, {result['threads']} "
        f"threads, gpu layers {result['gpu_layers']}"
    )
    print(f"llama.cpp share: {result['llama_share']:.3f}  target >= {TARGET}  {verdict}")


if __name__ == "__main__":
    main()
