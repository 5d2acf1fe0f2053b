"""What the OpenAI-compatible routes (dn/node/http/openai_routes.py) read and how they refuse:
a request body checked into an `Ask`, the shape of each endpoint's objects, and errors in
OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with our reason as `code`.

Checks, in order, each a 400 `bad-request` naming the field as `param`:

    model                        a non-empty string
    max_tokens (or max_completion_tokens)   an integer, 1 to MAX_TOKENS
    stream                       true or false
    n                            an integer, and 1 (each answer is one paid task)
    temperature 0–2, top_p 0–1   numbers: verifiable sampling (dn/runner/sampling.py); without
                                 a temperature, or with 0, answers are greedy (the default)
    presence_penalty and frequency_penalty −2–2   numbers, accepted and ignored
    seed                         an integer: the same seed and request give the same answer
    stop                         a string or a list of at most 4 strings
    logprobs                     chat: true or false, with top_logprobs 0–20;
                                 completions: an integer 0–5 (the alternatives per token)
    stream_options               an object, its include_usage true or false
    dn_max_price                 a whole number of units per 1,000 tokens
    messages (chat)              a list of objects with text content
    prompt (completions)         one string

`null` passes for every optional field, as OpenAI's API lets it; fields we do not know are
ignored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse

from dn.errors import DNError, InputError, RateLimited
from dn.node.taskio import normalize_input
from dn.runner.sampling import MAX_TOP_LOGPROBS

log = logging.getLogger("dn.openai")
DEFAULT_MAX_TOKENS = 256
MAX_TOKENS = 65536  # the ticket's limit; the model's context is usually the tighter one
# Statuses for reasons whose DNError class alone would give the wrong one.
_STATUS_BY_REASON = {
    "cannot-pay": 402,
    "escrow-short": 402,  # the gateway wallet's query escrow (`dn escrow deposit`)
    "over-price-cap": 402,
    "not-json": 415,
    "unknown-model": 404,
    "model-retired": 404,
    "no-miner": 503,
    "one-miner": 503,
    "no-gateway-wallet": 503,
}


def _status(exc: DNError) -> int:
    if exc.reason in _STATUS_BY_REASON:
        return _STATUS_BY_REASON[exc.reason]
    if exc.reason.startswith("miner-"):
        return 503  # the miners failed us, not the caller
    return exc.http_status


def _error_type(status: int, code: str) -> str:
    if code == "insufficient_quota":
        return "insufficient_quota"  # OpenAI's type for an account out of credit
    if status == 401:
        return "invalid_request_error"  # as OpenAI answers a bad key
    if status == 402:
        return "insufficient_funds"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 503:
        return "service_unavailable"
    return "invalid_request_error" if status < 500 else "server_error"


def error_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    if isinstance(exc, DNError):
        status, message, code = _status(exc), exc.message, exc.reason
    else:
        log.exception("OpenAI-style request failed", exc_info=exc)
        status, message, code = 500, str(exc) or type(exc).__name__, "internal"
    param = getattr(exc, "param", None)
    error = {"message": message, "type": _error_type(status, code), "param": param, "code": code}
    return status, {"error": error}


def error_response(exc: BaseException) -> JSONResponse:
    status, body = error_body(exc)
    headers: dict[str, str] | None = None
    if isinstance(exc, RateLimited):  # too many refused keys: worth trying again later
        headers = {"Retry-After": str(max(1, int(exc.retry_after)))}
    elif status == 429:
        # OpenAI's clients retry a 429 unless told not to: an exhausted budget stays exhausted.
        headers = {"x-should-retry": "false"}
    return JSONResponse(body, status_code=status, headers=headers)


def bad(message: str, param: str | None) -> InputError:
    """A 400 `bad-request` about the request field `param`."""
    error = InputError(message, reason="bad-request")
    error.param = param  # type: ignore[attr-defined]  # read back by error_body
    return error


# --- requests -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """How one endpoint's objects look: chat (`message`/`delta`) or text (`text`)."""

    chat: bool

    @property
    def prefix(self) -> str:
        return "chatcmpl" if self.chat else "cmpl"

    @property
    def object(self) -> str:
        return "chat.completion" if self.chat else "text_completion"

    @property
    def chunk_object(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"

    def choice(
        self, text: str, finish: str | None, logprobs: list[TokenLogprob] | None = None
    ) -> dict[str, Any]:
        lp = self.logprobs(logprobs)
        if self.chat:
            message = {"role": "assistant", "content": text}
            return {"index": 0, "message": message, "logprobs": lp, "finish_reason": finish}
        return {"index": 0, "text": text, "logprobs": lp, "finish_reason": finish}

    def delta(
        self,
        text: str | None,
        finish: str | None,
        *,
        first: bool = False,
        logprobs: list[TokenLogprob] | None = None,
    ) -> dict[str, Any]:
        lp = self.logprobs(logprobs)
        if not self.chat:
            return {"index": 0, "text": text or "", "logprobs": lp, "finish_reason": finish}
        delta: dict[str, Any] = {"role": "assistant"} if first else {}
        if text is not None:
            delta["content"] = text
        return {"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish}

    def logprobs(self, entries: list[TokenLogprob] | None) -> dict[str, Any] | None:
        """OpenAI's `logprobs` object: chat's `content` list, or completions' parallel lists."""
        if entries is None:
            return None
        if self.chat:
            return {"content": [e.chat() for e in entries], "refusal": None}
        offsets, at = [], 0
        for e in entries:
            offsets.append(at)
            at += len(e.text)
        return {
            "tokens": [e.text for e in entries],
            "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [{t: v for t, v in e.top} for e in entries],
            "text_offset": offsets,
        }


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log-probability and its alternatives', with their texts."""

    text: str
    logprob: float
    top: list[tuple[str, float]]

    def chat(self) -> dict[str, Any]:
        return {
            **_entry(self.text, self.logprob),
            "top_logprobs": [_entry(t, v) for t, v in self.top],
        }

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> list[TokenLogprob]:
        """The entries of a gateway `token` event (values checked by the checker; the texts
        are the generator's, for display)."""
        out = []
        for claim, (text, tops) in zip(event["logprobs"], event["logprob_texts"], strict=False):
            names = tops if isinstance(tops, list) else []
            top = [(str(n), float(v)) for n, (_, v) in zip(names, claim["top"], strict=False)]
            out.append(cls(str(text), float(claim["logprob"]), top))
        return out


def _entry(text: str, logprob: float) -> dict[str, Any]:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


CHAT, TEXT = Shape(chat=True), Shape(chat=False)


@dataclass(frozen=True)
class Ask:
    """One OpenAI-style request, checked: what to run and how to answer."""

    model: str
    task_input: dict[str, Any]
    max_tokens: int
    stream: bool
    include_usage: bool
    max_price: int | None = None  # units per 1,000 tokens: only ever lowers the node's cap
    logprobs: int | None = None  # None: none asked; k: each token's and k alternatives


def _content(i: int, content: Any) -> Any:
    """A message's content as text: a string, or the text of a list of `text` parts."""
    if not isinstance(content, list):
        return content
    texts: list[str] = []
    for part in content:
        text = part.get("text") if isinstance(part, dict) and part.get("type") == "text" else None
        if not isinstance(text, str):
            raise bad(f"message {i}: only text content is supported", f"messages[{i}].content")
        texts.append(text)
    return "\n".join(texts)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_number(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise bad(f"{name} must be a number", name)
    if not low <= value <= high:
        raise bad(f"{name} must be between {low:g} and {high:g}", name)


def _check_options(body: dict[str, Any]) -> None:
    """The sampling options we accept and ignore (answers are greedy), checked for their type
    as OpenAI's API checks them, so a client's mistake is not silently swallowed."""
    _check_number(body, "temperature", 0, 2)
    _check_number(body, "top_p", 0, 1)
    _check_number(body, "presence_penalty", -2, 2)
    _check_number(body, "frequency_penalty", -2, 2)
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise bad("seed must be an integer", "seed")
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str):
        if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
            raise bad("stop must be a string or a list of at most 4 strings", "stop")
    n = body.get("n")
    if n is not None and not _is_int(n):
        raise bad("n must be an integer", "n")
    if n is not None and n != 1:
        raise bad("n must be 1: each answer is one paid task", "n")


def _logprobs(body: dict[str, Any], shape: Shape) -> int | None:
    """How many alternatives to report per token (None: no log-probabilities)."""
    asked = body.get("logprobs")
    if shape.chat:
        if asked is not None and not isinstance(asked, bool):
            raise bad("logprobs must be true or false", "logprobs")
        top = body.get("top_logprobs")
        if top is not None and (not _is_int(top) or not 0 <= top <= MAX_TOP_LOGPROBS):
            raise bad(
                f"top_logprobs must be an integer from 0 to {MAX_TOP_LOGPROBS}", "top_logprobs"
            )
        if top is not None and not asked:
            raise bad("top_logprobs needs logprobs set to true", "top_logprobs")
        return (top or 0) if asked else None
    if asked is None:
        return None
    if not _is_int(asked) or not 0 <= asked <= 5:
        raise bad("logprobs must be an integer from 0 to 5", "logprobs")
    return int(asked)


def _options(body: dict[str, Any], logprobs: int | None) -> dict[str, Any]:
    """The task's decoding options (dn/node/taskio.py), in whole numbers."""
    stop = body.get("stop")
    options: dict[str, Any] = {
        "temperature_milli": None
        if body.get("temperature") is None
        else round(body["temperature"] * 1000),
        "top_p_milli": None if body.get("top_p") is None else round(body["top_p"] * 1000),
        "seed": body.get("seed"),
        "stop": [stop] if isinstance(stop, str) else stop,
        "logprobs": logprobs,
    }
    if options["stop"] is not None and not all(options["stop"]):
        raise bad("a stop string must not be empty", "stop")
    return {k: v for k, v in options.items() if v is not None}


def parse_ask(body: dict[str, Any], shape: Shape) -> Ask:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise bad("model must be a model name or id", "model")
    param = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    limit = body.get(param)
    max_tokens = DEFAULT_MAX_TOKENS if limit is None else limit
    if not _is_int(max_tokens):
        raise bad(f"{param} must be an integer", param)
    if not 1 <= max_tokens <= MAX_TOKENS:
        raise bad(f"{param} must be between 1 and {MAX_TOKENS}", param)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad("stream must be true or false", "stream")
    _check_options(body)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad("stream_options must be an object", "stream_options")
    include_usage = (options or {}).get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise bad("include_usage must be true or false", "stream_options.include_usage")
    max_price = body.get("dn_max_price")
    if max_price is not None and (not _is_int(max_price) or max_price < 0):
        raise bad("dn_max_price must be a whole number of units per 1,000 tokens", "dn_max_price")
    if shape.chat:
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise bad("messages must be a list", "messages")
        clean = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise bad(f"message {i} is not an object", f"messages[{i}]")
            role = message.get("role")
            clean.append(
                {
                    "role": "system" if role == "developer" else role,
                    "content": _content(i, message.get("content")),
                }
            )
        task_input = normalize_input({"messages": clean})
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise bad("prompt must be one string", "prompt")
        task_input = normalize_input({"prompt": prompt})
    logprobs = _logprobs(body, shape)
    options = _options(body, logprobs)
    if options:
        task_input = normalize_input({**task_input, "options": options})
    return Ask(
        model.strip(),
        task_input,
        max_tokens,
        bool(stream),
        include_usage is True,
        max_price,
        logprobs,
    )
