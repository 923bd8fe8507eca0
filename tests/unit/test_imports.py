"""The import graph of src/ferryman: no cycle, and the house rules of DESIGN.md §9.

Every import counts, those under ``if TYPE_CHECKING:`` included: a cycle there is
still two modules that cannot be understood (or compiled) one without the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ferryman

SRC = Path(ferryman.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def graph() -> dict[str, set[str]]:
    """Module → the modules of ours it imports (a package's __init__ counts as one)."""
    modules = {module_name(path): path for path in SRC.rglob("*.py") if "loaders" not in path.parts}
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join([*base, node.module] if node.module else base)
                else:
                    target = node.module or ""
                found = [target, *(f"{target}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            else:
                continue
            edges[name].update(f for f in found if f in modules and f != name)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_cycle() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_pool_imports_nothing_of_ours_but_itself() -> None:
    for name, targets in graph().items():
        if name.startswith("ferryman.pool"):
            assert all(t.startswith("ferryman.pool") for t in targets), (name, targets)


def test_http_and_the_supervisor_never_import_each_other() -> None:
    edges = graph()
    assert not any(t.startswith("ferryman.http") for t in edges["ferryman.supervisor"])
    for name, targets in edges.items():
        if name.startswith("ferryman.http"):
            assert "ferryman.supervisor" not in targets, name


def test_loaders_import_nothing_of_ferryman() -> None:
    for path in (SRC / "loaders").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0 and not (node.module or "").startswith("ferryman"), path
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("ferryman") for a in node.names), path
