"""The Directus npm install shows that it is still going: a line every so often when not on a terminal."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from devtools import devserver


def test_elapsed_time_reads_as_minutes_and_seconds() -> None:
    assert devserver.elapsed_text(42.9) == "42s"
    assert devserver.elapsed_text(75.4) == "1m 15s"
    assert devserver.elapsed_text(301) == "5m 01s"


def test_a_long_step_off_a_terminal_logs_a_line_while_it_runs(caplog: pytest.LogCaptureFixture) -> None:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5); raise SystemExit(3)"],
                               text=True)
    with caplog.at_level(logging.INFO, logger=devserver.log.name):
        assert devserver.wait_showing_progress(process, "installing something", every=0.1) == 3
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("  still installing something (") for m in messages)
    assert messages[-1].startswith("  done installing something in ")
