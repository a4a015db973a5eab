"""The house's import graph: no circles between modules, and every import points down the floors
pipeline < trainer < colorfast < cli (DESIGN.md). Read from the source with ast, so imports inside functions
(the lazy ones cli.py and the extras use) count as much as those at the top of a module."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"pipeline": 0, "trainer": 1, "colorfast": 2, "cli": 3}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The project modules that import statements anywhere in the tree load, relative imports resolved:
    `from a.b import c` loads the module a.b.c when there is one, else a.b (c is a name in it); `import a.b.c`
    counts as its deepest project module (running a and a.b on the way is Python's rule, not a choice)."""
    package = module if is_package else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - (node.level - 1)] + ([base] if base else []))
            names.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
    modules = set()
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            modules.add(name)
    return modules


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the project modules it imports, for every module of pipeline/, trainer/, colorfast/ and cli.py."""
    files = {module_name(p, root): p for top in ("pipeline", "trainer", "colorfast")
             for p in (root / top).rglob("*.py")}
    files["cli"] = root / "cli.py"
    return {module: imported_modules(ast.parse(path.read_text(), str(path)), module, path.name == "__init__.py",
                                     set(files))
            for module, path in files.items()}


def floor(module: str) -> int:
    """A package's __main__ (`python -m colorfast`) is the command line under another name: cli's floor."""
    return FLOORS["cli" if module.endswith(".__main__") else module.split(".")[0]]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} imports {t} (floor {m.split('.')[0]} < {t.split('.')[0]})"
                  for m, targets in graph.items() for t in targets if floor(t) > floor(m))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), as a path m1 -> ... -> m1."""
    edges = graph
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
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
                components.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [shortest_cycle(edges, sorted(c)[0], set(c)) for c in components]


def shortest_cycle(edges, start, within):
    """The shortest path start -> ... -> start inside one component (breadth first), for the report."""
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for w in sorted(edges[path[-1]] & within):
            if w == start:
                return path + [start]
            if w not in seen:
                seen.add(w)
                paths.append(path + [w])
    return [start]


def test_no_import_circles():
    found = cycles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_imports_point_down_the_floors():
    found = upward_imports(import_graph())
    assert not found, "imports up the floors (pipeline < trainer < colorfast < cli):\n" + "\n".join(found)


def test_the_graph_sees_function_level_and_relative_imports(tmp_path):
    """The checker itself: an import inside a function and a relative one are edges, so a circle or an upward
    arrow hidden in a function is found."""
    for top in ("pipeline", "trainer", "colorfast"):
        (tmp_path / top).mkdir()
        (tmp_path / top / "__init__.py").write_text("")
    (tmp_path / "cli.py").write_text("import colorfast\n")
    (tmp_path / "pipeline" / "a.py").write_text("def f():\n    from .b import g\n")
    (tmp_path / "pipeline" / "b.py").write_text("def g():\n    import pipeline.a\n")
    (tmp_path / "pipeline" / "c.py").write_text("def h():\n    from trainer import loop\n")
    (tmp_path / "trainer" / "loop.py").write_text("")
    graph = import_graph(tmp_path)
    assert cycles(graph) == [["pipeline.a", "pipeline.b", "pipeline.a"]]
    assert upward_imports(graph) == ["pipeline.c imports trainer.loop (floor pipeline < trainer)"]
