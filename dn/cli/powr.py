"""`dn powr …`: Proof-of-Work-Relevance (DESIGN.md section 8). `dn powr eval MODEL` runs a
benchmark suite on a local model and grades it, as a validator does every epoch; `status`,
`scores` and `leaderboard` show what the chain decided at each epoch's close."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from dn.cli.output import emit, opts, progress, say, table
from dn.client.powr import DEFAULT_SEED

if TYPE_CHECKING:
    from rich.console import Console

    from dn.powr.evaluate import ItemResult

app = typer.Typer(
    help="Proof-of-Work-Relevance: benchmark suites and model quality.", no_args_is_help=True
)


def _snippet(text: str, width: int = 48) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _answer(result: ItemResult) -> str:
    if result.logprobs is not None:
        best = result.answer()
        return f"{best} ({result.logprobs[best]:.2f})"
    return _snippet(result.output or "")


@app.command("eval")
def eval_(
    ctx: typer.Context,
    model_ref: str = typer.Argument(
        ...,
        metavar="MODEL",
        help="A known model name (installed with 'dn model fetch'), a .gguf file, or a model in "
        "$DN_HOME/models by name, SHA-256 or hash prefix.",
    ),
    suite_file: Path | None = typer.Option(
        None, "--suite", help="A suite file (JSONL) to run instead of a built-in one."
    ),
    domain: str | None = typer.Option(
        None,
        "--domain",
        help="Run this built-in suite (general, finance, health, code). Default: the model's "
        "domain when it has a suite, else general.",
    ),
    items: int | None = typer.Option(
        None, "--items", min=1, help="Run N items sampled by --seed (default: the whole suite)."
    ),
    seed: str | None = typer.Option(
        None, "--seed", help=f"Text that picks the --items sample (default {DEFAULT_SEED!r})."
    ),
    max_tokens: int = typer.Option(
        32, "--max-tokens", min=1, max=1024, help="Longest answer generated per item."
    ),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="llama.cpp threads (default: the cores, up to 8)."
    ),
    kind: str | None = typer.Option(
        None,
        "--kind",
        help="Ask the model as a chat or a base model (default: what its file says: chat when "
        "it has a chat template).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print everything as JSON."),
) -> None:
    """Run a benchmark suite on a local model and grade every answer (the quality score q).

    Exact, contains and numeric items are graded on greedy answers to the model's chat prompt
    (--kind chat) or to a completion prompt "Question: …\\nAnswer:" cut at the first newline
    (--kind base), choice items by the log-probability of each choice, as a validator does every
    epoch. The quality is shown with its standard error."""
    from dn.client.powr import evaluate_local
    from dn.config import home
    from dn.runner.modelstore import ModelStore

    if json_out:
        opts(ctx).json = True
    run = evaluate_local(
        ModelStore.default(home(opts(ctx).home)),
        model_ref,
        suite_file=suite_file,
        domain=domain,
        items=items,
        seed=seed,
        max_tokens=max_tokens,
        threads=threads,
        kind=kind,
        bar=progress,
        notify=say,
    )
    data = run.to_json()
    evaluation, chosen, n_threads = run.evaluation, run.items, run.threads
    expected = {item.id: item.answer for item in chosen}

    def human(out: Console) -> None:
        rows = [
            [r.id, r.kind, f"{r.score:g}", _snippet(str(expected[r.id]), 24), _answer(r)]
            for r in evaluation.results
        ]
        out.print(table(None, ["id", "kind", "score", "expected", "answer"], rows))
        kinds = ", ".join(
            f"{kind} {k['right']}/{k['items']}" for kind, k in data["by_kind"].items()
        )
        out.print(
            f"quality [bold]{evaluation.quality:.3f} ± {evaluation.stderr:.3f}[/] "
            f"({data['right']}/{len(chosen)} right: {kinds}) for {run.model.name} "
            f"({evaluation.model_kind}) on suite {run.suite.name}"
        )
        out.print(
            f"{len(chosen)} items in {evaluation.seconds:.1f} s ({evaluation.items_per_s:.2f} "
            f"items/s, {evaluation.llama_share:.0%} inside llama.cpp, "
            f"{n_threads} thread{'s' if n_threads > 1 else ''})"
        )

    emit(ctx, data, human)


def _ppm(value: int | None) -> str:
    return "-" if value is None else f"{value / 1_000_000:.3f}"


def _with_error(value: int, error: int | None) -> str:
    return _ppm(value) if error is None else f"{_ppm(value)} ± {_ppm(error)}"


@app.command("status")
def status_(ctx: typer.Context) -> None:
    """Where the current PoWR epoch stands: its phase (commit or reveal) and the last closed."""
    with opts(ctx).client() as client:
        data = client.powr_status()

    def human(out: Console) -> None:
        out.print(
            f"height {data['height']}: epoch {data['epoch']} ({data['epoch_blocks']} blocks), "
            f"{data['phase']} phase until block {data['phase_to']}"
        )
        closed = data["last_closed"]
        out.print("no epoch closed yet" if closed is None else f"last closed epoch: {closed}")

    emit(ctx, data, human)


@app.command()
def scores(
    ctx: typer.Context,
    epoch: int = typer.Option(..., "--epoch", min=0, help="The epoch to show."),
) -> None:
    """Each validator's scores for an epoch, before and after clipping, and its reward.

    Clipping moves every revealed score to within the clip band of the model's stake-weighted
    median, in both directions."""
    with opts(ctx).client() as client:
        data = client.powr_epoch(epoch)
        names = {m["id"]: m["name"] for m in client.models()["models"]}

    def human(out: Console) -> None:
        from dn.encoding import format_dn

        result = data["result"] or {}
        state = "closed" if data["closed"] else "open (medians and clipping come at its close)"
        out.print(f"epoch {epoch}: {state}; clip band ±{_ppm(data['clip_band'])}")
        rows = []
        for model, entries in sorted(data["scores"].items()):
            median = result.get("models", {}).get(model, {}).get("median")
            for entry in entries:
                rows.append(
                    [
                        names.get(model, model[:12]),
                        entry["validator"],
                        _ppm(entry["raw"]),
                        _ppm(entry["clipped"]),
                        _ppm(median),
                    ]
                )
        if rows:
            columns = ["model", "validator", "revealed", "clipped", "median"]
            out.print(table("scores", columns, rows))
        else:
            out.print("no scores revealed")
        validators = result.get("validators", {})
        if validators:
            vrows = [
                [
                    address,
                    format_dn(v["stake"]),
                    "yes" if v["revealed"] else "no",
                    _ppm(v["agreement"]),
                    format_dn(v["reward"]),
                ]
                for address, v in sorted(validators.items())
            ]
            columns = ["validator", "stake (DN)", "revealed", "agreement", "reward (DN)"]
            out.print(table("validators", columns, vrows))

    emit(ctx, data, human)


@app.command()
def leaderboard(
    ctx: typer.Context,
    domain: str | None = typer.Option(None, "--domain", help="Only models of this domain."),
    epoch: int | None = typer.Option(
        None, "--epoch", min=0, help="The epoch (default: the last closed one)."
    ),
) -> None:
    """Models ranked by consensus PoWR score in a closed epoch, with what each earned.

    Scores and qualities are shown ± their standard error; two models whose scores differ by no
    more than 1.96 times their combined error share a rank, shown as "=2". Also shows each
    model's task success rate and demand."""
    with opts(ctx).client() as client:
        data = client.powr_leaderboard(epoch=epoch, domain=domain)

    def human(out: Console) -> None:
        from dn.encoding import format_dn

        if data["epoch"] is None:
            out.print("no epoch has closed yet")
            return
        out.print(
            f"epoch {data['epoch']}: {format_dn(data['paid'])} DN of {format_dn(data['emission'])} "
            "DN emission paid"
        )
        if not data["rows"]:
            out.print("no models were scored or used in that epoch")
            return
        rows = [
            [
                r.get("rank_label", str(r["rank"])),
                r["name"],
                r["creator"][:16] + "…",
                r["domain"],
                _with_error(r["score"], r.get("error")),
                _with_error(r["quality"], r.get("quality_error")),
                _ppm(r["success"]),
                _ppm(r["demand"]),
                r["tasks"],
                format_dn(r["reward"]),
            ]
            for r in data["rows"]
        ]
        columns = ["rank", "model", "creator", "domain", "score", "quality", "success", "demand"]
        out.print(table(None, [*columns, "tasks", "reward (DN)"], rows))
        if any(r.get("error") is not None for r in data["rows"]):
            out.print('± one standard error; "=" marks models within 1.96 errors of each other')

    emit(ctx, data, human)
