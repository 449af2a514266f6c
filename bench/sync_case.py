"""Bench case: `sync` of 1% changes next to the full `execute` of the same data, one run.

    python -m bench.sync_case [--records 1000000] [--changed-percent 1] [--target DSN]
                              [--out docs/benchmarks-sync.md]

In one child process (its own peak RSS): a private copy of the generated source
(`SampleSpec.scaled(N)`, shared with bench.run's scale run), `execute` of every component
into a fresh database as `llmspell_app` (timed), then an independent writer changes the
copy — per table, 1% of rows: most updated (half with `updated_at` moved, half without),
some deleted, as many inserted — then `sync` (timed) and a second `sync` with nothing to do
(timed). bench.run calls `run_case` too; this module runs it on its own as well.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path

RESULT_TAG = "SYNC_RESULT "


def change_source(path: Path, percent: float) -> int:
    """llmspell's writes between two runs: `percent` % of each table's rows; returns how
    many records changed."""
    every = max(1, round(100 / percent))
    c = sqlite3.connect(path)
    n = 0
    edits = {
        "agent_states": "state_data = json_set(state_data, '$.bench_sync', rowid)",
        "workflow_states": "current_step = current_step + 1",
        "sessions": "session_data = json_set(session_data, '$.bench_sync', rowid)",
        "kv_store": "value = CAST('bench-sync-' || rowid AS BLOB)",
    }
    stamp = {"agent_states": "updated_at", "sessions": "updated_at", "kv_store": "updated_at"}
    for table, change in edits.items():
        # 80% of the changes: updates, half of them leaving the timestamp as it was
        n += c.execute(f"UPDATE {table} SET {change} WHERE rowid % ? = 1", (every,)).rowcount
        if table in stamp:
            c.execute(
                f"UPDATE {table} SET {stamp[table]} = {stamp[table]} + 1 WHERE rowid % ? = 1 "
                "AND rowid % 2 = 0",
                (every,),
            )
        # 10%: deletes; 10%: inserts (copies of other rows under new keys)
        n += c.execute(f"DELETE FROM {table} WHERE rowid % ? = 2", (every * 8,)).rowcount
    n += c.execute(
        "INSERT INTO agent_states (tenant_id, agent_id, agent_type, state_data, schema_version, "
        "data_version, checksum, created_at, updated_at) SELECT tenant_id, agent_id || '-sync', "
        "agent_type, state_data, schema_version, data_version, checksum, created_at, updated_at "
        "FROM agent_states WHERE rowid % ? = 3",
        (every * 2,),
    ).rowcount
    n += c.execute(
        "INSERT INTO kv_store (tenant_id, key, value, metadata, created_at, updated_at) "
        "SELECT tenant_id, key || '-sync', value, metadata, created_at, updated_at FROM "
        "kv_store WHERE rowid % ? = 3",
        (every * 2,),
    ).rowcount
    c.commit()
    c.close()
    return n


def child(spec: dict) -> dict:
    """execute, change, sync, sync again; every step against the same fresh database."""
    work = Path(spec["work"])
    os.environ["LLMSPELL_MIGRATE_HOME"] = str(work / "home")
    from bench.methods import peak_rss_mb, present_components
    from pipelines import api
    from pipelines.shared.plan import from_dict

    src = work / "source.db"
    shutil.copyfile(spec["source"], src)
    names = ",".join(c.name for c in present_components(str(src)))
    planned = api.make_plan(names, source=src, target=spec["dsn"])
    plan = from_dict(planned.plan)
    plan.backup_path = str(work / "backups")
    t0 = time.perf_counter()
    executed = api.execute(plan, target=spec["dsn"])
    execute_s = time.perf_counter() - t0
    changed = change_source(src, spec["percent"])
    t0 = time.perf_counter()
    synced = api.sync(plan, target=spec["dsn"])
    sync_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = api.sync(plan, target=spec["dsn"])
    noop_s = time.perf_counter() - t0
    assert synced.status == "SUCCESS" and again.status == "NO_CHANGES", (synced, again)
    return {
        "records": executed.source_records,
        "execute_s": execute_s,
        "execute_stages": executed.stages,
        "changed": changed,
        "sync_changes": synced.total_changes,
        "sync_s": sync_s,
        "sync_stages": synced.stages,
        "noop_s": noop_s,
        "peak_rss_mb": peak_rss_mb(),
    }


def run_case(admin: str, work: Path, records: int, percent: float) -> dict:
    """Generate (or reuse) the source, run the child against a fresh database, drop it."""
    import subprocess

    from bench.server import APP_ROLE, drop_database, fresh_database, source_file, with_db
    from sources.sample_db import SampleSpec

    src = source_file(work, f"mixed-{records}", SampleSpec.scaled(records))
    db = "bench_sync"
    fresh_database(admin, db)
    child_work = work / "run-bench_sync"
    shutil.rmtree(child_work, ignore_errors=True)
    child_work.mkdir(parents=True)
    spec = {
        "source": str(src),
        "dsn": with_db(admin, db, APP_ROLE),
        "work": str(child_work),
        "percent": percent,
    }
    env = dict(os.environ, RUNTIME__DLTHUB_TELEMETRY="false")
    print(f"  bench_sync: execute {records} records, then sync {percent}% changes ...", flush=True)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.sync_case", "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
    )
    out = {"error": (proc.stderr or proc.stdout).strip()[-3000:] or f"exit {proc.returncode}"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            out = json.loads(line[len(RESULT_TAG) :])
            break
    drop_database(admin, db)
    shutil.rmtree(child_work, ignore_errors=True)
    return out


def render(out: dict, command: str, percent: float) -> list[str]:
    if "error" in out:
        return ["## Sync vs execute", "", "```", out["error"], "```"]
    n = out["records"]
    rows = [
        ("`execute` (every record; full run, validation, prints)", n, out["execute_s"]),
        (f"`sync` of {percent:g}% changes ({out['sync_changes']:,} records)", n, out["sync_s"]),
        ("`sync` again, nothing changed", n, out["noop_s"]),
    ]
    lines = [
        "## Sync vs execute",
        "",
        f"`{command}` — {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, as `llmspell_app`, "
        "one child process, the same database.",
        "",
        "| step | source records | seconds | share of execute |",
        "|---|---:|---:|---:|",
    ]
    for name, records, seconds in rows:
        share = seconds / out["execute_s"] if out["execute_s"] else 0
        lines.append(f"| {name} | {records:,} | {seconds:.2f} | {share:.0%} |")
    lines += [
        "",
        "Stages of the sync (seconds): "
        + ", ".join(f"{k} {v:.2f}" for k, v in out["sync_stages"].items()),
        "",
        "Stages of the execute (seconds): "
        + ", ".join(f"{k} {v:.2f}" for k, v in out["execute_stages"].items()),
        "",
        f"Peak RSS of the child: {out['peak_rss_mb']:.0f} MB. The source changes: "
        f"{out['changed']:,} rows written by an independent SQLite writer between execute and "
        "sync (updates with and without `updated_at` moving, deletes, inserts).",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.sync_case", description=__doc__)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--changed-percent", type=float, default=1.0)
    ap.add_argument("--target", help="superuser DSN (default: bench.run's embedded server)")
    ap.add_argument("--out", default="docs/benchmarks-sync.md")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(RESULT_TAG + json.dumps(child(json.loads(args.child))), flush=True)
        return 0
    from bench.server import BENCH_HOME, server_dsn

    work = (BENCH_HOME / "bench").resolve()
    work.mkdir(parents=True, exist_ok=True)
    out = run_case(server_dsn(args.target), work, args.records, args.changed_percent)
    command = "python -m bench.sync_case " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join(["# Benchmark: sync", "", *render(out, command.strip(), args.changed_percent)])
    Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0 if "error" not in out else 1


if __name__ == "__main__":
    sys.exit(main())
