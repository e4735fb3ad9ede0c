"""The package layering of buildtool: stages import only themselves and the stages below them, and no
module imports itself back through a cycle. Every import counts, also the ones inside functions.

LAYERS is the declared order (lowest first), the same one docs/architecture.md draws. A new top-level
module or stage package has to be placed here; the test names the file that is missing from it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "buildtool"

# lowest first; a unit may import its own layer and every layer listed before it
LAYERS: tuple[tuple[str, ...], ...] = (
    ("buildtool", "errors", "console", "host", "interp", "model", "versions", "data"),
    ("spec",),
    ("binary",),
    ("source",),
    ("toolchain",),
    ("compile",),
    ("wheel",),
    ("verify",),
    ("build",),
    ("publish",),
    ("user",),
    ("cli", "backend", "__main__"),
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _unit(module: str) -> str:
    """buildtool.spec.matrix -> spec; buildtool.errors -> errors; buildtool -> buildtool."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports(path: Path) -> set[str]:
    """Every buildtool module ``path`` imports (``from buildtool.x import y`` names buildtool.x.y when y is
    a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "buildtool")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "buildtool":
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH: dict[str, set[str]] = {name: _imports(path) for name, path in MODULES.items()}


def test_every_unit_is_placed_in_a_layer() -> None:
    unplaced = sorted({f"{_unit(m)} ({MODULES[m].relative_to(PACKAGE.parent)})" for m in MODULES
                       if _unit(m) not in RANK})
    assert not unplaced, f"add these to LAYERS in tests/test_layering.py (and docs/architecture.md): {unplaced}"


def test_no_upward_imports() -> None:
    upward = [
        f"{MODULES[m].relative_to(PACKAGE.parent)} ({_unit(m)}) imports {dep} ({_unit(dep)})"
        for m, deps in GRAPH.items() for dep in sorted(deps)
        if _unit(m) in RANK and _unit(dep) in RANK and RANK[_unit(dep)] > RANK[_unit(m)]
    ]
    assert not upward, "imports that climb back up the pipeline:\n" + "\n".join(upward)


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(GRAPH.get(node, ())):
            if dep == node or dep not in GRAPH or dep == "buildtool":
                continue
            if state.get(dep) == 1:
                return [*stack[stack.index(dep):], dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(GRAPH):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles() -> None:
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("source, expected", [
    ("from buildtool.cli import main\n", "cli"),
    ("from buildtool.spec import yamlsrc\n", "spec"),
])
def test_the_checker_sees_imports(tmp_path: Path, source: str, expected: str) -> None:
    """The walk finds both import forms (a checker that sees nothing would pass everything)."""
    path = tmp_path / "m.py"
    path.write_text(source)
    assert {_unit(m) for m in _imports(path)} == {expected}


def test_every_buildtool_import_names_an_existing_module() -> None:
    """An import of a module that moved (``from buildtool.prepare import ...`` inside a function) fails only
    when that code path runs; here it fails at once."""
    packages = {name for name, path in MODULES.items() if path.name == "__init__.py"} | {"buildtool"}
    missing = [
        f"{MODULES[m].relative_to(PACKAGE.parent)} imports {dep}"
        for m, deps in GRAPH.items() for dep in sorted(deps)
        if dep not in MODULES and dep not in packages
    ]
    assert not missing, "imports of modules that do not exist:\n" + "\n".join(missing)
