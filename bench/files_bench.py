"""Copying files: the library's ``copy_files`` against a raw loop, interleaved on the same two instances.

    .venv/bin/python bench/files_bench.py --small 20 --small-mb 1 --large 2 --large-mb 30 --reps 3

Starts two Directus 12.4.0 instances on PostgreSQL, gives both an ``articles`` collection with an image
field (so that ``provision`` grants the non-admin sync user ``directus_files``), uploads ``--small`` files
of ``--small-mb`` MB and ``--large`` of ``--large-mb`` MB to the source (random bytes, a title and a
description each), then copies all of them to the remote, alternately, ``--reps`` times each:

- **library**: ``copy_files(source, remote, ids)`` through ``DirectusHook``: both instances' rows read,
  then per file the binary streamed from ``/assets`` into one multipart ``POST /files`` (never held whole),
  and the source's upload time set on the copy (what lets a two-way setup send nothing back);
- **raw**: the rows read once, then per file ``GET /assets/{id}`` and ``POST /files`` with the same id and
  metadata (title, description, filename) through ``requests``' own multipart encoding, which reads the
  whole binary into memory first: the fastest simple loop, not a bounded one.

Both run as the sync users (source and remote), sequentially, each in a process of its own started through
``bench/peak_rss.py``, so that its peak memory is its own; each timing is taken inside that process (imports
and start-up excluded). The remote's copies are deleted before every rep. Prints files/s and MB/s of each
rep, for the small files and the large ones apart (one ``copy_files`` call, or one raw loop, each) and
together, the medians and the ratio library/raw of the medians, with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

# devtools/ (local Directus and Airflow) sits beside bench/ and is not installed: import it from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devtools.devserver import (
    DirectusInstance,
    PostgresDatabase,
    default_cache_dir,
    ensure_directus,
    exit_on_sigterm,
    key_field,
    plain_field,
    running_instances,
)
from directus_sync.directus.provision import provision

PEAK_RSS = Path(__file__).resolve().parent / "peak_rss.py"
COLLECTION = "files_bench_articles"
CONNS = {"source": "files_bench_source", "remote": "files_bench_remote"}
MB = 1024 * 1024
RAW_FIELDS = ("title", "description", "filename_download")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=20, help="how many small files")
    parser.add_argument("--small-mb", type=float, default=1.0, help="size of a small file, MB")
    parser.add_argument("--large", type=int, default=2, help="how many large files")
    parser.add_argument("--large-mb", type=float, default=30.0, help="size of a large file, MB")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--child", choices=("library", "raw"), help=argparse.SUPPRESS)
    parser.add_argument("--ids", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one timed copy of each group, in a process of its own
        groups = json.loads(args.ids.read_text())
        copy = copy_library if args.child == "library" else copy_raw
        print(json.dumps({group: copy(ids) for group, ids in groups.items() if ids}))
        return 0
    exit_on_sigterm()
    tag = os.getpid()
    databases = [(f"files_{side}_{tag}", PostgresDatabase(f"directus_sync_files_bench_{tag}_{side}")) for side in "ab"]
    try:
        with tempfile.TemporaryDirectory(prefix="directus-sync-files-bench-") as tmp, \
                running_instances(ensure_directus(default_cache_dir()), databases,
                                  Path(tmp) / "directus") as (source, remote):
            measure(source, remote, Path(tmp), args)
    finally:
        for _, database in databases:
            database.drop()
    return 0


def measure(source: DirectusInstance, remote: DirectusInstance, folder: Path, args: argparse.Namespace) -> None:
    for instance, side in ((source, "source"), (remote, "remote")):
        setup(instance, f"files-bench-{side}")
        os.environ[f"AIRFLOW_CONN_{CONNS[side].upper()}"] = json.dumps(
            {"conn_type": "http", "host": instance.url, "password": f"files-bench-{side}"})
        os.environ[f"FILES_BENCH_{side.upper()}"] = json.dumps({"url": instance.url, "token": f"files-bench-{side}"})
    groups = {"small": [round(args.small_mb * MB)] * args.small, "large": [round(args.large_mb * MB)] * args.large}
    ids = {group: [upload(source, folder, f"{group}-{n}", size) for n, size in enumerate(sizes)]
           for group, sizes in groups.items()}
    every = [i for group in ids.values() for i in group]
    ids_path = folder / "ids.json"
    ids_path.write_text(json.dumps(ids))
    mb = {group: sum(sizes) / MB for group, sizes in groups.items()}
    print(f"{len(every)} files ({args.small} x {args.small_mb:g} MB, {args.large} x {args.large_mb:g} MB); load "
          f"average at start {load()}", flush=True)
    seconds: dict[str, dict[str, list[float]]] = {m: {g: [] for g in (*groups, "all")} for m in ("library", "raw")}
    peaks: dict[str, list[float]] = {"library": [], "raw": []}
    for rep in range(args.reps):
        for method in ("library", "raw") if rep % 2 == 0 else ("raw", "library"):
            clear(remote, every)
            timed, peak = run_child(method, ids_path, folder)
            verify(source, remote, every, [size for sizes in groups.values() for size in sizes],
                   stamped=method == "library")
            timed["all"] = sum(timed.values())
            for group, value in timed.items():
                seconds[method][group].append(value)
            peaks[method].append(peak)
            print(f"  rep {rep + 1} {method:<7} " + ", ".join(f"{g} {t:.2f} s" for g, t in timed.items())
                  + f"; peak {peak:.0f} MB; load {load()}", flush=True)
    counts = {**{g: len(i) for g, i in ids.items()}, "all": len(every)}
    mb["all"] = sum(mb.values())
    for group in counts:
        if not counts[group]:
            continue
        parts = []
        for method in ("library", "raw"):
            median = statistics.median(seconds[method][group])
            parts.append(f"{method} {counts[group] / median:6.2f} files/s {mb[group] / median:6.1f} MB/s")
        per_rep = [r / lib for lib, r in zip(seconds["library"][group], seconds["raw"][group], strict=True)]
        ratio = statistics.median(seconds["raw"][group]) / statistics.median(seconds["library"][group])
        print(f"{group:<5} ({counts[group]} files, {mb[group]:.0f} MB): " + " | ".join(parts)
              + f" | library/raw {ratio:.2f} (per rep {', '.join(f'{r:.2f}' for r in per_rep)})")
    print(f"peak RSS, median: library {statistics.median(peaks['library']):.0f} MB, raw "
          f"{statistics.median(peaks['raw']):.0f} MB; load average at end {load()}", flush=True)


def setup(instance: DirectusInstance, token: str) -> None:
    """An articles collection with an image field, as the Data Studio makes it, and the sync user: provision
    grants ``directus_files`` because a listed field references it."""
    instance.create_collection(COLLECTION, [key_field(), plain_field("title")])
    instance.create_file_field(COLLECTION, "image")
    provision(instance.url, instance.admin_token, {COLLECTION: ["title", "image"]}, token=token)


def upload(instance: DirectusInstance, folder: Path, n: str, size: int) -> str:
    """One file of ``size`` random bytes on ``instance`` (as its admin), written to disk and streamed up."""
    path = folder / f"upload-{n}.bin"
    with path.open("wb") as out:
        for start in range(0, size, MB):
            out.write(os.urandom(min(MB, size - start)))
    with path.open("rb") as body:
        response = requests.post(f"{instance.url}/files", headers={"Authorization": f"Bearer {instance.admin_token}"},
                                 data={"title": f"File {n}", "description": f"{size} random bytes"},
                                 files={"file": (f"file-{n}.bin", body, "application/octet-stream")}, timeout=600)
    path.unlink()
    response.raise_for_status()
    return str(response.json()["data"]["id"])


def clear(remote: DirectusInstance, ids: list[str]) -> None:
    """Delete the remote's copies (rows and binaries), so that each rep creates them all."""
    present = remote.api("GET", "/files", params={"filter": json.dumps({"id": {"_in": ids}}), "fields": "id",
                                                  "limit": len(ids)}) or []
    if present:
        remote.api("DELETE", "/files", json=[row["id"] for row in present])


def verify(source: DirectusInstance, remote: DirectusInstance, ids: list[str], sizes: list[int],
           stamped: bool) -> None:
    """Every file arrived, with the source's size and title (and upload time: ``stamped``)."""
    fields = "id,filesize,title" + (",uploaded_on" if stamped else "")
    params = {"filter": json.dumps({"id": {"_in": ids}}), "fields": fields, "limit": len(ids)}
    mine = {r["id"]: r for r in source.api("GET", "/files", params=params)}
    theirs = {r["id"]: r for r in remote.api("GET", "/files", params=params) or []}
    if theirs != mine or sorted(int(r["filesize"]) for r in mine.values()) != sorted(sizes):
        raise SystemExit(f"the remote's copies differ: {len(theirs)} of {len(mine)} files")


def run_child(method: str, ids_path: Path, folder: Path) -> tuple[dict[str, float], float]:
    """One copy of each group by ``method`` in a process of its own; the seconds of each (measured inside)
    and the process's peak memory in MB."""
    peak = folder / "peak_rss_kb"
    result = subprocess.run([sys.executable, str(PEAK_RSS), str(peak), sys.executable, __file__, "--child", method,
                             "--ids", str(ids_path)], capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise SystemExit(f"the {method} copy failed:\n{(result.stdout + result.stderr)[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1]), int(peak.read_text()) / 1024


def copy_library(ids: list[str]) -> float:
    from directus_sync.directus.hook import DirectusHook
    from directus_sync.engine.files import copy_files

    source, remote = DirectusHook(CONNS["source"]), DirectusHook(CONNS["remote"])
    started = time.perf_counter()
    done = copy_files(source, remote, ids)
    seconds = time.perf_counter() - started
    if done.created != len(ids) or done.failed:
        raise SystemExit(f"copy_files: {done.describe()}")
    return seconds


def copy_raw(ids: list[str]) -> float:
    source, remote = (json.loads(os.environ[f"FILES_BENCH_{side}"]) for side in ("SOURCE", "REMOTE"))
    session = requests.Session()
    started = time.perf_counter()
    rows = get(session, source, "/files", {"filter": json.dumps({"id": {"_in": ids}}),
                                           "fields": "id,type," + ",".join(RAW_FIELDS), "limit": len(ids)}).json()
    for row in rows["data"]:
        with get(session, source, f"/assets/{row['id']}", stream=True) as binary:
            fields = {"id": row["id"], **{f: row[f] for f in RAW_FIELDS if row.get(f) is not None}}
            response = session.post(f"{remote['url']}/files", data=fields, timeout=600,
                                    files={"file": (row["filename_download"], binary.raw, row["type"])},
                                    headers={"Authorization": f"Bearer {remote['token']}"})
            response.raise_for_status()
    return time.perf_counter() - started


def get(session: requests.Session, instance: dict[str, str], path: str, params: dict[str, Any] | None = None,
        stream: bool = False) -> requests.Response:
    response = session.get(instance["url"] + path, params=params, stream=stream, timeout=600,
                           headers={"Authorization": f"Bearer {instance['token']}"})
    response.raise_for_status()
    return response


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    raise SystemExit(main())
