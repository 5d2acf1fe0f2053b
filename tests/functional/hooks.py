"""The harness's side of `dn.node.hooks`: misbehaving miners and cut links, installed into node
processes that the tests start (the harness sets DN_TEST_HOOK to `tests.functional.hooks:install`).

- `$DN_TEST_MINER_FAULTS`, comma-separated, makes the node's miner misbehave. Generators: `stall`
  (stops after a few tokens and hangs), `garbage` (streams token ids that are not the model's
  answer), `tamper` (changes one token of the answer), `other-model` (answers with another model
  it holds), `wrong-key` (signs attestations with another key). Checkers: `check-stall` (never
  answers a chunk), `lazy-check` (approves without computing, committing to made-up values),
  `spiteful` (computes, then rejects every answer).
- `$DN_TEST_LINKS` names a JSON file `{"deny": [URL, …]}`: the node neither talks to nor takes
  gossip from those URLs; tests edit the file to cut and heal links.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dn.errors import TaskError
from dn.node.market.behaviour import Behaviour, Check
from dn.runner.check import Thresholds, TokenValue, Verdict, judge
from dn.wallet.keys import Keypair

FAULTS_ENV = "DN_TEST_MINER_FAULTS"
LINKS_ENV = "DN_TEST_LINKS"
HOOK = "tests.functional.hooks:install"
TAMPERED_AT = 2  # the token the `tamper` fault changes
STALL_AFTER = 3  # tokens a `stall` generator streams before it hangs
FAULTS = frozenset(
    {
        "stall",
        "garbage",
        "tamper",
        "other-model",
        "wrong-key",
        "check-stall",
        "lazy-check",
        "spiteful",
    }
)

log = logging.getLogger("dn.test-hooks")


def install(service: Any) -> None:
    """Called by `dn.node.hooks` for every node service in a process the harness started."""
    faults = faults_from_env()
    if faults and service.miner is not None:
        service.miner.behaviour = Faulty(faults)
    links = os.environ.get(LINKS_ENV)
    if links:
        service.network.links = FileLinks(Path(links))


def faults_from_env() -> frozenset[str]:
    found = frozenset(f.strip() for f in os.environ.get(FAULTS_ENV, "").split(",") if f.strip())
    unknown = found - FAULTS
    if unknown:
        raise ValueError(f"unknown miner faults {sorted(unknown)}; known: {sorted(FAULTS)}")
    return found


class LazyCheck:
    """The `lazy-check` fault: a check session that computes nothing, approves every answer and
    makes up the values it commits to (rank 0, gap 0, logit 0: what a greedy answer mostly
    looks like)."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.prompt_tokens: list[int] = []
        self.tokens: list[int] = []
        self.values: list[TokenValue] = []

    def feed(
        self, tokens: Sequence[int], logprobs: Sequence[Any] | None = None
    ) -> list[TokenValue]:
        fresh = [TokenValue(int(t), 0, 0.0, 0.0) for t in tokens]
        self.tokens.extend(int(t) for t in tokens)
        self.values.extend(fresh)
        return fresh

    def finish(self) -> Verdict:
        return judge(self.values, Thresholds(), max_tokens=self.max_tokens, ended=True)

    def close(self) -> None:
        pass


class Faulty(Behaviour):
    """A miner with the named faults (see the module docstring)."""

    def __init__(self, faults: frozenset[str]) -> None:
        self.faults = faults
        self.name = ",".join(sorted(faults))
        self._other_key = Keypair.generate()

    def signer(self, wallet: Keypair) -> Keypair:
        return self._other_key if "wrong-key" in self.faults else wallet

    def generating_path(self, miner: Any, job: Any) -> Path:
        if "other-model" not in self.faults:
            return Path(job.path)
        wanted = job.ticket["model"]
        others = [m["sha256"] for m in miner.store.list() if m["sha256"] != wanted]
        return Path(miner.store.path(others[0])) if others else Path(job.path)

    def token(self, token: int, index: int, n_vocab: int) -> int:
        if "garbage" in self.faults:
            token = (token * 7919 + 13) % n_vocab
        if "tamper" in self.faults and index == TAMPERED_AT:
            token = (token + 1) % n_vocab
        return token

    def hold(self, produced: int, stop: threading.Event) -> bool:
        if "stall" in self.faults and produced == STALL_AFTER:
            stop.wait(3600)
            return True
        return False

    def open_check(self, max_tokens: int, honest: Callable[[], Check]) -> Check:
        return LazyCheck(max_tokens) if "lazy-check" in self.faults else honest()

    async def before_feed(self, miner: Any, task: str) -> None:
        if "check-stall" in self.faults:
            while task in miner._sessions:  # never answer; give up once the gateway aborts
                await asyncio.sleep(0.1)
            raise TaskError("the check was aborted", reason="aborted")

    def approves(self, ok: bool) -> bool:
        return ok and "spiteful" not in self.faults


class FileLinks:
    """A deny list in a JSON file that tests edit while the node runs (read again on change)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = 0.0
        self.deny: set[str] = set()

    def refresh(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
            if mtime == self._mtime:
                return
            doc = json.loads(self.path.read_text())
            self.deny = {str(u).rstrip("/") for u in doc.get("deny", [])}
            self._mtime = mtime
        except FileNotFoundError:
            self.deny = set()
        except (OSError, ValueError, AttributeError):
            log.warning("cannot read the links file %s", self.path)

    def allows(self, url: str) -> bool:
        self.refresh()
        return url.rstrip("/") not in self.deny
