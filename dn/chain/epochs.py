"""The epoch calendar (DESIGN.md section 8): which heights make up a PoWR epoch, its commit and
reveal phases, and which epoch closes at a given block.

With E = `epoch_blocks`, epoch e covers heights [e*E + 1, (e+1)*E] (height 0 is genesis, in no
epoch). Its commit phase is the first E // 2 of those heights, its reveal phase the rest. Epoch
e is closed at the start of block (e+1)*E + 1, the first of epoch e+1, after that block's
unlocks and before its transactions (`state.begin_block`); the validator set changes scheduled
for epoch e+1 are made right after (`validators.begin_epoch`).

Pure arithmetic on heights: the PoWR rules (`powr_rules.py`), the validator set
(`validators.py`) and the state machine (`state.py`) all read the calendar from here.
"""

from __future__ import annotations

from dataclasses import dataclass

COMMIT = "commit"
REVEAL = "reveal"


@dataclass(frozen=True)
class Epoch:
    """Epoch `number` of `blocks` heights: [number*blocks + 1, (number+1)*blocks]; commits from
    `first` to `reveal_from - 1`, reveals from `reveal_from` to `last`."""

    number: int
    blocks: int

    @classmethod
    def at(cls, height: int, blocks: int) -> Epoch:
        """The epoch that block `height` (≥ 1) belongs to."""
        if height < 1:
            raise ValueError("genesis (height 0) belongs to no epoch")
        return cls((height - 1) // blocks, blocks)

    @staticmethod
    def closed_at(height: int, blocks: int) -> int | None:
        """The epoch that is closed at the start of block `height` (the first block of the next
        epoch), or None."""
        if height > blocks and (height - 1) % blocks == 0:
            return (height - 1) // blocks - 1
        return None

    @property
    def first(self) -> int:
        return self.number * self.blocks + 1

    @property
    def reveal_from(self) -> int:
        return self.first + self.blocks // 2

    @property
    def last(self) -> int:
        return (self.number + 1) * self.blocks

    def phase(self, height: int) -> str:
        return COMMIT if height < self.reveal_from else REVEAL

    def heights(self, phase: str) -> tuple[int, int]:
        """The first and last height of `phase`."""
        if phase == COMMIT:
            return self.first, self.reveal_from - 1
        return self.reveal_from, self.last
