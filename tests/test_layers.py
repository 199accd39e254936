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
    "modelc_build.plan": {"modelc_build.engine", "modelc_build.build", "modelc_build.release", "modelc_build.backends", "modelc_build.cli"},
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
                "modelc_build.actions": ("modelc_build.actions",)}


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
