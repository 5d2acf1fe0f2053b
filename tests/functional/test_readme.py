"""Every command in README.md works as written, for a newcomer following it from the top.

The README's fenced blocks run in order (tests/functional/readme.py): each shell line with bash,
`.venv/bin` first on PATH, in a throwaway DN_HOME (the README's `DN_HOME=/tmp/dn-try` is the one
value rewritten). A block that begins with `export` or `source` is a new terminal; any other goes
on in the terminal of the block before it. Servers (`dn devnet up`, `dn node start`, `… &`) run in
the background until a later one wants their ports, or the end: then Ctrl-C, which must stop
them cleanly. The Python block runs too, against the gateway node the README starts.

What the test does besides typing the lines, each as a newcomer would:
- the first block, `make demo` and `make test`, is the demo and this suite: skipped by name;
  so is the block that starts with `make binary` (SKIPPED_BLOCKS says which test runs it);
- the model store gets the SmolLM2 file the suite has cached, so `dn model fetch` finds it
  (pip may not reach any index: nothing is downloaded);
- `FILE` in `dn model submit FILE` becomes the path `dn model fetch` printed;
- before a line that talks to a node, it waits (bounded) until that node has the block an
  earlier line of the same block said its transaction went into; before `dn query`, until
  `dn model list` would show two miners.
The README's servers use fixed ports (8765, 8780-8782): the test skips when one is taken.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dn.client.http import NodeClient
from dn.config import DEFAULT_NODE_URL
from dn.runner import catalog
from dn.runner.modelstore import ModelStore
from tests.functional.harness import REPO, port_free, wait_until
from tests.functional.readme import (
    Block,
    Result,
    Shell,
    blocks,
    server,
    split_comment,
    table_rows,
)

README = REPO / "README.md"
SKIPPED = ("make demo", "make test")  # the demo, and this very suite
# Blocks that another test runs, by their first line, and which test.
SKIPPED_BLOCKS = {"make binary": "tests/functional/test_binary.py (slow: it builds dist/dn)"}
TRY_HOME = "DN_HOME=/tmp/dn-try"
SHELL_LANGS = ("", "sh", "bash", "shell")
MODEL = "smollm2-135m"  # what the README fetches; the suite caches it (tests/conftest.py)


def _code(line: str) -> str:
    """A line without its comment, whitespace collapsed: how checks name README lines."""
    return " ".join(split_comment(line)[0].split())


def _row(result: Result, first: str) -> list[str]:
    rows = [r for r in table_rows(result.out) if r and r[0] == first]
    assert len(rows) == 1, f"no single row {first!r} in:\n{result.out}"
    return rows[0]


def _cell(result: Result, first: str, column: str) -> str:
    """The cell under the header `column` in the row that starts with `first`."""
    header = next(line for line in result.out.splitlines() if "┃" in line)
    names = [c.strip() for c in header.split("┃")[1:-1]]
    return _row(result, first)[names.index(column)]


def _json(result: Result) -> Any:
    return json.loads(result.out)


# What some README lines must print, beyond exiting 0 (keyed by the line without its comment;
# every key must match a README line, so a check cannot be lost silently).
CHECKS: dict[str, Callable[[Result], object]] = {
    "dn --node http://127.0.0.1:8781 wallet send devnet-alice devnet-bob 1.5": (
        lambda r: re.match(r"sent 1\.5 DN to dn1\w+ in block \d+: tx ", r.out)
    ),
    # the transfer made through node 1 is seen from node 2
    "dn --node http://127.0.0.1:8782 wallet list --balances": (
        lambda r: _row(r, "devnet-bob")[2] == "1000001.5"
    ),
    "dn --node http://127.0.0.1:8780 node peers": (
        lambda r: (
            {row[0] for row in table_rows(r.out)}
            >= {"http://127.0.0.1:8781", "http://127.0.0.1:8782"}
        )
    ),
    "dn --json --node http://127.0.0.1:8780 node status": (
        lambda r: len(_json(r)["validators"]) == 3 and _json(r)["height"] >= 1
    ),
    "dn chain verify --name devnet-0": lambda r: r.out.startswith("ok: "),
    "dn wallet send alice bob 1.5": lambda r: "sent 1.5 DN to dn1" in r.out,
    "dn wallet list --balances": lambda r: _row(r, "bob")[2] == "1.5",
    # the send is the one transaction of this chain (a block may come empty, when idle)
    "dn chain blocks": lambda r: [row[3] for row in table_rows(r.out) if row[3] != "0"] == ["1"],
    "dn chain verify": lambda r: re.match(r"ok: \d+ blocks, 1 transactions", r.out),
    "dn --json chain info": lambda r: _json(r)["height"] >= 1,
    # found in the store the test filled: `pip` would fail (no index), and says nothing
    f"dn model fetch {MODEL}": lambda r: r.out.startswith(f"already installed: {MODEL} "),
    "dn model submit": lambda r: r.out.startswith("registered smollm2 "),
    "dn model list": lambda r: _cell(r, "smollm2", "DN / 1k tokens") == "0.002",
    "dn query smollm2": lambda r: r.out.strip() and "\nconfirmed: " in "\n" + r.err,
    "dn stake add smollm2 100 --wallet devnet-carol": lambda r: r.out.startswith("staked 100 DN"),
    "dn stake list": lambda r: _row(r, "model smollm2")[2] == "100",
    "dn stake remove smollm2 100 --wallet devnet-carol": (
        lambda r: r.out.startswith("unstaked 100 DN")
    ),
}


def _check_for(line: str) -> str | None:
    """The key in CHECKS for `line`: the longest that is the line or starts it."""
    code = _code(line)
    keys = [k for k in CHECKS if code == k or code.startswith(k + " ")]
    return max(keys, key=len, default=None)


def _wait_for_two_miners(shell: Shell, line: str) -> None:
    """Before `dn query MODEL`: a newcomer has read `dn model list`; the miners start serving
    a model in a block after it is registered, and a query needs two of them."""
    model = shlex.split(_code(line))[2]
    url = shell.env.get("DN_NODE", DEFAULT_NODE_URL)
    with NodeClient(url, timeout=5) as client:
        wait_until(lambda: len(client.model(model)["miners"]) >= 2, 60, 0.2, "two miners")


PACING: dict[str, Callable[[Shell, str], None]] = {"dn query": _wait_for_two_miners}


def _node_of(shell: Shell, line: str) -> str | None:
    """The node a `dn` line talks to: `--node URL`, else $DN_NODE, else the default."""
    words = shlex.split(_code(line))
    if words[:1] != ["dn"]:
        return None
    for i, word in enumerate(words[1:-1], 1):
        if word == "--node":
            return words[i + 1]
        if not word.startswith("-"):
            break
    return shell.env.get("DN_NODE", DEFAULT_NODE_URL)


def _wait_for_block(url: str, height: int) -> None:
    """Until the node at `url` has block `height` (a newcomer does not type the next line
    faster than a block crosses the network); nothing when no node answers there (a command
    that reads a store, not a node)."""
    with NodeClient(url, timeout=2) as client:
        try:
            client.status()
        except Exception:  # noqa: BLE001 - no node there: this line does not talk to one
            return
        wait_until(lambda: client.status()["height"] >= height, 30, 0.1, f"{height} at {url}")


def _base_env(work: Path) -> dict[str, str]:
    """A new terminal: `.venv/bin` first on PATH; HOME a throwaway folder too, so a block that
    forgot `export DN_HOME` cannot reach a real ~/.deepnode; no index for pip."""
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "dn").exists(), f"no dn next to {sys.executable}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DN_")}
    env.update(
        PATH=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        HOME=str(work / "home"),
        COLUMNS="200",  # tables stay one row per line
        PIP_NO_INDEX="1",
        PYTHONUNBUFFERED="1",
    )
    (work / "home").mkdir(parents=True, exist_ok=True)
    return env


def _as_written(line: str, dn_home: Path, printed: dict[str, str]) -> str:
    """`line` with the two substitutions the test makes: DN_HOME's value, and FILE."""
    line = line.replace(TRY_HOME, f"DN_HOME={shlex.quote(str(dn_home))}")
    code, comment = split_comment(line)
    assert "/tmp/dn-try" not in code, (
        f"a README line uses /tmp/dn-try other than as DN_HOME: {line}"
    )
    if _code(line).startswith("dn model submit FILE "):
        assert "FILE: the path `dn model fetch` printed" in comment, "FILE is not explained"
        assert "fetched" in printed, "`dn model submit FILE` comes before `dn model fetch`"
        line = code.replace(" FILE ", f" {shlex.quote(printed['fetched'])} ", 1) + comment
    return line


def runnable(text: str) -> list[Block]:
    """The README's blocks this test runs: all but the first (`make demo`, `make test`: asserted
    there) and those in SKIPPED_BLOCKS."""
    found = blocks(text)
    first = [_code(line) for line in found[0].commands()]
    assert first == list(SKIPPED), f"the README's first block is not {SKIPPED}: {first}"
    return [b for b in found[1:] if _code(next(iter(b.commands()), "")) not in SKIPPED_BLOCKS]


def run_readme(text: str, dn_home: Path, work: Path) -> None:
    """Run every block of README `text` in order with DN_HOME `dn_home`; AssertionError on the
    first command that fails or prints something else than it should."""
    found = runnable(text)
    examples = [b for b in found if b.lang == "python"]
    assert len(examples) == 1 and "import openai" in examples[0].text, "one openai example"
    assert sum(TRY_HOME in b.text for b in found) >= 1, f"the README never sets {TRY_HOME}"

    checked: set[str] = set()
    printed: dict[str, str] = {}
    shell = Shell(_base_env(work), REPO, work)
    try:
        for block in found:
            if block.lang == "python":
                script = work / f"readme-{block.line}.py"
                script.write_text(block.text)
                result = shell.run(f"python {shlex.quote(str(script))}")
                assert result.rc == 0, (
                    f"README line {block.line}: the Python example exited {result.rc}:\n"
                    f"{result.output}\n{shell.logs()}"
                )
                assert "'status': 'confirmed'" in result.out, result.output
                checked.add("python")
                continue
            assert block.lang in SHELL_LANGS, f"README line {block.line}: cannot run {block.lang}"
            lines = block.commands()
            if lines and lines[0].startswith(("export ", "source ")):
                shell.new_terminal()
            reported = 0  # the chain height a line of this README block last said `in block N`
            for raw in lines:
                line = _as_written(raw, dn_home, printed)
                spec = server(line)
                if spec is not None:
                    shell.start(spec)
                    continue
                if reported and (url := _node_of(shell, line)):
                    _wait_for_block(url, reported)
                for prefix, pace in PACING.items():
                    if _code(line).startswith(prefix):
                        pace(shell, line)
                result = shell.run(line)
                assert result.rc == 0, (
                    f"README line {block.line}+: `{line}` exited {result.rc}:\n"
                    f"{result.output}\n{shell.logs()}"
                )
                if included := re.findall(r"\bin block (\d+)", result.output):
                    reported = int(included[-1])
                if fetched := re.search(r" at (\S+\.gguf)$", result.out.strip()):
                    printed["fetched"] = fetched.group(1)
                if key := _check_for(line):
                    checked.add(key)
                    assert CHECKS[key](result), f"`{line}` printed:\n{result.output}"
        assert checked == {*CHECKS, "python"}, f"README lines gone: {set(CHECKS) - checked}"
        stopped = shell.close()
        assert all(code == 0 for _, code in stopped), f"Ctrl-C did not stop cleanly: {stopped}"
    finally:
        shell.close()


def test_every_readme_command_works_as_written(
    dn_home: Path, smollm2_gguf: Path, tmp_path: Path
) -> None:
    text = README.read_text()
    servers = [s for b in runnable(text) for line in b.commands() if (s := server(line))]
    ports = {port for s in servers for port in s.ports}
    assert ports, "the README starts no server"
    busy = sorted(port for port in ports if not port_free(port))
    if busy:
        pytest.skip(f"the README's fixed ports {busy} are in use on 127.0.0.1")
    model = catalog.get(MODEL)
    ModelStore(dn_home / "models").add_file(
        smollm2_gguf,
        name=model.name,
        source=model.source,
        expected_sha=model.sha256,
        expected_size=model.size,
    )
    run_readme(text, dn_home, tmp_path / "work")
