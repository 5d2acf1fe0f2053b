"""The shape of the package (docs/architecture.md): imports point one way through the layers, no
module imports itself back through others, no module grows past 500 lines, and test-only switches
stay in the one hook module.

The import graph is read from the source with `ast`, every import counted (inside functions too,
since an import deferred into a function body is still a dependency), except those under
`if TYPE_CHECKING:`, which never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DN = Path(__file__).resolve().parents[2] / "dn"
MAX_LINES = 500

# Lowest first. A module may import modules of its own layer or of a lower one, never of a higher
# one. The longest prefix that matches a module names its layer.
LAYERS: list[tuple[str, ...]] = [
    ("dn.errors", "dn.encoding", "dn.config", "dn"),
    ("dn.wallet",),
    ("dn.powr",),  # the pure part: parameters, suites, grading, consensus math, emission
    ("dn.chain",),
    ("dn.runner",),
    ("dn.powr.evaluate",),  # evaluation runs models
    ("dn.node.node", "dn.node.taskio", "dn.node.hooks"),
    ("dn.node.p2p",),
    ("dn.node.market",),
    ("dn.node.validator",),
    ("dn.node.http",),
    ("dn.node",),  # the service that wires a node's parts, the devnet
    ("dn.client",),
    ("dn.cli", "dn.__main__"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(DN.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(DN.rglob("*.py"))}


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The dn modules `name` imports (a `from pkg import mod` counts as importing pkg.mod)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def layer(name: str) -> int:
    matches = [
        (len(prefix), index)
        for index, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if name == prefix or (prefix != "dn" and name.startswith(prefix + "."))
    ]
    return max(matches)[1] if matches else -1


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    colour: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if colour.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if colour.get(nxt) is None:
                cycle = walk(nxt)
                if cycle:
                    return cycle
        stack.pop()
        colour[node] = 2
        return None

    for start in sorted(edges):
        if start not in colour:
            cycle = walk(start)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(edges) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_imports_inside_functions_but_not_type_checking(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import dn.cli\n"
        "def f():\n    from dn.chain import state\n    import dn.node.node\n"
    )
    known = {"dn.cli", "dn.chain", "dn.chain.state", "dn.node.node", "dn.x"}
    assert imports_of("dn.x", source, known) == {"dn.chain", "dn.chain.state", "dn.node.node"}


def test_no_import_cycle_among_dn_modules() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_every_module_has_a_layer() -> None:
    missing = [name for name in modules() if layer(name) < 0]
    assert missing == []


def test_imports_point_one_way_through_the_layers() -> None:
    upward = sorted(
        f"{name} (layer {layer(name)}) imports {dep} (layer {layer(dep)})"
        for name, deps in graph().items()
        for dep in deps
        if layer(dep) > layer(name)
    )
    assert upward == []


@pytest.mark.parametrize("path", sorted(DN.rglob("*.py")), ids=lambda p: module_name(p))
def test_no_module_is_over_500_lines(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{module_name(path)} has {lines} lines"


def test_test_switches_only_in_the_hook_module() -> None:
    hook = DN / "node" / "hooks.py"
    offenders = [
        module_name(p)
        for p in sorted(DN.rglob("*.py"))
        if p != hook and "DN_TEST_" in p.read_text()
    ]
    assert offenders == []
