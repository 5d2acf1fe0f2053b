"""What a query asks for, in the one form the consumer, the gateway and both miners agree on.

A task's input is either `{"messages": [{"role", "content"}, …]}` (a chat; each miner applies the
model's own chat template from the GGUF file, so both build the same prompt text) or
`{"prompt": "…"}` (raw text, used as it is). The ticket names the input by `input_hash`: the
SHA-256 of its canonical JSON, so a gateway cannot show the miners another question than the one
the consumer paid for.

A base model (`kind` "base" on chain) has no chat template: it is only ever asked with a prompt,
and a chat input for it is refused before anyone works or pays (`require_kind`).
"""

from __future__ import annotations

from typing import Any

from dn.chain import tasks
from dn.chain.models import BASE, kind_of
from dn.encoding import canonical
from dn.errors import InputError
from dn.runner.llama import LoadedModel

ROLES = frozenset({"system", "user", "assistant"})
MAX_INPUT_CHARS = 64_000


def normalize_input(raw: Any) -> dict[str, Any]:
    """Check a task input and return it in its canonical shape; InputError otherwise."""
    if not isinstance(raw, dict) or len(raw) != 1:
        raise InputError("a task input is {'messages': [...]} or {'prompt': '...'}")
    if "prompt" in raw:
        prompt = raw["prompt"]
        if not isinstance(prompt, str) or not prompt:
            raise InputError("the prompt must be a non-empty string")
        if len(prompt) > MAX_INPUT_CHARS:
            raise InputError(f"the prompt is longer than {MAX_INPUT_CHARS} characters")
        return {"prompt": prompt}
    messages = raw.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InputError("messages must be a non-empty list")
    clean = []
    total = 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InputError(f"message {i} is not an object")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise InputError(f"message {i}: role must be one of {', '.join(sorted(ROLES))}")
        if not isinstance(content, str):
            raise InputError(f"message {i}: content must be a string")
        total += len(content)
        clean.append({"role": role, "content": content})
    if total > MAX_INPUT_CHARS:
        raise InputError(f"the messages are longer than {MAX_INPUT_CHARS} characters")
    return {"messages": clean}


def require_kind(model: dict[str, Any], task_input: dict[str, Any]) -> None:
    """InputError `base-model` for chat messages to a base model (a model record from chain)."""
    if "messages" in task_input and kind_of(model) == BASE:
        raise InputError(
            f"model {model['name']!r} is a base model: it continues plain text and has no chat "
            "template, so it does not answer chat messages. Send it the start of a text to "
            "complete instead: POST /v1/completions with a prompt, or 'dn query --raw'",
            reason="base-model",
        )


def input_hash(task_input: dict[str, Any]) -> str:
    """What a ticket's `prompt_hash` names."""
    return tasks.prompt_hash(canonical(normalize_input(task_input)).decode("utf-8"))


def render(model: LoadedModel, task_input: dict[str, Any]) -> str:
    """The prompt text both miners evaluate."""
    if "prompt" in task_input:
        return str(task_input["prompt"])
    return model.chat_prompt(task_input["messages"])
