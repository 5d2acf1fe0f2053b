"""Options that several `dn` commands share, so they read and behave the same everywhere."""

from __future__ import annotations

import typer

AMOUNT_HELP = "Amount in DN, up to 9 decimals (e.g. 2.5)."
Fee = typer.Option(None, "--fee", help="Fee in DN (default: the chain minimum).")
Wait = typer.Option(True, "--wait/--no-wait", help="Wait until it is in a block.")
PasswordFile = typer.Option(
    None,
    "--password-file",
    help="Read the password from this file (else $DN_PASSWORD or a prompt).",
)
