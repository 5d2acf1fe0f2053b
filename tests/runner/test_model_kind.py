"""Model kinds read from the GGUF files (dn/runner/gguf.py `model_kind`): a chat template or an
instruct finetune named in the metadata makes a chat model, anything else a base model. Checked
on the two real catalog files, and on metadata shaped like other families'."""

from __future__ import annotations

from pathlib import Path

import pytest

from dn.runner.catalog import CATALOG
from dn.runner.gguf import model_kind, read_header


def test_smollm2_instruct_is_a_chat_model(smollm2_gguf: Path) -> None:
    info = read_header(smollm2_gguf)
    # Its file carries a chat template (ChatML), while its name and finetune do not say
    # "instruct": the template is what makes it chat.
    assert "<|im_start|>" in str(info.metadata["tokenizer.chat_template"])
    assert info.metadata["general.finetune"] == "8k-lc100k-mix1-ep2"
    assert info.kind == "chat" == CATALOG["smollm2-135m"].kind


def test_gemma3_270m_is_a_base_model(gemma_gguf: Path) -> None:
    info = read_header(gemma_gguf)
    # The pretrained Gemma 3 270M: no chat template, no finetune, a plain name.
    assert "tokenizer.chat_template" not in info.metadata
    assert "general.finetune" not in info.metadata
    assert info.name == "Gemma 3 270m"
    assert info.kind == "base" == CATALOG["gemma3-270m"].kind


@pytest.mark.parametrize(
    ("metadata", "kind"),
    [
        ({"tokenizer.chat_template": "{{ messages }}", "general.name": "Gemma 3 270m"}, "chat"),
        ({"general.name": "gemma-3-270m-it"}, "chat"),
        ({"general.name": "Qwen2.5 0.5B Instruct"}, "chat"),
        ({"general.finetune": "Instruct", "general.name": "Llama 3.2 1B"}, "chat"),
        ({"general.name": "Llama-2-7b-chat"}, "chat"),
        ({"general.name": "Gemma 3 270m"}, "base"),
        ({"general.name": "Italian GPT-2", "general.finetune": "instructional-data"}, "base"),
        ({"tokenizer.chat_template": "  ", "general.name": "Qwen2.5 0.5B"}, "base"),
        ({}, "base"),
    ],
)
def test_the_rule(metadata: dict[str, str], kind: str) -> None:
    assert model_kind(dict(metadata)) == kind
