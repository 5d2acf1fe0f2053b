"""A LAN made of Linux network namespaces, for tests of mDNS discovery between real node processes.

    switch namespace  dnlan-<suffix>-sw   bridge br0, and one end pN of each node's veth pair
    node namespace    dnlan-<suffix>-N    the other end dn0 at 10.213.0.(10+N)/24, lo up, and a
                                          224.0.0.0/4 route on dn0 for mDNS

Everything is created inside namespaces this harness makes: the veth pairs are created in the
switch namespace with their far end moved straight into the node's namespace, so no link, bridge
or address ever appears in the namespace the tests run in, and nothing a node sends (its mDNS
included) can reach a real interface. 10.213.0.0/24 exists only inside these namespaces. The
namespace that runs the tests has no route to it: HTTP calls to a node are made by a small
stdlib-only Python client started inside a node's namespace (`Lan.http`).

Commands run in a namespace with `ip netns exec NAME …`, which execs the command itself, so each
process is started in its own session and is ended by its own pid (its process group). `close()`
ends those processes, then deletes the namespaces by name (which takes their veths with them);
it is safe to call after a failed `open()` and more than once. Needs root and iproute2's `ip`;
`lan_problem()` says why a host cannot do it, and `skip_without_lan()` skips with that reason.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

SUBNET = "10.213.0"
PREFIX_LEN = 24
IP_TIMEOUT_S = 10.0  # for each `ip` command
STOP_TIMEOUT_S = 10.0  # per process: SIGINT, then SIGKILL

# Run inside a node's namespace by `Lan.http`: a list of requests on stdin, a list of answers on
# stdout. Standard library only (it starts fast), and never through a proxy from the environment.
_HTTP_CLIENT = r"""
import json, sys, urllib.error, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
answers = []
for req in json.load(sys.stdin):
    body = req.get("body")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        req["url"], data=data, method=req.get("method", "GET"),
        headers={"content-type": "application/json"},
    )
    try:
        with opener.open(request, timeout=req.get("timeout", 5)) as reply:
            answers.append({"status": reply.status, "body": json.loads(reply.read() or b"null")})
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = text.decode("utf-8", "replace")
        answers.append({"status": exc.code, "body": parsed})
    except Exception as exc:
        answers.append({"status": None, "error": repr(exc)})
json.dump(answers, sys.stdout)
"""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS…` (bounded in time); raise with its stderr when `check` and it fails."""
    done = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done


def lan_problem() -> str | None:
    """Why namespaces with a bridge and veth pairs cannot be made here, or None. Tries it once
    in a throwaway namespace (removed again) with a name no other run uses."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "it needs root, to create network namespaces"
    if shutil.which("ip") is None:
        return "it needs `ip` from iproute2 (e.g. `apt-get install -y iproute2`)"
    probe = f"dnlan-{secrets.token_hex(3)}-probe"
    try:
        ip("netns", "add", probe)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns add` is refused (an unprivileged container?): {exc}"
    try:
        ip("-n", probe, "link", "add", "br0", "type", "bridge")
        ip("-n", probe, "link", "add", "pa", "type", "veth", "peer", "name", "pb")
        done = subprocess.run(
            ["ip", "netns", "exec", probe, "true"],
            capture_output=True,
            text=True,
            timeout=IP_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            return f"`ip netns exec` is refused: {done.stderr.strip()}"
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"a bridge or veth pair cannot be made in a namespace: {exc}"
    finally:
        ip("netns", "del", probe, check=False)
    return None


def skip_without_lan() -> None:
    """Skip the calling test where `lan_problem()` finds a reason."""
    problem = lan_problem()
    if problem is not None:
        pytest.skip(f"LAN test on network namespaces cannot run here: {problem}")


class Lan:
    """`n` node namespaces on one bridge. Use as a context manager, or `open()` and `close()`."""

    def __init__(self, n: int) -> None:
        if not 1 <= n <= 200:
            raise ValueError(f"a LAN of 1 to 200 nodes, not {n}")
        self.n = n
        self.suffix = secrets.token_hex(3)
        self.switch = f"dnlan-{self.suffix}-sw"
        self.namespaces = [f"dnlan-{self.suffix}-{i}" for i in range(n)]
        self.procs: list[subprocess.Popen[bytes]] = []
        self._made: list[str] = []  # namespaces that exist, in the order they were added

    def address(self, i: int) -> str:
        """Node `i`'s IPv4 address on the LAN (inside its namespace only)."""
        return f"{SUBNET}.{10 + i}"

    def __enter__(self) -> Lan:
        return self.open()

    def __exit__(self, *_: object) -> None:
        self.close()

    def open(self) -> Lan:
        try:
            self._add_namespace(self.switch)
            sw = ("-n", self.switch)
            ip(*sw, "link", "add", "br0", "type", "bridge")
            # Link-local groups such as mDNS's are flooded anyway; no snooping keeps it simple.
            ip(*sw, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
            ip(*sw, "link", "set", "br0", "up")
            for i, ns in enumerate(self.namespaces):
                self._add_namespace(ns)
                port = f"p{i}"
                ip(*sw, "link", "add", port, "type", "veth", "peer", "name", "dn0", "netns", ns)
                ip(*sw, "link", "set", port, "master", "br0")
                ip(*sw, "link", "set", port, "up")
                node = ("-n", ns)
                ip(*node, "link", "set", "lo", "up")
                ip(*node, "addr", "add", f"{self.address(i)}/{PREFIX_LEN}", "dev", "dn0")
                ip(*node, "link", "set", "dn0", "up")
                ip(*node, "route", "add", "224.0.0.0/4", "dev", "dn0")
        except BaseException:
            self.close()
            raise
        return self

    def _add_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self._made.append(name)

    def close(self) -> None:
        """End every process started here (by pid), then delete every namespace made here (by
        name, which removes its veth ends and the bridge). Errors are collected, not raised
        halfway: everything is tried."""
        problems: list[str] = []
        for proc in self.procs:
            try:
                stop_process(proc)
            except Exception as exc:  # noqa: BLE001 - go on removing the rest
                problems.append(f"process {proc.pid}: {exc}")
        self.procs.clear()
        for name in reversed(self._made):
            try:
                done = ip("netns", "del", name, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                problems.append(f"namespace {name}: {exc}")
                continue
            if done.returncode != 0 and name in ip("netns", "list", check=False).stdout.split():
                problems.append(f"namespace {name}: {done.stderr.strip()}")
        self._made.clear()
        if problems:
            raise RuntimeError("LAN teardown left things behind: " + "; ".join(problems))

    def links(self, namespace: str | None = None) -> set[str]:
        """The names of the network interfaces in `namespace` (None: the one the tests run in)."""
        where = ("-n", namespace) if namespace else ()
        lines = ip(*where, "-o", "link", "show").stdout.splitlines()
        return {line.split(":")[1].strip().split("@")[0] for line in lines if ":" in line}

    # --- running things in a node's namespace --------------------------------------------------

    def popen(
        self, i: int, argv: list[str], *, env: dict[str, str], log: Path
    ) -> subprocess.Popen[bytes]:
        """Start `argv` in node `i`'s namespace, in its own session, output appended to `log`.
        It is ended at `close()` if it still runs."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.namespaces[i], *argv],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def http(self, i: int, requests: list[dict[str, Any]], timeout: float = 20.0) -> list[Any]:
        """Make HTTP requests from inside node `i`'s namespace, in order. Each request is
        `{"url", "method" (GET), "body" (JSON or None), "timeout" (5 s)}`; each answer is
        `{"status", "body"}`, or `{"status": None, "error"}` when no answer came."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.namespaces[i], sys.executable, "-I", "-c", _HTTP_CLIENT],
            input=json.dumps(requests),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"HTTP client in {self.namespaces[i]} failed: {done.stderr[-2000:]}")
        answers: list[Any] = json.loads(done.stdout)
        return answers

    def get(self, i: int, url: str) -> Any:
        """GET `url` from node `i`'s namespace; the JSON body of a 200, else RuntimeError."""
        return _ok(url, self.http(i, [{"url": url}])[0])

    def post(self, i: int, url: str, body: Any) -> Any:
        """POST JSON `body` to `url` from node `i`'s namespace; the JSON body of a 200."""
        return _ok(url, self.http(i, [{"url": url, "method": "POST", "body": body}])[0])


def _ok(url: str, answer: dict[str, Any]) -> Any:
    if answer.get("status") != 200:
        raise RuntimeError(f"{url}: {answer}")
    return answer["body"]


def stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> int:
    """SIGINT to the process's own group (its pgid is its pid: started with
    start_new_session), then SIGKILL to it if it has not exited within `timeout`. Returns its
    exit code."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout)
    return proc.returncode


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


class LanNode:
    """`dn node start` in node `i`'s namespace of `lan`, under `dn_home` as node `name`, listening
    on its LAN address (so mDNS runs on its veth, the default for `--host`), no `--peer`."""

    def __init__(
        self, lan: Lan, i: int, dn_home: Path, name: str, port: int = 7750, args: Sequence[str] = ()
    ) -> None:
        self.lan = lan
        self.i = i
        self.dn_home = dn_home
        self.name = name
        self.port = port
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = dn_home / f"{name}-lan.log"

    @property
    def host(self) -> str:
        return self.lan.address(self.i)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> LanNode:
        env = {
            k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")
        }  # a LAN has no proxy; the node's HTTP client must not look for one
        env.update({"DN_HOME": str(self.dn_home), "PYTHONUNBUFFERED": "1"})
        self.dn_home.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "dn", "node", "start", "--name", self.name]
        argv += ["--host", self.host, "--port", str(self.port), *self.args]
        self.proc = self.lan.popen(self.i, argv, env=env, log=self.log)
        return self._up(timeout, every=0.3)

    def _up(self, timeout: float, every: float) -> Any:
        """Wait until the started process answers `/status` on its URL; it must not exit."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.tail()}")
            answer = self.lan.http(self.i, [{"url": self.url + "/dn/v1/status", "timeout": 2}])
            if answer[0].get("status") == 200:
                return self
            time.sleep(every)
        raise AssertionError(f"{self.name} not up after {timeout} s:\n{self.tail()}")

    def get(self, path: str) -> Any:
        """GET this node's `path`, from inside its own namespace."""
        return self.lan.get(self.i, self.url + path)

    def post(self, path: str, body: Any) -> Any:
        return self.lan.post(self.i, self.url + path, body)

    def stop(self) -> int:
        if self.proc is None:
            return 0
        code = stop_process(self.proc)
        self.proc = None
        return code

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


# --- added for the soak (tests/functional/test_lan_soak.py): perturbing a running LAN -----------


def signal_node(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Send `sig` (SIGKILL, SIGSTOP, SIGCONT …) to the process group of `proc`, a process started
    by `Lan.popen` (its own session: the group's id is its pid). A process already gone is not
    an error."""
    _signal_group(proc, sig)


def link_down(lan: Lan, i: int) -> None:
    """Cut node `i` off the LAN: its veth end `dn0` goes down inside its own namespace. Its
    address stays, but the kernel drops the routes through dn0 (the 224.0.0.0/4 one too)."""
    ip("-n", lan.namespaces[i], "link", "set", "dn0", "down")


def link_up(lan: Lan, i: int) -> None:
    """Undo `link_down`: dn0 up again, and the mDNS route that going down removed put back (the
    kernel restores only the subnet's own route)."""
    ns = ("-n", lan.namespaces[i])
    ip(*ns, "link", "set", "dn0", "up")
    ip(*ns, "route", "replace", "224.0.0.0/4", "dev", "dn0")


def statuses(lan: Lan, via: int, urls: Sequence[str], timeout: float = 2.0) -> list[Any]:
    """GET /dn/v1/status of every node URL in `urls`, from inside namespace `via`, in one
    client process: each answer is the status, or None where the node did not answer in
    `timeout` seconds (stopped, paused or cut off)."""
    requests = [{"url": url + "/dn/v1/status", "timeout": timeout} for url in urls]
    answers = lan.http(via, requests, timeout=10.0 + timeout * len(urls))
    return [a.get("body") if a.get("status") == 200 else None for a in answers]


def node_env(dn_home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment `LanNode` starts a node with (no proxy variables: a LAN has no proxy),
    plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update({"DN_HOME": str(dn_home), "PYTHONUNBUFFERED": "1", **(extra or {})})
    return env


class LanMiner(LanNode):
    """`dn mine --wallet WALLET --model MODEL` in node `i`'s namespace, listening on its LAN
    address (mDNS on its veth), no `--peer`. Its node folder must already hold a chain on which
    MODEL is registered (a miner resolves the model from its own chain when it has no static
    peer): start a `LanNode` of the same name first and let it sync. `password` unlocks the
    wallet (DN_PASSWORD)."""

    def __init__(
        self,
        lan: Lan,
        i: int,
        dn_home: Path,
        name: str,
        *,
        wallet: str,
        model: str,
        password: str,
        port: int = 7750,
        args: Sequence[str] = (),
    ) -> None:
        super().__init__(lan, i, dn_home, name, port=port, args=args)
        self.wallet = wallet
        self.model = model
        self.password = password

    def start(self, timeout: float = 120.0) -> LanMiner:
        self.dn_home.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "dn", "mine", "--wallet", self.wallet, "--model", self.model]
        argv += ["--name", self.name, "--host", self.host, "--port", str(self.port), *self.args]
        env = node_env(self.dn_home, {"DN_PASSWORD": self.password})
        self.proc = self.lan.popen(self.i, argv, env=env, log=self.log)
        return self._up(timeout, every=0.5)
