"""How a miner acts at the points where a dishonest miner would act otherwise.

A `Miner` asks its `behaviour` at each such point: which model file it generates with, what token
it streams, whether it stops streaming, which key signs its attestations, how it opens a check,
whether it answers a chunk, and whether it approves. The honest `Behaviour` below changes
nothing, and it is the only one in the package: misbehaving miners are the test harness's
(`tests/functional/hooks.py`), installed through the one test hook, `dn.node.hooks`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dn.runner.check import TokenValue, Verdict

if TYPE_CHECKING:
    from dn.node.market.miner import Miner, _Job
    from dn.wallet.keys import Keypair


class Check(Protocol):
    """What the miner needs of a check session (`dn.runner.llama.CheckSession` is one)."""

    prompt_tokens: list[int]
    tokens: list[int]
    values: list[TokenValue]

    def feed(
        self, tokens: Sequence[int], logprobs: Sequence[Any] | None = None
    ) -> list[TokenValue]: ...

    def finish(self) -> Verdict: ...

    def close(self) -> None: ...


class Behaviour:
    """An honest miner."""

    name = "honest"

    def signer(self, wallet: Keypair) -> Keypair:
        """The key that signs this miner's attestations."""
        return wallet

    def generating_path(self, miner: Miner, job: _Job) -> Path:
        """The model file the generator runs."""
        return job.path

    def token(self, token: int, index: int, n_vocab: int) -> int:
        """The token streamed as the answer's `index`-th, given the one the model chose."""
        return token

    def hold(self, produced: int, stop: threading.Event) -> bool:
        """Called after each streamed token; True ends the answer there without an attestation
        (the stream stays open until the reader goes away)."""
        return False

    def open_check(self, max_tokens: int, honest: Callable[[], Check]) -> Check:
        """The check session for a task; `honest` opens the real one."""
        return honest()

    async def before_feed(self, miner: Miner, task: str) -> None:
        """Called before a chunk is scored; may raise a `TaskError` instead of answering."""

    def approves(self, ok: bool) -> bool:
        """The verdict this checker signs, given the one its check reached."""
        return ok


HONEST = Behaviour()
