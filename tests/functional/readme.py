"""Run the README's commands as a newcomer types them.

`blocks` reads the fenced code blocks of a Markdown text. `Shell` runs their lines with bash,
one at a time, as a terminal would: what a line exports, sources or `cd`s into carries on to
the next line. A line that runs until Ctrl-C (`dn devnet up`, `dn node start`, `dn mine`,
`dn validate`, or any line ending with `&`) is started in the background in its own process
group, waited for until every port it serves answers, and stopped by SIGINT (SIGKILL after a
bound). Every wait is bounded; `Shell.close` kills whatever is still running, by process group.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from dn.client.http import NodeClient

LINE_TIMEOUT_S = 120.0  # one foreground command
READY_TIMEOUT_S = 90.0  # a server, until its ports answer (a miner loads its models first)
STOP_TIMEOUT_S = 15.0  # SIGINT to exit; then SIGKILL
DN_GLOBAL_VALUES = {"--home", "--node"}  # `dn` options before the command that take a value


@dataclass(frozen=True)
class Block:
    """One fenced block: its language tag, its text, and the README line of its first line."""

    lang: str
    text: str
    line: int

    def commands(self) -> list[str]:
        """The shell lines to run: `\\`-continued lines joined, blank and comment-only lines
        left out; a line keeps its trailing comment (bash ignores it)."""
        out: list[str] = []
        pending = ""
        for raw in self.text.splitlines():
            code, comment = split_comment(pending + raw)
            if code.rstrip().endswith("\\"):
                pending = code.rstrip()[:-1]
                continue
            pending = ""
            if code.strip():
                out.append((code + comment).strip())
        assert not pending, f"README line {self.line}: a block ends inside a `\\` continuation"
        return out


def blocks(markdown: str) -> list[Block]:
    """The fenced (```) blocks of `markdown`, in order."""
    found: list[Block] = []
    lang: str | None = None
    body: list[str] = []
    start = 0
    for number, line in enumerate(markdown.splitlines(), 1):
        if line.startswith("```"):
            if lang is None:
                lang, body, start = line[3:].strip(), [], number + 1
            else:
                found.append(Block(lang, "\n".join(body) + "\n", start))
                lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, f"README line {start - 1}: a ``` block is never closed"
    return found


def split_comment(line: str) -> tuple[str, str]:
    """(code, comment) of a shell line: the comment starts at a `#` that begins a word outside
    quotes, as in bash."""
    quote = ""
    escaped = False
    for i, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i], line[i:]
    return line, ""


@dataclass(frozen=True)
class Server:
    """A line that runs until stopped: the command to start (without a trailing `&`), the
    ports it serves, and the URL it joins (`--join`), if any."""

    command: str
    ports: tuple[int, ...]
    join: str | None = None


def _option(args: list[str], names: tuple[str, ...], default: str | None) -> str | None:
    for i, arg in enumerate(args):
        if arg in names and i + 1 < len(args):
            return args[i + 1]
        for name in names:
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return default


def server(line: str) -> Server | None:
    """The Server a line starts, or None for a line that ends by itself."""
    code = split_comment(line)[0].strip()
    background = code.endswith("&") and not code.endswith("&&")
    code = code.removesuffix("&").rstrip() if background else code
    try:
        words = shlex.split(code)
    except ValueError:
        words = []
    args = words[1:] if words[:1] == ["dn"] else []
    while args and args[0].startswith("-"):  # global options: --json, -v, --node URL, …
        args = args[2:] if args[0] in DN_GLOBAL_VALUES else args[1:]
    port = int(_option(args, ("--port",), "8765") or 8765)
    if args[:2] == ["devnet", "up"]:
        base = int(_option(args, ("--port-base",), "8780") or 8780)
        count = int(_option(args, ("--nodes", "-n"), "3") or 3)
        return Server(code, tuple(range(base, base + count)))
    if args[:2] == ["node", "start"] or args[:1] in (["mine"], ["validate"]):
        return Server(code, (port,), _option(args, ("--join",), None))
    return Server(code, ()) if background else None


@dataclass(frozen=True)
class Result:
    line: str
    rc: int
    out: str
    err: str

    @property
    def output(self) -> str:
        return self.out + self.err


class Background:
    """A server line running in its own process group, its output in `log`."""

    def __init__(self, spec: Server, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.spec = spec
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                ["bash", "-c", spec.command],
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,  # a password prompt fails at once instead of hanging
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def _height(self, port: int) -> int | None:
        """The height the server reports on `port`, or None while it does not answer."""
        try:
            with NodeClient(f"http://127.0.0.1:{port}", timeout=2) as client:
                return int(client.status()["height"])
        except Exception:  # noqa: BLE001 - a server still starting refuses or errs; keep asking
            return None

    def _answers(self, port: int) -> bool:
        return self._height(port) is not None

    def _until(self, ready: Callable[[], bool], deadline: float, what: str) -> None:
        """Poll `ready` until `deadline`; fail at once if the server exits meanwhile."""
        while not ready():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"`{self.spec.command}` exited with {self.proc.returncode}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"`{self.spec.command}`: no {what} in time:\n{self.tail()}")
            time.sleep(0.2)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until every port answers; a node that `--join`s until it has the joined node's
        blocks (before that it does not know the chain's models and wallets)."""
        deadline = time.monotonic() + timeout
        for port in self.spec.ports:
            self._until(partial(self._answers, port), deadline, f"an answer on port {port}")
        if self.spec.join is not None:
            with NodeClient(self.spec.join, timeout=5) as joined:
                target = int(joined.status()["height"])
            port = self.spec.ports[0]
            self._until(lambda: (self._height(port) or 0) >= target, deadline, "sync")
        self._until(lambda: self.proc.poll() is None, deadline, "start")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """Ctrl-C (SIGINT to the process group), as at a terminal; SIGKILL after `timeout`.
        The exit code, or None when it had to be killed."""
        code: int | None = self.proc.poll()
        if code is None:
            self._signal(signal.SIGINT)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                code = None
        self.kill()  # whatever is left of its group
        return code

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def _signal(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # its own group: start_new_session made pgid == pid
        except (ProcessLookupError, PermissionError):
            pass


class Shell:
    """Bash lines in one terminal at a time. `base_env` is what a new terminal starts with;
    `cwd` where it starts; logs and the environment hand-over file go in `work`."""

    def __init__(self, base_env: dict[str, str], cwd: Path, work: Path) -> None:
        self.base_env = dict(base_env)
        self.start_cwd = cwd
        self.work = work
        self.env = dict(base_env)
        self.cwd = cwd
        self.running: list[Background] = []
        work.mkdir(parents=True, exist_ok=True)

    def new_terminal(self) -> None:
        self.env, self.cwd = dict(self.base_env), self.start_cwd

    def run(self, line: str, timeout: float = LINE_TIMEOUT_S) -> Result:
        """Run one foreground line; afterwards the terminal has the environment and folder the
        line left (so `export`, `source` and `cd` work as typed)."""
        env_file = self.work / "env.after"
        env_file.unlink(missing_ok=True)
        script = f'{line}\n__rc=$?\nenv -0 > {shlex.quote(str(env_file))}\nexit "$__rc"\n'
        proc = subprocess.Popen(
            ["bash", "-c", script],
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,  # a prompt fails at once instead of hanging
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            out, err = proc.communicate(timeout=10)
            raise AssertionError(
                f"`{line}` ran past {timeout} s:\n{out[-2000:]}{err[-2000:]}"
            ) from None
        finally:
            _kill_group(proc.pid)  # anything the line left behind in its group
        if env_file.exists():
            pairs = (e.split("=", 1) for e in env_file.read_text().split("\0") if "=" in e)
            env = {k: v for k, v in pairs if k not in ("_", "SHLVL", "OLDPWD")}
            self.cwd = Path(env.pop("PWD", str(self.cwd)))
            self.env = env
        return Result(line, proc.returncode, out, err)

    def start(self, spec: Server) -> Background:
        """Start a server line (stopping first, as one would, any running one that holds a port
        it wants) and wait until it serves."""
        for other in [b for b in self.running if set(b.spec.ports) & set(spec.ports)]:
            self.running.remove(other)
            code = other.stop()
            assert code == 0, f"Ctrl-C stopped `{other.spec.command}` with {code}:\n{other.tail()}"
        log = self.work / f"server-{len(list(self.work.glob('server-*.log')))}.log"
        started = Background(spec, self.env, self.cwd, log)
        self.running.append(started)
        started.wait_ready()
        return started

    def logs(self) -> str:
        return "\n".join(f"--- `{b.spec.command}`:\n{b.tail(1500)}" for b in self.running)

    def close(self) -> list[tuple[str, int | None]]:
        """Stop every server still running, the last started first; their exit codes."""
        codes = []
        while self.running:
            last = self.running.pop()
            codes.append((last.spec.command, last.stop()))
        return codes


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the Rich tables in `text`, each a list of stripped cells."""
    return [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if "│" in line]
