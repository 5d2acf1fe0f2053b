"""Facts written by hand for the built-in suites' items 51 to 150 (`tools/suitegen.py`): the
items whose answer cannot be computed. Each was checked by hand; none repeats an item 1 to 50."""

from __future__ import annotations

from typing import Any

Raw = dict[str, Any]

CAPITALS = [  # checked by hand; none of these is among items 1 to 50
    ("Germany", "Berlin"),
    ("Spain", "Madrid"),
    ("Canada", "Ottawa"),
    ("Australia", "Canberra"),
    ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"),
    ("Norway", "Oslo"),
    ("Sweden", "Stockholm"),
    ("Portugal", "Lisbon"),
    ("Greece", "Athens"),
    ("Poland", "Warsaw"),
    ("Ireland", "Dublin"),
    ("Peru", "Lima"),
    ("Russia", "Moscow"),
    ("China", "Beijing"),
    ("Austria", "Vienna"),
]
GENERAL_FACTS: list[Raw] = [
    {"kind": "contains", "prompt": "Which planet is closest to the Sun?", "answer": "Mercury"},
    {"kind": "contains", "prompt": "What is the largest desert in Africa?", "answer": "Sahara"},
    {"kind": "contains", "prompt": "Which gas makes up most of Earth's air?", "answer": "nitrogen"},
    {"kind": "contains", "prompt": "What is the tallest mountain on Earth?", "answer": "Everest"},
    {"kind": "contains", "prompt": "Who wrote the novel Don Quixote?", "answer": "Cervantes"},
    {"kind": "contains", "prompt": "Who developed the theory of relativity?", "answer": "Einstein"},
    {"kind": "contains", "prompt": "What is the largest mammal on Earth?", "answer": "blue whale"},
    {"kind": "contains", "prompt": "Which country has the city of Venice?", "answer": "Italy"},
]
CURRENCIES = [  # ISO 4217 codes, checked by hand; none is among items 1 to 50
    ("Swiss franc", "CHF"),
    ("Canadian dollar", "CAD"),
    ("Australian dollar", "AUD"),
    ("Chinese yuan", "CNY"),
    ("Indian rupee", "INR"),
    ("Swedish krona", "SEK"),
    ("Norwegian krone", "NOK"),
    ("Mexican peso", "MXN"),
    ("Brazilian real", "BRL"),
    ("South Korean won", "KRW"),
    ("New Zealand dollar", "NZD"),
    ("South African rand", "ZAR"),
    ("Danish krone", "DKK"),
]
HEALTH_FACTS: list[Raw] = [
    {"kind": "contains", "prompt": "Which organ makes bile?", "answer": "liver"},
    {"kind": "contains", "prompt": "What is the largest artery of the body?", "answer": "aorta"},
    {
        "kind": "contains",
        "prompt": "Which insect spreads malaria?",
        "answer": "mosquito",
        "aliases": ["mosquitoes", "mosquitos"],
    },
    {"kind": "contains", "prompt": "Which metal in hemoglobin binds oxygen?", "answer": "iron"},
    {
        "kind": "contains",
        "prompt": "What is the medical term for high blood pressure?",
        "answer": "hypertension",
    },
    {
        "kind": "contains",
        "prompt": "What is the common name of the patella?",
        "answer": "kneecap",
        "aliases": ["knee cap"],
    },
    {
        "kind": "contains",
        "prompt": "Which disease is monitored with an HbA1c blood test?",
        "answer": "diabetes",
    },
]
