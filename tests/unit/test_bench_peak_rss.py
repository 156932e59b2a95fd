"""The benchmark's memory figure is the measured command's own, not the benchmark's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PEAK_RSS = Path(__file__).resolve().parents[2] / "bench" / "peak_rss.py"


def peak_mb(tmp_path: Path, *command: str) -> float:
    out = tmp_path / "peak"
    assert subprocess.call([sys.executable, str(PEAK_RSS), str(out), *command]) == 0
    return int(out.read_text()) / 1024


def test_a_small_command_started_by_a_large_process_reports_its_own_small_peak(tmp_path: Path) -> None:
    held = bytearray(300 * 1024 * 1024)  # what the benchmark holds: N items
    held[::4096] = b"x" * len(held[::4096])  # touch every page so that it is resident
    assert peak_mb(tmp_path, "true") < 50


def test_the_peak_of_a_command_that_allocates_is_reported(tmp_path: Path) -> None:
    allocate = "b = bytearray(200 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])"
    assert peak_mb(tmp_path, sys.executable, "-c", allocate) > 200
