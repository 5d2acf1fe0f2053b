"""The protocol of one paid query (DESIGN.md section 7), as pure functions.

A consumer signs a ticket; the task it asks for is named by `task_id`. The ticket uses a slot of
the consumer's book (dn/chain/books.py), whose draw fixes, together with the miners serving the
model at the ticket's `ref_height`, which two miners do the work (`select_miners`): the
generator decodes, the checker prefill-checks. Both sign an attestation.
The gateway, the node's miner code and the chain's `task.settle` rule all call these same
functions, so what a gateway computes is what the chain re-checks.

Signed bytes are a domain tag followed by the canonical JSON of the fields (without `sig`) plus
`chain_id`, so a ticket or attestation from one network is worthless on another, and neither can
pose as a transaction or as the other.

Who served a model when is kept per model under `serving:<model>`: a list of
`{"miner", "from", "until"}` intervals (heights, `until` null while open). A miner serves the model
in the state after block h when `from <= h < until`. Intervals closed before the ticket window
are pruned when the list is next written.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from dn.chain.types import Attestation, Payload, Ticket
from dn.encoding import canonical, hash_hex
from dn.errors import InvalidTx, TaskError
from dn.wallet.keys import Keypair, verify

if TYPE_CHECKING:
    from dn.chain.ledger import StateReader

TICKET_DOMAIN = b"dn-ticket-v1"
ATTEST_DOMAIN = b"dn-attest-v1"
SERVING = "serving:"
GENERATOR, CHECKER = "generator", "checker"
GENERATED, CONFIRMED, REJECTED = "generated", "confirmed", "rejected"


def _signing_bytes(domain: bytes, chain_id: str, fields: dict[str, Any]) -> bytes:
    unsigned = {key: value for key, value in fields.items() if key != "sig"}
    return domain + canonical({"chain_id": chain_id, **unsigned})


def _parsed(schema: type[Payload], raw: Any, reason: str) -> dict[str, Any]:
    try:
        return schema.model_validate(raw).model_dump()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "it"
        raise InvalidTx(
            f"{schema.__name__.lower()} {where}: {first['msg']}", reason=reason
        ) from None


def _signature_ok(address: str, message: bytes, sig_hex: str) -> bool:
    try:
        sig = bytes.fromhex(sig_hex)
    except ValueError:
        return False
    return verify(address, message, sig)


# --- tickets --------------------------------------------------------------------------------


def _sealed(
    keypair: Keypair,
    domain: bytes,
    chain_id: str,
    fields: dict[str, Any],
    shape: type[Payload],
    reason: str,
) -> dict[str, Any]:
    """`fields` signed by `keypair` (its `sig`, hex) and checked against `shape`."""
    fields["sig"] = keypair.sign(_signing_bytes(domain, chain_id, fields)).hex()
    return _parsed(shape, fields, reason)


def sign_ticket(
    chain_id: str,
    keypair: Keypair,
    *,
    model: str,
    prompt_hash: str,
    max_tokens: int,
    seed: int,
    max_price: int,
    ref_height: int,
    nonce: int,
    expiry: int,
) -> dict[str, Any]:
    """The consumer's signed ticket: the Ticket payload with `consumer` and `sig` (hex)."""
    fields: dict[str, Any] = {
        "consumer": keypair.address,
        "model": model,
        "prompt_hash": prompt_hash,
        "max_tokens": max_tokens,
        "seed": seed,
        "max_price": max_price,
        "ref_height": ref_height,
        "nonce": nonce,
        "expiry": expiry,
    }
    return _sealed(keypair, TICKET_DOMAIN, chain_id, fields, Ticket, "bad-ticket")


def verify_ticket(chain_id: str, ticket: dict[str, Any]) -> None:
    """Raise InvalidTx `bad-ticket` for a malformed ticket, `bad-ticket-signature` for one the
    consumer did not sign on this chain."""
    parsed = _parsed(Ticket, ticket, "bad-ticket")
    message = _signing_bytes(TICKET_DOMAIN, chain_id, parsed)
    if not _signature_ok(parsed["consumer"], message, parsed["sig"]):
        raise InvalidTx(
            "the ticket is not signed by its consumer on this chain", reason="bad-ticket-signature"
        )


def task_id(chain_id: str, ticket: dict[str, Any]) -> str:
    """The task a ticket asks for: hex SHA-256 of the ticket's signed bytes (domain, chain id and
    every field but `sig`). The signature is left out on purpose: Ed25519 lets a signer make many
    valid signatures of one message, and one ticket must name one task, settled at most once."""
    return hashlib.sha256(_signing_bytes(TICKET_DOMAIN, chain_id, ticket)).hexdigest()


def prompt_hash(prompt: str) -> str:
    """SHA-256 hex of the UTF-8 prompt (what a ticket names instead of the prompt itself)."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def output_hash(token_ids: list[int]) -> str:
    """The hash both miners attest to: `hash_hex` of the list of output token ids."""
    return hash_hex(list(token_ids))


# --- attestations ---------------------------------------------------------------------------


def sign_attestation(
    chain_id: str,
    keypair: Keypair,
    *,
    task: str,
    role: str,
    output_hash: str,
    tokens: int,
    verdict: str,
    commitment: str,
) -> dict[str, Any]:
    """A miner's signed attestation: the Attestation payload with `miner` and `sig` (hex)."""
    fields: dict[str, Any] = {
        "task": task,
        "miner": keypair.address,
        "role": role,
        "output_hash": output_hash,
        "tokens": tokens,
        "verdict": verdict,
        "commitment": commitment,
    }
    return _sealed(keypair, ATTEST_DOMAIN, chain_id, fields, Attestation, "bad-attestation")


def verify_attestation(chain_id: str, att: dict[str, Any]) -> None:
    """Raise InvalidTx `bad-attestation` for a malformed attestation,
    `bad-attestation-signature` for one its miner did not sign on this chain."""
    parsed = _parsed(Attestation, att, "bad-attestation")
    message = _signing_bytes(ATTEST_DOMAIN, chain_id, parsed)
    if not _signature_ok(parsed["miner"], message, parsed["sig"]):
        raise InvalidTx(
            f"the {parsed['role']} attestation is not signed by its miner on this chain",
            reason="bad-attestation-signature",
        )


def check_attestations(
    chain_id: str,
    task: str,
    generator: dict[str, Any],
    checker: dict[str, Any],
    max_tokens: int,
) -> None:
    """Raise InvalidTx unless the two attestations are a valid pair for `task`: each signed by its
    miner (`bad-attestation-signature`), for this task (`wrong-task`) in its role (`wrong-role`);
    the generator's verdict `generated` and the checker's `confirmed` or `rejected`
    (`wrong-verdict`); the same output hash and token count (`attestations-disagree`), at most
    the ticket's `max_tokens` (`too-many-tokens`). Who the miners are is checked by the caller."""
    for att, role in ((generator, GENERATOR), (checker, CHECKER)):
        verify_attestation(chain_id, att)
        if att["task"] != task:
            raise InvalidTx(f"the {role} attestation is for another task", reason="wrong-task")
        if att["role"] != role:
            raise InvalidTx(
                f"the {role} attestation says role {att['role']!r}", reason="wrong-role"
            )
    if generator["verdict"] != GENERATED or checker["verdict"] not in (CONFIRMED, REJECTED):
        raise InvalidTx(
            "the generator's verdict must be 'generated', the checker's 'confirmed' or 'rejected'",
            reason="wrong-verdict",
        )
    claimed = (generator["output_hash"], generator["tokens"])
    if claimed != (checker["output_hash"], checker["tokens"]):
        raise InvalidTx(
            "the attestations name different outputs or token counts",
            reason="attestations-disagree",
        )
    if generator["tokens"] > max_tokens:
        raise InvalidTx(
            f"{generator['tokens']} tokens is more than the ticket's {max_tokens}",
            reason="too-many-tokens",
        )


# --- who does the work ----------------------------------------------------------------------


def serves_at(interval: dict[str, Any], at_height: int) -> bool:
    """Whether a `serving:` interval covers the state after block `at_height`."""
    until = interval["until"]
    return bool(interval["from"] <= at_height and (until is None or at_height < until))


def serving_changed(
    intervals: list[dict[str, Any]], miner: str, height: int, window: int, *, serving: bool
) -> list[dict[str, Any]]:
    """`intervals` (a `serving:` list) after `miner` starts (`serving`) or stops serving the model
    in block `height`; less the intervals no ticket settled from `height` on can refer to (closed
    at or before `height - window`, or empty)."""
    if serving:
        changed = [*intervals, {"miner": miner, "from": height, "until": None}]
    else:
        changed = [
            {**i, "until": height} if i["miner"] == miner and i["until"] is None else i
            for i in intervals
        ]
    horizon = height - window
    return [
        i
        for i in changed
        if i["until"] is None or (i["until"] > horizon and i["until"] > i["from"])
    ]


def eligible_miners(state: StateReader, model: str, at_height: int) -> list[str]:
    """The miners (sorted addresses) serving `model` in the state after block `at_height`:
    registered for it at or before that block and not exited (or dropped it) by then. Right for
    any height from `ticket_window_blocks` before the state's own height on; older intervals are
    pruned."""
    intervals = state.get(SERVING + model) or []
    return sorted({i["miner"] for i in intervals if serves_at(i, at_height)})


def select_miners(eligible: list[str], draw: str) -> tuple[str, str]:
    """The (generator, checker) for a task whose slot draws `draw` (hex, `books.draw`): the
    eligible miners ordered by sha256(draw + address), first two. Deterministic and independent
    of the list's order, so a gateway cannot pick friends and the chain re-checks the choice.

    One address is one operator, so the two are different operators by construction (the list
    is deduplicated). TaskError `no-miner` when nobody serves the model, `one-miner` when only
    one does: a task needs two."""
    unique = set(eligible)
    if not unique:
        raise TaskError("no miner serves this model", reason="no-miner")
    if len(unique) == 1:
        raise TaskError(
            "only one miner serves this model; a task needs a generator and a checker",
            reason="one-miner",
        )
    ranked = sorted(unique, key=lambda a: hashlib.sha256((draw + a).encode()).digest())
    return ranked[0], ranked[1]


def price_of(price_per_1000: int, tokens: int) -> int:
    """What `tokens` output tokens cost at `price_per_1000` units per 1,000 tokens, rounded down
    (the consumer never pays for a fraction of a unit)."""
    return price_per_1000 * tokens // 1000
