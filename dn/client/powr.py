"""Running a PoWR benchmark on a model on this machine, as a validator does every epoch but on
demand (`dn powr eval`); no node is needed.

    run = evaluate_local(ModelStore.default(), "smollm2", items=8)
    run.evaluation.quality, run.to_json()
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dn.client.models import Bar, LocalModel, find_local_model, no_bar
from dn.errors import InputError

if TYPE_CHECKING:
    from dn.powr.evaluate import Evaluation
    from dn.powr.suites import Item, Suite
    from dn.runner.modelstore import ModelStore

DEFAULT_SEED = "powr"


@dataclass(frozen=True)
class LocalEvaluation:
    """One run of a suite (or a sample of it) on a local model, and how it was set up."""

    model: LocalModel
    suite: Suite
    suite_file: Path | None
    items: list[Item]  # what was run, in order
    sample: dict[str, Any]  # {"items": k or None, "seed": the seed text or None}
    max_tokens: int
    threads: int
    evaluation: Evaluation

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model.to_json(),
            "suite": {
                "name": self.suite.name,
                "sha256": self.suite.sha256,
                "size": len(self.suite),
                "file": str(self.suite_file) if self.suite_file is not None else None,
            },
            "sample": self.sample,
            "max_tokens": self.max_tokens,
            "threads": self.threads,
            **self.evaluation.to_json(),
        }


def evaluate_local(
    store: ModelStore,
    model_ref: str,
    *,
    suite_file: Path | None = None,
    domain: str | None = None,
    items: int | None = None,
    seed: str | None = None,
    max_tokens: int = 32,
    threads: int | None = None,
    kind: str | None = None,
    bar: Bar | None = None,
    notify: Callable[[str], None] | None = None,
) -> LocalEvaluation:
    """Grade the model `model_ref` names (`find_local_model`) on a suite (`choose_suite`: the
    file, else the built-in `domain`, else the model's own domain's, else `general`): all of
    it, or `items` of it sampled by `seed` (default "powr"). A seed without `items` is an
    InputError, as are a suite file and a domain together. `notify` hears when the model's
    domain has no built-in suite and `general` stands in. The model is asked as a `kind`
    ("chat" or "base") model: as given, else as its file says (`GGUFInfo.kind`), as a validator
    asks it as its chain record says."""
    from dn.powr.evaluate import evaluate
    from dn.powr.suites import choose_suite, sample_items
    from dn.runner.gguf import read_header
    from dn.runner.llama import LoadedModel, default_threads

    if seed is not None and items is None:
        raise InputError("--seed picks which --items to run; give --items too", reason="bad-option")
    model = find_local_model(model_ref, store)
    suite = choose_suite(suite_file, domain, model.domain)
    if suite_file is None and domain is None and model.domain not in (None, suite.name):
        if notify is not None:
            notify(f"no built-in suite for domain {model.domain!r}; using {suite.name!r}")
    chosen: list[Item] = list(suite.items)
    if items is not None:
        seed = DEFAULT_SEED if seed is None else seed
        chosen = sample_items(suite, items, seed.encode("utf-8"))
    if kind is not None and kind not in ("chat", "base"):
        raise InputError(f"--kind must be chat or base, not {kind!r}", reason="bad-option")
    info = read_header(model.path)  # not GGUF, truncated: a clear error before llama.cpp sees it
    model_kind = kind or info.kind
    n_threads = threads or default_threads()
    loaded = LoadedModel(model.path, n_threads=n_threads)
    try:
        with (bar or no_bar)(f"{model.name} on {suite.name}", len(chosen)) as update:
            evaluation = evaluate(
                loaded, chosen, max_tokens=max_tokens, progress=update, model_kind=model_kind
            )
    finally:
        loaded.llm.close()
    return LocalEvaluation(
        model=model,
        suite=suite,
        suite_file=suite_file,
        items=chosen,
        sample={"items": items, "seed": seed},
        max_tokens=max_tokens,
        threads=n_threads,
        evaluation=evaluation,
    )
