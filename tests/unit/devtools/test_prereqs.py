"""The checks `make demo`, `make test` and `make bench` run first: what stops, what only warns, and the words."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from devtools import devserver, prereqs

SCRIPT = Path(prereqs.__file__)


@pytest.mark.parametrize(("text", "expected"), [
    ("v20.20.2\n", (20, 20, 2)),
    ("v22.12.0", (22, 12, 0)),
    ("18.19.1", (18, 19, 1)),
    ("", None),
    ("node: command not found", None),
])
def test_node_versions_are_read_from_what_node_prints(text: str, expected: tuple[int, int, int] | None) -> None:
    assert prereqs.parse_node_version(text) == expected


@pytest.mark.parametrize(("spec", "expected"), [
    (">=22", 22),
    (">=22.0.0", 22),
    (">= 20.19", 20),
    ("^22.12 || >=24", 22),
    ("^20.19.0 || ^22.12.0 || >=24", 20),
    (">=18 <23.1", 18),
    ("22.x", 22),
    ("*", 0),
    ("<24.1", 0),
    ("junk", None),
])
def test_the_lowest_major_of_an_engines_range(spec: str, expected: int | None) -> None:
    assert prereqs.engines_min_major(spec) == expected


def test_node_20_and_21_only_warn_that_they_are_below_directus_engines() -> None:
    for shown in ("v20.20.2", "v21.7.3"):
        problem, warning = prereqs.node_problem(shown, npm_found=True, engines=">=22")
        assert problem is None
        assert warning is not None and "\n" not in warning
        assert warning.startswith(f"warning: Node.js {shown} is below Directus 12.4.0's declared engines")
        assert "(node >=22)" in warning and "works in our tests" in warning


def test_node_below_20_stops_and_says_how_to_get_a_newer_one() -> None:
    problem, warning = prereqs.node_problem("v18.19.1", npm_found=True, engines=">=22")
    assert warning is None
    assert problem is not None and "\n" not in problem
    assert "Node.js v18.19.1 is too old" in problem and "needs 20+" in problem and "install Node.js 22" in problem


def test_node_at_or_above_the_declared_engines_passes_silently() -> None:
    assert prereqs.node_problem("v22.12.0", npm_found=True, engines=">=22") == (None, None)
    assert prereqs.node_problem("v24.1.0", npm_found=True, engines=">=22") == (None, None)


def test_missing_node_or_npm_stops() -> None:
    problem, _ = prereqs.node_problem(None, npm_found=True, engines=">=22")
    assert problem is not None and "`node` is not on PATH" in problem and "install Node.js" in problem
    problem, _ = prereqs.node_problem("v22.1.0", npm_found=False, engines=">=22")
    assert problem is not None and "`npm` is not on PATH" in problem and "apt-get install npm" in problem
    problem, _ = prereqs.node_problem("garbage", npm_found=True, engines=">=22")
    assert problem is not None and "cannot read the Node.js version" in problem


@pytest.mark.parametrize(("version", "stops"), [((3, 11, 7), False), ((3, 13, 0), False), ((3, 10, 13), True),
                                                ((3, 7, 16), True)])
def test_python_below_3_11_stops(version: tuple[int, int, int], stops: bool) -> None:
    problem = prereqs.python_problem(version)
    assert (problem is not None) == stops
    if problem:
        assert "Python 3.11+ is needed" in problem and ".".join(map(str, version)) in problem
        assert "PYTHON=" in problem and "\n" not in problem


def test_postgres_redis_and_chromium_messages_say_how_to_get_them() -> None:
    assert prereqs.postgres_problem(True) is None
    problem = prereqs.postgres_problem(False, "bench")
    assert problem is not None and "127.0.0.1:5432" in problem and "make bench needs it" in problem
    assert "pg_ctlcluster" in problem
    assert prereqs.redis_problem(True) is None
    problem = prereqs.redis_problem(False)
    assert problem is not None and "127.0.0.1:6379" in problem and "redis-server" in problem
    assert prereqs.chromium_problem(True) is None
    problem = prereqs.chromium_problem(False)
    assert problem is not None and "apt-get install chromium" in problem and "/usr/bin/chromium" in problem


def test_the_declared_engines_come_from_the_installed_directus(tmp_path: Path) -> None:
    assert prereqs.declared_node_engines(tmp_path) == ">=22"  # nothing installed: the pinned version's
    package = tmp_path / "node_modules" / "directus"
    package.mkdir(parents=True)
    (package / "package.json").write_text(json.dumps({"version": "12.4.0", "engines": {"node": ">=22.1"}}))
    assert prereqs.declared_node_engines(tmp_path) == ">=22.1"
    (package / "package.json").write_text(json.dumps({"version": "11.0.0", "engines": {"node": ">=18"}}))
    assert prereqs.declared_node_engines(tmp_path) == ">=22"  # another version's: not ours
    (package / "package.json").write_text("{not json")
    assert prereqs.declared_node_engines(tmp_path) == ">=22"


def test_what_each_target_checks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(prereqs, "node_version", lambda: "v20.20.2")
    monkeypatch.setattr(prereqs.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(prereqs, "reachable", lambda address: False)
    monkeypatch.setattr(prereqs, "CHROMIUM", tmp_path / "no-chromium")
    problems, warnings = prereqs.check("demo", tmp_path)
    assert problems == [] and len(warnings) == 1  # the demo needs neither PostgreSQL, Redis nor chromium
    problems, _ = prereqs.check("bench", tmp_path)
    assert [p.split(" ")[0] for p in problems] == ["PostgreSQL"]
    problems, _ = prereqs.check("test", tmp_path)
    assert [p.split(" ")[0] for p in problems] == ["PostgreSQL", "Redis", "Debian's"]


def test_the_script_prints_one_line_per_missing_thing_and_exits_1(monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(prereqs, "check", lambda target, cache: (["PostgreSQL is not answering"], ["warning: old"]))
    assert prereqs.main(["test"]) == 1
    assert capsys.readouterr().err.splitlines() == ["warning: old", "make test: PostgreSQL is not answering"]
    monkeypatch.setattr(prereqs, "check", lambda target, cache: ([], []))
    assert prereqs.main(["demo"]) == 0
    assert capsys.readouterr().err == ""
    assert prereqs.main(["nonsense"]) == 2


def test_the_script_runs_alone_with_the_standard_library() -> None:
    """The Makefile runs it with the machine's python3 before .venv exists: by path, stdlib only."""
    result = subprocess.run([sys.executable, "-S", "-c", f"import runpy; runpy.run_path({str(SCRIPT)!r})"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    tree = ast.parse(SCRIPT.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= set(sys.stdlib_module_names)
    # It must parse on an old Python, to say that Python is too old rather than fail on syntax.
    ast.parse(SCRIPT.read_text(), feature_version=(3, 7))


def test_the_pinned_directus_version_is_the_devservers() -> None:
    assert prereqs.DIRECTUS_VERSION == devserver.DIRECTUS_VERSION
