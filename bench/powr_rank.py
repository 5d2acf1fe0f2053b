"""PoWR ranking of the catalog models on the built-in suites, beside public benchmark numbers.

Each catalog model (SmolLM2-135M-Instruct, a chat model; Gemma 3 270M, a base model) is
evaluated as a validator evaluates it (`dn.powr.evaluate.evaluate`, asked as its file's kind
says: chat template or completion prompt) on every built-in suite, or on `--items` items of each
sampled by `--seed`. Printed: each model's quality q ± its standard error per domain and over all
items, the ranking with ties (`dn.powr.ranking`: tied when the difference is within 1.96
combined standard errors), and the same two models' published benchmark scores (`PUBLISHED`,
copied by hand from the model cards; nothing is downloaded) with the order they give.
`--both-kinds` also runs each model asked the other way (a base model through a chat template),
to show what asking by kind is worth; `--only choice` runs the choice items alone (scored by
log-probability, as HellaSwag and PIQA are). Numbers are printed, never asserted; the results of one
run are in docs/verification.md.

    .venv/bin/python bench/powr_rank.py [--items N] [--seed TEXT] [--max-tokens N]
                                        [--threads N] [--both-kinds] [--only KIND] [--json]

One llama.cpp thread by default: on a busy 2-core machine two threads wait on each other.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import model_file  # noqa: E402

from dn.powr.evaluate import evaluate  # noqa: E402
from dn.powr.grading import quality, standard_error  # noqa: E402
from dn.powr.ranking import rank_label, tie_groups  # noqa: E402
from dn.powr.suites import builtin_domains, builtin_suite, sample_items  # noqa: E402
from dn.runner.gguf import read_header  # noqa: E402
from dn.runner.llama import LoadedModel  # noqa: E402

MODELS = ("smollm2-135m", "gemma3-270m")
# Published scores (percent) of the two catalog models, from their model cards on Hugging Face:
# huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct ("Instruction model" table, lighteval,
# zero-shot) and huggingface.co/google/gemma-3-270m ("Pre-trained" table). The setups differ
# (shots, harness, prompt format), which docs/verification.md discusses.
PUBLISHED: dict[str, dict[str, tuple[float, str]]] = {
    "HellaSwag": {"smollm2-135m": (40.9, "0-shot"), "gemma3-270m": (40.9, "10-shot")},
    "PIQA": {"smollm2-135m": (66.3, "0-shot"), "gemma3-270m": (67.7, "0-shot")},
}


def run_model(name: str, args: argparse.Namespace, kinds: list[str]) -> dict[str, dict[str, Any]]:
    path = model_file(name)
    own = read_header(path).kind
    model = LoadedModel(path, n_threads=args.threads, n_ctx=1024)
    out: dict[str, dict[str, Any]] = {}
    try:
        for kind in [own] + [k for k in kinds if k != own]:
            grades: list[float] = []
            by_kind: dict[str, list[float]] = {}
            domains: dict[str, Any] = {}
            start = time.perf_counter()
            for domain in builtin_domains():
                suite = builtin_suite(domain)
                items = list(suite.items)
                if args.items is not None:
                    items = sample_items(suite, args.items, args.seed.encode())
                if args.only is not None:
                    items = [item for item in items if item.kind == args.only]
                run = evaluate(model, items, max_tokens=args.max_tokens, model_kind=kind)
                scores = [r.score for r in run.results]
                grades += scores
                for r in run.results:
                    by_kind.setdefault(r.kind, []).append(r.score)
                domains[domain] = {"items": len(scores), "q": run.quality, "se": run.stderr}
                print(
                    f"{name} as {kind}: {domain} q {run.quality:.3f} ± {run.stderr:.3f} "
                    f"({len(scores)} items, {time.perf_counter() - start:.0f} s so far)",
                    file=sys.stderr,
                )
            label = name if kind == own else f"{name} (asked as {kind})"
            out[label] = {
                "model": name,
                "kind": kind,
                "own_kind": own,
                "items": len(grades),
                "q": quality(grades),
                "se": standard_error(grades),
                "domains": domains,
                "by_kind": {
                    k: {"items": len(v), "q": quality(v), "se": standard_error(v)}
                    for k, v in sorted(by_kind.items())
                },
            }
    finally:
        model.llm.close()
    return out


def ranked(rows: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    ppm = 1_000_000
    order = sorted(rows, key=lambda label: -rows[label]["q"])
    entries = [(round(rows[k]["q"] * ppm), round(rows[k]["se"] * ppm)) for k in order]
    ranks = tie_groups(entries)
    return [(rank_label(r, ranks), label) for r, label in zip(ranks, order, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=None, help="items per domain (default all)")
    parser.add_argument("--seed", default="powr-rank", help="picks the --items sample")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--both-kinds", action="store_true", help="also ask the other way")
    parser.add_argument(
        "--only", choices=["exact", "contains", "choice", "numeric"], help="only items of a kind"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    kinds = ["chat", "base"] if args.both_kinds else []
    rows: dict[str, dict[str, Any]] = {}
    for name in MODELS:
        rows.update(run_model(name, args, kinds))
    own = {label: row for label, row in rows.items() if row["kind"] == row["own_kind"]}
    result = {
        "rows": rows,
        "ranking": ranked(own),
        "ranking_all": ranked(rows),
        "published": PUBLISHED,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    domains = builtin_domains()
    print("model".ljust(36) + "".join(d.rjust(16) for d in domains) + "all".rjust(16))
    for label, row in rows.items():
        cells = [f"{row['domains'][d]['q']:.3f} ± {row['domains'][d]['se']:.3f}" for d in domains]
        cells.append(f"{row['q']:.3f} ± {row['se']:.3f}")
        print(label.ljust(36) + "".join(c.rjust(16) for c in cells))
    for label, row in rows.items():
        per_kind = ", ".join(
            f"{k} {v['q']:.3f} ± {v['se']:.3f} ({v['items']})" for k, v in row["by_kind"].items()
        )
        print(f"{label}: {per_kind}")
    print("PoWR ranking (each model asked as its kind):")
    for rank, label in result["ranking"]:
        print(f"  {rank:>3} {label}")
    print("published (percent):")
    for bench, scores in PUBLISHED.items():
        shown = ", ".join(f"{m} {v:.1f} ({shots})" for m, (v, shots) in scores.items())
        print(f"  {bench}: {shown}")


if __name__ == "__main__":
    main()
