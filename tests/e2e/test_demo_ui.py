"""`make demo ARGS=--ui`, seen in a browser: the demo's DAGs, their successful runs and the status page.

Runs the demo's own code path (``devtools.demo.demo`` with ``ui=True``: three Directus instances on
SQLite, two syncs through ``airflow dags test``, then ``airflow standalone``), logs in to the Airflow UI in
headless Chromium (Debian's package, driven by Playwright) and saves a screenshot of a DAG's run history to
``test-artifacts/demo-airflow-ui.png``. With ``DIRECTUS_SYNC_UPDATE_DOCS=1`` it also writes a smaller copy
to ``docs/``, where the README shows it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from devtools.demo import DemoUi, demo
from devtools.devserver import free_port

from .harness import ARTIFACTS, REPO
from .test_operations import CHROMIUM

TIMEOUT_SECONDS = 420
SCREENSHOT = "demo-airflow-ui.png"
VIEWPORT = {"width": 1280, "height": 800}


def test_the_demo_ui_shows_the_sync_dags_a_successful_run_of_each_and_the_status_page(tmp_path: Path) -> None:
    assert CHROMIUM.exists(), "this test needs Debian's chromium: apt-get install chromium (.ci/run does)"
    workdir = tmp_path / "demo"
    started = time.monotonic()
    # The alarm exits first, before the stack stops the processes: it never cuts their cleanup short.
    with contextlib.ExitStack() as stack, alarm(TIMEOUT_SECONDS):
        shown = stack.enter_context(demo(workdir, ui=True, port=free_port()))
        assert shown is not None
        browse(shown)
    assert not processes_under(workdir), "processes the demo started are still running"
    print(f"demo --ui, browsed and stopped in {time.monotonic() - started:.0f} s")
    if os.environ.get("DIRECTUS_SYNC_UPDATE_DOCS") == "1":
        save_for_docs(ARTIFACTS / SCREENSHOT, REPO / "docs" / SCREENSHOT)


def browse(shown: DemoUi) -> None:
    from playwright.sync_api import expect, sync_playwright

    url = shown.server.url
    assert all(not shown.server.api("GET", f"/api/v2/dags/{d}")["is_paused"] for d in shown.dag_ids)
    user, password = shown.server.login()
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_context(viewport=VIEWPORT).new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{url}/")
            page.locator("input[name=username]").fill(user)  # the simple auth manager's login form
            page.locator("input[name=password]").fill(password)
            page.keyboard.press("Enter")
            page.wait_for_url(lambda address: "/auth/login" not in address)

            page.goto(f"{url}/dags")
            for dag_id in shown.dag_ids:
                expect(page.get_by_text(dag_id, exact=True)).to_be_visible()

            for dag_id in reversed(shown.dag_ids):  # the first DAG's page is the one in the screenshot
                page.goto(shown.runs_page(dag_id))
                # The run the demo triggered through the API server, done by the scheduler, as admin.
                by_admin = page.get_by_role("row").filter(has_text="admin")
                expect(by_admin.first).to_contain_text("Success")
            page.screenshot(path=str(ARTIFACTS / SCREENSHOT))

            page.goto(shown.status_page)
            for dag_id in shown.dag_ids:
                row = page.locator(f'tr[data-remote="{dag_id.removeprefix("directus_sync__")}"]')
                expect(row).to_contain_text("success")
        finally:
            browser.close()
    assert (ARTIFACTS / SCREENSHOT).stat().st_size > 10_000


def save_for_docs(screenshot: Path, target: Path) -> None:
    """The README's copy, in 64 colours: a UI screenshot loses nothing visible and a third of its bytes."""
    from PIL import Image

    with Image.open(screenshot) as image:
        image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)


@contextlib.contextmanager
def alarm(seconds: int) -> Iterator[None]:
    """Raise TimeoutError in the block after ``seconds`` (there is no pytest-timeout here)."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"the demo UI test took over {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def processes_under(workdir: Path) -> list[str]:
    """Command lines of running processes whose command line or environment names ``workdir``.

    Every process the demo starts does (Directus's database file, Airflow's home), and no one else's does.
    """
    marker = str(workdir).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline, environ = (proc / "cmdline").read_bytes(), (proc / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if marker in cmdline or marker in environ:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found
