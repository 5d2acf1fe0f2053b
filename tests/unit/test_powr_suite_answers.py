"""The built-in suites are big enough and their computable answers are right (issue 14).

Every domain has at least 150 items, the first 50 with the ids they always had. Every item whose
prompt has one of the shapes below has its answer recomputed here from the prompt alone: the
numbers are parsed and the arithmetic redone (in Decimal), and a Python snippet is run and its
output compared. Nothing here uses the generator that wrote the items (`tools/suitegen.py`).
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable
from decimal import Decimal

import pytest

from dn.powr.suites import Item, builtin_domains, builtin_suite

D = Decimal
Rule = Callable[[re.Match[str]], Decimal | str]


def n(text: str) -> Decimal:
    return Decimal(text.replace(",", ""))


def run_snippet(match: re.Match[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(match[1], {})  # noqa: S102 - the suites' own print statements
    return out.getvalue().removesuffix("\n")


NUM = r"(-?[\d,]+(?:\.\d+)?)"
RULES: list[tuple[str, Rule]] = [
    (rf"What is {NUM} \+ {NUM}\?", lambda m: n(m[1]) + n(m[2])),
    (rf"What is {NUM} minus {NUM}\?", lambda m: n(m[1]) - n(m[2])),
    (rf"What is {NUM} times {NUM}\?", lambda m: n(m[1]) * n(m[2])),
    (rf"What is {NUM} divided by {NUM}\?", lambda m: n(m[1]) / n(m[2])),
    (rf"What is {NUM}% of {NUM}\?", lambda m: n(m[1]) * n(m[2]) / 100),
    (rf"How many minutes are in {NUM} hours\?", lambda m: n(m[1]) * 60),
    (rf"How many centimeters are in {NUM} meters\?", lambda m: n(m[1]) * 100),
    (rf"How many grams are in {NUM} kilograms\?", lambda m: n(m[1]) * 1000),
    (rf"How many days are in {NUM} weeks\?", lambda m: n(m[1]) * 7),
    (rf"How many milliliters are in {NUM} liters\?", lambda m: n(m[1]) * 1000),
    (
        rf"\${NUM} earns {NUM}% simple interest per year\. How many dollars of interest does it "
        rf"earn in {NUM} years\?",
        lambda m: n(m[1]) * n(m[2]) / 100 * n(m[3]),
    ),
    (
        rf"\${NUM} grows by {NUM}% a year, compounded yearly\. How many dollars is it worth "
        rf"after {NUM} years(?:, to the nearest cent)?\?",
        lambda m: n(m[1]) * (1 + n(m[2]) / 100) ** int(n(m[3])),
    ),
    (
        rf"A stock bought at \${NUM} is sold at \${NUM}\. What is the gain in percent\?",
        lambda m: (n(m[2]) - n(m[1])) / n(m[1]) * 100,
    ),
    (
        rf"A company has revenue of \${NUM} and costs of \${NUM}\. What is its profit in dollars\?",
        lambda m: n(m[1]) - n(m[2]),
    ),
    (
        rf"A \${NUM} item has {NUM}% sales tax\. How many dollars is the tax\?",
        lambda m: n(m[1]) * n(m[2]) / 100,
    ),
    (
        rf"A stock costs \${NUM} and earns \${NUM} per share\. What is its P/E ratio\?",
        lambda m: n(m[1]) / n(m[2]),
    ),
    (
        rf"Assets are \${NUM} and liabilities are \${NUM}\. How many dollars is the equity\?",
        lambda m: n(m[1]) - n(m[2]),
    ),
    (
        rf"A \${NUM} loan is repaid in {NUM} equal monthly payments with no interest\. How many "
        r"dollars is each payment\?",
        lambda m: n(m[1]) / n(m[2]),
    ),
    (
        rf"A person weighs {NUM} kg and is {NUM} cm tall\. What is their body mass index \(weight "
        r"in kg divided by the square of height in meters\), to one decimal place\?",
        lambda m: n(m[1]) / (n(m[2]) / 100) ** 2,
    ),
    (
        rf"What is {NUM} degrees Celsius in degrees Fahrenheit\?",
        lambda m: n(m[1]) * 9 / 5 + 32,
    ),
    (
        rf"A medicine is dosed at {NUM} mg per kg of body weight\. How many mg is the dose for a "
        rf"patient weighing {NUM} kg\?",
        lambda m: n(m[1]) * n(m[2]),
    ),
    (
        rf"A pulse of {NUM} beats is counted in 15 seconds\. How many beats per minute is that\?",
        lambda m: n(m[1]) * 4,
    ),
    (
        rf"Using the formula 220 minus age, what is the estimated maximum heart rate, in beats "
        rf"per minute, of a {NUM}-year-old\?",
        lambda m: 220 - n(m[1]),
    ),
    (
        rf"One tablet holds {NUM} mg\. How many mg does a patient take in a day with {NUM} "
        r"tablets three times a day\?",
        lambda m: n(m[1]) * n(m[2]) * 3,
    ),
    (
        rf"An intravenous drip runs at {NUM} mL per hour\. How many mL does it give in {NUM} "
        r"hours\?",
        lambda m: n(m[1]) * n(m[2]),
    ),
    (r"What does `(print\(.*\))` print\? Reply with only the output\.", run_snippet),
    (r"What does the Python code `(print\(.*\))` print\?", run_snippet),
]
COMPILED = [(re.compile(pattern), rule) for pattern, rule in RULES]


def question(item: Item) -> str:
    """The prompt without the suite's framing ("Question: …\\nAnswer:", "Answer with …")."""
    text = item.prompt
    if text.startswith("Question: ") and text.endswith("\nAnswer:"):
        text = text[len("Question: ") : -len("\nAnswer:")]
    return text.removesuffix(" Answer with a number.")


def recomputed(item: Item) -> Decimal | str | None:
    """The answer worked out from the prompt, or None when the prompt has no known shape."""
    text = question(item)
    for pattern, rule in COMPILED:
        match = pattern.fullmatch(text)
        if match:
            return rule(match)
    return None


@pytest.mark.parametrize("domain", ["general", "finance", "health", "code"])
def test_every_domain_has_150_items_and_kept_its_first_50(domain: str) -> None:
    assert domain in builtin_domains()
    suite = builtin_suite(domain)
    assert len(suite) >= 150
    prefix = suite.items[0].id.split("-")[0]
    assert [item.id for item in suite.items[:50]] == [f"{prefix}-{i:03d}" for i in range(1, 51)]
    assert len({item.prompt for item in suite}) == len(suite)  # no question asked twice


@pytest.mark.parametrize("domain", ["general", "finance", "health", "code"])
def test_every_computable_answer_is_right(domain: str) -> None:
    checked = 0
    for item in builtin_suite(domain):
        expected = recomputed(item)
        if expected is None:
            continue
        checked += 1
        if item.kind == "numeric":
            assert isinstance(item.answer, (int, float))
            exact = expected if isinstance(expected, Decimal) else Decimal(expected)
            answer = Decimal(repr(item.answer)) if isinstance(item.answer, float) else item.answer
            # right to the item's stated precision: within its tolerance, and within half a
            # step of the rounding it asks for ("to one decimal place", "to the nearest cent")
            assert abs(answer - exact) <= Decimal(repr(item.tolerance)) / 2 + D("1e-9"), item.id
        elif isinstance(expected, Decimal):
            assert Decimal(str(item.answer)) == expected, item.id
        else:
            assert item.answer == expected, item.id
    # most of the new items are computable: the shapes above must keep matching them
    assert checked >= 70, f"only {checked} {domain} items recomputed"


def test_the_checker_catches_a_wrong_answer() -> None:
    right = Item("x-1", "What is 12 times 11? Answer with a number.", 132, "numeric")
    wrong = Item("x-2", "What is 12 times 11? Answer with a number.", 131, "numeric")
    assert recomputed(right) == 132 and recomputed(wrong) != wrong.answer
    snippet = Item(
        "x-3", "What does `print(7 // 2)` print? Reply with only the output.", 3, "numeric"
    )
    assert recomputed(snippet) == "3"
