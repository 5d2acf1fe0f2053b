"""Real node processes on free loopback ports, for multi-process tests.

In the manner of bitcoin's test/functional: a test asks for nodes, gets them started in their own
folders, and waits on conditions with `wait_until` instead of sleeping. Every process is started
in its own session and killed by its own pid at teardown.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from dn.node.client import NodeClient
from dn.node.node import Node, NodeHome, init_dev_chain

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll `predicate` until it returns something truthy; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001 - a node still starting raises; keep polling
            last_error = exc
        else:
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout} s waiting for {what or predicate}: {last_error}"
    )


def init_chain(dn_home: Path, allocations: dict[str, int], name: str = "default", **params: int):
    """Write a dev genesis and create the store for node `name` under `dn_home`."""
    from dn.chain.genesis import default_params

    home = NodeHome.named(name, dn_home)
    genesis = init_dev_chain(home, allocations, params=default_params(**params))
    Node(home, genesis).close()
    return genesis


class NodeProcess:
    """`dn node start` as a child process."""

    def __init__(self, dn_home: Path, name: str = "default", port: int | None = None) -> None:
        self.dn_home = dn_home
        self.name = name
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = dn_home / f"{name}-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def home(self) -> NodeHome:
        return NodeHome.named(self.name, self.dn_home)

    def client(self) -> NodeClient:
        return NodeClient(self.url, timeout=10)

    def start(self, timeout: float = 30.0) -> NodeProcess:
        env = {**os.environ, "DN_HOME": str(self.dn_home), "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dn",
                    "node",
                    "start",
                    "--name",
                    self.name,
                    "--port",
                    str(self.port),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with self.client() as client:
            wait_until(lambda: self._alive() and client.status(), timeout, what=f"{self.url} up")
        return self

    def _alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"node exited early:\n{self.log.read_text()[-2000:]}")
        return True

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT, then wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
