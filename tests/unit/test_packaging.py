"""The distribution: what the package imports is declared, Airflow through its public paths, one version, MIT."""

from __future__ import annotations

import ast
import functools
import re
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

import pytest
import yaml

import directus_sync
from directus_sync.control import cli

REPO = Path(__file__).resolve().parents[2]
RUNTIME_FILES = sorted([*(REPO / "include" / "directus_sync").rglob("*.py"), *(REPO / "plugins").glob("*.py"),
                        *(REPO / "dags").glob("*.py")])

# Airflow modules the package may import outside the public ``airflow.sdk`` (and ``airflow.providers.*``, each
# provider's public API), each for want of an sdk path in Airflow 3.3.
NON_SDK_AIRFLOW_IMPORTS = {
    "airflow.triggers.base": "BaseEventTrigger and TriggerEvent: the sdk has no trigger classes",
    "airflow.plugins_manager": "AirflowPlugin: the sdk has no public plugin class",
    "airflow.api_fastapi": "the status page asks the API server's auth manager (no sdk equivalent)",
    "airflow.api_fastapi.core_api.security": "the status page's user of a request (no sdk equivalent)",
    "airflow.sdk.execution_time.context": "the activity asset's state store: the asset is no inlet or outlet",
}
PUBLIC_SDK_MODULES = {"airflow.sdk", "airflow.sdk.exceptions"}


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imports(path: Path) -> Iterator[tuple[str, bool]]:
    """Every absolute import of a file, with whether it is guarded by ``except ImportError``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                handler.type is not None and "ImportError" in ast.unparse(handler.type) for handler in node.handlers):
            guarded.update(id(child) for statement in node.body for child in ast.walk(statement))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, id(node) in guarded) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, id(node) in guarded


def _third_party(module: str) -> bool:
    top = module.split(".")[0]
    return top not in sys.stdlib_module_names and top not in {"__future__", "directus_sync"}


@functools.cache
def _distributions_of(module: str) -> set[str]:
    """The distributions that provide ``module``: a provider's own for ``airflow.providers.<name>``."""
    parts = module.split(".")
    if parts[0] == "airflow":
        if parts[1:2] == ["providers"] and len(parts) > 2:
            return {f"apache-airflow-providers-{parts[2].replace('_', '-')}"}
        return {"apache-airflow"}
    return {_normalized(d) for d in _packages_distributions().get(parts[0], [])}


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    return dict(packages_distributions())


def test_the_package_has_imports_to_check() -> None:
    imports = {module for path in RUNTIME_FILES for module, _ in _imports(path)}
    assert {"aiohttp", "fastapi", "urllib3.util.retry", "airflow.sdk"} <= imports


def test_every_third_party_import_is_a_declared_dependency(pyproject: dict[str, Any]) -> None:
    project = pyproject["project"]
    required = {_normalized(_name(r)) for r in project["dependencies"]}
    optional = {_normalized(_name(r)) for extra in project["optional-dependencies"].values() for r in extra}
    undeclared = []
    for path in RUNTIME_FILES:
        for module, guarded in _imports(path):
            if not _third_party(module):
                continue
            distributions = _distributions_of(module)
            # An import that survives ImportError may come from an extra; any other must be a dependency.
            declared = required | optional if guarded else required
            if not distributions & declared:
                undeclared.append(f"{path.relative_to(REPO)}: {module} ({', '.join(sorted(distributions)) or '?'})")
    assert not undeclared, "imported but not in [project].dependencies:\n" + "\n".join(undeclared)


def test_airflow_is_imported_through_airflow_sdk_or_an_allowed_path() -> None:
    outside = []
    for path in RUNTIME_FILES:
        for module, _ in _imports(path):
            if module.split(".")[0] != "airflow" or module in PUBLIC_SDK_MODULES:
                continue
            if module.startswith("airflow.providers.") or module in NON_SDK_AIRFLOW_IMPORTS:
                continue
            outside.append(f"{path.relative_to(REPO)}: {module}")
    assert not outside, "use airflow.sdk (or allow the path with its reason):\n" + "\n".join(outside)


def test_each_allowed_non_sdk_import_is_still_used() -> None:
    used = {module for path in RUNTIME_FILES for module, _ in _imports(path)}
    assert set(NON_SDK_AIRFLOW_IMPORTS) <= used


def test_the_version_has_one_source_and_the_image_tag_follows_it(pyproject: dict[str, Any]) -> None:
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "directus_sync.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|(a|b|rc)\d+)?", directus_sync.__version__)
    compose = yaml.safe_load((REPO / "docker-compose.airflow.yml").read_text())
    assert compose["x-airflow-common"]["image"] == f"directus-sync-airflow:{directus_sync.__version__}"
    assert cli.package_version()  # installed metadata, else __version__


def test_the_license_file_is_the_declared_mit_license(pyproject: dict[str, Any]) -> None:
    assert pyproject["project"]["license"] == "MIT"
    assert pyproject["project"]["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 directus-sync contributors" in text
    assert "COPY" in (REPO / "Dockerfile").read_text() and " LICENSE " in (REPO / "Dockerfile").read_text()
