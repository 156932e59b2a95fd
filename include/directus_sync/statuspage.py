"""The "Directus Sync" page of the Airflow UI: every remote, its last run, lag, recent runs and open issues.

A FastAPI app that the plugin in ``plugins/`` mounts on the API server at ``/directus-sync``. It reads the
remote-sources table and the run ledger through the ``directus_sync_db`` connection, never a Directus
token, and answers only users logged in to Airflow (the UI's session cookie or a bearer token).
"""

from __future__ import annotations

import functools
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.engine import Engine

from directus_sync import ledger, store
from directus_sync.config import BrokenRemote, parse_row

URL_PREFIX = "/directus-sync"
RUNS_CHARTED = 20

try:  # the API server's own authentication; absent only outside an Airflow API server
    from airflow.api_fastapi.core_api.security import GetUserDep
except ImportError:  # pragma: no cover
    GetUserDep = Any  # type: ignore[misc,assignment]


@dataclass
class RemoteStatus:
    """What the page shows for one row of the remote-sources table."""

    name: str
    dag_id: str
    status: str
    source: str
    remote: str
    schedule: str
    problem: str | None = None
    lag: timedelta | None = None
    synced_until: datetime | None = None
    last_run: dict[str, Any] | None = None
    recent: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: int = 0
    conflicts: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "dag_id": self.dag_id, "status": self.status, "source": self.source,
                "remote": self.remote, "schedule": self.schedule, "problem": self.problem,
                "lag_seconds": self.lag.total_seconds() if self.lag is not None else None,
                "synced_until": self.synced_until.isoformat() if self.synced_until else None,
                "last_run": self.last_run, "recent": self.recent, "dead_letters": self.dead_letters,
                "conflicts": self.conflicts}


def collect(engine: Engine, now: datetime | None = None) -> list[RemoteStatus]:
    """Every remote's status, from the table and the ledger, in name order."""
    synced = ledger.last_synced(engine)
    issues = ledger.open_issue_counts(engine)
    history: dict[str, list[dict[str, Any]]] = {}
    for run in ledger.group_runs(ledger.recent_runs(engine, limit=RUNS_CHARTED * 50)):
        history.setdefault(run[0]["remote"], []).append(_summarize(run))
    statuses = []
    for row in store.read_rows(engine):
        parsed = parse_row(row)
        name = str(row.get("name"))
        runs = history.get(name, [])[:RUNS_CHARTED]
        statuses.append(RemoteStatus(
            name=name, dag_id=parsed.dag_id,
            status="broken" if isinstance(parsed, BrokenRemote) else parsed.status.value,
            source=str(row.get("source_conn_id") or ""), remote=str(row.get("remote_conn_id") or ""),
            schedule=str(row.get("schedule") or parsed.schedule),
            problem=parsed.error if isinstance(parsed, BrokenRemote) else None,
            lag=ledger.lag(synced.get(name), now), synced_until=synced.get(name),
            last_run=runs[0] if runs else None, recent=runs,
            dead_letters=issues.get(name, {}).get("dead_letters", 0),
            conflicts=issues.get(name, {}).get("conflicts", 0)))
    return statuses


def _summarize(run: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One run's ledger rows (one per collection) as one line of the page."""
    first = run[0]
    totals = {k: sum(int(r[k]) for r in run) for k in ("created", "updated", "deleted", "skipped", "conflicts",
                                                        "dead_letters")}
    return {"run_id": first["run_id"], "dag_id": first["dag_id"], "status": first["status"],
            "finished_at": first["finished_at"].isoformat(), "duration_seconds": first["duration_seconds"],
            "written": totals["created"] + totals["updated"] + totals["deleted"],
            "full_copy": bool(first.get("full_copy")), "full_reason": first.get("full_reason"), **totals}


# -- rendering ------------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1f2933; }
h1 { font-size: 1.4rem; margin: 0 0 .25rem; }
p.sub { color: #52606d; margin: 0 0 1rem; }
table { border-collapse: collapse; width: 100%; }
th, td { white-space: nowrap; text-align: left; padding: .45rem .6rem; border-bottom: 1px solid #e4e7eb; }
th { font-size: .8rem; text-transform: uppercase; color: #52606d; }
.badge { border-radius: .6rem; padding: .1rem .5rem; font-size: .8rem; color: white; }
.success, .published { background: #2f855a; } .failed, .broken { background: #c53030; }
.draft, .archived, .none { background: #7b8794; }
.problem { color: #c53030; font-size: .85rem; }
a { color: #1a56db; }
"""


def render(statuses: Sequence[RemoteStatus], airflow_root: str = "") -> str:
    """The page as HTML: one table row per remote."""
    rows = "\n".join(_row(s, airflow_root) for s in statuses) or (
        '<tr><td colspan="9">No remotes yet: add rows to the remote-sources table '
        "(<code>directus-sync remote add</code>).</td></tr>")
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Directus Sync</title><style>{STYLE}</style></head>
<body>
<h1>Directus Sync</h1>
<p class="sub">{len(statuses)} remote{"" if len(statuses) == 1 else "s"} &middot; as of {now} &middot;
<a href="{URL_PREFIX}/api/remotes">JSON</a></p>
<table>
<thead><tr><th>remote</th><th>status</th><th>from &rarr; to</th><th>last run</th><th>lag</th>
<th>items per run (last {RUNS_CHARTED})</th><th>dead letters</th><th>conflicts (7 days)</th><th>DAG</th></tr></thead>
<tbody>
{rows}
</tbody></table>
</body></html>"""


def _row(s: RemoteStatus, airflow_root: str) -> str:
    e = html.escape
    problem = f'<div class="problem">{e(s.problem)}</div>' if s.problem else ""
    if s.last_run:
        run = s.last_run
        last = (f'<span class="badge {e(run["status"])}">{e(run["status"])}</span> '
                f'{e(run["finished_at"][:19].replace("T", " "))}<br><small>{run["created"]} created, '
                f'{run["updated"]} updated, {run["deleted"]} deleted, {run["skipped"]} skipped</small>'
                + (f'<br><small class="full">full comparison: {e(run["full_reason"] or "")}</small>'
                   if run["full_copy"] else ""))
    else:
        last = '<span class="badge none">no runs yet</span>'
    lag = _duration(s.lag) if s.lag is not None else "never synced"
    dag_link = f'<a target="_top" href="{e(airflow_root)}/dags/{e(s.dag_id)}">{e(s.dag_id)}</a>'
    return (f'<tr data-remote="{e(s.name)}"><td><b>{e(s.name)}</b>{problem}</td>'
            f'<td><span class="badge {e(s.status)}">{e(s.status)}</span></td>'
            f"<td>{e(s.source)} &rarr; {e(s.remote)}<br><small>{e(s.schedule)}</small></td>"
            f"<td>{last}</td><td>{e(lag)}</td><td>{_chart(s.recent)}</td>"
            f"<td>{s.dead_letters}</td><td>{s.conflicts}</td><td>{dag_link}</td></tr>")


def _chart(runs: Sequence[dict[str, Any]], width: int = 160, height: int = 32) -> str:
    """Items written per run, oldest on the left, as an inline SVG bar chart (red bars: failed runs)."""
    if not runs:
        return ""
    ordered = list(reversed(runs))
    peak = max(max(r["written"] for r in ordered), 1)
    bar = width / RUNS_CHARTED
    bars = []
    for i, r in enumerate(ordered):
        h = max(2.0, height * r["written"] / peak)
        colour = "#2f855a" if r["status"] == ledger.RunStatus.SUCCESS else "#c53030"
        bars.append(f'<rect x="{i * bar:.1f}" y="{height - h:.1f}" width="{bar - 1:.1f}" height="{h:.1f}" '
                    f'fill="{colour}"><title>{html.escape(r["run_id"])}: {r["written"]} items</title></rect>')
    return (f'<svg class="chart" width="{width}" height="{height}" role="img" '
            f'aria-label="items written per run">{"".join(bars)}</svg>')


def _duration(interval: timedelta) -> str:
    seconds = int(interval.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


# -- the app --------------------------------------------------------------------------------------

app = FastAPI(title="Directus Sync", docs_url=None, redoc_url=None, openapi_url=None)


@functools.cache
def _engine() -> Engine:
    return store.engine_for()


def _airflow_root(request: Request) -> str:
    """The UI's path prefix (empty unless Airflow is served under a sub-path)."""
    root: str = request.scope.get("root_path", "")
    return root.removesuffix(URL_PREFIX)


@app.get("/", response_class=HTMLResponse)
def status_page(request: Request, user: GetUserDep) -> str:
    return render(collect(_engine()), _airflow_root(request))


@app.get("/api/remotes")
def status_json(user: GetUserDep) -> list[dict[str, Any]]:
    return [s.as_json() for s in collect(_engine())]
