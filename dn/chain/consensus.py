"""Clique-style proof of authority over the validator set (EIP-225), as pure functions.

- Validators are sorted by address; the in-turn proposer of height h is `validators[h % n]`
  (difficulty 2); any other validator may propose after a random delay (difficulty 1).
- A validator signs at most one of any `floor(n/2) + 1` consecutive blocks, so fewer than half
  of the validators can never run the chain alone. Here n counts the members off probation
  (`validators.signing`): a joiner counts once it has signed a block, so joiners that never
  sign cannot stop the others (`jailing.py` jails them at the next boundary).
- Fork choice: the highest total difficulty wins; on a tie, the lowest block hash.
- A block is final once validators holding more than 2/3 of the set have signed blocks on top of
  it; a reorganisation below the last final block is refused.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

OUT_OF_TURN_WIGGLE_MS = 500


def in_turn(validators: Sequence[str], height: int) -> str:
    return validators[height % len(validators)]


def difficulty(validators: Sequence[str], height: int, proposer: str) -> int:
    return 2 if in_turn(validators, height) == proposer else 1


def recent_window(n: int) -> int:
    """How many of the latest proposers a new block's proposer must not be among."""
    return n // 2


def may_sign(recent: Sequence[str], proposer: str, n: int) -> bool:
    """Whether `proposer` may sign the next block, given the proposers of the latest blocks."""
    window = recent_window(n)
    return window == 0 or proposer not in list(recent)[-window:]


def remember(recent: Sequence[str], proposer: str, n: int) -> list[str]:
    """The recent-proposer list after a block by `proposer` (only as long as the rule needs)."""
    window = recent_window(n)
    return ([*recent, proposer])[-window:] if window else []


def out_of_turn_delay_ms(rng: random.Random, n: int, block_time_ms: int) -> int:
    """How long an out-of-turn validator waits before proposing, so the in-turn one goes first."""
    return block_time_ms + rng.randrange((n // 2 + 1) * OUT_OF_TURN_WIGGLE_MS)


def prefer(a: tuple[int, str], b: tuple[int, str]) -> bool:
    """Whether head `a` = (total difficulty, hash) is preferred to head `b`."""
    if a[0] != b[0]:
        return a[0] > b[0]
    return a[1] < b[1]


def final_height(proposers_by_height: Sequence[tuple[int, str]], validators: Sequence[str]) -> int:
    """The highest height that is final on a chain given as (height, proposer) from genesis up.

    Walking down from the tip, a block is final once the distinct validators that signed blocks
    above it are more than 2/3 of the set. Height 0 (genesis) is always final.
    """
    members = set(validators)
    signers: set[str] = set()
    for height, proposer in reversed(proposers_by_height):
        if len(signers) * 3 > 2 * len(members):
            return height
        if proposer in members:
            signers.add(proposer)
    return 0
