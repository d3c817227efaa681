"""The lmlab package's modules import one another without circles.

Every import is counted, those inside functions too: a circle that a function-level import hides
still ties two modules into one. A module's own parent packages are not counted (Python imports
them before the module, whatever the module imports)."""

from __future__ import annotations

import ast
from pathlib import Path

import lmlab

ROOT = Path(lmlab.__file__).parent
# (module, module) pairs allowed to import each other, each with its reason; empty today
ALLOWED: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module → the lmlab modules it imports (at any depth of its code)."""
    modules = _modules()

    def known(name: str) -> str | None:  # the module a dotted name lives in: lmlab.a.b.Name → lmlab.a.b
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                # `from a import b`: the submodule a.b if there is one, else the module a
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for name in names:
                target = known(name) if name.split(".")[0] == "lmlab" else None
                if target and target != module and not module.startswith(target + "."):
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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


def test_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_sees_function_level_imports():
    graph = import_graph()
    # pretrain imports model_from_init inside a function
    assert "lmlab.model.pretrained" in graph["lmlab.train.pretrain"]
    assert "lmlab.hf.init_source" in graph["lmlab.train.pretrain"]


def test_no_import_cycles():
    graph = import_graph()
    for a, b in ALLOWED:
        graph[a].discard(b)
    found = cycles(graph)
    listing = "\n".join(" ↔ ".join(c) + ": " + "; ".join(f"{a} → {b}" for a in c for b in sorted(graph[a])
                                                         if b in c) for c in found)
    assert not found, f"import cycles between lmlab modules:\n{listing}"
