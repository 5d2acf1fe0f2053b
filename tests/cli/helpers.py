"""Driving `dn` in-process with typer's CliRunner, and checks every CLI test makes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from dn.cli.main import app

_runner = CliRunner()


def dn(
    *args: str | Path,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    code: int | None = 0,
) -> Result:
    """Run `dn ARGS`; check the exit code (None: any non-zero) and that nothing crashed.

    Deliberate errors end in `typer.Exit` (a SystemExit); anything else means an exception escaped
    the error mapping in `dn/cli/main.py`, which a user would see as a traceback.

    Rich hard-wraps stderr at $COLUMNS (80 when it is not a terminal), splitting long paths; a wide
    default keeps messages on one line here, and test_cli_wallet checks the 80-column case.
    """
    env = {"COLUMNS": "1000", **(env or {})}
    result = _runner.invoke(app, [str(a) for a in args], input=input, env=env)
    escaped = result.exception is not None and not isinstance(result.exception, SystemExit)
    assert not escaped, f"dn {args} raised {result.exception!r}\n{result.output}"
    assert "Traceback" not in result.output, result.output
    if code is None:
        assert result.exit_code != 0, f"dn {args} succeeded but should not have:\n{result.output}"
    else:
        assert result.exit_code == code, (
            f"dn {args}: exit {result.exit_code}, wanted {code}\n{result.output}"
        )
    return result


def dn_json(*args: str | Path, **kwargs: Any) -> Any:
    """Run `dn --json ARGS` and parse stdout (stdout alone must be the JSON document)."""
    return json.loads(dn("--json", *args, **kwargs).stdout)


def said(result: Result) -> str:
    """Everything printed, with Rich's line wrapping undone so messages can be matched."""
    return " ".join(result.output.split())


def mistype(address: str, at: int = -1) -> str:
    """`address` with one bech32 character changed (so only the checksum can catch it)."""
    charset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
    index = at % len(address)
    old = address[index]
    new = charset[(charset.index(old) + 1) % len(charset)]
    return address[:index] + new + address[index + 1 :]
