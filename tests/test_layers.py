"""The layers of docs/architecture.md, checked on every import the package makes (also the ones
inside functions)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "modelc_build"

FORBIDDEN = {
    "modelc_build.backends": {"modelc_build.accuracy", "modelc_build.sources", "modelc_build.export", "modelc_build.steps", "modelc_build.engine",
                          "modelc_build.plan", "modelc_build.build", "modelc_build.release", "modelc_build.stores", "modelc_build.cli",
                          "modelc_build.qdq", "modelc_build.sensitivity"},
    "modelc_build.stores": {"modelc_build.build", "modelc_build.release", "modelc_build.plan", "modelc_build.engine", "modelc_build.steps",
                        "modelc_build.backends", "modelc_build.accuracy", "modelc_build.export", "modelc_build.sources", "modelc_build.recipe",
                        "modelc_build.cli"},
    "modelc_build.engine": {"modelc_build.steps.", "modelc_build.plan", "modelc_build.recipe", "modelc_build.build", "modelc_build.release",
                        "modelc_build.backends", "modelc_build.cli"},
    "modelc_build.steps": {"modelc_build.plan", "modelc_build.build", "modelc_build.release", "modelc_build.cli"},
    # the plan reads the backends' tables (modelc_build.backends), never a backend's module
    "modelc_build.plan": {"modelc_build.engine", "modelc_build.build", "modelc_build.release", "modelc_build.backends.", "modelc_build.cli"},
    "modelc_build.release": {"modelc_build.engine", "modelc_build.plan", "modelc_build.build", "modelc_build.backends", "modelc_build.cli"},
    "modelc_build.runtime": {"modelc_build.plan", "modelc_build.engine", "modelc_build.build", "modelc_build.release",
                             "modelc_build.steps", "modelc_build.export", "modelc_build.sources", "modelc_build.cli"},
    "modelc_build.golden": {"modelc_build.plan", "modelc_build.engine", "modelc_build.build", "modelc_build.release",
                            "modelc_build.steps", "modelc_build.export", "modelc_build.sources", "modelc_build.backends",
                            "modelc_build.cli"},
    "modelc_build.emulation": {"modelc_build.plan", "modelc_build.engine", "modelc_build.build", "modelc_build.release",
                               "modelc_build.steps", "modelc_build.cli"},
    "modelc_build.report_html": {"modelc_build.plan", "modelc_build.engine", "modelc_build.build", "modelc_build.release",
                                 "modelc_build.steps", "modelc_build.backends", "modelc_build.stores", "modelc_build.recipe"},
    "modelc_build.compare": {"modelc_build.plan", "modelc_build.engine", "modelc_build.build", "modelc_build.release",
                             "modelc_build.steps", "modelc_build.backends", "modelc_build.recipe"},
}
ENTRY_POINTS = {"modelc_build.cli": ("modelc_build.cli", "modelc_build.__main__"),  # module: who may import it
                "modelc_build.actions": ("modelc_build.actions",),
                # the recipe's parser: read by the entry points and the build API; every other layer reads the
                # recipe's types (modelc_build.recipe_types), never the parser
                "modelc_build.recipe": ("modelc_build.recipe", "modelc_build.cli", "modelc_build.actions", "modelc_build.api")}
BOTTOM = "modelc_build.recipe_types"  # the recipe's vocabulary: imports nothing of the package


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names  # submodules, not names
                         if is_module(f"{node.module}.{alias.name}"))
    return {name for name in found if name.startswith("modelc_build")}


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def violates(imported: str, rule: str) -> bool:
    if rule.endswith("."):  # the package's submodules, not the package itself
        return imported.startswith(rule)
    return imported == rule or imported.startswith(rule + ".")


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_import_against_the_arrows(path: Path) -> None:
    name = module_name(path)
    forbidden = set().union(*(rules for layer, rules in FORBIDDEN.items() if name == layer or name.startswith(layer + ".")))
    forbidden.update(entry for entry, importers in ENTRY_POINTS.items() if name not in importers)
    bad = sorted(i for i in imports(path) if any(violates(i, rule) for rule in forbidden))
    assert bad == [], f"{name} imports {bad}, against docs/architecture.md"


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from modelc_build.accuracy import task_metric\n")
    assert "modelc_build.accuracy" in imports(source)
    assert violates("modelc_build.steps.compile", "modelc_build.steps.") and not violates("modelc_build.steps", "modelc_build.steps.")


def test_the_recipes_types_sit_at_the_bottom() -> None:
    path = PACKAGE / "recipe_types.py"
    assert imports(path) == set(), f"{BOTTOM} imports {sorted(imports(path))}: it must import nothing of the package"


def module_of(imported: str) -> str:
    """The package module an import names (a name imported from a module is that module)."""
    parts = imported.split(".")
    while len(parts) > 1 and not is_module(".".join(parts)):
        parts.pop()
    return ".".join(parts)


def package_loads_its_own(importer: str, imported: str, path: Path) -> bool:
    """A package's __init__ that loads its own modules (stores, steps: plug-ins of the interface it
    defines) is the one edge allowed back down into it."""
    return path.name == "__init__.py" and imported.startswith(importer + ".")


def first_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A loop of imports in `graph` (node -> what it imports), as the list of its nodes; None if none."""
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        if state.get(node) == "open":
            return trail[trail.index(node):] + [node]
        if state.get(node) == "done":
            return None
        state[node] = "open"
        for imported in sorted(graph.get(node, ())):
            found = visit(imported, trail + [node])
            if found:
                return found
        state[node] = "done"
        return None

    return next((found for node in sorted(graph) if (found := visit(node, []))), None)


def test_no_import_cycle_between_modules() -> None:
    """Every import, those inside functions too, between the package's modules and packages: no
    loop, so the layers can be drawn (each module above everything it imports)."""
    graph: dict[str, set[str]] = {}
    for path in MODULES:
        here = module_name(path)
        graph.setdefault(here, set()).update(module_of(i) for i in imports(path)
                                             if module_of(i) != here and not package_loads_its_own(here, module_of(i), path))
    cycle = first_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_the_cycle_check_sees_a_cycle_through_an_import_inside_a_function(tmp_path: Path) -> None:
    first, second = tmp_path / "a.py", tmp_path / "b.py"
    first.write_text("def f():\n    import modelc_build.recipe\n")
    second.write_text("from modelc_build.tasks import layout_hint\n")
    graph = {"modelc_build.tasks": imports(first), "modelc_build.recipe": imports(second), "modelc_build.errors": set()}
    assert first_cycle(graph) == ["modelc_build.recipe", "modelc_build.tasks", "modelc_build.recipe"]
