from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.functional.harness import NodeProcess


@pytest.fixture
def node_factory(dn_home: Path) -> Iterator[Callable[..., NodeProcess]]:
    """Make NodeProcess objects under this test's DN_HOME; every one is stopped at teardown."""
    made: list[NodeProcess] = []

    def make(
        name: str = "default", port: int | None = None, args: list[str] | None = None
    ) -> NodeProcess:
        node = NodeProcess(dn_home, name, port, args)
        made.append(node)
        return node

    yield make
    for node in made:
        node.stop(timeout=5)
