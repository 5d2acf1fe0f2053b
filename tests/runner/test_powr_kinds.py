"""PoWR asks a model as its kind says (`dn/powr/evaluate.py`), on the real Gemma 3 270M base model.

A pretrained model continues text; asked through a chat template it was never tuned on, it
does not answer. The spec (issue 14): a base model gets a completion prompt, "Question: …
\\nAnswer:" continued as plain text and cut at the first newline. Six short questions of the
general suite, one llama.cpp thread.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from dn.powr.evaluate import Evaluation, completion_prompt, evaluate
from dn.powr.ranking import distinguishable
from dn.powr.suites import Item, builtin_suite
from dn.runner.llama import LoadedModel
from tests.runner.test_powr_eval import TINY_SUITE, dn

IDS = ["gen-001", "gen-002", "gen-004", "gen-005", "gen-006", "gen-013"]  # one-word answers
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def gemma(gemma_gguf: Path) -> Iterator[LoadedModel]:
    model = LoadedModel(gemma_gguf, n_threads=1, n_ctx=512)
    yield model
    model.llm.close()


@pytest.fixture(scope="module")
def items() -> list[Item]:
    by_id = {item.id: item for item in builtin_suite("general")}
    return [by_id[i] for i in IDS]


@pytest.fixture(scope="module")
def as_base(gemma: LoadedModel, items: list[Item]) -> Evaluation:
    return evaluate(gemma, items, max_tokens=MAX_TOKENS, model_kind="base")


def test_a_base_model_gets_a_completion_prompt_and_answers_in_one_short_line(
    as_base: Evaluation,
) -> None:
    assert as_base.model_kind == "base"
    assert completion_prompt("What is 2 + 2?") == "Question: What is 2 + 2?\nAnswer:"
    for result in as_base.results:
        assert result.output is not None
        assert "\n" not in result.output  # cut at the end of the answer's line
        assert 1 <= len(result.output.split()) <= 6, result.output  # a short answer, not prose
    right = {r.id for r in as_base.results if r.score == 1.0}
    assert "gen-001" in right  # Paris
    assert as_base.quality >= 0.5


def test_a_base_model_scores_clearly_better_asked_as_base_than_through_a_chat_template(
    gemma: LoadedModel, items: list[Item], as_base: Evaluation
) -> None:
    as_chat = evaluate(gemma, items, max_tokens=MAX_TOKENS, model_kind="chat")
    assert as_chat.model_kind == "chat"
    ppm = 1_000_000
    # better by more than 1.96 combined standard errors: the leaderboard's own tie rule
    assert as_base.quality > as_chat.quality
    assert distinguishable(
        round(as_base.quality * ppm),
        round(as_base.stderr * ppm),
        round(as_chat.quality * ppm),
        round(as_chat.stderr * ppm),
    )


def test_dn_powr_eval_asks_a_model_as_its_file_says_unless_told(
    gemma_gguf: Path, tmp_path: Path
) -> None:
    suite = tmp_path / "tiny.jsonl"
    suite.write_text("".join(json.dumps(item) + "\n" for item in TINY_SUITE))
    args = ["powr", "eval", gemma_gguf, "--suite", suite, "--max-tokens", "8", "--threads", "1"]
    as_file = json.loads(dn(*args, "--json").stdout)
    assert as_file["model_kind"] == "base"  # Gemma 3 270M's file has no chat template
    assert all("\n" not in (r["output"] or "") for r in as_file["results"])
    assert 0 <= as_file["stderr"] <= 0.5
    told = json.loads(dn(*args, "--kind", "chat", "--json").stdout)
    assert told["model_kind"] == "chat"
    assert "--kind must be chat or base" in dn(*args, "--kind", "instruct", code=2).output
