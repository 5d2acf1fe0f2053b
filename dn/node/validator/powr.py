"""The validator's PoWR duty (DESIGN.md section 8): every epoch, evaluate the live models on the
built-in benchmark suites, commit a hash of the quality scores in the commit phase and reveal
them in the reveal phase.

What happens when, for the block being built next (tip height + 1) in epoch e:

- commit phase, nothing committed for e yet (on chain or pending): evaluate every live model
  registered on chain whose file is in the local store, on `items_per_model` items of the
  built-in suite of its domain (`general` where none ships), asked as its kind says (the
  record's `kind`: a chat model through its chat template, a base model by completion prompts;
  `dn.powr.evaluate`), and send `powr.commit` over each model's quality and its standard error.
- reveal phase, committed for e and not revealed: send `powr.reveal` with the scores, their
  standard errors and the salt that were committed.

The sample seed. Items are sampled with `sample_seed(H)` where H is the hash of block e*E, the
block before the epoch's first block (genesis for epoch 0): the newest block every node knows
when epoch e begins. Every validator runs the same items (one shared exam), so honest validators
agree up to hardware drift. The commit phase starts at the epoch's first block, so the hash of that
block cannot be waited for without losing a block of the phase; the block before it is fixed
just as late for anyone trying to predict it (it is the last block of epoch e-1) and every
validator can compute it from the chain alone, so anyone can check which items a validator ran.

Persistence. Scores and salt live in memory and in `powr_validator.json` in the node's folder
(written atomically, mode 0600: the salt is private until the reveal) before the commit is
returned, so a validator restarted between its commit and its reveal still reveals, and one
restarted after evaluating but before its commit was included resends the same commitment
instead of evaluating again. Only the latest epoch is kept.

Threads. Evaluation runs llama.cpp for seconds, so it must not run on the node's event loop;
reading the chain (iterating the state, the SQLite store) must not run beside the loop that
changes it. `next_step()` does all of the reading and is cheap (run it on the loop);
`perform(step)` evaluates and signs and touches only this object, the model store, the runner
and the mempool's pending nonce (run it in a worker thread). `tick()` does both, for callers on
one thread.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dn.chain.epochs import COMMIT, REVEAL, Epoch
from dn.chain.ledger import ACCT, MODEL
from dn.chain.models import kind_of
from dn.chain.powr_rules import commit_key, powr_commitment, reveal_key
from dn.chain.types import Tx
from dn.chain.validators import active
from dn.config import atomic_write
from dn.errors import DNError
from dn.node.validator.interfaces import ChainView, ModelFiles, ModelRunner
from dn.powr.evaluate import CHAT, DEFAULT_MAX_TOKENS, Evaluation
from dn.powr.evaluate import evaluate as run_evaluation
from dn.powr.params import PPM
from dn.powr.suites import Item, choose_suite, sample_items, sample_seed
from dn.wallet.keys import Keypair

log = logging.getLogger("dn.validator")

STATE_FILE = "powr_validator.json"
DEFAULT_ITEMS = 8

Evaluate = Callable[..., Evaluation]  # evaluate(model, items, *, max_tokens=…, progress=…)


class Stopped(Exception):
    """Raised inside an evaluation once `PowrValidator.stop()` was called."""


@dataclass(frozen=True)
class Committed:
    """What the validator committed to (or is about to) for `epoch`: quality scores and their
    standard errors in ppm (no errors: a state file written before errors existed)."""

    epoch: int
    scores: dict[str, int]
    salt: str
    seed_block: str
    errors: dict[str, int] = field(default_factory=dict)

    def commitment(self, validator: str) -> str:
        errors = self.errors or None
        return powr_commitment(self.epoch, validator, self.scores, self.salt, errors)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Any) -> Committed:
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        epoch, scores, salt, seed = (doc.get(k) for k in ("epoch", "scores", "salt", "seed_block"))
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError("bad epoch")
        if not isinstance(scores, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            for k, v in scores.items()
        ):
            raise ValueError("bad scores")
        if not isinstance(salt, str) or not isinstance(seed, str):
            raise ValueError("bad salt or seed block")
        errors = doc.get("errors", {})
        if not isinstance(errors, dict) or (errors and set(errors) != set(scores)):
            raise ValueError("bad errors")  # none, or one for each score (the chain's rule)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in errors.values()):
            raise ValueError("bad errors")
        return cls(epoch, dict(sorted(scores.items())), salt, seed, dict(sorted(errors.items())))


@dataclass(frozen=True)
class EvaluateStep:
    """Evaluate `models` (sha -> domain) for `epoch`, sampling with the hash `seed_block`;
    `kinds` (sha -> "chat" or "base") says how each is asked (chat where not given)."""

    epoch: int
    seed_block: str
    models: dict[str, str]
    kinds: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SendStep:
    """Send a `kind` transaction for `epoch` with what was committed (no evaluation)."""

    kind: str
    epoch: int
    committed: Committed


Step = EvaluateStep | SendStep


def to_ppm(quality: float) -> int:
    return min(PPM, max(0, int(round(quality * PPM))))


class PowrValidator:
    """Evaluates, commits and reveals for one validator (see the module docstring)."""

    def __init__(
        self,
        node: ChainView,
        keypair: Keypair,
        store: ModelFiles,
        runner: ModelRunner,
        *,
        items_per_model: int = DEFAULT_ITEMS,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        state_file: Path | None = None,
        evaluate: Evaluate = run_evaluation,
    ) -> None:
        if items_per_model < 1:
            raise ValueError("items_per_model must be at least 1")
        self.node = node
        self.keypair = keypair
        self.store = store
        self.runner = runner
        self.items_per_model = items_per_model
        self.max_tokens = max_tokens
        if state_file is None:
            state_file = node.home.path / STATE_FILE
        self.state_file = state_file
        self._evaluate = evaluate
        self.committed: Committed | None = self._load()
        self._sent: dict[tuple[int, str], tuple[str, int]] = {}  # (epoch, kind) -> (tx, height)
        self._said: set[tuple[int, str]] = set()  # (epoch, what): warnings given once per epoch
        self.last_evaluations: dict[str, Evaluation] = {}
        self._stopping = threading.Event()

    @property
    def address(self) -> str:
        return self.keypair.address

    # --- the plan: reads the chain, cheap -------------------------------------------------

    def next_step(self) -> Step | None:
        """What to do now for the block being built next, or None. Reads the chain only."""
        node = self.node
        height = node.tip.height + 1
        blocks = int(node.genesis.param("epoch_blocks"))
        epoch = Epoch.at(height, blocks)
        phase = epoch.phase(height)
        e = epoch.number
        if self.address not in active(node.state, node.genesis):
            self._once(e, "not-validator", "this node is not an active validator: no PoWR duty")
            return None
        if phase == COMMIT:
            if node.state.get(commit_key(e, self.address)) is not None:
                return None
            if self._in_flight(e, COMMIT, node.tip.height):
                return None
            if not self._can_pay(e, COMMIT):
                return None
            saved = self.committed
            if saved is not None and saved.epoch == e:
                return SendStep(COMMIT, e, saved)  # evaluated already; the commit got lost
            if (e, "evaluated") in self._said:
                return None  # evaluated, but nothing to commit or too late
            seed_block = node.store.canonical_hash(epoch.first - 1)
            if seed_block is None:
                return None  # not synced that far (cannot happen at our own tip)
            models = self._models(e)
            if not models:
                return None
            kinds = {sha: kind_of(self.node.state.get(MODEL + sha)) for sha in models}
            return EvaluateStep(e, seed_block, models, kinds)
        chain_commit = node.state.get(commit_key(e, self.address))
        if chain_commit is None or node.state.get(reveal_key(e, self.address)) is not None:
            return None
        if self._in_flight(e, REVEAL, node.tip.height):
            return None
        saved = self.committed
        if saved is None or saved.epoch != e or saved.commitment(self.address) != chain_commit:
            self._once(
                e,
                "lost-scores",
                f"epoch {e}: the chain holds a commitment of this validator but the scores "
                f"and salt behind it are not in {self.state_file}; nothing to reveal",
            )
            return None
        if not self._can_pay(e, REVEAL):
            return None
        return SendStep(REVEAL, e, saved)

    def _in_flight(self, epoch: int, kind: str, tip_height: int) -> bool:
        """A tx of ours for (epoch, kind) is pending, or one was made at this very tip (its
        result not known yet): no second one."""
        sent = self._sent.get((epoch, kind))
        if sent is None:
            return False
        tx_id, at = sent
        return self.node.mempool.get(tx_id) is not None or at == tip_height

    def _can_pay(self, epoch: int, kind: str) -> bool:
        fee = int(self.node.genesis.param("min_fee"))
        acct = self.node.state.get(ACCT + self.address)
        balance = int(acct["balance"]) if acct else 0
        if balance >= fee:
            return True
        self._once(
            epoch,
            "poor",
            f"epoch {epoch}: validator {self.address} has {balance} units and cannot pay the "
            f"{fee}-unit fee of powr.{kind}; fund it to take part in PoWR",
        )
        return False

    def _models(self, epoch: int) -> dict[str, str]:
        """The live registered models in the local store: sha -> domain."""
        held: dict[str, str] = {}
        missing = []
        for key, record in list(self.node.state.items()):
            if not key.startswith(MODEL) or record["retired"]:
                continue
            sha = key[len(MODEL) :]
            if self.store.has(sha):
                held[sha] = str(record["domain"])
            else:
                missing.append(sha)
        if missing:
            names = ", ".join(sha[:12] for sha in sorted(missing))
            self._once(epoch, "missing", f"epoch {epoch}: not in the local store, skipped: {names}")
        if missing and not held:
            self._once(
                epoch,
                "no-models",
                f"epoch {epoch}: this validator holds none of the live models; no commitment",
            )
        elif not held and (epoch, "none-live") not in self._said:
            self._said.add((epoch, "none-live"))
            log.info("epoch %d: no live model is registered; nothing to evaluate", epoch)
        return dict(sorted(held.items()))

    # --- the work: evaluates and signs, no chain reads --------------------------------------

    def perform(self, step: Step | None) -> list[Tx]:
        """Do `step`: evaluate and build the commit, or build the commit or reveal again."""
        if step is None:
            return []
        if isinstance(step, SendStep):
            return [self._tx(step.kind, step.committed)]
        committed = self._evaluate_models(step)
        if committed is None:
            return []
        height = self.node.tip.height + 1
        epoch = Epoch.at(height, int(self.node.genesis.param("epoch_blocks")))
        if epoch.number != step.epoch or epoch.phase(height) != COMMIT:
            self._once(
                step.epoch,
                "late",
                f"epoch {step.epoch}: evaluation ended after the commit phase (blocks "
                f"{epoch.heights(COMMIT)[0]} to {epoch.heights(COMMIT)[1]}); nothing committed",
            )
            return []
        return [self._tx(COMMIT, committed)]

    def tick(self) -> list[Tx]:
        """`perform(next_step())`: the transactions to send now (at most one)."""
        return self.perform(self.next_step())

    def _evaluate_models(self, step: EvaluateStep) -> Committed | None:
        self._said.add((step.epoch, "evaluated"))
        seed = sample_seed(step.seed_block)
        scores: dict[str, int] = {}
        errors: dict[str, int] = {}
        evaluations: dict[str, Evaluation] = {}
        for sha, domain in step.models.items():
            suite = choose_suite(model_domain=domain)
            items: list[Item] = sample_items(suite, self.items_per_model, seed)
            try:
                model = self.runner.model(self.store.path(sha), "generate")
                result = self._evaluate(
                    model,
                    items,
                    max_tokens=self.max_tokens,
                    progress=self._check_stop,
                    model_kind=step.kinds.get(sha, CHAT),
                )
            except Stopped:
                log.info("epoch %d: evaluation stopped; nothing committed", step.epoch)
                return None
            except DNError as exc:  # a damaged file or an item too long: this model is skipped
                log.warning("epoch %d: could not evaluate %s: %s", step.epoch, sha[:12], exc)
                continue
            evaluations[sha] = result
            scores[sha] = to_ppm(result.quality)
            errors[sha] = to_ppm(result.stderr)
            log.info(
                "epoch %d: %s (%s) scored %.3f ± %.3f on %d %s items",
                step.epoch,
                sha[:12],
                result.model_kind,
                result.quality,
                result.stderr,
                len(items),
                suite.name,
            )
        self.last_evaluations = evaluations
        if not scores:
            log.warning("epoch %d: no model could be evaluated; no commitment", step.epoch)
            return None
        committed = Committed(
            step.epoch,
            dict(sorted(scores.items())),
            secrets.token_hex(16),
            step.seed_block,
            dict(sorted(errors.items())),
        )
        self._save(committed)  # before the commit can reach the chain
        self.committed = committed
        return committed

    def _tx(self, kind: str, committed: Committed) -> Tx:
        if kind == COMMIT:
            payload: dict[str, Any] = {
                "epoch": committed.epoch,
                "commitment": committed.commitment(self.address),
            }
        else:
            payload = {"epoch": committed.epoch, "scores": committed.scores, "salt": committed.salt}
            if committed.errors:
                payload["errors"] = committed.errors
        tx = self.node.own_tx(self.keypair, f"powr.{kind}", payload)
        self._sent[(committed.epoch, kind)] = (tx.id, self.node.tip.height)
        return tx

    # --- the file ---------------------------------------------------------------------------

    def _save(self, committed: Committed) -> None:
        text = json.dumps(committed.to_json(), indent=2, sort_keys=True) + "\n"
        atomic_write(self.state_file, text.encode(), mode=0o600)

    def _load(self) -> Committed | None:
        if not self.state_file.exists():
            return None
        try:
            return Committed.from_json(json.loads(self.state_file.read_text()))
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s, which is unreadable: %s", self.state_file, exc)
            return None

    def _once(self, epoch: int, what: str, message: str) -> None:
        if (epoch, what) not in self._said:
            self._said.add((epoch, what))
            log.warning("%s", message)

    def _check_stop(self, done: int, total: int) -> None:
        if self._stopping.is_set():
            raise Stopped

    def stop(self) -> None:
        """Make a running evaluation give up after its current item (the node is stopping)."""
        self._stopping.set()

    def close(self) -> None:
        self.runner.close()


def for_node(
    node: Any,
    store: ModelFiles,
    *,
    items_per_model: int = DEFAULT_ITEMS,
    threads: int | None = None,
) -> PowrValidator:
    """The validator of a running `Node`: its node key, its folder, a llama.cpp runner of its own
    (two models loaded at most: they are evaluated one after another)."""
    from dn.runner.llama import Runner

    return PowrValidator(
        node,
        node.key,
        store,
        Runner(n_threads=threads, max_loaded=2, slots=1),  # one item at a time
        items_per_model=items_per_model,
    )
