"""What serving many people at once buys: one model's aggregate generated tokens/s with 1, 2, 4
and 8 concurrent streamed queries, as a ratio to the single-query rate in the same run.

A miner runs each model on one batching engine (dn/runner/engine.py): every streamed query is a
sequence, and each step decodes one token of every one of them in one llama.cpp pass. Here `k`
client threads (k = 1, 2, 4, 8) each stream `--queries` greedy answers of up to `--tokens` tokens
(default 2 of 128) back to back through `LoadedModel.generate`, the call the miner makes; their
starts are spread over one single-query time, as independent users' would be. Measured per k:

- *tok/s*: all tokens generated / wall time; *ratio* = tok/s at k / tok/s at 1.
  Targets: ≥ 1.7 at 4, ≥ 2.0 at 8.
- *TTFT*: median time from the call to its first token. Target at 4: ≤ 2× the single query's.
- *check/gen*: each of k threads generates an answer, then checks it in chunks of 16 as a
  checker would (`LoadedModel.check`); the median check time over the median generation time.
  Target: at 4 no worse than at 1.
- *ceiling*: llama.cpp alone, one pass over k tokens of k sequences against k one-token passes
  (no engine, no Python in between): the most batching can give on this machine.

SmolLM2-135M, one context with 8 slots and `--threads` threads (default 2). The levels run in
`--rounds` interleaved rounds (default 4) and each keeps its best: on a shared machine noise only
slows a run down. Numbers are printed, never asserted; PASS or MISS against each target.

    .venv/bin/python bench/concurrency.py [--queries N] [--tokens N] [--threads N] [--rounds N]
                                          [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import model_file  # noqa: E402

from dn.runner.check import Thresholds  # noqa: E402
from dn.runner.llama import LoadedModel  # noqa: E402

LEVELS = (1, 2, 4, 8)
PROMPTS = [
    "Write a long story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a bicycle works, part by part, in detail.",
    "Describe a walk through a busy market in a coastal town.",
    "Write a letter to a friend about a trip to the mountains.",
    "Explain how bread is made, from the field to the table.",
    "Describe the life of a honey bee through the seasons.",
    "Write a short history of the printing press.",
    "Explain to a child how rain forms.",
]
TARGETS = {"ratio4": 1.7, "ratio8": 2.0, "ttft4": 2.0}
CHUNK = 16


def stream_queries(model: LoadedModel, k: int, queries: int, tokens: int, spread: float) -> Any:
    """k clients, each streaming `queries` answers back to back; (tokens, seconds, TTFTs)."""
    chats = [model.chat_prompt([{"role": "user", "content": p}]) for p in PROMPTS]
    counts = [0] * k
    ttfts: list[float] = []

    def client(i: int) -> None:
        time.sleep(spread * i / k)
        for q in range(queries):
            start = time.perf_counter()
            for n, _ in enumerate(model.generate(chats[(i + q * k) % len(chats)], tokens)):
                if n == 0:
                    ttfts.append(time.perf_counter() - start)
                counts[i] += 1

    start = time.perf_counter()
    _run_all(client, k)
    return sum(counts), time.perf_counter() - start, ttfts


def check_cost(model: LoadedModel, k: int, tokens: int) -> float:
    """k clients, each generating one answer and then checking it; median check / median gen."""
    chats = [model.chat_prompt([{"role": "user", "content": p}]) for p in PROMPTS]
    gen_s: list[float] = []
    check_s: list[float] = []

    def client(i: int) -> None:
        prompt = chats[i % len(chats)]
        start = time.perf_counter()
        answer = list(model.generate(prompt, tokens))
        gen_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        with model.check(prompt, tokens, Thresholds()) as session:
            for j in range(0, len(answer), CHUNK):
                session.feed(answer[j : j + CHUNK])
            session.finish()
        check_s.append(time.perf_counter() - start)

    _run_all(client, k)
    return statistics.median(check_s) / statistics.median(gen_s)


def _run_all(client: Any, k: int) -> None:
    threads = [threading.Thread(target=client, args=(i,)) for i in range(k)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(1800)


def ceiling(path: Path, threads: int, passes: int = 40) -> dict[int, float]:
    """k × (time of a one-token pass) / (time of a pass over one token of each of k sequences),
    llama.cpp alone. The levels take turns pass by pass and each keeps its median pass, so a
    busy moment of the machine costs them all alike."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=16, n_batch=16, verbose=False)
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch = 512 * max(LEVELS), 512, 512
    params.n_seq_max, params.kv_unified = max(LEVELS), False
    params.n_threads = params.n_threads_batch = threads
    params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED  # as the engine
    ctx = llama_cpp.llama_init_from_model(llm.model, params)
    batch = llama_cpp.llama_batch_init(512, 0, 1)
    prompt = llm.tokenize(PROMPTS[0].encode(), add_bos=True, special=True)
    times: dict[int, list[float]] = {k: [] for k in LEVELS}
    try:
        last, seqs = len(prompt) - 1, range(max(LEVELS))
        _fill(batch, [(s, i, t, i == last) for s in seqs for i, t in enumerate(prompt)])
        llama_cpp.llama_decode(ctx, batch)
        at = [len(prompt)] * max(LEVELS)  # each sequence's next position
        for j in range(passes):
            for k in LEVELS:
                _fill(batch, [(s, at[s], 100 + j, True) for s in range(k)])
                start = time.perf_counter()
                llama_cpp.llama_decode(ctx, batch)
                times[k].append(time.perf_counter() - start)
                for s in range(k):
                    at[s] += 1
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
        llm.close()
    ms = {k: statistics.median(t) for k, t in times.items()}
    return {k: round(k * ms[1] / ms[k], 2) for k in LEVELS}


def _fill(batch: Any, rows: list[tuple[int, int, int, bool]]) -> None:
    for n, (seq, pos, token, logits) in enumerate(rows):
        batch.token[n], batch.pos[n], batch.n_seq_id[n] = token, pos, 1
        batch.seq_id[n][0], batch.logits[n] = seq, logits
    batch.n_tokens = len(rows)


def run(args: argparse.Namespace) -> dict[str, Any]:
    path = model_file("smollm2-135m")
    limit = ceiling(path, args.threads)
    model = LoadedModel(path, n_threads=args.threads, n_ctx=1024, slots=max(LEVELS))
    runs: dict[int, list[dict[str, Any]]] = {k: [] for k in LEVELS}
    checks: dict[int, list[float]] = {1: [], 4: []}
    try:
        list(model.generate(model.chat_prompt([{"role": "user", "content": "Hi"}]), 8))  # warm
        spread = 0.0
        for round_ in range(args.rounds):
            for k in LEVELS:
                tokens, seconds, ttfts = stream_queries(model, k, args.queries, args.tokens, spread)
                if k == 1 and not spread:
                    spread = seconds / args.queries  # one single query's time
                runs[k].append(
                    {
                        "tokens": tokens,
                        "seconds": round(seconds, 2),
                        "tok_s": round(tokens / seconds, 1),
                        "ttft_s": round(statistics.median(ttfts), 3),
                    }
                )
                print(f"  round {round_ + 1} k={k}: {runs[k][-1]}", file=sys.stderr)
            for k in checks:
                checks[k].append(check_cost(model, k, args.tokens))
                print(f"  round {round_ + 1} k={k}: check/gen {checks[k][-1]:.3f}", file=sys.stderr)
    finally:
        model.close()
    # A shared 2-core machine is noisy, and noise only ever slows a run down: each level keeps
    # its best round (the fastest, the quickest first token, the cheapest check).
    rows: dict[int, dict[str, Any]] = {}
    for k in LEVELS:
        best = max(runs[k], key=lambda r: r["tok_s"])
        rows[k] = {**best, "ttft_s": min(r["ttft_s"] for r in runs[k])}
    for k in LEVELS:
        rows[k]["ratio"] = round(rows[k]["tok_s"] / rows[1]["tok_s"], 2)
        rows[k]["ttft_ratio"] = round(rows[k]["ttft_s"] / rows[1]["ttft_s"], 2)
        rows[k]["ceiling"] = limit[k]
    for k, seen in checks.items():
        rows[k]["check_gen"] = round(min(seen), 3)
    return {
        "threads": args.threads,
        "queries": args.queries,
        "max_tokens": args.tokens,
        "rounds": args.rounds,
        "rows": rows,
        "pass": {
            "ratio4": rows[4]["ratio"] >= TARGETS["ratio4"],
            "ratio8": rows[8]["ratio"] >= TARGETS["ratio8"],
            "ttft4": rows[4]["ttft_ratio"] <= TARGETS["ttft4"],
            "check4": rows[4]["check_gen"] <= rows[1]["check_gen"],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=2, help="answers each client streams")
    parser.add_argument("--tokens", type=int, default=128, help="max_tokens of each answer")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4, help="every level this many times")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{'k':>2} {'tokens':>7} {'s':>7} {'tok/s':>7} {'ratio':>6} {'ceiling':>8} {'TTFT s':>7}")
    for k, r in result["rows"].items():
        print(
            f"{k:>2} {r['tokens']:>7} {r['seconds']:>7} {r['tok_s']:>7} {r['ratio']:>6} "
            f"{r['ceiling']:>8} {r['ttft_s']:>7}"
        )
    rows, ok = result["rows"], result["pass"]

    def mark(passed: bool) -> str:
        return "PASS" if passed else "MISS"

    print(f"ratio at 4: {rows[4]['ratio']} (target >= 1.7) {mark(ok['ratio4'])}")
    print(f"ratio at 8: {rows[8]['ratio']} (target >= 2.0) {mark(ok['ratio8'])}")
    print(f"TTFT at 4 / at 1: {rows[4]['ttft_ratio']} (target <= 2) {mark(ok['ttft4'])}")
    print(
        f"check/generate at 4: {rows[4]['check_gen']}, at 1: {rows[1]['check_gen']} "
        f"(target: no worse) {mark(ok['check4'])}"
    )


if __name__ == "__main__":
    main()
