"""Grading one benchmark answer, and the quality score q of a run (DESIGN.md section 8).

Pure functions, no I/O. Every grade is 1.0 (right) or 0.0 (wrong); `quality` is their mean.

- exact:    `normalize(output) == normalize(answer)` (or one of the item's aliases), or the
            normalized output ends with it as whole words: small models answer in sentences,
            so "The capital of France is Paris." answers "Paris" (but "Paris is not it" does not).
- contains: the normalized answer (or an alias) occurs in the normalized output as whole words:
            "Paris" is found in "It is Paris, France." but "cat" is not found in "category".
- numeric:  the last number in the output (`last_number`; the last, because answers end with
            the result: "7 + 5 = 12") is within the item's absolute `tolerance` of the answer
            (0 by default: equal). The comparison is decimal, as the numbers are written, so
            99.6 is within 1 of 98.6 and 10**12 + 1 is not 10**12.
- choice:   `grade_choice` with the log-probability the model gives each choice; right only when
            the answer scores strictly highest, so a tie is wrong (a model that cannot tell the
            choices apart earns nothing for it).

`normalize` strips, casefolds, collapses whitespace and strips surrounding punctuation and quotes
(which removes a trailing period): `'  "The  Answer."'` → `the answer`. It is idempotent.

`standard_error` is the standard error of q: the sample standard deviation of the grades over
sqrt(n), the number every score is reported with.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING

from dn.errors import InputError

if TYPE_CHECKING:
    from dn.powr.suites import Item

# Stripped from both ends: sentence punctuation, straight and curly quotes, backticks and the
# asterisks of Markdown bold. Brackets, signs and symbols such as # % $ + stay, so "C#", "-3",
# "50%" and "f(x)" keep their meaning.
_EDGE = " .,;:!?\"'`*\u2018\u2019\u201c\u201d\u00ab\u00bb\u2026\u3002"

# A number: an optional sign (only where it is not glued to a word, so "COVID-19" gives 19),
# digits with optional comma thousands groups ("1,234,567"), an optional decimal part. A trailing
# "." without digits is not part of it ("42." is 42); "1,23" is 1 (not a thousands group).
_NUMBER_RE = re.compile(
    r"(?:(?<![0-9A-Za-z])(?P<sign>[-+\u2212]))?"
    r"(?P<digits>(?:\d{1,3}(?:,\d{3}(?!\d))+|\d+)(?:\.\d+)?|\.\d+)",
    re.ASCII,
)


def normalize(text: str) -> str:
    """Casefolded `text` with whitespace collapsed and surrounding punctuation/quotes removed."""
    previous = None
    text = text.casefold()
    while text != previous:  # one round is enough in practice; the loop makes it provable
        previous = text
        text = " ".join(text.split()).strip(_EDGE)
    return text


def first_number(text: str) -> float | None:
    """The first number written in `text` with digits, or None.

    "The answer is 42." → 42; "1,234.5" → 1234.5; "-3" and "−3" → -3; ".5" → 0.5; "12.5%" → 12.5
    (a percentage is read as the number before the sign, so suites state percentage answers in
    percent); "$1,200" → 1200. Not understood: number words ("forty-two"), fractions ("1/2" is
    1), exponents ("1e3" is 1).
    """
    value = _first_decimal(text)
    return None if value is None else float(value)


def last_number(text: str) -> float | None:
    """The last number written in `text` with digits (as `first_number` reads them), or None."""
    value = _last_decimal(text)
    return None if value is None else float(value)


def _first_decimal(text: str) -> Decimal | None:
    return _as_decimal(_NUMBER_RE.search(text))


def _last_decimal(text: str) -> Decimal | None:
    last = None
    for last in _NUMBER_RE.finditer(text):  # noqa: B007 - only the last match is wanted
        pass
    return _as_decimal(last)


def _as_decimal(match: re.Match[str] | None) -> Decimal | None:
    if match is None:
        return None
    value = Decimal(match["digits"].replace(",", ""))
    return -value if match["sign"] in ("-", "\u2212") else value


def _decimal(number: float) -> Decimal:
    """The number as written: 0.1 is Decimal('0.1'), not the binary float's long expansion."""
    return Decimal(number) if isinstance(number, int) else Decimal(repr(number))


def _contains_words(haystack: str, needle: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", haystack) is not None


def grade(item: Item, output: str) -> float:
    """1.0 if `output` answers an exact, contains or numeric `item`, else 0.0.

    Choice items are graded from log-probabilities with `grade_choice`; passing one here is a
    programming error and raises InputError.
    """
    if item.kind == "numeric":
        assert isinstance(item.answer, (int, float))
        if not (math.isfinite(item.answer) and math.isfinite(item.tolerance)):
            raise InputError(f"item {item.id!r} has a number that is not finite")
        value = _last_decimal(output)
        if value is None:
            return 0.0
        distance = abs(value - _decimal(item.answer))
        return 1.0 if distance <= _decimal(item.tolerance) else 0.0
    if item.kind == "choice":
        raise InputError(f"item {item.id!r} is a choice item: grade it with grade_choice")
    assert isinstance(item.answer, str)
    said = normalize(output)
    accepted = [normalize(a) for a in (item.answer, *item.aliases)]
    if item.kind == "exact":
        return 1.0 if any(said == a or said.endswith(" " + a) for a in accepted) else 0.0
    return 1.0 if any(_contains_words(said, a) for a in accepted) else 0.0


def grade_choice(item: Item, logprobs: Mapping[str, float]) -> float:
    """1.0 if the item's answer has strictly the highest log-probability among its choices.

    `logprobs` maps every choice of the item (and nothing else) to the score the model gives it
    as a continuation of the prompt — the same measure for every choice, e.g. the sum of its
    tokens' log-probabilities. A tie for the top is graded 0.0. A missing or unknown choice, or a
    NaN score, is a bug in the caller and raises InputError.
    """
    if item.kind != "choice":
        raise InputError(f"item {item.id!r} is a {item.kind} item: grade it with grade")
    missing = [c for c in item.choices if c not in logprobs]
    unknown = [c for c in logprobs if c not in item.choices]
    if missing or unknown:
        raise InputError(
            f"log-probabilities for item {item.id!r} must cover exactly its choices "
            f"(missing {missing}, unknown {unknown})"
        )
    if any(math.isnan(lp) for lp in logprobs.values()):
        raise InputError(f"log-probabilities for item {item.id!r} contain NaN")
    answer = item.answer
    assert isinstance(answer, str)
    best = logprobs[answer]
    others = (lp for choice, lp in logprobs.items() if choice != answer)
    return 1.0 if all(best > lp for lp in others) else 0.0


def quality(scores: Iterable[float]) -> float:
    """The quality score q: the mean of per-item grades, each in [0, 1]; 0.0 for no grades."""
    values = list(scores)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise InputError(f"a grade must be a number in [0, 1], not {value!r}")
    if not values:
        return 0.0
    return min(1.0, math.fsum(values) / len(values))


def standard_error(scores: Iterable[float]) -> float:
    """The standard error of the quality q of these grades: the sample standard deviation (n - 1
    in the denominator) over sqrt(n). It cannot be estimated from fewer than two grades; for one
    grade it is the bound 0.5, the largest standard deviation a grade in [0, 1] can have, and
    0.0 for none (as `quality` gives 0.0)."""
    values = [float(v) for v in scores]
    quality(values)  # the same checks on each grade
    n = len(values)
    if n < 2:
        return 0.5 if n == 1 else 0.0
    mean = math.fsum(values) / n
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return math.sqrt(variance / n)
