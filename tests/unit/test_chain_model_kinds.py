"""A model's kind on chain (dn/chain/models.py): `model.register` records "chat" or "base", a
payload without `kind` (signed before kinds existed) stays valid and registers a chat model, and
anything else is refused with `bad-kind` by apply_tx and the mempool, changing nothing."""

from __future__ import annotations

import pytest

from dn.chain.types import Tx
from dn.errors import InvalidTx
from tests.unit.test_chain_models import GEMMA, SMOL, Chain, new_chain
from tests.unit.test_chain_state import assert_rejected


@pytest.fixture
def chain() -> Chain:
    return new_chain()


@pytest.mark.parametrize("kind", ["chat", "base"])
def test_register_records_the_kind(chain: Chain, kind: str) -> None:
    tx = chain.register_model(sha=GEMMA, name="gemma3", kind=kind)
    assert tx.payload["kind"] == kind
    chain.commit([tx])
    assert chain.state.get("model:" + GEMMA)["kind"] == kind


def test_a_payload_without_a_kind_is_still_valid_and_registers_a_chat_model(chain: Chain) -> None:
    tx = chain.register_model()
    assert "kind" not in tx.payload  # read back exactly as signed: the signature still holds
    assert Tx.from_json(tx.to_json()).id == tx.id
    chain.commit([tx])
    assert chain.state.get("model:" + SMOL)["kind"] == "chat"


@pytest.mark.parametrize("kind", ["", "Chat", "BASE", "base ", "instruct", "completion", "x" * 16])
def test_any_other_kind_is_refused(chain: Chain, kind: str) -> None:
    assert_rejected(chain, chain.register_model(kind=kind), "bad-kind")
    assert chain.state.get("model:" + SMOL) is None
    assert chain.state.get("model-name:smollm2") is None


def test_the_kind_is_checked_before_anything_else(chain: Chain) -> None:
    chain.commit([chain.register_model()])
    assert_rejected(chain, chain.register_model(name="smollm2", kind="bogus"), "bad-kind")


@pytest.mark.parametrize(("kind", "why"), [(None, "a valid string"), ("x" * 17, "at most 16")])
def test_a_kind_that_is_not_a_short_string_is_a_bad_payload(
    chain: Chain, kind: object, why: str
) -> None:
    """Refused by the payload schema, before any rule: no such transaction can be made."""
    with pytest.raises(InvalidTx) as exc:
        chain.register_model(kind=kind)
    assert exc.value.reason == "bad-payload" and why in exc.value.message
