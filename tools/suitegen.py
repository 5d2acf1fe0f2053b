"""How the built-in suites grew from 50 to 150 items per domain (issue 14): items whose answer is
computed, and a few facts written by hand.

Each domain's items 51 to 150 come from `new_items(domain)`: arithmetic, unit conversions,
percentages, interest, doses, and for `code` small Python snippets that are *run* here to get
the answer (`_run`). The numbers are drawn from a generator seeded by the domain's name, so the
same items come out every time; the shipped files hold them, and
`tests/unit/test_powr_suite_answers.py` recomputes every computable answer from the prompt
alone (parsing it, or running the snippet) without using this module. The first 50 items of
each suite are unchanged, ids included.

    .venv/bin/python tools/suitegen.py   # rewrites items 51 to 150 of dn/powr/suites/*.jsonl
"""

from __future__ import annotations

import contextlib
import io
import json
import random
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from suitefacts import CAPITALS, CURRENCIES, GENERAL_FACTS, HEALTH_FACTS

FIRST_NEW = 51
PER_DOMAIN = 150
PREFIX = {"general": "gen", "finance": "fin", "health": "hea", "code": "cod"}
NUMBER = " Answer with a number."

Raw = dict[str, Any]


def _numeric(prompt: str, answer: float, tolerance: float = 0) -> Raw:
    item: Raw = {"kind": "numeric", "prompt": prompt + NUMBER, "answer": answer}
    if tolerance:
        item["tolerance"] = tolerance
    return item


def _choice(question: str, answer: str, wrong: list[str], rng: random.Random) -> Raw:
    choices = [answer, *wrong]
    rng.shuffle(choices)
    return {
        "kind": "choice",
        "prompt": f"Question: {question}\nAnswer:",
        "answer": answer,
        "choices": choices,
    }


def _draw(out: list[Raw], k: int, make: Callable[[], Raw]) -> None:
    """Append `k` items from `make()` to `out`, skipping any whose prompt is there already."""
    seen = {item["prompt"] for item in out}
    for _ in range(100 * k):
        if k == 0:
            return
        item = make()
        if item["prompt"] not in seen:
            seen.add(item["prompt"])
            out.append(item)
            k -= 1
    raise AssertionError("too few distinct items")


def _sum_choice(rng: random.Random, a: int, b: int) -> Raw:
    right = a + b
    wrong = sorted({right + d for d in rng.sample([-10, -2, -1, 1, 2, 10], 3)})
    return _choice(f"What is {a} + {b}?", str(right), [str(w) for w in wrong], rng)


# --- general --------------------------------------------------------------------------------


def _general(rng: random.Random) -> list[Raw]:
    out: list[Raw] = []
    for country, capital in CAPITALS:
        prompt = f"What is the capital of {country}? Answer with the city's name only."
        out.append({"kind": "exact", "prompt": prompt, "answer": capital})
    out += GENERAL_FACTS

    def _m1() -> Raw:
        a, b = rng.randint(11, 99), rng.randint(11, 99)
        return _numeric(f"What is {a} + {b}?", a + b)

    _draw(out, 14, _m1)

    def _m2() -> Raw:
        a, b = rng.randint(50, 999), rng.randint(10, 49)
        return _numeric(f"What is {a} minus {b}?", a - b)

    _draw(out, 12, _m2)

    def _m3() -> Raw:
        a, b = rng.randint(3, 19), rng.randint(3, 19)
        return _numeric(f"What is {a} times {b}?", a * b)

    _draw(out, 12, _m3)

    def _m4() -> Raw:
        b, q = rng.randint(2, 12), rng.randint(2, 30)
        return _numeric(f"What is {b * q} divided by {b}?", q)

    _draw(out, 8, _m4)

    def _m5() -> Raw:
        h = rng.randint(2, 9)
        return _numeric(f"How many minutes are in {h} hours?", h * 60)

    _draw(out, 5, _m5)

    def _m6() -> Raw:
        m = rng.randint(2, 30)
        return _numeric(f"How many centimeters are in {m} meters?", m * 100)

    _draw(out, 5, _m6)

    def _m7() -> Raw:
        k = rng.randint(2, 20)
        return _numeric(f"How many grams are in {k} kilograms?", k * 1000)

    _draw(out, 4, _m7)

    def _m8() -> Raw:
        w = rng.randint(2, 9)
        return _numeric(f"How many days are in {w} weeks?", w * 7)

    _draw(out, 4, _m8)

    def _m9() -> Raw:
        return _sum_choice(rng, rng.randint(2, 60), rng.randint(2, 60))

    _draw(out, 12, _m9)
    return out


# --- finance --------------------------------------------------------------------------------


def _cents(value: Decimal) -> float:
    return float(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _finance(rng: random.Random) -> list[Raw]:
    out: list[Raw] = []
    for name, code in CURRENCIES:
        prompt = f"What is the three-letter currency code of the {name}? Answer with the code only."
        out.append({"kind": "exact", "prompt": prompt, "answer": code})

    def _m10() -> Raw:
        p, x = rng.choice([5, 10, 15, 20, 25, 30, 40, 50, 75]), rng.randint(2, 40) * 20
        return _numeric(f"What is {p}% of {x}?", p * x // 100)

    _draw(out, 5, _m10)

    def _percent_choice() -> Raw:
        p, x = rng.choice([5, 10, 20, 25, 50]), rng.randint(2, 40) * 20
        right = p * x // 100
        wrong = [str(w) for w in (right * 2, right + 10, x - right) if w != right]
        return _choice(f"What is {p}% of {x}?", str(right), sorted(set(wrong)), rng)

    _draw(out, 10, _percent_choice)

    def _m11() -> Raw:
        principal, rate, years = rng.randint(1, 20) * 100, rng.randint(2, 9), rng.randint(2, 6)
        prompt = (
            f"${principal:,} earns {rate}% simple interest per year. How many dollars of "
            f"interest does it earn in {years} years?"
        )
        return _numeric(prompt, principal * rate * years // 100)

    _draw(out, 12, _m11)

    def _m12() -> Raw:
        principal, rate, years = rng.randint(1, 20) * 500, rng.randint(2, 8), rng.randint(2, 5)
        value = Decimal(principal) * (1 + Decimal(rate) / 100) ** years
        prompt = (
            f"${principal:,} grows by {rate}% a year, compounded yearly. How many dollars is it "
            f"worth after {years} years, to the nearest cent?"
        )
        return _numeric(prompt, _cents(value), 0.01)

    _draw(out, 12, _m12)

    def _m13() -> Raw:
        buy, gain = rng.choice([20, 40, 80, 100, 200]), rng.choice([5, 10, 20, 25, 50])
        sell = buy * (100 + gain) // 100  # whole: every buy price is a multiple of 20
        assert buy * gain % 100 == 0
        prompt = f"A stock bought at ${buy} is sold at ${sell}. What is the gain in percent?"
        return _numeric(prompt, gain)

    _draw(out, 10, _m13)

    def _m14() -> Raw:
        revenue, costs = rng.randint(20, 90) * 100, rng.randint(5, 19) * 100
        prompt = (
            f"A company has revenue of ${revenue:,} and costs of ${costs:,}. What is its "
            "profit in dollars?"
        )
        return _numeric(prompt, revenue - costs)

    _draw(out, 8, _m14)

    def _m15() -> Raw:
        price, tax = rng.randint(1, 40) * 25, rng.choice([4, 5, 6, 8, 10, 20])
        prompt = f"A ${price} item has {tax}% sales tax. How many dollars is the tax?"
        return _numeric(prompt, float(Decimal(price * tax) / 100))

    _draw(out, 8, _m15)

    def _m16() -> Raw:
        eps, pe = rng.randint(1, 9), rng.randint(5, 30)
        prompt = f"A stock costs ${eps * pe} and earns ${eps} per share. What is its P/E ratio?"
        return _numeric(prompt, pe)

    _draw(out, 8, _m16)

    def _m17() -> Raw:
        liabilities, equity = rng.randint(1, 50) * 100, rng.randint(1, 50) * 100
        prompt = (
            f"Assets are ${liabilities + equity:,} and liabilities are ${liabilities:,}. How "
            "many dollars is the equity?"
        )
        return _numeric(prompt, equity)

    _draw(out, 7, _m17)

    def _m18() -> Raw:
        months, payment = rng.choice([6, 10, 12, 24]), rng.randint(2, 40) * 10
        prompt = (
            f"A ${months * payment:,} loan is repaid in {months} equal monthly payments with no "
            "interest. How many dollars is each payment?"
        )
        return _numeric(prompt, payment)

    _draw(out, 7, _m18)
    return out


# --- health ---------------------------------------------------------------------------------


def _health(rng: random.Random) -> list[Raw]:
    out: list[Raw] = list(HEALTH_FACTS)

    def _m19() -> Raw:
        height = rng.choice([150, 155, 160, 165, 170, 175, 180, 185, 190])
        weight = rng.randint(45, 110)
        bmi = Decimal(weight) / (Decimal(height) / 100) ** 2
        prompt = (
            f"A person weighs {weight} kg and is {height} cm tall. What is their body mass "
            "index (weight in kg divided by the square of height in meters), to one decimal "
            "place?"
        )
        rounded = float(bmi.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))
        return _numeric(prompt, rounded, 0.1)

    _draw(out, 15, _m19)

    def _m20() -> Raw:
        c = rng.randint(-4, 20) * 5
        return _numeric(f"What is {c} degrees Celsius in degrees Fahrenheit?", c * 9 // 5 + 32)

    _draw(out, 10, _m20)

    def _m21() -> Raw:
        dose, weight = rng.choice([2, 5, 10, 15, 20]), rng.randint(10, 90)
        prompt = (
            f"A medicine is dosed at {dose} mg per kg of body weight. How many mg is the dose "
            f"for a patient weighing {weight} kg?"
        )
        return _numeric(prompt, dose * weight)

    _draw(out, 12, _m21)

    def _m22() -> Raw:
        beats = rng.randint(12, 30)
        prompt = (
            f"A pulse of {beats} beats is counted in 15 seconds. How many beats per minute is that?"
        )
        return _numeric(prompt, beats * 4)

    _draw(out, 10, _m22)

    def _m23() -> Raw:
        age = rng.randint(18, 80)
        prompt = (
            "Using the formula 220 minus age, what is the estimated maximum heart rate, in "
            f"beats per minute, of a {age}-year-old?"
        )
        return _numeric(prompt, 220 - age)

    _draw(out, 10, _m23)

    def _m24() -> Raw:
        liters = rng.randint(2, 9)
        return _numeric(f"How many milliliters are in {liters} liters?", liters * 1000)

    _draw(out, 8, _m24)

    def _m25() -> Raw:
        tablets, mg = rng.randint(2, 4), rng.choice([125, 250, 500])
        prompt = (
            f"One tablet holds {mg} mg. How many mg does a patient take in a day with "
            f"{tablets} tablets three times a day?"
        )
        return _numeric(prompt, tablets * mg * 3)

    _draw(out, 8, _m25)

    def _m26() -> Raw:
        per_hour, hours = rng.choice([50, 75, 100, 125, 150]), rng.randint(2, 12)
        prompt = (
            f"An intravenous drip runs at {per_hour} mL per hour. How many mL does it give in "
            f"{hours} hours?"
        )
        return _numeric(prompt, per_hour * hours)

    _draw(out, 8, _m26)

    def _pulse_choice() -> Raw:
        beats = rng.randint(12, 30)
        right = beats * 4
        wrong = [str(w) for w in (beats, beats * 2, beats * 6)]
        question = (
            f"A pulse of {beats} beats is counted in 15 seconds. How many beats per minute is that?"
        )
        return _choice(question, str(right), wrong, rng)

    _draw(out, 6, _pulse_choice)

    def _dose_choice() -> Raw:
        dose, weight = rng.choice([2, 5, 10, 15, 20]), rng.randint(10, 90)
        right = dose * weight
        wrong = [str(w) for w in {dose + weight, right * 10, right // 10} if w != right]
        question = (
            f"A medicine is dosed at {dose} mg per kg of body weight. How many mg is the dose "
            f"for a patient weighing {weight} kg?"
        )
        return _choice(question, str(right), wrong, rng)

    _draw(out, 6, _dose_choice)
    return out


# --- code -----------------------------------------------------------------------------------


def _run(snippet: str) -> str:
    """What running `snippet` prints, without the final newline."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(snippet, {})  # noqa: S102 - our own generated snippets, to get their true output
    return out.getvalue().removesuffix("\n")


WORDS = ["apple", "banana", "cherry", "delta", "echo", "python", "river", "stone", "tiger"]


def _snippets(rng: random.Random, k: int) -> list[str]:
    """`k` distinct print statements over random small values; each is run to get its answer."""
    makers: list[Callable[[], str]] = [
        lambda: f"print({rng.randint(10, 99)} // {rng.randint(2, 9)})",
        lambda: f"print({rng.randint(10, 99)} % {rng.randint(2, 9)})",
        lambda: f"print({rng.randint(2, 9)} + {rng.randint(2, 9)} * {rng.randint(2, 9)})",
        lambda: f"print(({rng.randint(2, 9)} + {rng.randint(2, 9)}) * {rng.randint(2, 9)})",
        lambda: f"print(sum(range({rng.randint(3, 15)})))",
        lambda: f"print(len(list(range(0, {rng.randint(3, 40)}, {rng.randint(2, 5)}))))",
        lambda: f"print('{rng.choice(WORDS)}'[{rng.randint(1, 4)}:])",
        lambda: f"print('{rng.choice(WORDS)}'.upper()[:{rng.randint(1, 4)}])",
        lambda: f"print(max({rng.sample(range(1, 50), 4)}) - min({rng.sample(range(1, 50), 4)}))",
        lambda: f"print(sorted({rng.sample(range(1, 50), 4)})[1])",
        lambda: f"print(len('{rng.choice(WORDS)}') * {rng.randint(2, 5)})",
        lambda: f"print('{rng.choice(WORDS)}'.count('{rng.choice('aeiou')}'))",
        lambda: f"print([i * i for i in range({rng.randint(2, 9)})][-1])",
        lambda: f"print(2 ** {rng.choice([3, 4, 5, 6, 7, 8, 9, 11, 12])})",  # 2 ** 10 is cod-039
        lambda: f"print('-'.join({rng.sample(WORDS, 2)}))",
        lambda: f"print(len({rng.sample(range(10), rng.randint(2, 6))}))",
    ]
    out: list[str] = []
    for n in range(100 * k):
        if len(out) == k:
            return out
        snippet = makers[n % len(makers)]()
        if snippet not in out:
            out.append(snippet)
    raise AssertionError("too few distinct snippets")


def _code(rng: random.Random) -> list[Raw]:
    out: list[Raw] = []
    snippets = _snippets(rng, PER_DOMAIN - FIRST_NEW + 1)
    for n, snippet in enumerate(snippets):
        output = _run(snippet)
        prompt = f"What does `{snippet}` print? Reply with only the output."
        if n % 4 == 3:  # a quarter as choice items, scored by log-probability
            wrong = (
                [str(int(output) + d) for d in (-1, 1, 2)] if output.lstrip("-").isdigit() else []
            )
            if wrong:
                question = f"What does the Python code `{snippet}` print?"
                out.append(_choice(question, output, wrong, rng))
                continue
        if output.lstrip("-").isdigit():
            out.append({"kind": "numeric", "prompt": prompt, "answer": int(output)})
        else:
            out.append({"kind": "exact", "prompt": prompt, "answer": output})
    return out


MAKERS = {"general": _general, "finance": _finance, "health": _health, "code": _code}


def new_items(domain: str) -> list[Raw]:
    """Items FIRST_NEW … PER_DOMAIN of the built-in suite `domain`, ids included, in order."""
    rng = random.Random(f"dn-powr-suite-{domain}")
    made = MAKERS[domain](rng)[: PER_DOMAIN - FIRST_NEW + 1]
    if len(made) != PER_DOMAIN - FIRST_NEW + 1:
        raise AssertionError(f"{domain}: {len(made)} new items, not {PER_DOMAIN - FIRST_NEW + 1}")
    prefix = PREFIX[domain]
    return [{"id": f"{prefix}-{FIRST_NEW + n:03d}", **raw} for n, raw in enumerate(made)]


def main() -> None:  # pragma: no cover - run once by hand
    folder = Path(__file__).resolve().parent.parent / "dn" / "powr" / "suites"
    for domain in MAKERS:
        path = folder / f"{domain}.jsonl"
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        kept = lines[: FIRST_NEW - 1]
        fresh = [json.dumps(item, ensure_ascii=False) for item in new_items(domain)]
        path.write_text("\n".join([*kept, *fresh]) + "\n")


if __name__ == "__main__":
    main()
