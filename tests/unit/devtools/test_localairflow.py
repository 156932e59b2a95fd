"""Stopping `airflow standalone`: every process of its group, not only the one that was started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

import pytest

from devtools.localairflow import stop_process_group


def test_stopping_the_group_waits_for_children_that_outlive_the_leader() -> None:
    # The leader exits at SIGTERM; its child ignores SIGTERM, as a component busy shutting down would.
    leader = subprocess.Popen(["sh", "-c", "(trap '' TERM; sleep 60) & trap 'exit 0' TERM; wait"],
                              start_new_session=True)
    try:
        stop_process_group(leader, grace=1)
        assert leader.returncode is not None
        with pytest.raises(ProcessLookupError):  # no process of the group is left
            os.killpg(leader.pid, 0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader.pid, signal.SIGKILL)
