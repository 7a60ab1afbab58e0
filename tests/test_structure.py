"""The package's structure (issue 10): who may import whom, one home per registry, and a CLI
whose choices are the registries'. Read from the source with ``ast``, function-level imports
included, so a lazy import cannot hide a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import click
import pytest

from aire_export.cli import cli
from aire_export.graphs.export import PRECISIONS, SCANS
from aire_export.models import importers
from aire_export.prune import COMPAT, METHODS
from aire_export.targets import TARGETS

PACKAGE = Path(__file__).resolve().parents[1] / "aire_export"


def _modules() -> dict[str, Path]:
    """Dotted name → file of every module of the package."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path) -> set[str]:
    """Every aire_export module ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (the walk reads absolute ones)"
            base = node.module or ""
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("aire_export")}


def _subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


IMPORTS = {name: _imports(path) for name, path in _modules().items()}


def _importers_of(target: str, within: str) -> list[str]:
    return sorted(
        f"{name} imports {imp}"
        for name, imports in IMPORTS.items()
        if _subpackage(name) == within
        for imp in imports
        if _subpackage(imp) == target
    )


@pytest.mark.parametrize(
    "package, forbidden",
    [
        ("models", "graphs"),  # the export IR is the contract between them (DESIGN §2 step 6)
        ("graphs", "models"),
        ("runtimes", "validate"),  # runners know nothing of validation (Polygraphy's split)
        ("graphs", "runtimes"),
        ("models", "prune"),
        ("validate", "pipeline"),
        ("prune", "graphs"),
    ],
)
def test_packages_do_not_import_what_sits_above_them(package, forbidden):
    assert _importers_of(forbidden, package) == []


@pytest.mark.parametrize(
    "module", ["ir", "targets", "tolerance", "files", "json_values", "errors", "threads"]
)
def test_the_base_modules_import_nothing_of_the_package_but_errors(module):
    imported = IMPORTS[f"aire_export.{module}"]
    assert {name for name in imported if name.split(".")[:2] != ["aire_export", "errors"]} == set()


def test_the_walk_sees_imports_inside_functions():
    """The check above is only as good as the walk: it must find a lazy import."""
    assert "aire_export.graphs.emulate" in IMPORTS["aire_export.runtimes.ort"]


def _string_constants(path: Path) -> list[tuple[int, str]]:
    """String literals of a module that are not docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and (body := node.body)
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


# the same word, another meaning: the onnx package's version in the report's environment
NOT_TARGETS = {("aire_export/report/schema.py", "onnx")}


def test_target_names_appear_in_one_module():
    places = [
        f"{where}:{line} {value!r}"
        for path in _modules().values()
        if path.name != "targets.py"
        for where in [str(path.relative_to(PACKAGE.parent))]
        for line, value in _string_constants(path)
        if value in TARGETS and (where, value) not in NOT_TARGETS
    ]
    assert places == []


def _choices(command: click.Command, name: str) -> list[str]:
    (param,) = [p for p in command.params if p.name == name]
    return list(param.type.choices)


@pytest.mark.parametrize(
    "command, param, registry",
    [
        ("run", "target", TARGETS),
        ("validate", "target", TARGETS),
        ("export", "target", TARGETS),
        ("profile", "target", TARGETS),
        ("run", "precision", PRECISIONS),
        ("export", "precision", PRECISIONS),
        ("profile", "precision", PRECISIONS),
        ("run", "scan", SCANS),
        ("export", "scan", SCANS),
        ("run", "method", METHODS),
        ("prune", "method", METHODS),
        ("score", "method", METHODS),
        ("run", "score_compat", COMPAT),
        ("sweep", "score_compat", COMPAT),
        ("import", "kind", importers()),
    ],
)
def test_cli_choices_come_from_the_registries(command, param, registry):
    assert _choices(cli.commands[command], param) == list(registry)
