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
EXPECTED = {
    "wallet": {"create", "list", "show", "balance", "send", "export", "import"},
    "chain": {"init", "info", "blocks", "block", "tx", "verify"},
    "node": {"start", "status", "address", "peers"},
    "devnet": {"up"},
}


def _groups() -> dict[str, Any]:
    """The sub-apps of `dn` as click groups (typer vendors its own click: duck-type them)."""
    root: Any = typer.main.get_command(app)
    return {name: cmd for name, cmd in root.commands.items() if hasattr(cmd, "commands")}


def _subcommands() -> list[tuple[str, str, str]]:
    """(group, command, first line of its help) for every sub-command the app has."""
    return [
        (group_name, name, (command.help or "").strip().splitlines()[0] if command.help else "")
        for group_name, group in sorted(_groups().items())
        for name, command in sorted(group.commands.items())
    ]


def test_every_expected_command_exists():
    groups = _groups()
    for group, commands in EXPECTED.items():
        assert group in groups
        assert commands <= set(groups[group].commands)


def test_root_help_lists_the_groups():
    for flag in ("--help", "-h"):
        out = said(dn(flag))
        assert "DeepNode" in out
        for option in ("--home", "--node", "--json", "--verbose"):
            assert option in out
        for group in EXPECTED:
            assert group in out


@pytest.mark.parametrize("group", sorted(EXPECTED))
def test_group_help_lists_its_commands(group):
    out = said(dn(group, "--help"))
    description = _groups()[group].help
    assert description and description.split(":")[0] in out
    for command in EXPECTED[group]:
        assert command in out


@pytest.mark.parametrize(("group", "command", "summary"), _subcommands())
def test_subcommand_help(group, command, summary):
    assert summary, f"dn {group} {command} has no description"
    out = said(dn(group, command, "--help"))
    assert f"{group} {command}" in out
    assert summary in out


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
