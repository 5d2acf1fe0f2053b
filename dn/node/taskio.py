"""What a query asks for, in the one form the consumer, the gateway and both miners agree on.

A task's input is either `{"messages": [{"role", "content"}, …]}` (a chat; each miner applies the
model's own chat template from the GGUF file, so both build the same prompt text) or
`{"prompt": "…"}` (raw text, used as it is). The ticket names the input by `input_hash`: the
SHA-256 of its canonical JSON, so a gateway cannot show the miners another question than the one
the consumer paid for.

An input may also carry `options`, how its answer is decoded, all whole numbers and all
optional: `temperature_milli` (0 = greedy, the default), `top_p_milli`, `seed`, `stop` (up to 4
strings) and `logprobs` (how many alternatives to report, 0-20; absent: no log-probabilities).
They are part of what the ticket's hash names, so both miners decode and check the same way
(`decoding_for`; dn/runner/sampling.py says how).

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
from dn.runner.sampling import MAX_TOP_LOGPROBS, Decoding, sampler_key

ROLES = frozenset({"system", "user", "assistant"})
MAX_INPUT_CHARS = 64_000
MAX_STOPS, MAX_STOP_CHARS = 4, 256
# Decoding options, whole numbers (canonical JSON has no floats): name -> (lowest, highest).
OPTIONS: dict[str, tuple[int, int]] = {
    "temperature_milli": (0, 2000),
    "top_p_milli": (0, 1000),
    "seed": (-(2**63), 2**63 - 1),
    "logprobs": (0, MAX_TOP_LOGPROBS),
    "stop": (0, 0),  # a list of strings, checked on its own
}


def normalize_options(raw: Any) -> dict[str, Any]:
    """Check a task's decoding options; the canonical form leaves out every default, so a
    greedy task's input (and its hash) is what it was before options existed."""
    if not isinstance(raw, dict) or not set(raw) <= set(OPTIONS):
        raise InputError(f"options is an object with some of: {', '.join(OPTIONS)}")
    out: dict[str, Any] = {}
    for name, (low, high) in OPTIONS.items():
        value = raw.get(name)
        if value is None or name == "stop":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise InputError(f"options.{name} must be a whole number from {low} to {high}")
        out[name] = value
    if out.get("temperature_milli", 0) == 0 or out.get("top_p_milli") == 0:
        out.pop("temperature_milli", None)  # greedy: the seed and top_p change nothing
        out.pop("top_p_milli", None)
        out.pop("seed", None)
    if out.get("top_p_milli") == 1000:
        del out["top_p_milli"]
    stop = raw.get("stop")
    if stop is not None:
        if (
            not isinstance(stop, list)
            or len(stop) > MAX_STOPS
            or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stop)
        ):
            raise InputError(
                f"options.stop is a list of at most {MAX_STOPS} non-empty strings of at most "
                f"{MAX_STOP_CHARS} characters"
            )
        if stop:
            out["stop"] = list(stop)
    return out


def decoding_for(task_input: dict[str, Any], task: str) -> Decoding:
    """How the answer to this task is decoded (dn/runner/sampling.py)."""
    options = task_input.get("options", {})
    temperature = options.get("temperature_milli", 0) / 1000
    return Decoding(
        temperature=temperature,
        top_p=options.get("top_p_milli", 1000) / 1000,
        key=sampler_key(seed=options.get("seed"), task=task) if temperature > 0 else b"",
        stop=tuple(options.get("stop", ())),
        logprobs=options.get("logprobs"),
    )


def normalize_input(raw: Any) -> dict[str, Any]:
    """Check a task input and return it in its canonical shape; InputError otherwise."""
    if isinstance(raw, dict) and "options" in raw:
        options = normalize_options(raw["options"])
        rest = normalize_input({k: v for k, v in raw.items() if k != "options"})
        return {**rest, "options": options} if options else rest
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
