"""The "Directus Sync" page of the Airflow UI: every remote, its last run, lag, recent runs and open issues.

A FastAPI app that the plugin in ``plugins/`` mounts on the API server at ``/directus-sync``. It reads the
remote-sources table and the run ledger through the ``directus_sync_db`` connection, never a Directus
token, and answers only users logged in to Airflow (the UI's session cookie or a bearer token).

It fails closed: without Airflow's authentication (its import failed, or the auth manager is not set up)
every request gets 503, never the page. Each user sees only the remotes whose sync DAG that user may read
(a run only when its DAG may be read too), as Airflow's auth manager decides: whichever auth manager the
deployment uses (simple, FAB, Keycloak, ...) is asked, through ``filter_authorized_dag_ids``.
"""

from __future__ import annotations

import functools
import html
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from airflow.sdk import conf as airflow_conf
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy.engine import Engine

from directus_sync.config import BrokenRemote, dag_id_for, parse_row
from directus_sync.state import ledger, sources, tables

URL_PREFIX = "/directus-sync"
RUNS_CHARTED = 20
TABLE_DAG_NAME = "remote_sources"  # the configuration-error DAG of an unreadable table (see factory.py)
AUTH_UNAVAILABLE = "Airflow authentication is unavailable"

log = logging.getLogger(__name__)

# The API server's own authentication. No fallback: without it the app refuses every request (see below).
# Not airflow.sdk: the auth manager and the user of a request exist only in the API server (no sdk path).
_auth_import_error: ImportError | None = None
try:
    from airflow.api_fastapi import app as airflow_app
    from airflow.api_fastapi.core_api.security import get_user
except ImportError as exc:
    _auth_import_error = exc
    log.error("directus-sync status page: %s, so it refuses every request: %s", AUTH_UNAVAILABLE, exc)

    async def get_user() -> Any:  # type: ignore[misc]  # never reached: the middleware refuses first
        raise HTTPException(status_code=503, detail=AUTH_UNAVAILABLE)


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
    """Every remote's status, from the table and the ledger, in name order.

    An unreadable table is one broken status, named and with the DAG id of the configuration-error DAG
    the DAG file makes of it (``remote_sources``).
    """
    try:
        rows = sources.read_rows(engine)
    except Exception as exc:
        problem = f"cannot read the remote-sources table: {str(exc).splitlines()[0] if str(exc) else exc!r}"
        return [RemoteStatus(name=TABLE_DAG_NAME, dag_id=dag_id_for(TABLE_DAG_NAME), status="broken", source="",
                             remote="", schedule="", problem=problem)]
    synced = ledger.last_synced(engine)
    issues = ledger.open_issue_counts(engine)
    history: dict[str, list[dict[str, Any]]] = {}
    for run in ledger.group_runs(ledger.recent_runs(engine, limit=RUNS_CHARTED * 50)):
        history.setdefault(run[0]["remote"], []).append(_summarize(run))
    statuses = []
    for row in rows:
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


def readable_by(statuses: Sequence[RemoteStatus], dag_ids: set[str]) -> list[RemoteStatus]:
    """The remotes whose sync DAG is in ``dag_ids``, with only the runs of DAGs in ``dag_ids``."""
    shown = []
    for s in statuses:
        if s.dag_id not in dag_ids:
            continue
        recent = [r for r in s.recent if r["dag_id"] in dag_ids]
        shown.append(replace(s, recent=recent, last_run=recent[0] if recent else None))
    return shown


def dag_ids_asked(statuses: Sequence[RemoteStatus]) -> set[str]:
    """Every DAG id the page may show: each remote's sync DAG and the DAGs of its runs (``__reconcile``)."""
    return {s.dag_id for s in statuses} | {r["dag_id"] for s in statuses for r in s.recent}


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
        '<tr><td colspan="9">No remotes to show: none yet, or none whose DAG you may read. Rows are added '
        "to the remote-sources table (<code>directus-sync remote add</code>).</td></tr>")
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


@app.middleware("http")
async def _fail_closed(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Every request, whatever its path, gets 503 when Airflow's authentication could not be imported."""
    if _auth_import_error is not None:
        return JSONResponse({"detail": AUTH_UNAVAILABLE}, status_code=503)
    return await call_next(request)


UserDep = Annotated[Any, Depends(get_user)]  # Airflow's BaseUser; never a query parameter


@functools.cache
def _engine() -> Engine:
    return tables.engine_for()


def _airflow_root(request: Request) -> str:
    """The UI's path prefix (empty unless Airflow is served under a sub-path)."""
    root: str = request.scope.get("root_path", "")
    return root.removesuffix(URL_PREFIX)


def readable_dag_ids(user: Any, dag_ids: set[str]) -> set[str]:
    """Those of ``dag_ids`` that ``user`` may read (GET), as the deployment's auth manager decides.

    Outside multi-team mode each DAG id is asked about directly (``filter_authorized_dag_ids``), so draft
    rows, which make no DAG, and DAGs not parsed yet are decided too. In multi-team mode a DAG's team comes
    from its bundle, known only for parsed DAGs: then Airflow's own DAG list answer is used
    (``get_authorized_dag_ids``), and a DAG not parsed yet is shown to nobody. Any failure refuses (503).
    """
    if _auth_import_error is not None:  # pragma: no cover - the middleware answered already
        raise HTTPException(status_code=503, detail=AUTH_UNAVAILABLE)
    try:
        auth_manager = airflow_app.get_auth_manager()
        if airflow_conf.getboolean("core", "multi_team", fallback=False):
            return dag_ids & set(auth_manager.get_authorized_dag_ids(user=user, method="GET"))
        return set(auth_manager.filter_authorized_dag_ids(dag_ids=set(dag_ids), user=user, method="GET"))
    except Exception as exc:
        log.exception("directus-sync status page: the auth manager could not decide")
        raise HTTPException(status_code=503, detail=AUTH_UNAVAILABLE) from exc


def _shown(user: Any) -> list[RemoteStatus]:
    statuses = collect(_engine())
    return readable_by(statuses, readable_dag_ids(user, dag_ids_asked(statuses)))


@app.get("/", response_class=HTMLResponse)
def status_page(request: Request, user: UserDep) -> str:
    return render(_shown(user), _airflow_root(request))


@app.get("/api/remotes")
def status_json(user: UserDep) -> list[dict[str, Any]]:
    return [s.as_json() for s in _shown(user)]
