"""Many sequences of one model in one llama.cpp context, batched: what lets a miner serve many
people at once.

One scheduler thread owns the context. Each step it gathers the pending work of every open
sequence — the prompt of a sequence that just joined, one token of each generating sequence, the
next claimed chunk of each check — into one `llama_batch` (every token tagged with its
sequence's id and whether its logits are wanted), calls `llama_decode` once, and hands each
sequence its rows of logits. Sequences join and leave between any two steps.

    Engine.open()            a `Sequence` in a free slot, or `Busy` at once (nothing queues)
    Sequence.eval(tokens)    the logits rows for `tokens` at the next positions (waits for the
                             step that computes them, never longer than the sequence's deadline)
    Sequence.generate(...)   decoding run by the scheduler (each step's chosen token is the
                             next step's input); the caller reads the tokens from a queue
    Sequence.truncate(n)     forget positions n and later
    Sequence.close()         leave: its KV cells are cleared before its slot is handed out again

The KV cache is llama.cpp's non-unified one: a stream of cells per slot, so a sequence's
attention sees exactly its own tokens, laid out as if it ran alone. Measured on SmolLM2, greedy
answers in batches of 4 were the answers alone for 49 prompts of 50, and the other was accepted
by a checker alone (docs/verification.md, "Batching"). llama.cpp groups a
step's sequences into one pass only while their ids run consecutively, so a step lists them in id
order and a new sequence takes the lowest free id.

Nothing blocks on a caller: a sequence's work waits in the engine, never a lock, so one caller that
goes quiet (a check whose gateway went away) holds its slot, not the others. Each sequence has an
idle limit (no new work and no token read for `idle_s`) and an absolute deadline; the scheduler
closes it when either passes and its caller gets `TaskError` (reason `idle` or `deadline`).
`close()` stops the thread within one step and fails whatever still waits (reason `closed`).
"""

from __future__ import annotations

import atexit
import collections
import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable
from collections.abc import Sequence as Seq
from typing import TYPE_CHECKING, Any

from dn.errors import Busy, ModelError, TaskError

if TYPE_CHECKING:
    import numpy as np  # at run time only after llama_cpp (see dn/runner/llama.py)

log = logging.getLogger("dn.runner")

DEFAULT_IDLE_S = 10.0  # an abandoned stream or check frees its slot this long after its last use
DEFAULT_DEADLINE_S = 600.0  # no sequence lives longer than this


_RUNNING: weakref.WeakSet[Engine] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    """At exit, stop every engine still running while its thread can still end: once the
    interpreter finalizes, a daemon thread freezes where it is, perhaps holding the engine's
    lock that a finalizer then waits for."""
    for engine in list(_RUNNING):
        engine.close(timeout=5.0)


class _Work:
    """Tokens of one sequence waiting to be evaluated, and what to do with their logits.
    `absorb(view, first, last_row)` is called on the scheduler thread with this step's rows."""

    def __init__(self, tokens: Seq[int], start: int, all_rows: bool) -> None:
        self.tokens = list(tokens)
        self.start = start  # position of tokens[0]
        self.done = 0  # how many are evaluated
        self.all_rows = all_rows
        self.rows: list[np.ndarray] = []
        self.event = threading.Event()
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None

    def absorb(self, rows: np.ndarray, finished: bool) -> None:
        import numpy as np

        self.rows.append(rows.copy())
        if finished:
            self.result = np.concatenate(self.rows) if len(self.rows) > 1 else self.rows[0]
            self.event.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.event.set()


def _argmax(row: np.ndarray) -> int:
    return int(row.argmax())


class _Greedy(_Work):
    """Decoding of one sequence, run by the scheduler: each step's chosen token (`choose` of
    its row: the argmax, or a sampler's choice) is fed in the next step. Tokens go to `out`;
    None ends it."""

    def __init__(self, seq: Sequence, tokens: Seq[int], max_tokens: int, stop: Any, choose: Any):
        super().__init__(tokens, seq.n_past, all_rows=False)
        self.seq = seq
        self.left = max_tokens
        self.stop = stop
        self.choose = choose

    def absorb(self, rows: np.ndarray, finished: bool) -> None:
        if not finished:
            return
        token = self.choose(rows[-1])
        self.left -= 1
        self.seq._emit(token)
        if self.left <= 0 or self.stop(token) or self.seq.n_past >= self.seq.engine.n_ctx:
            self.seq._emit(None)
            self.seq.work = None
            return
        # The next step feeds the token just chosen (the scheduler holds the engine lock here).
        self.tokens, self.start, self.done = [token], self.seq.n_past, 0
        self.seq.n_past += 1

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.seq._emit(error)


class Sequence:
    """One slot of an `Engine`: its own KV cells, positions and greedy state."""

    def __init__(self, engine: Engine, sid: int, idle_s: float | None, deadline: float) -> None:
        self.engine = engine
        self.id = sid
        self.n_past = 0
        self.idle_s = idle_s
        self.deadline = deadline
        self.touched = time.monotonic()
        self.work: _Work | None = None
        self.error: TaskError | None = None  # why the engine closed it
        self.closed = False
        self.waiting = False  # a reader blocked in next_token()
        self._out: collections.deque[int | None | BaseException] = collections.deque()
        self._ready = threading.Condition(threading.Lock())

    # --- the caller's side ----------------------------------------------------------------

    def eval(self, tokens: Seq[int], *, all_rows: bool) -> np.ndarray:
        """Evaluate `tokens` at positions n_past…; the float32 logits of every one of them
        (all_rows) or of the last one only (a 1-row array)."""
        if not tokens:
            raise ValueError("nothing to evaluate")
        work = _Work(tokens, self.n_past, all_rows)
        self.engine._submit(self, work)
        self._wait(work.event)
        if work.error is not None:
            raise work.error
        assert work.result is not None
        return work.result

    def generate(
        self,
        tokens: Seq[int],
        max_tokens: int,
        stop: Callable[[int], bool],
        choose: Callable[[np.ndarray], int] = _argmax,
    ) -> None:
        """Start decoding after `tokens` (the prompt): up to `max_tokens` tokens, each the
        `choose` of its row of logits (default the argmax), ending after the first for which
        `stop` is true. Read them with `next_token()`."""
        self.engine._submit(self, _Greedy(self, tokens, max_tokens, stop, choose))

    def next_token(self) -> int | None:
        """The next generated token, or None once generation ended."""
        with self._ready:
            self.waiting = True
            try:
                while not self._out:
                    if not self._ready.wait(self._wait_s()):
                        self._check_alive()
            finally:
                self.waiting = False
            item = self._out.popleft()
        self.touched = time.monotonic()
        if isinstance(item, BaseException):
            raise item
        return item

    def truncate(self, position: int) -> None:
        """Forget positions `position` and later (cleared before this sequence's next work)."""
        if position < self.n_past:
            self.engine._forget(self, position)

    def close(self) -> None:
        self.engine._leave(self, None)

    def __enter__(self) -> Sequence:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the scheduler's side -------------------------------------------------------------

    def _emit(self, item: int | None | BaseException) -> None:
        with self._ready:
            self._out.append(item)
            self._ready.notify()

    def _wait_s(self) -> float:
        return max(0.05, min(1.0, self.deadline - time.monotonic() + 0.5))

    def _wait(self, event: threading.Event) -> None:
        while not event.wait(self._wait_s()):
            self._check_alive()

    def _check_alive(self) -> None:
        """A safety net for a waiter: the scheduler fails waiting work itself when it closes a
        sequence, but a waiter never outlives the deadline by more than a moment."""
        if self.error is not None:
            raise self.error
        if time.monotonic() > self.deadline + 5.0 or not self.engine.running:
            raise TaskError("the model engine stopped answering", reason="closed")


class Engine:
    """One llama.cpp context with `slots` sequences, run by one scheduler thread."""

    def __init__(
        self,
        model: Any,
        *,
        n_vocab: int,
        slots: int,
        n_ctx: int,
        n_threads: int,
        n_batch: int = 512,
        idle_s: float | None = DEFAULT_IDLE_S,
        deadline_s: float = DEFAULT_DEADLINE_S,
        name: str = "model",
    ) -> None:
        import llama_cpp

        if slots < 1:
            raise ValueError("an engine needs at least one slot")
        self._lib = llama_cpp
        self.slots, self.n_vocab, self.n_batch = slots, n_vocab, n_batch
        self.idle_s, self.deadline_s, self.name = idle_s, deadline_s, name
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx * slots
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = slots
        params.kv_unified = False  # a stream of cells per sequence: attention as if alone
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.no_perf = True
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self._ctx = llama_cpp.llama_init_from_model(model, params)
        if not self._ctx:
            raise ModelError(f"llama.cpp cannot make a context for {name}", reason="unloadable")
        self.n_ctx = min(n_ctx, int(llama_cpp.llama_n_ctx_seq(self._ctx)))
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        # Re-entrant: a stream the garbage collector finalizes closes itself on whichever thread
        # the collection ran, the scheduler's own (inside a step) included.
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._seqs: dict[int, Sequence] = {}
        self._forget_ops: list[tuple[int, int]] = []  # (sequence id, from position)
        self._stopping = False
        self._retiring: Callable[[], None] | None = None
        self.running = True
        self.steps = 0
        self._thread = threading.Thread(target=self._run, name=f"dn-engine-{name}", daemon=True)
        self._thread.start()
        _RUNNING.add(self)

    # --- admission ------------------------------------------------------------------------

    def open(self, *, deadline_s: float | None = None, idle: bool = True) -> Sequence:
        """A sequence in the lowest free slot; `Busy` at once when every slot is taken. It
        closes itself after `deadline_s` (default the engine's), and after the engine's idle
        limit without use unless `idle` is false."""
        with self._lock:
            if self._stopping or not self.running:
                raise TaskError(f"{self.name} is unloaded", reason="closed")
            free = next((i for i in range(self.slots) if i not in self._seqs), None)
            if free is None:
                raise Busy(f"all {self.slots} slots of {self.name} are taken; try again shortly")
            deadline = time.monotonic() + (deadline_s or self.deadline_s)
            seq = Sequence(self, free, self.idle_s if idle else None, deadline)
            self._seqs[free] = seq
            return seq

    def open_waiting(self, timeout: float) -> Sequence:
        """For a local job that may wait (PoWR evaluation, never a network task): a sequence as
        soon as a slot frees, `Busy` after `timeout` seconds."""
        end = time.monotonic() + timeout
        while True:
            try:
                return self.open(idle=False)
            except Busy:
                if time.monotonic() > end:
                    raise
                time.sleep(0.05)

    @property
    def active(self) -> int:
        return len(self._seqs)

    # --- requests from sequences ----------------------------------------------------------

    def _submit(self, seq: Sequence, work: _Work) -> None:
        with self._lock:
            if seq.error is not None:
                raise seq.error
            if seq.closed or self._stopping:
                raise TaskError("the sequence is closed", reason="closed")
            if seq.work is not None:
                raise RuntimeError("a sequence runs one request at a time")
            if work.start + len(work.tokens) > self.n_ctx:
                raise TaskError(
                    f"{work.start + len(work.tokens)} tokens do not fit the context of "
                    f"{self.n_ctx}",
                    reason="too-long",
                )
            seq.n_past = work.start + len(work.tokens)
            seq.touched = time.monotonic()
            seq.work = work
            self._wake.notify()

    def _forget(self, seq: Sequence, position: int) -> None:
        with self._lock:
            if seq.work is not None:
                raise RuntimeError("truncate() while the sequence has work in flight")
            self._forget_ops.append((seq.id, position))
            seq.n_past = position

    def _leave(self, seq: Sequence, error: TaskError | None) -> None:
        """Close `seq` (lock not held); its cells are cleared before the slot is reused."""
        with self._lock:
            self._drop(seq, error)

    def _drop(self, seq: Sequence, error: TaskError | None) -> None:
        if seq.closed:
            return
        seq.closed = True
        seq.error = error
        work, seq.work = seq.work, None
        if self._seqs.get(seq.id) is seq:
            del self._seqs[seq.id]
            self._forget_ops.append((seq.id, 0))
        if work is not None:
            work.fail(error or TaskError("the sequence was closed", reason="closed"))
        elif error is not None:
            seq._emit(error)
        self._wake.notify()

    # --- the scheduler --------------------------------------------------------------------

    def _expire(self, now: float) -> float:
        """Close sequences past their deadline or idle limit; seconds until the next might be."""
        soonest = 1.0
        for seq in list(self._seqs.values()):
            # Busy: evaluating for a waiting caller, or generating for a reader who waits.
            busy = seq.waiting or (seq.work is not None and not isinstance(seq.work, _Greedy))
            if now > seq.deadline:
                self._drop(seq, TaskError("the sequence ran past its deadline", reason="deadline"))
            elif seq.idle_s is not None and not busy and now - seq.touched > seq.idle_s:
                log.info("%s: closing sequence %d, idle for %.0f s", self.name, seq.id, seq.idle_s)
                self._drop(seq, TaskError(f"idle for {seq.idle_s:.0f} s", reason="idle"))
            else:
                soonest = min(soonest, seq.deadline - now)
                if seq.idle_s is not None and not busy:
                    soonest = min(soonest, seq.touched + seq.idle_s - now)
        return max(0.01, soonest)

    def _plan(self) -> list[tuple[Sequence, _Work, int, int]]:
        """This step's share of each pending work: (seq, work, first, end) in id order. Every
        sequence gets a token in before any gets a second, then the rest fill the batch."""
        pending = sorted((s for s in self._seqs.values() if s.work is not None), key=lambda s: s.id)
        budget = self.n_batch
        take: dict[int, int] = {}
        for fill in (1, self.n_batch):
            for seq in pending:
                assert seq.work is not None
                have = take.get(seq.id, 0)
                more = min(fill - have, len(seq.work.tokens) - seq.work.done - have, budget)
                if more > 0:
                    take[seq.id] = have + more
                    budget -= more
        plan = []
        for seq in pending:
            assert seq.work is not None
            if seq.id in take:
                plan.append((seq, seq.work, seq.work.done, seq.work.done + take[seq.id]))
        return plan

    def _run(self) -> None:
        lib = self._lib
        try:
            while True:
                with self._lock:
                    while True:
                        wait = self._expire(time.monotonic())
                        if self._stopping:
                            return
                        if self._retiring is not None and not self._seqs:
                            return
                        plan = self._plan()
                        forget, self._forget_ops = self._forget_ops, []
                        if plan or forget:
                            break
                        self._wake.wait(wait)
                for sid, position in forget:
                    lib.llama_memory_seq_rm(self._memory, sid, position, -1)
                if plan:
                    self._step(plan)
        except BaseException as exc:  # noqa: BLE001 - every waiter learns why, then it ends
            log.exception("%s: the engine stopped", self.name)
            with self._lock:
                for seq in list(self._seqs.values()):
                    self._drop(seq, TaskError(f"the model engine failed: {exc}", reason="closed"))
        finally:
            self._shutdown()

    def _step(self, plan: list[tuple[Sequence, _Work, int, int]]) -> None:
        import numpy as np

        lib, batch = self._lib, self._batch
        n = 0
        for seq, work, first, end in plan:
            for i in range(first, end):
                batch.token[n] = work.tokens[i]
                batch.pos[n] = work.start + i
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq.id
                batch.logits[n] = work.all_rows or i == len(work.tokens) - 1
                n += 1
        batch.n_tokens = n
        code = lib.llama_decode(self._ctx, batch)
        self.steps += 1
        with self._lock:
            if code != 0:
                for seq, work, _, _ in plan:
                    if seq.work is work:
                        failed = TaskError(f"llama.cpp decode failed ({code})", reason="decode")
                        self._drop(seq, failed)
                return
            n_out = sum(
                (end - first) if work.all_rows else int(end == len(work.tokens))
                for _, work, first, end in plan
            )
            view = lib.llama_get_logits(self._ctx)
            logits = np.ctypeslib.as_array(view, shape=(n_out, self.n_vocab))
            row = 0
            for seq, work, first, end in plan:
                count = (end - first) if work.all_rows else int(end == len(work.tokens))
                rows, row = logits[row : row + count], row + count
                if seq.work is not work:
                    continue  # closed while the step ran
                work.done = end
                finished = end == len(work.tokens)
                if count:
                    work.absorb(rows, finished)
                if finished and seq.work is work and not isinstance(work, _Greedy):
                    seq.work = None
                    seq.touched = time.monotonic()

    def _shutdown(self) -> None:
        with self._lock:
            self.running = False
            self._stopping = True
            for seq in list(self._seqs.values()):
                self._drop(seq, TaskError(f"{self.name} was unloaded", reason="closed"))
            then = self._retiring
        self._lib.llama_batch_free(self._batch)
        self._lib.llama_free(self._ctx)
        if then is not None:
            then()

    # --- stopping -------------------------------------------------------------------------

    def close(self, timeout: float = 30.0) -> None:
        """Stop: the thread ends after the step it is in; waiting callers get `TaskError`."""
        with self._lock:
            self._stopping = True
            self._wake.notify()
        if threading.current_thread() is not self._thread and not sys.is_finalizing():
            self._thread.join(timeout)

    def retire(self, then: Callable[[], None]) -> None:
        """Stop once the last open sequence leaves, then call `then` (frees the model)."""
        with self._lock:
            self._retiring = then
            self._wake.notify()
