"""`dn/powr/evaluate.py` and `dn powr eval` on the real SmolLM2 model (DESIGN.md section 8).

Every item kind is answered by llama.cpp and graded; choice scores are log-probabilities that the
model gets right when the answer is obvious; two runs give the same results; the CLI prints the
run as JSON and turns a missing model or a bad suite into a one-line error and an exit code.
One llama.cpp thread: the tests must not be slowed down by other work on a 2-core machine.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner, Result

from dn.errors import InputError
from dn.powr.evaluate import Evaluation, evaluate
from dn.powr.grading import quality
from dn.powr.suites import Item, builtin_suite
from dn.runner.catalog import CATALOG
from dn.runner.llama import LoadedModel

# Two items of each kind from the general suite, in this order.
IDS = ["gen-015", "gen-001", "gen-026", "gen-043", "gen-013", "gen-030", "gen-045", "gen-002"]
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def smol(smollm2_gguf: Path) -> Iterator[LoadedModel]:
    model = LoadedModel(smollm2_gguf, n_threads=1, n_ctx=512)
    yield model
    model.llm.close()


@pytest.fixture(scope="module")
def items() -> list[Item]:
    by_id = {item.id: item for item in builtin_suite("general")}
    return [by_id[i] for i in IDS]


@pytest.fixture(scope="module")
def run(smol: LoadedModel, items: list[Item]) -> Evaluation:
    return evaluate(smol, items, max_tokens=MAX_TOKENS)


def outcome(evaluation: Evaluation) -> list[tuple[Any, ...]]:
    """Everything but the timings."""
    return [(r.id, r.kind, r.score, r.output, r.logprobs, r.tokens) for r in evaluation.results]


def test_every_kind_is_answered_graded_and_timed(run: Evaluation, items: list[Item]) -> None:
    assert [r.id for r in run.results] == IDS
    assert {r.kind for r in run.results} == {"exact", "contains", "choice", "numeric"}
    assert all(r.score in (0.0, 1.0) for r in run.results)
    assert run.quality == quality(r.score for r in run.results)
    for item, result in zip(items, run.results, strict=True):
        assert 0 < result.llama_s <= result.seconds
        if item.kind == "choice":
            assert result.output is None and result.logprobs is not None
            assert list(result.logprobs) == list(item.choices)
            assert all(math.isfinite(lp) and lp < 0 for lp in result.logprobs.values())
            assert result.answer() in item.choices
        else:
            assert result.logprobs is None and result.output
            assert 1 <= result.tokens <= MAX_TOKENS
    # Answers this pinned model gets right: a word in a sentence, and a clear choice.
    scores = {r.id: r.score for r in run.results}
    assert scores["gen-015"] == 1.0  # "… is the Pacific Ocean"
    assert scores["gen-026"] == 1.0  # bees make honey
    assert 0 < run.llama_share <= 1
    assert run.items_per_s > 0 and run.seconds >= run.llama_s
    data = run.to_json()
    assert data["items"] == 8 and len(data["results"]) == 8
    assert sum(k["items"] for k in data["by_kind"].values()) == 8
    json.dumps(data)  # plain JSON all the way down


def test_two_runs_give_the_same_results(smol: LoadedModel, items: list[Item], run: Evaluation):
    seen: list[tuple[int, int]] = []
    again = evaluate(
        smol, items, max_tokens=MAX_TOKENS, progress=lambda done, total: seen.append((done, total))
    )
    assert outcome(again) == outcome(run)  # bit for bit, log-probabilities included
    assert seen == [(i, 8) for i in range(9)]


def test_an_obvious_choice_wins_and_a_wrong_key_loses(smol: LoadedModel) -> None:
    natural, gibberish = "five", "qzxv"
    right = Item("count", "One, two, three, four,", natural, "choice", (gibberish, natural))
    wrong = Item("count-bad", "One, two, three, four,", gibberish, "choice", (natural, gibberish))
    first, second = evaluate(smol, [right, wrong]).results
    assert first.score == 1.0 and first.answer() == natural
    assert first.logprobs is not None and first.logprobs[natural] > first.logprobs[gibberish] + 5
    assert second.score == 0.0  # the answer key says gibberish; the model does not
    assert second.logprobs is not None  # the order the choices are scored in does not matter
    assert second.logprobs == pytest.approx(first.logprobs, abs=1e-9)


def test_a_choice_scores_the_log_probability_of_its_own_tokens(smol: LoadedModel) -> None:
    """Recomputed independently: one pass over `prompt + " " + choice`, and each continuation
    token's log-softmax read from the row before it."""
    prompt = "Question: What do bees make?\nAnswer:"
    item = Item("bees", prompt, "honey", "choice", ("honey", "wool"))
    (result,) = evaluate(smol, [item]).results
    assert result.logprobs is not None
    for choice in item.choices:
        context = smol.tokenize(prompt)
        full = smol.tokenize(f"{prompt} {choice}")
        assert full[: len(context)] == context  # SmolLM2's BPE: no merge at the boundary
        with smol.lock:
            smol._reset()
            logits = smol._decode(full, 0, all_rows=True).astype(np.float64)
        rows = logits[len(context) - 1 : len(full) - 1]
        norm = np.log(np.exp(rows - rows.max(axis=1, keepdims=True)).sum(axis=1))
        expected = rows[np.arange(len(rows)), full[len(context) :]] - rows.max(axis=1) - norm
        assert result.logprobs[choice] == pytest.approx(float(expected.sum()), abs=1e-3)


class MergingModel:
    """A stand-in for LoadedModel whose tokenizer merges ": " into one token, as some do at the
    boundary between a prompt and its choice; every logit is 0 (each token has probability
    1/vocabulary)."""

    n_ctx = 64
    n_vocab = 1000
    COLON_SPACE = 999

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.decoded: list[tuple[list[int], int]] = []
        self.forgotten: list[int] = []  # positions the KV cache was cut back to

    def tokenize(self, text: str) -> list[int]:
        out: list[int] = []
        for char in text:
            if char == " " and out and out[-1] == ord(":"):
                out[-1] = self.COLON_SPACE
            else:
                out.append(ord(char))
        return out

    def _reset(self) -> None:
        pass

    def _truncate(self, position: int) -> None:
        self.forgotten.append(position)

    def _decode(self, tokens: Sequence[int], n_past: int, *, all_rows: bool) -> np.ndarray:
        self.decoded.append((list(tokens), n_past))
        return np.zeros((len(tokens) if all_rows else 1, self.n_vocab), dtype=np.float32)


def test_a_prompt_merged_with_its_choice_is_scored_after_the_shared_tokens() -> None:
    model = MergingModel()
    item = Item("merge", "Q:", "a", "choice", ("a", "bb"))
    (result,) = evaluate(model, [item]).results  # type: ignore[arg-type]
    # The context is "Q" alone; ": " plus the choice's characters are scored.
    step = -math.log(MergingModel.n_vocab)
    assert result.logprobs == pytest.approx({"a": 2 * step, "bb": 3 * step})
    assert model.decoded == [
        ([ord("Q")], 0),
        ([MergingModel.COLON_SPACE, ord("a")], 1),
        ([MergingModel.COLON_SPACE, ord("b"), ord("b")], 1),
    ]
    assert model.forgotten == [1, 1]  # each choice after the context alone
    assert result.score == 1.0  # fewer tokens after the context: more likely
    other = Item("merge-bb", "Q:", "bb", "choice", ("a", "bb"))
    assert evaluate(model, [other]).quality == 0.0  # type: ignore[arg-type]


def test_bad_arguments_are_input_errors(smol: LoadedModel, items: list[Item]) -> None:
    with pytest.raises(InputError):
        evaluate(smol, items, max_tokens=0)
    assert evaluate(smol, []).results == ()


# --- the command line -----------------------------------------------------------------------


def _dn_app() -> typer.Typer:
    """`dn` itself once it mounts `dn powr`; until then the same root, error mapping included,
    with the powr app mounted."""
    from dn.cli import main, powr

    if any(group.name == "powr" for group in main.app.registered_groups):
        return main.app
    app = typer.Typer(cls=main.DNGroup, pretty_exceptions_enable=False, add_completion=False)
    app.callback()(main.root)
    app.add_typer(powr.app, name="powr")
    return app


def dn(*args: str | Path, code: int = 0) -> Result:
    result = CliRunner().invoke(_dn_app(), [str(a) for a in args], env={"COLUMNS": "1000"})
    assert not (result.exception and not isinstance(result.exception, SystemExit)), result.output
    assert "Traceback" not in result.output
    assert result.exit_code == code, result.output
    return result


TINY_SUITE = [
    {"id": "t-1", "kind": "contains", "prompt": "Which is the largest ocean?", "answer": "Pacific"},
    {"id": "t-2", "kind": "numeric", "prompt": "What is 2 + 2?", "answer": 4},
    {
        "id": "t-3",
        "kind": "choice",
        "prompt": "Question: What do bees make?\nAnswer:",
        "answer": "honey",
        "choices": ["honey", "wool"],
    },
]


@pytest.fixture
def tiny_suite(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in TINY_SUITE))
    return path


def test_eval_prints_the_whole_run_as_json(smollm2_gguf: Path, tiny_suite: Path) -> None:
    result = dn(
        "powr", "eval", smollm2_gguf, "--suite", tiny_suite, "--max-tokens", "8", "--threads", "1",
        "--json",
    )  # fmt: skip
    data = json.loads(result.stdout)
    # A file named by its hash in a model store is recognised as the catalog model.
    assert data["model"]["name"] == "smollm2-135m" and data["model"]["domain"] == "general"
    assert data["suite"]["name"] == "tiny" and data["suite"]["size"] == 3
    assert [r["id"] for r in data["results"]] == ["t-1", "t-2", "t-3"]
    assert all(r["score"] in (0.0, 1.0) for r in data["results"])
    assert data["quality"] == pytest.approx(sum(r["score"] for r in data["results"]) / 3)
    assert data["results"][2]["logprobs"]["honey"] > data["results"][2]["logprobs"]["wool"]
    assert data["max_tokens"] == 8 and data["threads"] == 1
    assert 0 < data["llama_share"] <= 1


def test_eval_finds_an_installed_catalog_model_and_samples_by_seed(
    smollm2_gguf: Path, dn_home: Path
) -> None:
    sha = CATALOG["smollm2-135m"].sha256
    models = dn_home / "models"
    models.mkdir(parents=True)
    (models / f"{sha}.gguf").symlink_to(smollm2_gguf)
    meta = {"sha256": sha, "size": smollm2_gguf.stat().st_size, "name": "smollm2-135m"}
    (models / f"{sha}.json").write_text(json.dumps({**meta, "source": "test"}))
    args = ["powr", "eval", "smollm2-135m", "--items", "2", "--seed", "s", "--max-tokens", "4"]
    data = json.loads(dn("--json", *args, "--threads", "1").stdout)
    assert data["model"]["path"] == str(models / f"{sha}.gguf")
    assert data["suite"]["name"] == "general"  # the catalog says SmolLM2 is a general model
    assert data["sample"] == {"items": 2, "seed": "s"} and data["items"] == 2
    human = dn(*args, "--threads", "1").stdout  # the table and the summary
    for r in data["results"]:
        assert r["id"] in human
    assert "quality" in human and "items/s" in human


def test_a_model_that_is_not_installed_is_not_downloaded(
    dn_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dn.runner import catalog

    def no_pip(*args: object, **kwargs: object) -> None:
        raise AssertionError("dn powr eval ran pip")

    monkeypatch.setattr(catalog, "download", no_pip)
    result = dn("powr", "eval", "smollm2-135m", code=6)
    assert "run 'dn model fetch smollm2-135m'" in result.output
    assert result.stdout == ""
    assert not dn_home.exists()
    unknown = dn("powr", "eval", "llama-70b", code=6)
    assert "no model 'llama-70b'" in unknown.output and "smollm2-135m" in unknown.output
    missing = dn("powr", "eval", dn_home / "nowhere.gguf", code=6)
    assert "no model file at" in missing.output


def test_bad_suites_and_options_are_clear_errors(smollm2_gguf: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(TINY_SUITE[0]) + "\n" + '{"id": "t-2", "prompt": "x"}\n')
    result = dn("powr", "eval", smollm2_gguf, "--suite", bad, code=2)
    assert f"{bad}, line 2: missing field 'answer', 'kind'" in " ".join(result.output.split())
    absent = dn("powr", "eval", smollm2_gguf, "--suite", tmp_path / "none.jsonl", code=2)
    assert "cannot read suite file" in absent.output
    both = dn("powr", "eval", smollm2_gguf, "--suite", bad, "--domain", "general", code=2)
    assert "not both" in both.output
    assert (
        "no built-in suite 'cooking'"
        in dn("powr", "eval", smollm2_gguf, "--domain", "cooking", code=2).output
    )
    assert "give --items too" in dn("powr", "eval", smollm2_gguf, "--seed", "x", code=2).output
    not_gguf = dn("powr", "eval", bad, code=6)
    assert "not a GGUF file" in not_gguf.output
