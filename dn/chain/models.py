"""The model registry (DESIGN.md sections 4 and 7): the `model.register` and `model.retire`
rules, and the checks other rules make on a model they name.

    model:<sha256>      {"creator", "name", "domain", "price", "license", "size", "height",
                         "retired": bool, "retired_at": height (once retired), "tasks",
                         "tokens", "rejected"}
    model-name:<name>   the sha256 of the live (not retired) model holding that name

A model is registered once by its creator under a unique live name and retired by the creator
only. Rules, checks in order:
- `model.register` {model, name, domain, price, license, size}: `model:<model>` is absent
  (`model-exists`); no live model holds the name (`name-taken`).
- `model.retire` {model}: the model is registered (`unknown-model`); the sender is its creator
  (`not-creator`); it is not retired (`already-retired`). Retiring frees the name for a new
  model; miners' registrations and `serving:` are left as they are.

`live_model` is the check a miner's registration and a stake make on each model they name
(`unknown-model`, then the caller's reason for a retired one).
"""

from __future__ import annotations

from typing import Any

from dn.chain.genesis import Genesis
from dn.chain.ledger import MODEL, MODEL_NAME, Overlay, StateReader
from dn.chain.types import Tx
from dn.errors import InvalidTx


def is_model(target: str) -> bool:
    """A target is a model hash (64 lowercase hex digits) or else an address (`dn1…`)."""
    return len(target) == 64 and all(c in "0123456789abcdef" for c in target)


def live_model(state: StateReader, sha: str, retired_reason: str) -> dict[str, Any]:
    found = state.get(MODEL + sha)
    if found is None:
        raise InvalidTx(f"no model {sha[:12]}… is registered", reason="unknown-model")
    if found["retired"]:
        raise InvalidTx(f"model {found['name']!r} is retired", reason=retired_reason)
    return dict(found)


def model_register(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    p = tx.payload
    if state.get(MODEL + p["model"]) is not None:
        raise InvalidTx(f"model {p['model'][:12]}… is registered already", reason="model-exists")
    if state.get(MODEL_NAME + p["name"]) is not None:
        raise InvalidTx(f"another live model is named {p['name']!r}", reason="name-taken")
    state.set(
        MODEL + p["model"],
        {
            "creator": tx.sender,
            "name": p["name"],
            "domain": p["domain"],
            "price": p["price"],
            "license": p["license"],
            "size": p["size"],
            "height": height,
            "retired": False,
            "tasks": 0,
            "tokens": 0,
            "rejected": 0,
        },
    )
    state.set(MODEL_NAME + p["name"], p["model"])


def model_retire(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    sha = tx.payload["model"]
    found = state.get(MODEL + sha)
    if found is None:
        raise InvalidTx(f"no model {sha[:12]}… is registered", reason="unknown-model")
    if found["creator"] != tx.sender:
        raise InvalidTx("only the model's creator may retire it", reason="not-creator")
    if found["retired"]:
        raise InvalidTx(f"model {found['name']!r} is retired already", reason="already-retired")
    state.set(MODEL + sha, {**found, "retired": True, "retired_at": height})
    if state.get(MODEL_NAME + found["name"]) == sha:
        state.set(MODEL_NAME + found["name"], None)  # the name is free for a new model
