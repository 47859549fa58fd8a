"""No import circles in the project's packages (issue 21): each module builds on modules below
it. Every import counts, at module level and inside functions alike (an import deferred into
a function to dodge a circle is still a circle of ideas), read from the source with ``ast``."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shared", "device", "cloud_worker")


def _modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted name -> file of every module in the project's packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imported(tree: ast.AST, name: str, is_package: bool) -> Iterator[str]:
    """Every module name an import in ``tree`` (module ``name``) may refer to."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the project modules it imports (a package's ``__init__`` as the package)."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = set()
        for target in _imported(tree, name, path.name == "__init__.py"):
            while target and target not in modules:  # `from a.b import f`: the module a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                targets.add(target)
        graph[name] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_project_has_no_import_circle() -> None:
    assert circles(import_graph()) == []


def test_the_check_sees_a_circle_through_an_import_inside_a_function(tmp_path: Path) -> None:
    """The check above would pass vacuously if it missed imports: a circle closed only by an
    import inside a function, and one through ``from package import module``, are found."""
    pkg = tmp_path / "shared"
    (pkg / "sub").mkdir(parents=True)
    for package in PACKAGES[1:]:
        (tmp_path / package).mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from shared.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from shared import a\n")
    (pkg / "sub" / "c.py").write_text("from . import d\n")
    (pkg / "sub" / "d.py").write_text("from shared.sub.c import x\n")
    assert circles(import_graph(tmp_path)) == [
        ["shared.a", "shared.b"],
        ["shared.sub.c", "shared.sub.d"],
    ]
