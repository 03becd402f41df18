"""No import cycles, and the floors one-way: the house rule of docs/architecture.md, checked.

Every ``import`` of the project's own code is read with ``ast`` (module level and inside functions
alike: a deferred import is still a dependency), resolved to a module of this repository, and:

- a floor may import only the floors under it: ``schemas`` nothing of ours, ``sinks`` only
  ``schemas``, ``streams`` only ``schemas`` and ``sinks``, ``featurestream`` anything; ``tests`` and
  ``bench`` anything;
- no module may reach itself through the imports of the code under ``schemas``, ``sinks``, ``streams``
  and ``featurestream`` (a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLOORS = {"schemas": set(), "sinks": {"schemas"}, "streams": {"schemas", "sinks"},
          "featurestream": {"schemas", "sinks", "streams"}}
OURS = (*FLOORS, "tests", "bench")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {}
    for top in OURS:
        for path in sorted((ROOT / top).rglob("*.py")):
            if ".venv" not in path.parts and "out" not in path.relative_to(ROOT).parts[1:2]:
                found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """(module of ours imported, line) for every import in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            # "from a.b import c": the module a.b.c if it is one, else a.b
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            while target and target not in known and "." in target:
                target = target.rpartition(".")[0]
            if target in known or target.split(".")[0] in OURS and target.split(".")[0] in known:
                out.append((target, node.lineno))
    return out


KNOWN = modules()
GRAPH = {name: imports_of(name, path, KNOWN) for name, path in KNOWN.items()}


def test_the_walk_sees_the_project():
    """The check reads real code: each floor has modules, and known imports are found."""
    for floor in FLOORS:
        assert any(m.split(".")[0] == floor for m in KNOWN), floor
    pit = {t for t, _ in GRAPH["sinks.offline.pit"]}
    assert {"schemas.ordering", "sinks.offline.query_source", "sinks.offline.query_errors"} <= pit


@pytest.mark.parametrize("floor", sorted(FLOORS))
def test_floors_import_only_downwards(floor):
    allowed = FLOORS[floor] | {floor}
    wrong = [f"{KNOWN[name].relative_to(ROOT)}:{line} imports {target}"
             for name, edges in GRAPH.items() if name.split(".")[0] == floor
             for target, line in edges if target.split(".")[0] not in allowed]
    assert not wrong, f"{floor}/ may import only {sorted(allowed)}:\n" + "\n".join(wrong)


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One cycle of ``graph`` (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b", "c"], "b": ["c"], "c": []}) is None
    assert find_cycle({"a": ["a"]}) == ["a", "a"]


def test_no_import_cycles():
    product = {name: sorted({t for t, _ in edges if t != name and t.split(".")[0] in FLOORS})
               for name, edges in GRAPH.items() if name.split(".")[0] in FLOORS}
    cycle = find_cycle(product)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
