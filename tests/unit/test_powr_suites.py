"""PoWR benchmark suites: the shipped files, validation on load, grading and seeded sampling
(DESIGN.md section 8)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dn.errors import InputError
from dn.powr.grading import first_number, grade, grade_choice, normalize, quality
from dn.powr.suites import (
    KINDS,
    Item,
    Suite,
    builtin_domains,
    builtin_suite,
    choose_suite,
    load_suite,
    parse_suite,
    sample_items,
    sample_seed,
    suite_domain,
)

GOOD = {"id": "ok-1", "prompt": "What is 2 + 2?", "answer": 4, "kind": "numeric"}


def exact(answer: str, *aliases: str) -> Item:
    return Item("e", "Q?", answer, "exact", aliases=aliases)


def contains(answer: str, *aliases: str) -> Item:
    return Item("c", "Q?", answer, "contains", aliases=aliases)


def numeric(answer: float, tolerance: float = 0.0) -> Item:
    return Item("n", "Q?", answer, "numeric", tolerance=tolerance)


CHOICE = Item("k", "Question: Which?\nAnswer:", "cow", "choice", choices=("cow", "dog", "cat"))


def write(tmp_path: Path, *lines: str | dict[str, Any], name: str = "mine.jsonl") -> Path:
    path = tmp_path / name
    text = [line if isinstance(line, str) else json.dumps(line) for line in lines]
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return path


def small_suite(n: int) -> Suite:
    items = tuple(Item(f"t-{i:03d}", f"Q{i}?", "a", "exact") for i in range(n))
    return Suite(name="t", items=items, sha256="0" * 64)


# --- the shipped suites ---------------------------------------------------------------------


def test_the_four_domains_ship() -> None:
    assert builtin_domains() == ("code", "finance", "general", "health")


@pytest.mark.parametrize("domain", ["code", "finance", "general", "health"])
def test_every_shipped_suite_loads_with_at_least_40_items_of_all_four_kinds(domain: str) -> None:
    suite = builtin_suite(domain)
    assert suite.name == domain
    assert len(suite) >= 40
    assert {item.kind for item in suite} == set(KINDS)
    assert len({item.id for item in suite}) == len(suite)
    path = Path(__file__).parents[2] / "dn" / "powr" / "suites" / f"{domain}.jsonl"
    assert suite.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_suite(path).items == suite.items


@pytest.mark.parametrize("domain", ["code", "finance", "general", "health"])
def test_every_shipped_answer_grades_as_right_and_short_prompts(domain: str) -> None:
    for item in builtin_suite(domain):
        assert len(item.prompt) + len(str(item.answer)) < 200, item.id  # tiny models, 2 cores
        if item.kind == "choice":
            scores = {choice: -9.0 for choice in item.choices}
            assert grade_choice(item, {**scores, str(item.answer): -1.0}) == 1.0, item.id
            assert grade_choice(item, {**scores, str(item.answer): -99.0}) == 0.0, item.id
        elif item.kind == "numeric":
            assert grade(item, f"The answer is {item.answer}.") == 1.0, item.id
            assert grade(item, "I do not know.") == 0.0, item.id
        else:
            for answer in (str(item.answer), *item.aliases):
                assert grade(item, f" {answer}. ") == 1.0, item.id
            assert grade(item, "I do not know.") == 0.0, item.id


def test_unknown_builtin_domain_names_the_ones_there_are() -> None:
    for bad in ("poetry", "../general", "General"):
        with pytest.raises(InputError, match="built-in: code, finance, general, health"):
            builtin_suite(bad)


# --- which suite a model is evaluated on ----------------------------------------------------


def test_a_model_is_evaluated_on_its_own_domain_else_general() -> None:
    # The validator duty (dn/node/validator/powr.py): the built-in suite of the model's domain,
    # `general` where none ships.
    assert [suite_domain(d) for d in ("code", "finance", "health", "general")] == [
        "code",
        "finance",
        "health",
        "general",
    ]
    assert suite_domain("law") == "general"
    assert suite_domain(None) == "general"
    assert choose_suite(model_domain="health").name == "health"
    assert choose_suite(model_domain="law").name == "general"
    assert choose_suite().name == "general"


def test_a_chosen_suite_file_or_domain_wins_over_the_model_domain(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps(GOOD) + "\n")
    assert choose_suite(path, None, "code").name == "mine"
    assert choose_suite(None, "finance", "code").name == "finance"
    with pytest.raises(InputError) as both:
        choose_suite(path, "finance")
    assert (both.value.message, both.value.reason) == (
        "give --suite or --domain, not both",
        "bad-option",
    )
    with pytest.raises(InputError) as unknown:  # a domain asked for by name must ship
        choose_suite(None, "law")
    assert unknown.value.reason == "bad-suite"


# --- validation on load ---------------------------------------------------------------------


def test_load_suite_reads_a_user_suite(tmp_path: Path) -> None:
    choice = {"id": "b", "prompt": "Q:", "answer": "x", "kind": "choice", "choices": ["x", "y"]}
    path = write(tmp_path, GOOD, "", "   ", choice, name="birds.jsonl")
    suite = load_suite(path)
    assert suite.name == "birds"
    assert [item.id for item in suite] == ["ok-1", "b"]
    assert suite.items[1].choices == ("x", "y")
    assert suite.items[0] == Item("ok-1", "What is 2 + 2?", 4, "numeric")
    assert suite.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def _with(**fields: Any) -> dict[str, Any]:
    row = {"id": "x-1", "prompt": "Q?", "answer": "yes", "kind": "exact"}
    row.update(fields)
    return {k: v for k, v in row.items() if v is not None}


def _choice(**fields: Any) -> dict[str, Any]:
    return _with(**{"kind": "choice", "answer": "a", "choices": ["a", "b"], **fields})


BAD_LINES: list[tuple[str, str | dict[str, Any], str]] = [
    ("not-json", '{"id": "x-1",', "not valid JSON"),
    ("trailing-garbage", json.dumps(GOOD | {"id": "x-1"}) + " }", "not valid JSON"),
    ("array", "[1, 2]", "not a JSON object but an array"),
    ("string", '"hello"', "not a JSON object but a string"),
    ("missing-answer", _with(answer=None), "missing field 'answer'"),
    ("missing-two", {"id": "x-1", "prompt": "Q?"}, "missing field 'answer', 'kind'"),
    ("extra-field", _with(note="hi"), "unknown field 'note'"),
    (
        "duplicate-key",
        '{"id": "x-1", "id": "x-2", "prompt": "Q", "answer": "a", "kind": "exact"}',
        "field 'id' appears twice",
    ),  # fmt: skip
    ("id-number", _with(id=5), "'id' must be a non-empty string"),
    ("id-empty", _with(id=""), "'id' must be a non-empty string"),
    ("prompt-empty", _with(prompt="   "), "'prompt' must be a non-empty string"),
    ("prompt-list", _with(prompt=["Q?"]), "'prompt' must be a non-empty string"),
    ("kind-unknown", _with(kind="regex"), "'kind' must be one of exact, contains, choice, numeric"),
    ("kind-number", _with(kind=1), "'kind' must be one of"),
    ("exact-number", _with(answer=42), "'answer' must be a string, not a number"),
    ("exact-blank", _with(answer=' "." '), "is empty once normalized"),
    ("contains-blank", _with(kind="contains", answer="  "), "is empty once normalized"),
    ("aliases-string", _with(aliases="yes"), "'aliases' must be a list of strings"),
    ("alias-number", _with(aliases=["ok", 3]), "alias 2 must be a string"),
    ("exact-tolerance", _with(tolerance=1), "field 'tolerance' is not allowed on exact items"),
    ("exact-choices", _with(choices=["yes", "no"]), "'choices' is not allowed on exact items"),
    ("choice-no-choices", _with(kind="choice"), "a choice item needs 'choices'"),
    ("choice-one", _choice(choices=["a"]), "at least 2 distinct choices"),
    ("choice-same", _choice(choices=["a", "a"]), "at least 2 distinct choices"),
    ("choice-dupe", _choice(choices=["a", "b", "a"]), "'choices' has a duplicate"),
    ("choice-numbers", _choice(choices=[1, 2]), "'choices' must be a list of non-empty strings"),
    ("choice-padded", _choice(choices=["a", " b"]), "without surrounding whitespace"),
    ("choice-empty", _choice(choices=["a", ""]), "'choices' must be a list of non-empty strings"),
    ("choice-not-list", _choice(choices="ab"), "'choices' must be a list"),
    ("choice-answer", _choice(answer="c"), "'answer' 'c' is not one of the choices"),
    ("choice-aliases", _choice(aliases=["b"]), "'aliases' is not allowed on choice items"),
    ("numeric-string", _with(kind="numeric", answer="42"), "must be a number, not a string"),
    ("numeric-bool", _with(kind="numeric", answer=True), "must be a number, not a boolean"),
    (
        "numeric-null",
        '{"id": "x", "prompt": "Q", "answer": null, "kind": "numeric"}',
        "must be a number, not null",
    ),  # fmt: skip
    (
        "numeric-nan",
        '{"id": "x", "prompt": "Q", "answer": NaN, "kind": "numeric"}',
        "NaN is not a number JSON allows",
    ),  # fmt: skip
    (
        "numeric-inf",
        '{"id": "x", "prompt": "Q", "answer": -Infinity, "kind": "numeric"}',
        "-Infinity is not a number JSON allows",
    ),  # fmt: skip
    ("tolerance-negative", _with(kind="numeric", answer=1, tolerance=-0.5), "'tolerance' must be"),
    ("tolerance-string", _with(kind="numeric", answer=1, tolerance="1"), "'tolerance' must be"),
    ("numeric-aliases", _with(kind="numeric", answer=1, aliases=["one"]), "not allowed on numeric"),
]


@pytest.mark.parametrize(
    ("line", "problem"), [c[1:] for c in BAD_LINES], ids=[c[0] for c in BAD_LINES]
)
def test_a_bad_line_is_refused_with_file_and_line_number(
    tmp_path: Path, line: str | dict[str, Any], problem: str
) -> None:
    path = write(tmp_path, GOOD, "", line, {**GOOD, "id": "ok-2"})
    with pytest.raises(InputError) as caught:
        load_suite(path)
    assert caught.value.reason == "bad-suite"
    assert f"{path}, line 3: " in caught.value.message
    assert problem in caught.value.message


def test_a_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD, {**GOOD, "id": "ok-2"}, {**GOOD, "prompt": "Again?"})
    with pytest.raises(InputError, match=r"line 3: duplicate id 'ok-1' \(first on line 1\)"):
        load_suite(path)


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_an_empty_suite_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(text)
    with pytest.raises(InputError, match=f"{path}: the suite has no items"):
        load_suite(path)


def test_bytes_that_are_not_utf8_are_refused_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b'\n{"id": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"line 2: not UTF-8 text"):
        load_suite(path)


def test_a_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read suite file"):
        load_suite(tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match="cannot read suite file"):
        load_suite(tmp_path)  # a folder


@given(st.binary(max_size=300))
def test_parse_suite_refuses_garbage_only_with_input_error(data: bytes) -> None:
    try:
        suite = parse_suite(data, name="fuzz", source="fuzz.jsonl")
    except InputError as exc:
        assert exc.message.startswith("fuzz.jsonl")
    else:
        assert len(suite) >= 1


# --- grading --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ('  "The  Answer."  ', "the answer"),
        ("**Paris**", "paris"),
        ("`float`\n", "float"),
        ("\u201cYes!\u201d", "yes"),
        ("C#", "c#"),
        ("-3", "-3"),
        ("'50%'", "50%"),
        ("print(x)", "print(x)"),
        ("Straße", "strasse"),
        ("...", ""),
    ],
)
def test_normalize(text: str, normalized: str) -> None:
    assert normalize(text) == normalized


@pytest.mark.parametrize(
    ("output", "value"),
    [
        ("1,234.5", 1234.5),
        ("-3", -3.0),
        ("\u22123", -3.0),
        ("The answer is 42.", 42.0),
        ("It costs $1,200,000 in total", 1_200_000.0),
        ("12.5%", 12.5),
        (".5", 0.5),
        ("5 or 6", 5.0),
        ("COVID-19", 19.0),
        ("1,23", 1.0),
        ("+7", 7.0),
        ("no digits here", None),
    ],
)
def test_first_number(output: str, value: float | None) -> None:
    assert first_number(output) == value


@pytest.mark.parametrize(
    ("item", "output", "score"),
    [
        (numeric(1234.5), "1,234.5", 1.0),
        (numeric(1234.5), "1234.5", 1.0),
        (numeric(-3), "-3", 1.0),
        (numeric(-3), "3", 0.0),
        (numeric(42), "The answer is 42.", 1.0),
        (numeric(42), "42.0", 1.0),
        (numeric(42), "41", 0.0),
        (numeric(5), "5 or 6", 0.0),  # only the last number counts: hedging does not pay
        (numeric(12), "7 + 5 = 12", 1.0),
        (numeric(7), "7 + 5 = 12", 0.0),
        (numeric(20), "A 20% gain.", 1.0),
        (numeric(0.3), "0.30", 1.0),
        (numeric(0.3), "0.30000000000000004", 0.0),  # decimal comparison: no float noise
        (numeric(98.6, tolerance=1), "99.6", 1.0),  # 99.6 - 98.6 > 1 in binary floats
        (numeric(98.6, tolerance=1), "97.6", 1.0),
        (numeric(98.6, tolerance=1), "99.61", 0.0),
        (numeric(10**12), "1,000,000,000,001", 0.0),
        (numeric(37, tolerance=0.5), "About 36.6 degrees", 1.0),
        (numeric(37, tolerance=0.5), "38", 0.0),
        (numeric(5), "five", 0.0),
        (numeric(0), "", 0.0),
        (contains("Paris"), "PARIS is the capital of France", 1.0),
        (contains("carbon dioxide"), "It is Carbon\n   Dioxide.", 1.0),
        (contains("cat"), "a category", 0.0),
        (contains("kidneys", "kidney"), "The kidney.", 1.0),
        (contains("Sun"), "The sun.", 1.0),
        (contains("Sun"), "Sunday", 0.0),
        (exact("Paris"), '  "Paris."  ', 1.0),
        (exact("Paris"), "**paris**", 1.0),
        (exact("Paris"), "Paris is the capital", 0.0),
        (exact("Paris"), "The capital of France is Paris.", 1.0),  # a sentence ending in it
        (exact("Paris"), "The capital is not Parisville.", 0.0),
        (exact("New York"), "It is New York", 1.0),
        (exact("H2O", "H\u2082O"), "h\u2082o", 1.0),
        (exact("C#"), "C", 0.0),
    ],
)
def test_grade(item: Item, output: str, score: float) -> None:
    assert grade(item, output) == score


def test_grade_refuses_choice_items_and_grade_choice_refuses_the_others() -> None:
    with pytest.raises(InputError, match="grade_choice"):
        grade(CHOICE, "cow")
    with pytest.raises(InputError, match="grade it with grade"):
        grade_choice(exact("cow"), {"cow": 0.0})


def test_grade_choice_needs_the_answer_strictly_on_top() -> None:
    assert grade_choice(CHOICE, {"cow": -1.0, "dog": -2.0, "cat": -3.0}) == 1.0
    assert grade_choice(CHOICE, {"cow": -2.0, "dog": -1.0, "cat": -3.0}) == 0.0
    assert grade_choice(CHOICE, {"cow": -1.0, "dog": -1.0, "cat": -3.0}) == 0.0  # a tie
    assert grade_choice(CHOICE, {"cow": -1.0, "dog": -math.inf, "cat": -math.inf}) == 1.0


@pytest.mark.parametrize(
    "logprobs",
    [
        {"cow": -1.0, "dog": -2.0},
        {"cow": -1.0, "dog": -2.0, "cat": -3.0, "duck": -4.0},
        {"cow": -1.0, "dog": math.nan, "cat": -3.0},
    ],
)
def test_grade_choice_refuses_scores_that_do_not_match_the_choices(
    logprobs: dict[str, float],
) -> None:
    with pytest.raises(InputError):
        grade_choice(CHOICE, logprobs)


def test_quality_is_the_mean_grade() -> None:
    assert quality([1.0, 0.0, 1.0, 1.0]) == 0.75
    assert quality([]) == 0.0
    assert quality(iter([1.0])) == 1.0
    for bad in ([1.5], [-0.1], [math.nan], [True], ["1"]):
        with pytest.raises(InputError):
            quality(bad)  # type: ignore[arg-type]


@given(st.text())
def test_normalize_is_idempotent_and_trimmed(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once
    assert once == once.strip()
    assert "  " not in once


_answers = st.text(min_size=1, max_size=20).filter(lambda s: normalize(s) != "")


@given(answer=_answers, output=st.text(max_size=60), kind=st.sampled_from(["exact", "contains"]))
def test_text_grades_are_zero_or_one_and_the_answer_itself_is_right(
    answer: str, output: str, kind: str
) -> None:
    item = exact(answer) if kind == "exact" else contains(answer)
    assert grade(item, output) in (0.0, 1.0)
    assert grade(item, answer) == 1.0
    assert grade(item, f"  {answer.upper()}. ") in (0.0, 1.0)


@given(
    answer=st.floats(min_value=-1e12, max_value=1e12, allow_nan=False),
    tolerance=st.floats(min_value=0, max_value=100),
    output=st.text(max_size=40),
)
def test_numeric_grades_are_zero_or_one(answer: float, tolerance: float, output: str) -> None:
    assert grade(numeric(answer, tolerance), output) in (0.0, 1.0)


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_numbers_with_thousands_separators_read_back(n: int) -> None:
    assert first_number(f"The answer is {n:,}.") == n
    assert grade(numeric(n), f"{n:,}") == 1.0
    assert grade(numeric(n), f"{n + 1:,}") == 0.0


@given(st.decimals(min_value=-(10**9), max_value=10**9, places=2, allow_nan=False))
def test_decimals_read_back(d: Any) -> None:
    assert first_number(f"about {d:,.2f} units") == pytest.approx(float(d))


@given(st.lists(st.floats(min_value=-1e6, max_value=0), min_size=3, max_size=3))
def test_grade_choice_is_one_exactly_when_the_answer_is_the_unique_best(
    scores: list[float],
) -> None:
    logprobs = dict(zip(CHOICE.choices, scores, strict=True))
    expected = 1.0 if all(scores[0] > s for s in scores[1:]) else 0.0
    assert grade_choice(CHOICE, logprobs) == expected


@given(st.lists(st.floats(min_value=0, max_value=1), max_size=50))
def test_quality_stays_in_the_unit_interval_between_the_grades(scores: list[float]) -> None:
    q = quality(scores)
    assert 0.0 <= q <= 1.0
    if scores:
        assert min(scores) - 1e-12 <= q <= max(scores) + 1e-12


# --- sampling -------------------------------------------------------------------------------

SEED = sample_seed("ab" * 32)


def test_sampling_is_deterministic_and_depends_on_the_seed() -> None:
    suite = builtin_suite("general")
    first = sample_items(suite, 10, SEED)
    assert sample_items(suite, 10, SEED) == first
    assert len({item.id for item in first}) == 10
    other = sample_items(suite, 10, sample_seed("cd" * 32))
    assert [i.id for i in other] != [i.id for i in first]


def test_sampling_ignores_the_order_of_the_file() -> None:
    suite = builtin_suite("code")
    reversed_suite = replace(suite, items=suite.items[::-1])
    assert sample_items(reversed_suite, 7, SEED) == sample_items(suite, 7, SEED)


def test_adding_an_item_changes_at_most_one_pick() -> None:
    suite = small_suite(30)
    before = sample_items(suite, 8, SEED)
    bigger = replace(suite, items=(*suite.items, Item("new", "Q?", "a", "exact")))
    after = sample_items(bigger, 8, SEED)
    assert len({i.id for i in before} - {i.id for i in after}) <= 1


def test_sampling_covers_every_item_over_many_seeds() -> None:
    suite = small_suite(20)
    seen = {i.id for s in range(100) for i in sample_items(suite, 5, s.to_bytes(2, "big"))}
    assert seen == {item.id for item in suite}


def test_sample_size_edges() -> None:
    suite = small_suite(5)
    assert sample_items(suite, 0, SEED) == []
    assert sorted(sample_items(suite, 50, SEED), key=lambda i: i.id) == list(suite.items)
    with pytest.raises(InputError):
        sample_items(suite, -1, SEED)
    with pytest.raises(InputError):
        sample_items(suite, 3, "seed")  # type: ignore[arg-type]


def test_sample_seed_is_per_block_and_the_same_for_every_validator() -> None:
    assert sample_seed("AB" * 32) == sample_seed("ab" * 32)
    assert sample_seed("ab" * 32) != sample_seed("ac" * 32)
    with pytest.raises(InputError, match="not a hex block hash"):
        sample_seed("zz")


@given(seed=st.binary(max_size=64), k=st.integers(min_value=0, max_value=40))
def test_a_sample_is_k_distinct_items_of_the_suite(seed: bytes, k: int) -> None:
    suite = small_suite(25)
    picked = sample_items(suite, k, seed)
    assert len(picked) == min(k, 25)
    assert len({item.id for item in picked}) == len(picked)
    assert set(picked) <= set(suite.items)
    assert picked == sample_items(suite, k + 5, seed)[: len(picked)]
