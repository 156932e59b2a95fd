"""The benchmark script keeps working: it runs at a small N and writes its reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .harness import REPO


def test_the_benchmark_runs_at_a_small_size(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(REPO / "bench" / "sync_bench.py"), "--n", "200", "--out",
                             str(tmp_path)], cwd=REPO,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    for phase in ("create", "update", "delete"):
        assert f"N=200 {phase}" in result.stdout
    figures = json.loads((tmp_path / "results.json").read_text())
    assert [r["n"] for r in figures["sizes"]] == [200]
    assert set(figures["sizes"][0]["phases"]) == {"create", "update", "delete"}
    assert all(f["directus_sync_items_per_s"] > 0 for f in figures["sizes"][0]["phases"].values())
    assert all(f["peak_rss_mb"] > 50 for f in figures["sizes"][0]["phases"].values())  # an Airflow process
    # The no-change run found its window empty, and the machine's load is on record.
    assert figures["sizes"][0]["no_change_run"]["activity_rows"] == 0
    assert len(figures["machine_before"]["load_average"]) == 3
    assert (tmp_path / "throughput.png").stat().st_size > 0


def test_the_apply_benchmark_runs_at_a_small_size() -> None:
    result = subprocess.run([sys.executable, str(REPO / "bench" / "apply_vs_raw.py"), "--n", "200", "--reps", "1"],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if " | median apply/raw " in line}
    assert set(lines) == {"create", "update", "delete"}


def test_the_parse_benchmark_runs_at_a_small_size(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(REPO / "bench" / "parse_bench.py"), "--rows", "5", "--repeat", "1",
                             "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    figures = json.loads((tmp_path / "results.json").read_text())
    assert figures["rows"] == 5 and figures["dags"] == 7  # two of the five rows have a reconcile DAG
    assert set(figures["cases"]) == {"full cold", "full warm", "worker"}
    assert all(c["dagbag"]["median"] > 0 for c in figures["cases"].values())
    for case in ("full cold", "full warm", "worker"):
        assert f"  {case:<9} DagBag median" in result.stdout


def test_the_relational_benchmark_sets_up_and_writes_its_collections(tmp_path: Path) -> None:
    """The relational shape's collections, sync row and ceilings (the sync runs are the shape-blind code the
    first test runs; skipping them skips the wait for a quiet window)."""
    result = subprocess.run([sys.executable, str(REPO / "bench" / "sync_bench.py"), "--n", "50", "--shapes",
                             "relational", "--methods", "ceiling", "--out", str(tmp_path)], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    figures = json.loads((tmp_path / "results.json").read_text())
    [size] = figures["sizes"]
    assert (size["n"], size["shape"]) == (50, "relational")
    # 50 authors, 5 tags, 50 articles, 50 links; then 50 articles and 50 links; then 50 articles and 50 authors.
    assert {p: f["items"] for p, f in size["phases"].items()} == {"create": 155, "update": 100, "delete": 100}
    assert all(f["ceiling_items_per_s"] > 0 for f in size["phases"].values())
    assert "N=50 relational create" in result.stdout


def test_the_files_benchmark_runs_at_a_small_size() -> None:
    result = subprocess.run([sys.executable, str(REPO / "bench" / "files_bench.py"), "--small", "2", "--small-mb",
                             "0.1", "--large", "1", "--large-mb", "1", "--reps", "1"],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if " | library/raw " in line}
    assert set(lines) == {"small", "large", "all"}
    assert "peak RSS, median: library" in result.stdout
