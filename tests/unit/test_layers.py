"""The package's layers, as its subpackages' docstrings state them: each imports only the layers below it.

From the bottom: ``config`` (the validated row), ``directus`` (the protocol) and ``state`` (the package's
tables), ``engine`` (one run's work), ``airflow`` (the wiring), ``control`` (what operators run). The
development tools (``devtools/``) sit outside the package, which never imports them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "include" / "directus_sync"
MAY_IMPORT = {
    "config": set(),
    "directus": {"config"},
    "state": {"config"},
    "engine": {"config", "directus", "state"},
    "airflow": {"config", "directus", "state", "engine"},
    "control": {"config", "directus", "state", "engine", "airflow"},
}
def _layer(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imported_layers(path: Path) -> Iterator[tuple[str, int]]:
    """The layers of ``directus_sync`` that ``path`` imports, with the line (also imports inside functions)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}: line {node.lineno} imports relatively; name the layer it imports from")
        if isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module] if node.module != "directus_sync" else [f"directus_sync.{a.name}" for a in
                                                                             node.names]
        elif isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] == "devtools":
                yield "devtools", node.lineno
            elif parts[0] == "directus_sync" and len(parts) > 1 and parts[1] != "__version__":
                yield parts[1], node.lineno


# Class paths earlier versions stored in Airflow's database (triggers, deadline callbacks): aliases only.
STORED_PATHS = {"events", "alerts"}
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if _layer(p) not in {"__init__", *STORED_PATHS})


def test_every_module_belongs_to_a_layer() -> None:
    assert {_layer(p) for p in MODULES} == set(MAY_IMPORT)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_its_own_layer_and_those_below(path: Path) -> None:
    layer = _layer(path)
    upward = [f"line {line}: {imported}" for imported, line in _imported_layers(path)
              if imported != layer and imported not in MAY_IMPORT[layer]]
    assert not upward, f"{layer} may import {sorted(MAY_IMPORT[layer]) or 'nothing of ours'}, not:\n" + "\n".join(
        upward)


def test_the_engine_does_not_reach_into_airflow_task_context() -> None:
    """The engine runs one sync's work from plain arguments: the task context stays in the wiring."""
    reached = []
    for path in (PACKAGE / "engine").rglob("*.py"):
        text = path.read_text()
        for needle in ("get_current_context", "airflow.sdk.execution_time", "context[", "ti.xcom"):
            if needle in text:
                reached.append(f"{path.name}: {needle}")
    assert not reached


def test_each_layer_says_what_it_owns_and_may_import() -> None:
    for layer in set(MAY_IMPORT) - {"config"}:
        doc = ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text())) or ""
        assert "May import" in doc, f"directus_sync.{layer} needs a docstring saying what it may import"


def test_class_paths_stored_by_earlier_versions_still_load() -> None:
    from directus_sync import alerts, events
    from directus_sync.airflow.alerts import on_deadline_missed
    from directus_sync.airflow.trigger import DirectusActivityTrigger

    assert events.DirectusActivityTrigger is DirectusActivityTrigger
    assert alerts.on_deadline_missed is on_deadline_missed
    for stored in STORED_PATHS:  # nothing but the alias: no code may grow there
        body = ast.parse((PACKAGE / f"{stored}.py").read_text()).body[1:]
        assert body and all(isinstance(node, ast.ImportFrom | ast.Assign) for node in body)
