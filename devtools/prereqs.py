"""What ``make demo``, ``make test`` and ``make bench`` need from the machine, checked before anything is installed.

``python3 devtools/prereqs.py demo|test|bench`` prints one line for each missing prerequisite, saying
what is missing and how to get it, and exits 1; a Node.js that runs Directus here although it is below
Directus's declared ``engines`` gets a one-line warning only. It runs with the machine's ``python3``,
before ``.venv`` exists: the standard library only, and it must parse on an old Python so that it can say
that Python is too old.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

PYTHON_MIN = (3, 11)
DIRECTUS_VERSION = "12.4.0"  # the same as devserver.DIRECTUS_VERSION (a unit test holds them together)
# directus@12.4.0's package.json declares "engines": {"node": ">=22"}; it runs on Node.js 20 in our tests.
DIRECTUS_NODE_ENGINES = ">=22"
NODE_MIN_MAJOR = 20  # below this, stop
POSTGRES = ("127.0.0.1", 5432)
REDIS = ("127.0.0.1", 6379)  # the Celery broker of tests/e2e/test_distributed.py
CHROMIUM = Path("/usr/bin/chromium")  # where tests/e2e/test_operations.py looks for it
TARGETS = ("demo", "test", "bench")


def python_problem(version: tuple[int, ...]) -> str | None:
    if tuple(version[:2]) >= PYTHON_MIN:
        return None
    found = ".".join(str(part) for part in version[:3])
    return (f"Python {PYTHON_MIN[0]}.{PYTHON_MIN[1]}+ is needed, {sys.executable} is {found}: install a newer one "
            f"(Debian: apt-get install python3; or pyenv) and run make with PYTHON=/path/to/python3.11")


def parse_node_version(text: str) -> tuple[int, int, int] | None:
    """``v20.20.2`` (what ``node --version`` prints) as (20, 20, 2); None when it is not a version."""
    match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", text.strip())
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def engines_min_major(spec: str) -> int | None:
    """The lowest Node.js major a package.json ``engines.node`` range admits: ``>=22`` and ``^22.12 || >=24``
    give 22, ``>=18 <23`` gives 18, ``*`` gives 0; None when it is not a range."""
    lows: list[int] = []
    for alternative in spec.split("||"):
        comparators = re.findall(r"(<=|>=|<|>|\^|~|=)?\s*v?(\d+)(?:\.[0-9xX*]+)*", alternative)
        if not comparators and alternative.strip() not in ("*", "x", ""):
            return None
        lows.append(max((int(major) for op, major in comparators if op not in ("<", "<=")), default=0))
    return min(lows) if lows else None


def declared_node_engines(cache_dir: Path) -> str:
    """``engines.node`` of the installed Directus (its package.json in the cache), else the pinned version's."""
    package_json = cache_dir / "node_modules" / "directus" / "package.json"
    try:
        data = json.loads(package_json.read_text())
        if data.get("version") == DIRECTUS_VERSION and isinstance(data.get("engines", {}).get("node"), str):
            return str(data["engines"]["node"])
    except (OSError, ValueError, AttributeError):
        pass
    return DIRECTUS_NODE_ENGINES


def node_problem(version_text: str | None, npm_found: bool, engines: str) -> tuple[str | None, str | None]:
    """(problem that stops, warning that does not) for the Node.js that ``node --version`` printed."""
    how = "install Node.js 22 with npm from nodejs.org or NodeSource (Debian 12's own nodejs is 18, too old)"
    if version_text is None:
        return f"Node.js is needed to run Directus {DIRECTUS_VERSION} locally and `node` is not on PATH: {how}", None
    version = parse_node_version(version_text)
    if version is None:
        return f"cannot read the Node.js version from `node --version` ({version_text.strip()!r}): {how}", None
    shown = "v{}.{}.{}".format(*version)
    if version[0] < NODE_MIN_MAJOR:
        return (f"Node.js {shown} is too old to run Directus {DIRECTUS_VERSION} (needs {NODE_MIN_MAJOR}+, "
                f"declares node {engines}): {how}"), None
    if not npm_found:
        return (f"npm is needed to install Directus {DIRECTUS_VERSION} and `npm` is not on PATH: it comes with "
                "Node.js from nodejs.org or NodeSource; beside Debian's nodejs, apt-get install npm"), None
    wanted = engines_min_major(engines)
    if wanted is not None and version[0] < wanted:
        return None, (f"warning: Node.js {shown} is below Directus {DIRECTUS_VERSION}'s declared engines "
                      f"(node {engines}); it works in our tests, Node.js {wanted}+ is what Directus supports")
    return None, None


def postgres_problem(reachable: bool, target: str = "test") -> str | None:
    if reachable:
        return None
    host, port = POSTGRES
    return (f"PostgreSQL is not answering on {host}:{port} (make {target} needs it, user postgres with trust auth): "
            "start it (Debian: apt-get install postgresql, then pg_ctlcluster <version> main start; "
            ".ci/run starts it)")


def redis_problem(reachable: bool) -> str | None:
    if reachable:
        return None
    host, port = REDIS
    return (f"Redis is not answering on {host}:{port} (the distributed test's Celery broker): start it "
            "(Debian: apt-get install redis-server, then redis-server --daemonize yes)")


def chromium_problem(found: bool) -> str | None:
    if found:
        return None
    return (f"Debian's chromium is needed at {CHROMIUM} for the status page's browser test: "
            "apt-get install chromium (.ci/run installs it)")


def node_version() -> str | None:
    node = shutil.which("node")
    if node is None:
        return None
    try:
        return subprocess.run([node, "--version"], capture_output=True, text=True, timeout=20).stdout or ""
    except (OSError, subprocess.SubprocessError):
        return ""


def reachable(address: tuple[str, int], timeout: float = 3) -> bool:
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False


def check(target: str, cache_dir: Path) -> tuple[list[str], list[str]]:
    """(problems, warnings) of this machine for ``make <target>``."""
    problems: list[str | None] = [python_problem(sys.version_info[:3])]
    problem, warning = node_problem(node_version(), shutil.which("npm") is not None, declared_node_engines(cache_dir))
    problems.append(problem)
    if target in ("test", "bench"):
        problems.append(postgres_problem(reachable(POSTGRES), target))
    if target == "test":
        problems.append(redis_problem(reachable(REDIS)))
        problems.append(chromium_problem(CHROMIUM.exists()))
    return [p for p in problems if p], [warning] if warning else []


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in TARGETS:
        print(f"usage: python3 {Path(__file__).name} {'|'.join(TARGETS)}", file=sys.stderr)
        return 2
    cache_dir = Path(os.environ.get("DIRECTUS_SYNC_CACHE", ".cache/directus"))
    problems, warnings = check(args[0], cache_dir)
    for warning in warnings:
        print(warning, file=sys.stderr)
    for problem in problems:
        print(f"make {args[0]}: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
