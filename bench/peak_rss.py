"""Run a command and write its peak resident memory, in kB, to a file: ``peak_rss.py OUT CMD [ARG...]``.

The benchmark starts its timed runs through this small process instead of directly. Linux counts, in
the peak memory of a child, the memory of the process it was forked from up to its ``exec``; a child of
the benchmark (which holds N items) would report the benchmark's size. A child of this process starts
from a few MB, so its peak is the command's own (and its descendants').
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> int:
    out, command = Path(sys.argv[1]), sys.argv[2:]
    pid = os.fork()
    if pid == 0:
        os.execvp(command[0], command)
    _, status, usage = os.wait4(pid, 0)
    out.write_text(str(usage.ru_maxrss))
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    raise SystemExit(main())
