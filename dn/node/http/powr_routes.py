"""Read-only PoWR routes: where the current epoch stands, what a closed epoch decided, and the
leaderboard built from it (`dn powr status | scores | leaderboard`).

    GET /dn/v1/powr/status              height, epoch, phase and its heights, last closed epoch
    GET /dn/v1/powr/epochs/{epoch}      reveals (raw, clipped, and the standard error revealed),
                                        task stats, the result record
    GET /dn/v1/powr/leaderboard         ?epoch=N (default: the last closed) &domain=D

The leaderboard shows each model's score with its standard error and ranks ties as ties
(`dn.powr.ranking`: two models share a rank when their scores differ by no more than 1.96 times
their combined error). A model's `quality_error` is the consensus standard error of its quality
in the epoch's result (`error`, from the validators' reveals); `error` is that of its score
(`ranking.score_error`). Both are null for an epoch whose validators revealed no errors.

A validator's score after clipping is recomputed here from its revealed score, the stored
median and `powr_clip_band_ppm`, exactly as `dn.powr.consensus.clip` does; nothing is stored
twice.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from dn.chain.epochs import COMMIT, Epoch
from dn.chain.ledger import MODEL
from dn.chain.powr_rules import POWR, result_key
from dn.errors import InputError, NotFound
from dn.node.node import Node
from dn.powr.ranking import rank_label, score_error, tie_groups


def _epoch_blocks(node: Node) -> int:
    return int(node.genesis.param("epoch_blocks"))


def last_closed(height: int, blocks: int) -> int | None:
    """The newest epoch closed by block `height`: epoch e closes at (e+1)*blocks + 1."""
    newest = (height - 1) // blocks - 1 if height > blocks else -1
    return newest if newest >= 0 else None


def status(node: Node) -> dict[str, Any]:
    height, blocks = node.tip.height, _epoch_blocks(node)
    # The block being built next decides what may be sent now.
    epoch = Epoch.at(height + 1, blocks)
    phase = epoch.phase(height + 1)
    start, end = epoch.heights(phase)
    return {
        "height": height,
        "epoch_blocks": blocks,
        "epoch": epoch.number,
        "phase": phase,
        "phase_from": start,
        "phase_to": end,
        "commit_heights": list(epoch.heights(COMMIT)),
        "last_closed": last_closed(height, blocks),
    }


def _under(node: Node, prefix: str) -> dict[str, Any]:
    return {
        key[len(prefix) :]: value for key, value in node.state.items() if key.startswith(prefix)
    }


def epoch_view(node: Node, epoch: int) -> dict[str, Any]:
    if epoch < 0:
        raise InputError("an epoch is a number from 0", reason="bad-epoch")
    result = node.state.get(result_key(epoch))
    reveals = _under(node, f"{POWR}{epoch}:reveal:")
    errors = _under(node, f"{POWR}{epoch}:errors:")
    stats = _under(node, f"{POWR}{epoch}:stats:")
    current = Epoch.at(node.tip.height + 1, _epoch_blocks(node)).number
    if result is None and epoch > current:
        raise NotFound(f"epoch {epoch} has not started (this is epoch {current})")
    band = int(node.genesis.param("powr_clip_band_ppm"))
    scores: dict[str, list[dict[str, Any]]] = {}
    for validator, revealed in sorted(reveals.items()):
        for model, raw in sorted(revealed.items()):
            median = (result or {}).get("models", {}).get(model, {}).get("median")
            clipped = None if median is None else min(max(raw, median - band), median + band)
            error = errors.get(validator, {}).get(model)  # None: revealed without errors
            scores.setdefault(model, []).append(
                {"validator": validator, "raw": raw, "clipped": clipped, "error": error}
            )
    return {
        "epoch": epoch,
        "closed": result is not None,
        "clip_band": band,
        "scores": scores,
        "stats": stats,
        "result": result,
    }


def leaderboard(node: Node, epoch: int | None, domain: str | None) -> dict[str, Any]:
    if epoch is None:
        epoch = last_closed(node.tip.height, _epoch_blocks(node))
        if epoch is None:
            return {"epoch": None, "rows": []}
    result = node.state.get(result_key(epoch))
    if result is None:
        raise NotFound(f"epoch {epoch} is not closed yet")
    stats = _under(node, f"{POWR}{epoch}:stats:")
    rows = []
    for sha, record in _under(node, MODEL).items():
        if domain is not None and record["domain"] != domain:
            continue
        outcome = result["models"].get(sha)
        if outcome is None and sha not in stats:
            continue  # neither scored nor used in that epoch
        outcome = outcome or {}
        quality_error = outcome.get("error")
        rows.append(
            {
                "model": sha,
                "name": record["name"],
                "creator": record["creator"],
                "domain": record["domain"],
                "retired": record["retired"],
                "score": outcome.get("score", 0),
                "quality": outcome.get("quality", 0),
                "success": outcome.get("success", 0),
                "demand": outcome.get("demand", 0),
                "reward": outcome.get("reward", 0),
                "tasks": stats.get(sha, {}).get("tasks", 0),
                "quality_error": quality_error,
                "error": None
                if quality_error is None
                else score_error(
                    quality_error, outcome.get("success", 0), outcome.get("demand", 0)
                ),
            }
        )
    rows.sort(key=lambda r: (-r["score"], -r["reward"], r["name"]))
    ranks = tie_groups([(r["score"], r["error"]) for r in rows])
    for rank, row in zip(ranks, rows, strict=True):
        row["rank"] = rank
        row["rank_label"] = rank_label(rank, ranks)
        row["tied"] = row["rank_label"].startswith("=")
    return {"epoch": epoch, "emission": result["emission"], "paid": result["paid"], "rows": rows}


def add_powr_routes(app: FastAPI, node: Node) -> None:
    @app.get("/dn/v1/powr/status")
    async def powr_status() -> dict[str, Any]:
        return status(node)

    @app.get("/dn/v1/powr/epochs/{epoch}")
    async def powr_epoch(epoch: int) -> dict[str, Any]:
        return epoch_view(node, epoch)

    @app.get("/dn/v1/powr/leaderboard")
    async def powr_leaderboard(epoch: int | None = None, domain: str | None = None) -> Any:
        return leaderboard(node, epoch, domain)
