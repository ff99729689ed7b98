"""The library's shape, kept by tests: no import circle in nitrogen/, no oversized file anywhere."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "nitrogen"
MAX_LINES = 400


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path) -> set[str]:
    """Modules of nitrogen/ that ``path`` imports at run time (anywhere: top level or in a function)."""
    tree = ast.parse(path.read_text(), str(path))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node)
            for n in ast.walk(node) if n is not node.test}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = node.module.split(".")[0] if node.module else None
                found.update([base] if base else [a.name for a in node.names])
            elif node.module and node.module.split(".")[0] == "nitrogen":
                parts = node.module.split(".")
                found.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith("nitrogen.") and a.name.count(".") >= 1)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            continue  # nitrogen/__init__.py's lazy exports: the package, not a module, imports those
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    return {m for m in found if m in modules and m != path.stem}


def import_graph() -> dict[str, set[str]]:
    return {p.stem: _imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_checker_sees_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_nitrogen_has_no_import_circle():
    graph = import_graph()
    assert graph["session"] >= {"engine", "jobs"} and "session" not in graph["engine"]
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph))}"


def test_torch_free_modules_stay_torch_free():
    """The CLI and health check import these without loading torch."""
    for name in ("options", "frames", "errors"):
        source = (PACKAGE / f"{name}.py").read_text()
        assert "import torch" not in source and "from torch" not in source, name


def test_no_file_over_the_size_limit():
    roots = ["nitrogen", "server", "clients", "benchmarks", "tests"]
    too_long = {str(p.relative_to(REPO)): n for root in roots for p in (REPO / root).rglob("*")
                if p.suffix in (".py", ".lua", ".c") and (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not too_long, f"files over {MAX_LINES} lines: {too_long}"


def test_the_library_never_imports_the_client_package():
    """The server draws overlays with nitrogen_client (its live view, `render`); the library stays below both."""
    importers = [str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py") if "nitrogen_client" in p.read_text()]
    assert not importers, f"nitrogen/ must not import nitrogen_client: {importers}"
