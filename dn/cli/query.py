"""`dn query MODEL "PROMPT"`: ask a model, pay for the answer, watch it stream."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from dn.cli.output import emit, opts, read_password, say


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
    from dn.client.query import make_ticket, settle_tx, stream_query
    from dn.encoding import format_dn, parse_dn

    text = sys.stdin.read() if prompt == "-" else prompt
    task_input: dict[str, Any] = (
        {"prompt": text} if raw else {"messages": [{"role": "user", "content": text}]}
    )
    store = opts(ctx).keystore()
    store.address(wallet)
    keypair = store.load(wallet, read_password(password_file))
    limit = parse_dn(max_price, allow_zero=True, what="max price") if max_price else None
    json_out = opts(ctx).json
    pieces: list[str] = []
    with opts(ctx).client() as client:
        ticket, info = make_ticket(
            client, keypair, model, task_input, max_tokens=max_tokens, max_price=limit
        )
        done: dict[str, Any] = {}
        for event in stream_query(client, ticket, task_input):
            if event["event"] == "token":
                pieces.append(event["text"])
                if not json_out:
                    sys.stdout.write(event["text"])
                    sys.stdout.flush()
            elif event["event"] == "done":
                done = event
        if not json_out:
            sys.stdout.write("\n")
        tx = settle_tx(client, keypair, done)
        client.submit(tx.to_json())
        settled: dict[str, Any] = {"status": "pending"}
        if wait:
            found = client.wait_for_tx(tx.id)
            settled = {"status": found["status"], "height": found["height"]}
    result = {
        "task": done["task"],
        "model": info["id"],
        "model_name": info["name"],
        "status": done["status"],
        "text": "".join(pieces),
        "tokens": done["tokens"],
        "price_units": done["price_units"],
        "max_price_units": ticket["max_price"],
        "verdict": done["verdict"],
        "settle_tx": tx.id,
        "settlement": settled,
    }
    if json_out:
        emit(ctx, result)
        return
    where = f"in block {settled['height']}" if "height" in settled else "pending"
    if done["status"] == "confirmed":
        say(
            f"confirmed: {done['tokens']} tokens, paid {format_dn(done['price_units'])} DN "
            f"(settlement {where}); task {done['task']}"
        )
    else:
        reason = (done.get("verdict") or {}).get("message", "")
        say(f"rejected by the checker ({reason}); not charged; task {done['task']}")
