"""`dn query MODEL "PROMPT"`: ask a model, pay for the answer, watch it stream."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from dn.cli.output import emit, opts, say, unlock


def query(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="Model name, id, or id prefix (see 'dn model list')."),
    prompt: str = typer.Argument(..., help="What to ask; '-' reads it from stdin."),
    wallet: str = typer.Option(..., "--wallet", help="Wallet that signs the ticket and pays."),
    max_tokens: int = typer.Option(
        256, "--max-tokens", min=1, max=4096, help="Longest answer to pay for."
    ),
    max_price: str | None = typer.Option(
        None, "--max-price", help="Most to pay, in DN (default: max-tokens at the model's price)."
    ),
    raw: bool = typer.Option(
        False, "--raw", help="Send the prompt as it is, without the model's chat template."
    ),
    temperature: float = typer.Option(
        0.0,
        "--temperature",
        min=0.0,
        max=2.0,
        help="Sample at this temperature (verifiably: the checker recomputes the sampler's "
        "choice); 0, the default, answers greedily.",
    ),
    top_p: float = typer.Option(
        1.0,
        "--top-p",
        min=0.0,
        max=1.0,
        help="Sample from the smallest set of tokens of this mass.",
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="The sampler's seed: the same seed and prompt give the same answer."
    ),
    stop: list[str] = typer.Option(
        [], "--stop", help="End the answer before this text (up to 4; repeat the option)."
    ),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="Wait until the payment is in a block."
    ),
    password_file: Path | None = typer.Option(
        None,
        "--password-file",
        help="Read the password from this file (else $DN_PASSWORD or a prompt).",
    ),
) -> None:
    """Run a paid query on two miners: one generates, one checks. Tokens stream as they come;
    the last line says confirmed or rejected, what was paid and the task id."""
    from dn.client.query import chat_input, run_query, with_options
    from dn.encoding import format_dn, parse_dn

    text = sys.stdin.read() if prompt == "-" else prompt
    task_input = chat_input(text, raw=raw)
    options = {
        "temperature_milli": round(temperature * 1000),
        "top_p_milli": round(top_p * 1000),
        "seed": seed,
        "stop": stop or None,
    }
    task_input = with_options(task_input, {k: v for k, v in options.items() if v is not None})
    keypair = unlock(ctx, wallet, password_file)
    limit = parse_dn(max_price, allow_zero=True, what="max price") if max_price else None
    json_out = opts(ctx).json
    with opts(ctx).client() as client:
        result = run_query(
            client,
            keypair,
            model,
            task_input,
            max_tokens=max_tokens,
            max_price=limit,
            wait=wait,
            on_token=None if json_out else _write,
            on_answered=None if json_out else lambda _: _write("\n"),
        )
    if json_out:
        emit(ctx, result)
        return
    settled = result["settlement"]
    where = f"in block {settled['height']}" if "height" in settled else "pending"
    if result["status"] == "confirmed":
        say(
            f"confirmed: {result['tokens']} tokens, paid {format_dn(result['price_units'])} DN "
            f"(settlement {where}); task {result['task']}"
        )
    else:
        reason = (result.get("verdict") or {}).get("message", "")
        say(f"rejected by the checker ({reason}); not charged; task {result['task']}")


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
