"""The model registry (DESIGN.md sections 4 and 7): the `model.register` and `model.retire`
rules, and the checks other rules make on a model they name.

    model:<sha256>      {"creator", "name", "domain", "price", "license", "size", "kind",
                         "height", "retired": bool, "retired_at": height (once retired),
                         "tasks", "tokens", "rejected"}
    model-name:<name>   the sha256 of the live (not retired) model holding that name, as it
                        was written (what lookups by name read)
    model-name-key:<key>  the same sha256 under the name's key (`name_key`): what makes names
                        unique

A model is registered once by its creator under a unique live name and retired by the creator
only. Rules, checks in order:
- `model.register` {model, name, domain, price, license, size, kind?}: `kind`, when given, is
  "chat" or "base" (`bad-kind`); `model:<model>` is absent (`model-exists`); no live model holds
  a name with the same key (`name-taken`), so "SmolLM2", "smollm2" and " smollm2 " are one name.
- `model.retire` {model}: the model is registered (`unknown-model`); the sender is its creator
  (`not-creator`); it is not retired (`already-retired`). Retiring frees the name (both keys) for
  a new model; miners' registrations and `serving:` are left as they are.

A model's kind says how it is asked: a `chat` model answers messages through its chat template,
a `base` model (a pretrained model with no instruct finetune and no template) only continues
plain text. A payload without `kind` (every one before kinds existed) registers a chat model,
which is how such models were served.

A name's key (`name_key`): every run of whitespace (Unicode's White_Space characters, listed in
`NAME_SPACE`) becomes one space, none is left at either end, and A-Z become a-z; every other
character is compared as it is. Case is folded for ASCII letters only, on purpose: a consensus
rule must give the same answer on every node, and Unicode's case tables grow with each Python
release (3.11 has Unicode 14, 3.14 Unicode 16, which adds cased letters such as U+A7CB, whose
lower case U+0264 is older), so a full case fold would let a name registered with a new letter
be taken on some nodes and free on others: a chain split.

`live_model` is the check a miner's registration and a stake make on each model they name
(`unknown-model`, then the caller's reason for a retired one).
"""

from __future__ import annotations

import re
from typing import Any

from dn.chain.genesis import Genesis
from dn.chain.ledger import MODEL, MODEL_NAME, MODEL_NAME_KEY, Overlay, StateReader
from dn.chain.types import Tx
from dn.errors import InvalidTx

# Unicode's White_Space property (25 code points, unchanged since Unicode 6.3), spelled out so
# that every implementation and every Python folds the same characters.
NAME_SPACE = re.compile("[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

CHAT, BASE = "chat", "base"
KINDS = (CHAT, BASE)
DEFAULT_KIND = CHAT  # a register payload without `kind`, and a record written before kinds


def kind_of(model: dict[str, Any]) -> str:
    """A model record's kind ("chat" or "base")."""
    return str(model.get("kind", DEFAULT_KIND))


def name_key(name: str) -> str:
    """What two model names must differ in to be two names: runs of whitespace are one space,
    none at the ends, and A-Z read as a-z (" SmolLM2   Instruct" -> "smollm2 instruct")."""
    return NAME_SPACE.sub(" ", name).strip(" ").translate(_ASCII_LOWER)


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
    kind = p.get("kind", DEFAULT_KIND)
    if kind not in KINDS:
        raise InvalidTx(f"kind must be {CHAT!r} or {BASE!r}, not {kind!r}", reason="bad-kind")
    if state.get(MODEL + p["model"]) is not None:
        raise InvalidTx(f"model {p['model'][:12]}… is registered already", reason="model-exists")
    key = name_key(p["name"])
    holder = state.get(MODEL_NAME_KEY + key)
    if holder is not None:
        taken = state.get(MODEL + holder)["name"]
        raise InvalidTx(
            f"the live model {taken!r} holds the name {p['name']!r} (names are compared "
            "without case and extra spaces)",
            reason="name-taken",
        )
    state.set(
        MODEL + p["model"],
        {
            "creator": tx.sender,
            "name": p["name"],
            "domain": p["domain"],
            "price": p["price"],
            "license": p["license"],
            "size": p["size"],
            "kind": kind,
            "height": height,
            "retired": False,
            "tasks": 0,
            "tokens": 0,
            "rejected": 0,
        },
    )
    state.set(MODEL_NAME + p["name"], p["model"])
    state.set(MODEL_NAME_KEY + key, p["model"])


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
    for key in (MODEL_NAME + found["name"], MODEL_NAME_KEY + name_key(found["name"])):
        if state.get(key) == sha:
            state.set(key, None)  # the name is free for a new model
