"""Transactions and blocks, their wire form, and the payload schema of every transaction kind.

A transaction is `{chain_id, kind, sender, nonce, fee, payload}` signed by `sender`; its id is
the SHA-256 of the canonical JSON of the signed form (the fields above plus `sig`). A block is a
signed header plus its transactions; its hash is the SHA-256 of the signed header.

Payloads are strict pydantic models (`extra="forbid"`, no type coercion): a float, a string where
an integer belongs, or an unknown field is rejected before anything else looks at the transaction.
Later issues add state rules for the kinds; their shapes are fixed here so stored data never needs
reshaping.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)

from dn.encoding import (
    MAX_AMOUNT,
    canonical,
    merkle_root,
    pubkey_from_address,
    sha256,
)
from dn.errors import DNError, InvalidBlock, InvalidTx
from dn.wallet.keys import Keypair, verify

MAX_TX_BYTES = 16 * 1024


def _address(value: str) -> str:
    try:
        pubkey_from_address(value)
    except DNError as exc:
        raise ValueError(exc.message) from None  # pydantic reports ValueErrors as field errors
    return value


def _target(value: str) -> str:
    """A stake target: a model hash or a validator address."""
    if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value
    return _address(value)


Address = Annotated[str, AfterValidator(_address)]
Target = Annotated[str, AfterValidator(_target)]
Hash = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Hex = Annotated[str, Field(pattern=r"^([0-9a-f]{2})*$", max_length=1024)]
Amount = Annotated[int, Field(gt=0, le=MAX_AMOUNT)]
Units = Annotated[int, Field(ge=0, le=MAX_AMOUNT)]
Height = Annotated[int, Field(ge=0, le=MAX_AMOUNT)]
Label = Annotated[str, Field(min_length=1, max_length=64)]
Domain = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]


def _miner_url(value: str) -> str:
    """`http(s)://HOST:PORT` (a trailing `/` allowed), nothing more: gateways and referees call
    `{url}/dn/v1/…`, so a path, query, fragment or credentials would let a miner point them at
    anything."""
    if not value.isascii() or any(c.isspace() for c in value):
        raise ValueError("a miner's url must be plain ASCII without spaces")
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        raise ValueError("a miner's url has a bad port") from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or port is None
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or "#" in value
        or "?" in value
    ):
        raise ValueError("a miner's url must be http(s)://HOST:PORT and nothing more")
    return value


Url = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_miner_url)]


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Transfer(Payload):
    to: Address
    amount: Amount


class ModelRegister(Payload):
    model: Hash
    name: Label
    domain: Domain
    price: Units  # units per 1,000 output tokens
    license: Annotated[str, Field(max_length=64)]
    size: Amount
    # "chat" or "base", checked by the rule (`bad-kind`, dn/chain/models.py). Optional, and left
    # out of the payload when absent, so a payload signed before kinds existed reads (and its
    # signature verifies) exactly as it was signed.
    kind: Annotated[str, Field(max_length=16)] = "chat"

    @model_serializer(mode="wrap")
    def _without_absent_kind(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if "kind" not in self.model_fields_set:
            del data["kind"]
        return data


class ModelRetire(Payload):
    model: Hash


class Stake(Payload):
    target: Target
    amount: Amount


class MinerRegister(Payload):
    bond: Amount
    url: Url
    models: Annotated[list[Hash], Field(min_length=1, max_length=16)]


class Empty(Payload):
    pass


class ValidatorBond(Payload):
    amount: Amount


class EscrowAmount(Payload):
    """`escrow.deposit` and `escrow.withdraw` (dn/chain/escrow.py)."""

    amount: Amount


MAX_BOOK_SLOTS = 256  # a ticket's nonce is book nonce × this + slot (dn/chain/books.py)


class TaskBook(Payload):
    """`task.book`: slots for tickets whose miners a later block hash draws, each reserving
    `max_price` (the most one of its tickets may pay) of the consumer's escrow
    (dn/chain/books.py)."""

    model: Hash
    slots: Annotated[int, Field(ge=1, le=MAX_BOOK_SLOTS)]
    max_price: Units


class Ticket(Payload):
    """What a consumer signs to ask for one answer (DESIGN.md section 7)."""

    consumer: Address
    model: Hash
    prompt_hash: Hash
    max_tokens: Annotated[int, Field(gt=0, le=65536)]
    seed: Units
    max_price: Units
    ref_height: Height
    nonce: Units
    expiry: Height
    sig: Hex


class Attestation(Payload):
    """A miner's signed statement about one task (generator or checker)."""

    task: Hash
    miner: Address
    role: Annotated[str, Field(pattern=r"^(generator|checker)$")]
    output_hash: Hash
    tokens: Units
    verdict: Annotated[str, Field(pattern=r"^(generated|confirmed|rejected)$")]
    commitment: Hex
    sig: Hex


class TaskSettle(Payload):
    ticket: Ticket
    generator: Attestation
    checker: Attestation


FaultReason = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,39}$")]


class TaskVerdict(Payload):
    """A validator's vote on one settled task (dn/chain/disputes.py): who was at fault and why
    (empty: nobody), and `evidence`, the commitment to the values the validator computed. The
    ruling applies once validators holding a quorum of the voice voted for the same faults."""

    task: Hash
    faults: Annotated[dict[Address, FaultReason], Field(max_length=2)]
    evidence: Hash


class PowrCommit(Payload):
    epoch: Height
    commitment: Hash


class PowrReveal(Payload):
    epoch: Height
    scores: Annotated[dict[Hash, Annotated[int, Field(ge=0, le=1_000_000)]], Field(max_length=1024)]
    salt: Hex
    # The standard error of each score, in ppm (dn/chain/powr_rules.py). Optional, and left out
    # of the payload when absent, so a reveal signed before errors existed reads as it was signed.
    errors: (
        Annotated[dict[Hash, Annotated[int, Field(ge=0, le=1_000_000)]], Field(max_length=1024)]
        | None
    ) = None

    @model_serializer(mode="wrap")
    def _without_absent_errors(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if "errors" not in self.model_fields_set:
            del data["errors"]
        return data


PAYLOADS: dict[str, type[Payload]] = {
    "transfer": Transfer,
    "model.register": ModelRegister,
    "model.retire": ModelRetire,
    "stake": Stake,
    "unstake": Stake,
    "miner.register": MinerRegister,
    "miner.exit": Empty,
    "validator.bond": ValidatorBond,
    "validator.unbond": ValidatorBond,
    "task.settle": TaskSettle,
    "task.book": TaskBook,
    "escrow.deposit": EscrowAmount,
    "escrow.withdraw": EscrowAmount,
    "task.verdict": TaskVerdict,
    "powr.commit": PowrCommit,
    "powr.reveal": PowrReveal,
}

TX_FIELDS = frozenset({"chain_id", "kind", "sender", "nonce", "fee", "payload", "sig"})


def _int_field(raw: dict[str, Any], name: str) -> int:
    value = raw[name]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_AMOUNT:
        raise InvalidTx(f"{name} must be an integer from 0 to 2^63-1", reason="bad-field")
    return value


@dataclass(frozen=True, eq=False)
class Tx:
    chain_id: str
    kind: str
    sender: str
    nonce: int
    fee: int
    payload: dict[str, Any]
    sig: bytes
    id: str = field(default="", compare=False)

    @staticmethod
    def unsigned_body(
        chain_id: str, kind: str, sender: str, nonce: int, fee: int, payload: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "chain_id": chain_id,
            "kind": kind,
            "sender": sender,
            "nonce": nonce,
            "fee": fee,
            "payload": payload,
        }

    def signing_bytes(self) -> bytes:
        return canonical(
            self.unsigned_body(
                self.chain_id, self.kind, self.sender, self.nonce, self.fee, self.payload
            )
        )

    def to_json(self) -> dict[str, Any]:
        body = self.unsigned_body(
            self.chain_id, self.kind, self.sender, self.nonce, self.fee, self.payload
        )
        body["sig"] = self.sig.hex()
        return body

    @cached_property
    def signature_valid(self) -> bool:
        """Checked once and remembered: the object is immutable, so the answer cannot change."""
        return verify(self.sender, self.signing_bytes(), self.sig)

    @classmethod
    def create(
        cls,
        keypair: Keypair,
        *,
        chain_id: str,
        kind: str,
        nonce: int,
        fee: int,
        payload: dict[str, Any],
    ) -> Tx:
        body = cls.unsigned_body(chain_id, kind, keypair.address, nonce, fee, payload)
        body["sig"] = keypair.sign(canonical(body)).hex()
        return cls.from_json(body)

    @classmethod
    def from_json(cls, raw: Any) -> Tx:
        """Parse and schema-check a wire transaction (no state, no signature check)."""
        if not isinstance(raw, dict):
            raise InvalidTx("a transaction is a JSON object", reason="malformed")
        missing = TX_FIELDS - raw.keys()
        extra = raw.keys() - TX_FIELDS
        if missing:
            raise InvalidTx(f"missing fields: {', '.join(sorted(missing))}", reason="malformed")
        if extra:
            raise InvalidTx(f"unknown fields: {', '.join(sorted(extra))}", reason="unknown-field")
        kind = raw["kind"]
        if not isinstance(kind, str) or kind not in PAYLOADS:
            raise InvalidTx(f"unknown transaction kind {kind!r}", reason="unknown-kind")
        if not isinstance(raw["chain_id"], str) or len(raw["chain_id"]) > 64:
            raise InvalidTx("chain_id must be a short string", reason="bad-field")
        sender = raw["sender"]
        try:
            pubkey_from_address(sender)
        except DNError as exc:
            raise InvalidTx(f"sender: {exc.message}", reason="bad-address") from None
        nonce, fee = _int_field(raw, "nonce"), _int_field(raw, "fee")
        sig_hex = raw["sig"]
        try:
            sig = bytes.fromhex(sig_hex) if isinstance(sig_hex, str) else b""
        except ValueError:
            sig = b""
        if len(sig) != 64:
            raise InvalidTx("sig must be 64 bytes of hex", reason="bad-signature")
        try:
            payload = PAYLOADS[kind].model_validate(raw["payload"]).model_dump()
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "payload"
            reason = "unknown-field" if first["type"] == "extra_forbidden" else "bad-payload"
            raise InvalidTx(f"payload {where}: {first['msg']}", reason=reason) from None
        body = cls.unsigned_body(raw["chain_id"], kind, sender, nonce, fee, payload)
        body["sig"] = sig.hex()
        encoded = canonical(body)
        if len(encoded) > MAX_TX_BYTES:
            raise InvalidTx(f"transaction larger than {MAX_TX_BYTES} bytes", reason="too-large")
        return cls(raw["chain_id"], kind, sender, nonce, fee, payload, sig, sha256(encoded).hex())


HEADER_FIELDS = frozenset(
    {"chain_id", "height", "prev", "time", "proposer", "txs_root", "state_root", "difficulty"}
)


@dataclass(frozen=True)
class Header:
    chain_id: str
    height: int
    prev: str
    time: int  # milliseconds since the Unix epoch, set by the proposer
    proposer: str
    txs_root: str
    state_root: str
    difficulty: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Any) -> Header:
        if not isinstance(raw, dict) or raw.keys() != HEADER_FIELDS:
            raise InvalidBlock("malformed block header", reason="malformed")
        for name in ("height", "time", "difficulty"):
            if isinstance(raw[name], bool) or not isinstance(raw[name], int) or raw[name] < 0:
                raise InvalidBlock(
                    f"header {name} must be a non-negative integer", reason="malformed"
                )
        for name in ("chain_id", "prev", "proposer", "txs_root", "state_root"):
            if not isinstance(raw[name], str):
                raise InvalidBlock(f"header {name} must be a string", reason="malformed")
        return cls(**raw)


def txs_root(txs: list[Tx]) -> str:
    return merkle_root([bytes.fromhex(tx.id) for tx in txs]).hex()


@dataclass(frozen=True, eq=False)
class Block:
    header: Header
    sig: bytes
    txs: tuple[Tx, ...]
    hash: str = field(default="", compare=False)

    @staticmethod
    def hash_of(header: Header, sig: bytes) -> str:
        return sha256(canonical({"header": header.to_json(), "sig": sig.hex()})).hex()

    @classmethod
    def seal(cls, header: Header, txs: list[Tx], keypair: Keypair) -> Block:
        sig = keypair.sign(canonical(header.to_json()))
        return cls(header, sig, tuple(txs), cls.hash_of(header, sig))

    @property
    def height(self) -> int:
        return self.header.height

    @cached_property
    def signature_valid(self) -> bool:
        """Checked once and remembered, like Tx.signature_valid: a node checks a block's origin
        before it looks for the parent, and `apply_block` checks it again."""
        return verify(self.header.proposer, canonical(self.header.to_json()), self.sig)

    def to_json(self, with_txs: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "hash": self.hash,
            "header": self.header.to_json(),
            "sig": self.sig.hex(),
        }
        out["tx_ids"] = [tx.id for tx in self.txs]
        if with_txs:
            out["txs"] = [tx.to_json() for tx in self.txs]
        return out

    @classmethod
    def from_json(cls, raw: Any) -> Block:
        if not isinstance(raw, dict) or not {"header", "sig", "txs"} <= raw.keys():
            raise InvalidBlock("a block is {header, sig, txs}", reason="malformed")
        header = Header.from_json(raw["header"])
        try:
            sig = bytes.fromhex(raw["sig"])
        except (TypeError, ValueError):
            raise InvalidBlock("block sig is not hex", reason="bad-signature") from None
        if not isinstance(raw["txs"], list):
            raise InvalidBlock("block txs must be a list", reason="malformed")
        txs = []
        for i, item in enumerate(raw["txs"]):
            try:
                txs.append(Tx.from_json(item))
            except InvalidTx as exc:
                raise InvalidBlock(f"tx {i}: {exc.message}", reason="bad-tx") from None
        block = cls(header, sig, tuple(txs), cls.hash_of(header, sig))
        if "hash" in raw and raw["hash"] != block.hash:
            raise InvalidBlock("block hash does not match its header", reason="bad-hash")
        return block
