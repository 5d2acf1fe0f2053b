"""What the network and models pages show, read from a node's state (no I/O beyond its store).

Each function returns plain data for a template: amounts stay in units (the templates format
them), scores stay in ppm, and the charts are drawn here with `charts`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dn.chain import tasks, validators
from dn.chain.consensus import in_turn
from dn.chain.ledger import MODEL
from dn.chain.models import kind_of
from dn.chain.powr_rules import result_key
from dn.chain.staking import backers_of
from dn.node.http.dashboard.charts import Bar, BarGroup, Series, bar_chart, line_chart
from dn.node.http.powr_routes import epoch_view, last_closed, leaderboard
from dn.node.http.powr_routes import status as powr_status
from dn.node.node import Node

if TYPE_CHECKING:
    from dn.node.p2p.network import Network

PPM = 1_000_000
RECENT_BLOCKS = 10  # rows of the "last blocks" table
TURNS_AHEAD = 3  # upcoming in-turn heights shown per validator
SIGNED_WINDOW = 50  # blocks over which each validator's signatures are counted
HISTORY_EPOCHS = 20  # epochs of PoWR history in the score chart


def ppm(value: float) -> str:
    """A ppm score as a fraction of 1: 734500 -> '0.7345'."""
    return f"{value / PPM:.4f}".rstrip("0").rstrip(".") if value else "0"


def block_row(node: Node, height: int) -> dict[str, Any] | None:
    block = node.store.block(height)
    if block is None:
        return None
    header = block.header
    return {
        "height": header.height,
        "hash": block.hash,
        "proposer": header.proposer,
        "txs": len(block.txs),
        "kinds": sorted({tx.kind for tx in block.txs}),
        "time": header.time,
        "difficulty": header.difficulty,
    }


def network_view(node: Node, network: Network | None) -> dict[str, Any]:
    """This node, its peers, the validators and their turns, the last blocks."""
    status = node.status()
    height = node.tip.height
    members = node.validators
    recent = node.store.recent_proposers(SIGNED_WINDOW)
    rows = []
    for address in members:
        upcoming = [h for h in range(height + 1, height + 1 + len(members) * TURNS_AHEAD)]
        turns = [h for h in upcoming if in_turn(members, h) == address][:TURNS_AHEAD]
        record = node.state.get(validators.VALIDATOR + address) or {}
        rows.append(
            {
                "address": address,
                "genesis": address in node.genesis.validators,
                "weight": validators.own_weight(node.state, node.genesis, address),
                "bond": record.get("bond", 0),
                "signed": sum(1 for _, proposer in recent if proposer == address),
                "next": turns,
                "in_turn": bool(turns) and turns[0] == height + 1,
                "jailed": record.get("jailed") is not None,
                "me": address == status["node_address"],
            }
        )
    blocks = [block_row(node, h) for h in range(height, max(height - RECENT_BLOCKS, 0), -1)]
    return {
        "status": status,
        "peers": network.peer_list() if network is not None else None,
        "validators": rows,
        "signed_window": min(SIGNED_WINDOW, len(recent)),
        "blocks": [b for b in blocks if b is not None],
        "powr": powr_status(node),
    }


def model_rows(node: Node) -> list[dict[str, Any]]:
    """Every model on chain: name, creator, price, the miners serving it now, its tasks."""
    height = node.tip.height
    rows = []
    for key, record in sorted(node.state.items()):
        if not key.startswith(MODEL):
            continue
        sha = key[len(MODEL) :]
        rows.append(
            {
                "id": sha,
                "name": record["name"],
                "creator": record["creator"],
                "domain": record["domain"],
                "kind": kind_of(record),
                "price": record["price"],
                "license": record.get("license", ""),
                "retired": record["retired"],
                "miners": tasks.eligible_miners(node.state, sha, height),
                "tasks": record.get("tasks", 0),
                "rejected": record.get("rejected", 0),
                "tokens": record.get("tokens", 0),
                "backed": sum(backers_of(node.state, sha).values()),
            }
        )
    rows.sort(key=lambda r: (r["retired"], r["name"]))
    return rows


def score_history(node: Node, last: int | None) -> dict[str, list[tuple[int, int]]]:
    """Each model's PoWR score (ppm) in the closed epochs up to `last`, by model sha."""
    found: dict[str, list[tuple[int, int]]] = {}
    if last is None:
        return found
    for epoch in range(max(0, last - HISTORY_EPOCHS + 1), last + 1):
        result = node.state.get(result_key(epoch)) or {}
        for sha, outcome in result.get("models", {}).items():
            found.setdefault(sha, []).append((epoch, int(outcome.get("score", 0))))
    return found


def _name(node: Node, sha: str) -> str:
    record = node.state.get(MODEL + sha)
    return str(record["name"]) if record else sha[:12]


def models_view(node: Node, epoch: int | None) -> dict[str, Any]:
    """The models, the leaderboard of the last closed epoch, the score of each model over past
    epochs, and each validator's revealed and clipped score in `epoch` (default: the last
    closed one)."""
    status = powr_status(node)
    closed = last_closed(node.tip.height, status["epoch_blocks"])
    board = leaderboard(node, None, None)
    history = score_history(node, closed)
    score_chart = line_chart(
        [
            Series(_name(node, sha), tuple((float(e), s / PPM) for e, s in points))
            for sha, points in sorted(history.items(), key=lambda kv: _name(node, kv[0]))
        ],
        title="PoWR score by epoch",
        x_label="epoch",
        y_label="score",
        y_range=(0.0, 1.0),
        empty="no epoch has closed yet",
    )
    shown = closed if epoch is None else epoch
    reveals: dict[str, Any] | None = None
    reveal_chart = ""
    if shown is not None:
        reveals = epoch_view(node, shown)
        medians = (reveals["result"] or {}).get("models", {})
        groups = []
        table = []
        for sha, entries in sorted(reveals["scores"].items(), key=lambda kv: _name(node, kv[0])):
            bars: list[Bar] = []
            for entry in entries:
                who = entry["validator"]
                bars.append(Bar("revealed", entry["raw"] / PPM, who[:14]))
                if entry["clipped"] is not None:
                    bars.append(Bar("clipped", entry["clipped"] / PPM, who[:14]))
                table.append({"model": sha, "name": _name(node, sha), **entry})
            median = medians.get(sha, {}).get("median")
            mark = None if median is None else median / PPM
            groups.append(BarGroup(_name(node, sha), tuple(bars), mark))
        reveal_chart = bar_chart(
            groups,
            title=f"Epoch {shown}: each validator's revealed and clipped quality",
            y_label="quality",
            y_range=(0.0, 1.0),
            mark_name="median (weighted by voice)",
            empty="no validator revealed scores in this epoch",
        )
        reveals = {**reveals, "rows": table}
    return {
        "models": model_rows(node),
        "board": board,
        "powr": status,
        "closed": closed,
        "epoch": shown,
        "epochs": list(range(max(0, (closed or 0) - HISTORY_EPOCHS + 1), (closed or 0) + 1))
        if closed is not None
        else [],
        "reveals": reveals,
        "score_chart": score_chart,
        "reveal_chart": reveal_chart,
    }
