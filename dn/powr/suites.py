"""PoWR benchmark suites: loading, validation and seeded sampling (DESIGN.md section 8).

A suite is a JSONL file, one item per line (blank lines are skipped):

    {"id": "gen-001", "prompt": "…", "answer": "Paris", "kind": "exact"}
    {"id": "gen-030", "prompt": "Question: …\\nAnswer:", "answer": "cow", "kind": "choice",
     "choices": ["cow", "dog", "cat", "duck"]}
    {"id": "hea-040", "prompt": "…", "answer": 37, "kind": "numeric", "tolerance": 0.5}

Fields, all checked on load (an error names the file and line):
- `id`       non-empty string, unique within the suite.
- `prompt`   non-empty string. Choice prompts are written to be continued by a choice: the
             evaluator scores `prompt + " " + choice` for each choice.
- `kind`     exact | contains | choice | numeric; `dn/powr/grading.py` says how each is graded.
- `answer`   a string for exact, contains and choice (for choice, one of `choices`); a number
             for numeric.
- `choices`  choice items only, and required there: at least two distinct non-empty strings
             without surrounding whitespace.
- `aliases`  exact and contains items only, optional: other strings accepted as the answer
             ("USD" for "US dollar", "kidneys" for "kidney").
- `tolerance` numeric items only, optional: an absolute tolerance ≥ 0 (default 0). A relative
             one would let an answer of 0 demand an exact match anyway; absolute is explicit.

The built-in suites (general, finance, health, code) ship as package data in `dn/powr/suites/`;
users load their own with `load_suite(path)`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal, cast, get_args

from dn.errors import InputError
from dn.powr.grading import normalize

Kind = Literal["exact", "contains", "choice", "numeric"]
KINDS: tuple[Kind, ...] = get_args(Kind)

_REQUIRED = ("id", "prompt", "answer", "kind")
_OPTIONAL: dict[str, tuple[str, ...]] = {
    "exact": ("aliases",),
    "contains": ("aliases",),
    "choice": ("choices",),
    "numeric": ("tolerance",),
}
_ALL_FIELDS = frozenset(_REQUIRED).union(*_OPTIONAL.values())
_DOMAIN_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")


@dataclass(frozen=True)
class Item:
    """One benchmark question; see the module docstring for the fields."""

    id: str
    prompt: str
    answer: str | int | float
    kind: Kind
    choices: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    tolerance: float = 0.0


@dataclass(frozen=True)
class Suite:
    """A validated suite: its name (the domain, or the file's stem), its items in file order, and
    the SHA-256 of the file's bytes, so a validator can say which version of a suite it ran."""

    name: str
    items: tuple[Item, ...]
    sha256: str

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)


# --- loading --------------------------------------------------------------------------------


class _Problem(ValueError):
    """What is wrong with one line; `parse_suite` adds the file and line number."""


def load_suite(path: str | os.PathLike[str]) -> Suite:
    """Read and validate the suite file at `path`; its name is the file's stem."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(
            f"cannot read suite file {os.fspath(path)}: {exc.strerror or exc}", reason="bad-suite"
        ) from None
    return parse_suite(data, name=Path(path).stem, source=os.fspath(path))


def parse_suite(data: bytes, *, name: str, source: str) -> Suite:
    """Validate the JSONL bytes of a suite; `source` names the file in error messages."""

    def fail(line: int | None, problem: str) -> InputError:
        where = f"{source}, line {line}" if line is not None else source
        return InputError(f"{where}: {problem}", reason="bad-suite")

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise fail(data.count(b"\n", 0, exc.start) + 1, "not UTF-8 text") from None
    items: list[Item] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            item = _parse_item(line)
        except _Problem as exc:
            raise fail(number, str(exc)) from None
        if item.id in first_line:
            raise fail(number, f"duplicate id {item.id!r} (first on line {first_line[item.id]})")
        first_line[item.id] = number
        items.append(item)
    if not items:
        raise fail(None, "the suite has no items")
    return Suite(name=name, items=tuple(items), sha256=hashlib.sha256(data).hexdigest())


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise _Problem(f"field {key!r} appears twice")
    return dict(pairs)


def _reject_constant(name: str) -> None:
    raise _Problem(f"{name} is not a number JSON allows")


def _parse_item(line: str) -> Item:
    try:
        raw = json.loads(
            line, object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as exc:
        raise _Problem(f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(raw, dict):
        raise _Problem(f"not a JSON object but {_json_type(raw)}")
    missing = [f for f in _REQUIRED if f not in raw]
    if missing:
        raise _Problem(f"missing field {_names(missing)}")
    unknown = sorted(set(raw) - _ALL_FIELDS)
    if unknown:
        raise _Problem(
            f"unknown field {_names(unknown)} (allowed: {', '.join(sorted(_ALL_FIELDS))})"
        )

    ident = _text(raw, "id")
    prompt = _text(raw, "prompt")
    kind = raw["kind"]
    if kind not in KINDS:
        raise _Problem(f"'kind' must be one of {', '.join(KINDS)}, not {kind!r}")
    kind = cast(Kind, kind)
    misplaced = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL[kind]))
    if misplaced:
        raise _Problem(f"field {_names(misplaced)} is not allowed on {kind} items")

    if kind == "numeric":
        answer = raw["answer"]
        if not _is_number(answer):
            raise _Problem(f"'answer' of a numeric item must be a number, not {_json_type(answer)}")
        tolerance = raw.get("tolerance", 0)
        if not _is_number(tolerance) or tolerance < 0:
            raise _Problem(f"'tolerance' must be a number >= 0, not {tolerance!r}")
        return Item(ident, prompt, answer, kind, tolerance=float(tolerance))
    if kind == "choice":
        choices = raw.get("choices")
        if choices is None:
            raise _Problem("a choice item needs 'choices'")
        if not isinstance(choices, list) or not all(_clean_string(c) for c in choices):
            raise _Problem(
                "'choices' must be a list of non-empty strings without surrounding whitespace"
            )
        if len(set(choices)) < 2:
            raise _Problem("'choices' must hold at least 2 distinct choices")
        if len(set(choices)) != len(choices):
            raise _Problem("'choices' has a duplicate")
        answer = raw["answer"]
        if answer not in choices:
            raise _Problem(f"'answer' {answer!r} is not one of the choices")
        return Item(ident, prompt, answer, kind, choices=tuple(choices))
    answer = _gradable(raw["answer"], "'answer'")
    aliases = raw.get("aliases", [])
    if not isinstance(aliases, list):
        raise _Problem(f"'aliases' must be a list of strings, not {_json_type(aliases)}")
    return Item(
        ident,
        prompt,
        answer,
        kind,
        aliases=tuple(_gradable(a, f"alias {i + 1}") for i, a in enumerate(aliases)),
    )


def _text(raw: dict[str, Any], field: str) -> str:
    value = raw[field]
    if not isinstance(value, str) or not value.strip():
        raise _Problem(f"{field!r} must be a non-empty string, not {value!r}")
    return value


def _gradable(value: Any, what: str) -> str:
    """A string answer that still says something once normalized (else every output contains it)."""
    if not isinstance(value, str):
        raise _Problem(f"{what} must be a string, not {_json_type(value)}")
    if not normalize(value):
        raise _Problem(f"{what} {value!r} is empty once normalized")
    return value


def _clean_string(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and value == value.strip()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    names: dict[type, str] = {str: "a string", list: "an array", dict: "an object"}
    return names.get(type(value), "a value")


def _names(fields: list[str]) -> str:
    return ", ".join(repr(f) for f in fields)


# --- built-in suites ------------------------------------------------------------------------


def _builtin_dir() -> Traversable:
    return resources.files("dn.powr").joinpath("suites")


def builtin_domains() -> tuple[str, ...]:
    """The domains of the suites shipped with DeepNode, sorted."""
    names = (entry.name for entry in _builtin_dir().iterdir())
    return tuple(sorted(n.removesuffix(".jsonl") for n in names if n.endswith(".jsonl")))


@functools.cache
def builtin_suite(domain: str) -> Suite:
    """The shipped suite for `domain`; InputError if there is none."""
    if not _DOMAIN_RE.fullmatch(domain) or domain not in builtin_domains():
        raise InputError(
            f"no built-in suite {domain!r} (built-in: {', '.join(builtin_domains())})",
            reason="bad-suite",
        )
    entry = _builtin_dir().joinpath(f"{domain}.jsonl")
    return parse_suite(entry.read_bytes(), name=domain, source=f"dn/powr/suites/{domain}.jsonl")


# --- which suite ----------------------------------------------------------------------------

FALLBACK_DOMAIN = "general"


def suite_domain(domain: str | None) -> str:
    """The built-in suite a model of `domain` is evaluated on: its own where one ships, else
    `general` (also for a model whose domain is not known)."""
    return domain if domain is not None and domain in builtin_domains() else FALLBACK_DOMAIN


def choose_suite(
    suite_file: str | os.PathLike[str] | None = None,
    domain: str | None = None,
    model_domain: str | None = None,
) -> Suite:
    """The suite file `suite_file`, else the built-in suite of `domain` (InputError if none
    ships), else the one a model of `model_domain` is evaluated on (`suite_domain`). A file and
    a domain together are an InputError."""
    if suite_file is not None and domain is not None:
        raise InputError("give --suite or --domain, not both", reason="bad-option")
    if suite_file is not None:
        return load_suite(suite_file)
    if domain is not None:
        return builtin_suite(domain)
    return builtin_suite(suite_domain(model_domain))


# --- sampling -------------------------------------------------------------------------------


def sample_seed(first_block_hash: str) -> bytes:
    """The seed every validator samples with in an epoch: from the hex hash of the block fixed
    just before the epoch (see dn/node/validator/powr.py), so the sample is fixed before anyone
    sees an answer and is the same for every validator. One shared exam is what lets honest
    validators agree up to hardware drift: with a sample of their own, a few items each, two
    honest validators revealed 1.0 and 0.667 for one model, and one's agreement fell to 0."""
    try:
        block = bytes.fromhex(first_block_hash)
    except ValueError:
        raise InputError(f"not a hex block hash: {first_block_hash!r}") from None
    return hashlib.sha256(b"dn-powr-seed\x00" + len(block).to_bytes(4, "big") + block).digest()


def sample_items(suite: Suite, k: int, seed: bytes) -> list[Item]:
    """`k` distinct items of `suite` (all of them if it has fewer), chosen by `seed` alone.

    Each item is ranked by SHA-256(domain tag, seed, item id) and the k lowest are taken, in
    that order. The sample depends on the seed and the ids only — not on the order of the file,
    nor on any global random state — and adding one item to a suite changes at most one pick.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise InputError(f"the sample size must be a whole number >= 0, not {k!r}")
    if not isinstance(seed, (bytes, bytearray)):
        raise InputError("the sampling seed must be bytes")
    prefix = b"dn-powr-sample\x00" + len(seed).to_bytes(4, "big") + bytes(seed)
    ranked = sorted(
        suite.items, key=lambda item: hashlib.sha256(prefix + item.id.encode()).digest()
    )
    return ranked[:k]
