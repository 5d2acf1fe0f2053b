"""How a token is chosen from a row of logits, so that a second node can check the choice:
greedy, or verifiable sampling; and stop strings and log-probabilities.

Greedy (the default) takes the argmax. A sampled answer (`temperature` > 0) uses the Gumbel-max
trick with noise nobody chooses:

    key        SHA-256("dn-sampler/seed/" + seed) when the consumer gives a seed (the same seed
               and input give the same answer), else SHA-256("dn-sampler/task/" + task id)
    noise      for the answer's j-th token, Philox-4x64-10 (Random123; numpy's `Philox` bit
               generator) keyed by the first 16 bytes of SHA-256(key + j as 8 bytes big-endian),
               counter 0: one 64-bit word u_i per vocabulary entry, turned into a uniform in
               (0, 1) as ((u_i >> 11) + 0.5) / 2^53, and g_i = -ln(-ln(uniform))
    score      s_i = logit_i + temperature × g_i for the entries in the nucleus (the fewest most
               probable entries of softmax(logits / temperature) whose mass reaches top_p), and
               -inf outside it
    token      argmax_i s_i

Taking the argmax of logits/T + Gumbel noise draws exactly from softmax(logits/T) (restricted to
the nucleus), so this is ordinary temperature and top-p sampling; but the noise is a function of
the task, so the generator has no choice left, and a checker that recomputes the logits can
recompute every score. The checker judges a sampled token as it judges a greedy one, with the
scores in place of the logits: `rank` is how many entries score strictly higher, `gap` the best
score minus the token's (in logits, so the drift margins are the same). The checker's nucleus
is taken at top_p + `NUCLEUS_SLACK`, so drift at its edge does not refuse an honest token; a
token outside even that has an infinite gap (`OUTSIDE_GAP`).

Stop strings (`StopScanner`): generation ends with the token whose text completes the first
match of any stop string; the text shown ends before the match. A checker accepts an answer that
ends there (`first_stop`), and refuses one that goes on past a match.

Log-probabilities are of the model's own distribution, log-softmax of the raw logits (before
temperature and top-p), as float64.

Everything here is pure (numpy, no llama.cpp); import it only after llama_cpp (see llama.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

NUCLEUS_SLACK = 0.02  # the checker's nucleus is this much wider than the ticket's top_p
OUTSIDE_GAP = 1000.0  # the gap of a sampled token outside the checker's nucleus
MAX_TOP_LOGPROBS = 20  # as OpenAI's API
_NUCLEUS_CANDIDATES = 1024  # sorted first; the whole vocabulary only when they hold too little


@dataclass(frozen=True)
class Decoding:
    """How one answer is decoded, from its task input (`dn.node.taskio.decoding_for`)."""

    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    key: bytes = b""  # the sampler's key (32 bytes) when sampling
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # None: none; k >= 0: the token's and the k most likely

    @property
    def sampled(self) -> bool:
        return self.temperature > 0


GREEDY = Decoding()


def sampler_key(*, seed: int | None, task: str) -> bytes:
    """The sampler's key: from the consumer's seed when it gave one, else from the task id."""
    if seed is not None:
        return hashlib.sha256(f"dn-sampler/seed/{seed}".encode()).digest()
    return hashlib.sha256(f"dn-sampler/task/{task}".encode()).digest()


def gumbel(key: bytes, index: int, n_vocab: int) -> np.ndarray:
    """The noise for the answer's `index`-th token: one Gumbel(0, 1) value per vocabulary entry."""
    import numpy as np

    digest = hashlib.sha256(key + index.to_bytes(8, "big")).digest()
    words = np.random.Philox(key=int.from_bytes(digest[:16], "little")).random_raw(n_vocab)
    uniform = ((words >> np.uint64(11)).astype(np.float64) + 0.5) * (2.0**-53)
    return -np.log(-np.log(uniform))


def mass_ahead(logits: np.ndarray, temperature: float, bound: float) -> Any:
    """For every entry, the probability mass of softmax(logits / T) of the entries ranked ahead
    of it (more probable, or as probable with a lower id); `inf` for entries whose mass ahead is
    known to be at least `bound` without sorting them (only the comparison with `bound` or
    less is asked of those)."""
    import numpy as np

    scaled = logits.astype(np.float64) / temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    ahead = np.full_like(probs, np.inf)
    top = min(len(probs), _NUCLEUS_CANDIDATES)
    if top < len(probs):
        part = np.argpartition(-probs, top - 1)[:top]
        if probs[part].sum() >= bound:  # everything else has at least this much ahead
            order = part[np.lexsort((part, -probs[part]))]
            ahead[order] = np.cumsum(probs[order]) - probs[order]
            return ahead
    order = np.argsort(-probs, kind="stable")  # stable: ties keep id order
    ahead[order] = np.cumsum(probs[order]) - probs[order]
    return ahead


def nucleus(logits: np.ndarray, temperature: float, top_p: float) -> Any:
    """A mask of the fewest most probable entries of softmax(logits / T) whose mass reaches
    top_p (ties broken by token id); everything when top_p >= 1."""
    import numpy as np

    if top_p >= 1.0:
        return np.ones(len(logits), dtype=bool)
    return mass_ahead(logits, temperature, top_p) < top_p


def _perturbed(logits: np.ndarray, decoding: Decoding, index: int) -> Any:
    import numpy as np

    row = logits.astype(np.float64)
    return row, row + decoding.temperature * gumbel(decoding.key, index, len(row))


def scores(logits: np.ndarray, decoding: Decoding, index: int) -> Any:
    """The sampler's score of every entry for the answer's `index`-th token: the perturbed
    logit in the nucleus, -inf outside it."""
    import numpy as np

    row, perturbed = _perturbed(logits, decoding, index)
    perturbed[~nucleus(row, decoding.temperature, decoding.top_p)] = -np.inf
    return perturbed


def choose(logits: np.ndarray, decoding: Decoding, index: int) -> int:
    """The token the generator must emit as the answer's `index`-th."""
    if not decoding.sampled:
        return int(logits.argmax())
    return int(scores(logits, decoding, index).argmax())


def sampled_value(logits: np.ndarray, decoding: Decoding, index: int, token: int) -> Any:
    """(rank, gap, logit) of a claimed sampled token, as the checker computes them: against the
    best score in the ticket's nucleus, the claimed token itself allowed in a nucleus
    `NUCLEUS_SLACK` wider (drift at the edge), and `OUTSIDE_GAP` beyond that."""
    row, perturbed = _perturbed(logits, decoding, index)
    if decoding.top_p < 1.0:
        ahead = mass_ahead(row, decoding.temperature, decoding.top_p + NUCLEUS_SLACK)
        if ahead[token] >= decoding.top_p + NUCLEUS_SLACK:
            return (
                int((ahead < decoding.top_p + NUCLEUS_SLACK).sum()),
                OUTSIDE_GAP,
                float(row[token]),
            )
        perturbed_in = perturbed[ahead < decoding.top_p]
    else:
        perturbed_in = perturbed
    mine = perturbed[token]
    best = max(float(perturbed_in.max()), float(mine))
    return int((perturbed_in > mine).sum()), best - float(mine), float(row[token])


# --- log-probabilities ------------------------------------------------------------------------


def log_softmax(logits: np.ndarray) -> np.ndarray:
    import numpy as np

    row = logits.astype(np.float64)
    top = row.max()
    return row - (top + np.log(np.exp(row - top).sum()))


def token_logprobs(logits: np.ndarray, token: int, k: int) -> dict[str, Any]:
    """`{"token", "logprob", "top": [[id, logprob], …]}` for a chosen token and the k most likely
    entries (most likely first, ties by id)."""
    import numpy as np

    lp = log_softmax(logits)
    top: list[list[Any]] = []
    if k > 0:
        part = np.argpartition(-lp, k - 1)[:k] if k < len(lp) else np.arange(len(lp))
        best = sorted(part.tolist(), key=lambda i: (-lp[i], i))
        top = [[int(i), float(lp[i])] for i in best]
    return {"token": int(token), "logprob": float(lp[token]), "top": top}


def logprob_problem(
    claimed: Sequence[dict[str, Any]], rows: Sequence[np.ndarray], max_gap: float
) -> str | None:
    """Why claimed log-probabilities could not have come from these logits (each value within
    `max_gap` of the checker's own, the drift margin for a gap), or None."""
    for i, (claim, row) in enumerate(zip(claimed, rows, strict=True)):
        lp = log_softmax(row)
        pairs = [(claim["token"], claim["logprob"])] + [(t, v) for t, v in claim["top"]]
        for token, value in pairs:
            if abs(float(value) - float(lp[int(token)])) > max_gap:
                return (
                    f"token {i}: log-probability {float(value):.3f} claimed for {int(token)}, "
                    f"{float(lp[int(token)]):.3f} computed"
                )
    return None


def valid_logprobs(claim: Any, k: int, n_vocab: int) -> bool:
    """Whether `claim` has the shape `token_logprobs` gives, with k alternatives."""
    if not isinstance(claim, dict) or set(claim) != {"token", "logprob", "top"}:
        return False
    top = claim["top"]
    if not isinstance(top, list) or len(top) != min(k, n_vocab):
        return False
    pairs = [(claim["token"], claim["logprob"])] + [
        tuple(p) if isinstance(p, list) and len(p) == 2 else (None, None) for p in top
    ]
    return all(
        isinstance(t, int)
        and not isinstance(t, bool)
        and 0 <= t < n_vocab
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
        and v <= 1e-6
        for t, v in pairs
    )


# --- stop strings -----------------------------------------------------------------------------


class StopScanner:
    """Text pieces in, text safe to show out: holds back what could be the start of a stop
    string, and says when one has matched (the text then ends before it)."""

    def __init__(self, stop: Sequence[str]) -> None:
        self.stop = tuple(s for s in stop if s)
        self.text = ""  # everything seen
        self.shown = 0  # how much of it was handed out
        self.matched = False

    def feed(self, piece: str) -> str:
        if self.matched:
            return ""
        self.text += piece
        if not self.stop:
            out, self.shown = self.text[self.shown :], len(self.text)
            return out
        hits = [i for i in (self.text.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.matched = True
            end = min(hits)
        else:
            end = len(self.text) - self._held()
        out = self.text[self.shown : max(self.shown, end)]
        self.shown = max(self.shown, end)
        return out

    def _held(self) -> int:
        """The longest end of the text that begins some stop string."""
        for size in range(min(len(self.text), max(map(len, self.stop)) - 1), 0, -1):
            tail = self.text[-size:]
            if any(s.startswith(tail) for s in self.stop):
                return size
        return 0

    def flush(self) -> str:
        """What was held back, once the answer ended without a match."""
        if self.matched:
            return ""
        out, self.shown = self.text[self.shown :], len(self.text)
        return out


def first_stop(pieces: Sequence[str], stop: Sequence[str]) -> int | None:
    """How many pieces it takes for the text to contain a stop string (None: it never does)."""
    stop = [s for s in stop if s]
    if not stop:
        return None
    text = ""
    longest = max(map(len, stop))
    for i, piece in enumerate(pieces):
        start = max(0, len(text) - longest + 1)
        text += piece
        if any(text.find(s, start) >= 0 for s in stop):
            return i + 1
    return None
