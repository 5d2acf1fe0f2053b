"""Help for every command, `python -m dn`, and `dn` staying light: heavy imports wait for use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from dn.cli.main import app
from tests.cli.helpers import dn, said

HEAVY = ("fastapi", "uvicorn", "httpx", "zeroconf", "llama_cpp", "pydantic", "nacl", "sqlite_utils")
NEVER_FOR_WALLET_LIST = ("fastapi", "uvicorn", "llama_cpp", "zeroconf")
# What DESIGN.md section 9 promises, written out here rather than read from the app: one sub-app
# per module, three plain commands, and the global options.
DESIGN_GROUPS = ("wallet", "chain", "node", "model", "stake", "powr", "devnet")
DESIGN_COMMANDS = ("mine", "validate", "query")
DESIGN_OPTIONS = ("--home", "--node", "--json", "-v")
# The sub-commands each group must have: the wallet's and node's basics, and those DESIGN.md names
# elsewhere (`dn chain verify`, `dn chain explain ADDRESS`, `dn model submit FILE`, `dn model fetch
# NAME`, `dn powr leaderboard`, `dn devnet up --nodes N`, `dn node start`).
EXPECTED = {
    "wallet": {"create", "list", "show", "balance", "send", "export", "import"},
    "chain": {"init", "info", "blocks", "block", "tx", "verify", "explain"},
    "node": {"start", "status", "address", "peers"},
    "model": {"submit", "fetch"},
    "powr": {"leaderboard"},
    "devnet": {"up"},
}


def _groups() -> dict[str, Any]:
    """The sub-apps of `dn` as click groups (typer vendors its own click: duck-type them)."""
    root: Any = typer.main.get_command(app)
    return {name: cmd for name, cmd in root.commands.items() if hasattr(cmd, "commands")}


def _subcommands() -> list[tuple[str, str]]:
    """(group, command) for every sub-command the app has."""
    return [
        (group_name, name)
        for group_name, group in sorted(_groups().items())
        for name in sorted(group.commands)
    ]


def _listed(output: str) -> list[str]:
    """The names in the Commands panel of a help screen, in order: the first word of each row
    that does not continue the description above it."""
    names, inside = [], False
    for line in output.splitlines():
        if line.startswith("╭─ Commands"):
            inside = True
        elif line.startswith("╰"):
            inside = False
        elif inside and line.startswith("│ ") and not line.startswith("│  "):
            names.append(line[2:].split()[0])
    return names


def test_every_command_design_names_exists():
    groups = _groups()
    root: Any = typer.main.get_command(app)
    for group in DESIGN_GROUPS:
        assert group in groups, f"dn {group} is missing"
    for command in DESIGN_COMMANDS:
        assert command in root.commands and command not in groups, f"dn {command} is missing"
    for group, commands in EXPECTED.items():
        assert commands <= set(groups[group].commands), (group, commands)


def test_root_help_lists_the_groups_and_the_global_options():
    for flag in ("--help", "-h"):
        result = dn(flag)
        out = said(result)
        assert "DeepNode" in out
        for option in DESIGN_OPTIONS:
            assert f" {option} " in out, option
        assert set(DESIGN_GROUPS) | set(DESIGN_COMMANDS) <= set(_listed(result.output))


@pytest.mark.parametrize("group", sorted(EXPECTED))
def test_group_help_lists_its_commands(group):
    listed = _listed(dn(group, "--help").output)
    assert EXPECTED[group] <= set(listed), listed


@pytest.mark.parametrize(("group", "command"), _subcommands())
def test_subcommand_help(group, command):
    """Every sub-command has a description, and its help screen shows how to call it."""
    lines = [line.strip() for line in dn(group, command, "--help").output.splitlines()]
    usage = next(i for i, line in enumerate(lines) if line.startswith("Usage:"))
    assert lines[usage].startswith(f"Usage: root {group} {command} [OPTIONS]")  # root: CliRunner
    panels = next(i for i, line in enumerate(lines) if line.startswith("╭─"))
    assert "".join(lines[usage + 1 : panels]), f"dn {group} {command} has no description"


def _run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DN_HOME": str(home), "COLUMNS": "1000"}
    env.pop("DN_NODE", None)
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_python_dash_m_dn_help(dn_home):
    proc = _run("-m", "dn", "--help", home=dn_home)
    assert proc.returncode == 0, proc.stderr
    assert "DeepNode" in proc.stdout and "wallet" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert not dn_home.exists()  # help writes nothing


def test_importing_the_cli_imports_nothing_heavy(dn_home):
    code = f"import sys, dn.cli.main; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    proc = _run("-c", code, home=dn_home)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def _imported_by(*args: str, home: Path) -> tuple[set[str], str]:
    """Top-level packages imported by `python -m dn ARGS` (from -X importtime), and its stdout."""
    proc = _run("-X", "importtime", "-m", "dn", *args, home=home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    assert {"dn", "typer"} <= names  # the parsing found the imports at all
    return names, proc.stdout


def test_dn_help_imports_nothing_heavy(dn_home):
    names, out = _imported_by("--help", home=dn_home)
    assert "wallet" in out
    assert sorted(names & set(HEAVY)) == []


def test_wallet_list_imports_no_server_or_model_code(dn_home):
    address = dn("wallet", "create", "alice", "--kdf", "fast", env={"DN_PASSWORD": "pw"}).stdout
    names, out = _imported_by("--json", "wallet", "list", home=dn_home)
    assert "alice" in out and address.split()[-1] in out
    assert sorted(names & set(NEVER_FOR_WALLET_LIST)) == []
