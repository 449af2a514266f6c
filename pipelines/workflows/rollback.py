"""`rollback`: undo a completed (or interrupted) migration run.

Deletes exactly the rows the run's ledger says it inserted, in one transaction. Before that
it checks that those rows still hold what the run wrote: the backup's records are loaded into
a scratch SQLite file and compared with the target by the validation stage. A row changed in
PostgreSQL since (by llmspell, or by hand) stops the rollback unless `force` is given.
Idempotent: a run already rolled back is reported as such and nothing changes.
"""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from core import files
from core.errors import RollbackRefused, UsageError
from core.model import registry
from core.model.components import Component
from destinations import connection, embedded_server, run_ledger, sync_ledger
from destinations.target_schema import act_as_bookkeeper
from pipelines.stages.backup import backup_tenants, read_metadata
from pipelines.stages.run import MIGRATION, Run, is_sync_run, take_back
from sources.key_routing import VERBATIM, classify_db, mappers
from sources.memory_stores import RESTORERS
from sources.sqlite_reader import SourceDB
from sources.sqlite_schema import create_schema
from validation.stage import Validator


@dataclass
class RollbackResult:
    run_id: str
    status: str  # rolled_back | already_rolled_back
    deleted: dict[str, int] = field(default_factory=dict)
    changed_rows: list[str] = field(default_factory=list)
    forced: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _restore_sqlite(folder: Path, comps: list[Component], path: Path) -> None:
    """The backup's records as an llmspell SQLite file, for comparison with the target."""
    conn = sqlite3.connect(path)
    try:
        create_schema(conn)
        for comp in comps:
            src = folder / "source" / f"{comp.name}.jsonl"
            if not src.exists():
                continue
            names = comp.column_names
            blob_cols = [c.name for c in comp.columns if c.kind.binary]
            restore = RESTORERS.get(comp.name)
            insert = (
                f"INSERT INTO {comp.sqlite_table} ({', '.join(names)}) "
                f"VALUES ({', '.join('?' * len(names))})"
            )
            batch = []
            with open(src, encoding="utf-8", errors="surrogateescape") as f:
                for line in f:
                    row = json.loads(line)["row"]
                    for c in blob_cols:
                        if isinstance(row.get(c), dict):
                            row[c] = base64.b64decode(row[c]["base64"])
                    batch.append(row if restore else [row[n] for n in names])
                    if len(batch) >= 5000:
                        _insert(conn, comp, insert, batch, restore)
                        batch.clear()
            if batch:
                _insert(conn, comp, insert, batch, restore)
        conn.commit()
    finally:
        conn.close()


def _insert(conn: sqlite3.Connection, comp: Component, insert: str, batch: list, restore) -> None:
    if restore:  # a store whose rows span tables (vectors) writes them its own way
        restore(conn, comp, batch)
    else:
        conn.executemany(insert, batch)


def changed_since(
    folder: Path,
    target: connection.Target,
    run_id: str,
    comps: list[Component],
    bypass: bool,
    layout: str = VERBATIM,
    tenants: list[str] | None = None,
) -> list[str]:
    """Rows the run wrote that no longer match the backup, written under `layout` (the
    backup's records are re-keyed the way the run wrote them); under RLS the ledger of
    `tenants` is read (default: the run's record)."""
    scratch = files.scratch_dir("rollback")
    try:
        db_path = scratch / "backup.db"
        _restore_sqlite(folder, comps, db_path)
        changed: list[str] = []
        count = 0
        with connection.connect(target) as conn:
            keys = {c.name: run_ledger.ledger_keys(conn, run_id, c, bypass, tenants) for c in comps}
        with SourceDB(db_path, snapshot=False) as db:
            reach = classify_db(db, [c for c in comps if db.has(c)], None, layout)
        keep = {n: r.keep_verbatim for n, r in reach.items()}
        with Validator(
            str(db_path), target.dsn, bypass, comps, None, mappers(comps, layout, keep)
        ) as validator:
            for comp in comps:
                if not keys[comp.name]:
                    continue
                result = validator.compare(comp, 100, 0, only=keys[comp.name])
                count += result.mismatch_count + result.missing_count
                changed += [str(m) for m in result.mismatches]
                changed += [f"{comp.name} {k}: deleted in the target" for k in result.missing]
        return count, changed
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _unknown_run(run_id: str, where: str) -> UsageError:
    return UsageError(
        f"Run {run_id} is not known to the target {where}; nothing was changed",
        "Check --run-id (execute and sync print it; a backup's rollback-metadata.toml has it) "
        "and --target: the database the run wrote to.",
    )


def _agreed_tenants(
    conn, run_id: str, folder: Path | None, meta: dict, bypass: bool
) -> tuple[list[str] | None, list[str]]:
    """(tenants to visit, tenants whose ledger must be empty afterwards). The run's record
    (`runs.tenants`) is never enough on its own when there is a backup: its metadata names
    the tenants the run may write, and the ledger (every tenant's bypassing RLS, else those
    the backup or the record name) and the record must agree with it, or nothing is done.
    (None, record's tenants) without a backup that tells: the ledger bypassing RLS, else
    the record."""
    recorded = run_ledger.run_tenants(conn, run_id)
    named = backup_tenants(folder, meta) if folder else None
    if named is None:
        return None, recorded
    candidates = sorted(set(named) | set(recorded))
    in_ledger = run_ledger.ledger_tenants(conn, run_id, candidates, bypass)
    diffs = []
    outside = sorted(in_ledger - set(named))
    if outside:
        diffs.append(f"the run's ledger holds rows of {', '.join(outside)}: not in the backup")
    only_record = sorted(set(recorded) - set(named))
    if only_record:
        diffs.append(
            f"its record (llmspell_migrate.runs) names {', '.join(only_record)}: not in the backup"
        )
    only_backup = sorted(set(named) - set(recorded))
    if only_backup:
        diffs.append(
            f"the backup names {', '.join(only_backup)}: not in its record (llmspell_migrate.runs)"
        )
    if diffs:
        raise RollbackRefused(
            f"Rollback refused: run {run_id}'s ledger, record and backup disagree on which "
            f"tenants it wrote ({'; '.join(diffs)})",
            "Nothing was deleted. The run's record was changed since the run (or the backup "
            "is another run's): compare llmspell_migrate.runs with the backup's "
            "rollback-metadata.toml.",
            details=diffs,
        )
    return named, sorted(set(candidates) | in_ledger)


def rollback(
    *,
    backup: str | Path | None = None,
    run_id: str | None = None,
    target: str | None = None,
    force: bool = False,
) -> RollbackResult:
    if not backup and not run_id:
        raise UsageError("Nothing to roll back", "Pass --backup DIR (or --run-id ID).")
    if backup and run_id:
        raise UsageError(
            "--backup and --run-id were both given: rollback undoes one run",
            "Pass one: --backup DIR (the run's backup folder names its run) or --run-id ID "
            "(a run without a backup).",
        )
    folder = Path(backup) if backup else None
    meta = read_metadata(folder) if folder else {}
    run_id = run_id or meta.get("run_id")
    where = target or meta.get("target")
    started_here = False
    if not connection.configured_dsn(where, None) and not embedded_server.is_running():
        # The embedded server is the target and it is down. With no data folder there is no
        # run to undo: say so without creating one. With one, it is started to look, and
        # stopped again if the run is not there (the machine left as it was found).
        if not embedded_server.has_data():
            raise _unknown_run(
                run_id,
                f"the embedded PostgreSQL ({embedded_server.data_dir_from_env()}, never set up)",
            )
        started_here = True
    resolved = connection.resolve(where, None)
    run = Run.attach(MIGRATION, resolved, lambda _line: None)
    try:
        return _roll_back(run, run_id, folder, meta, force, started_here)
    finally:
        run.close()


def _roll_back(
    run: Run, run_id: str, folder: Path | None, meta: dict, force: bool, started_here: bool
) -> RollbackResult:
    conn, bypass = run.conn, run.bypass
    record = run_ledger.get_run(conn, run_id)
    if record is None:
        conn.close()
        if started_here:
            embedded_server.stop()
        raise _unknown_run(run_id, run.target.display)
    comps = [registry.get(n) for n in record.components]
    result = RollbackResult(run_id, "rolled_back", forced=force)
    if record.status == run_ledger.ROLLED_BACK:
        result.status = "already_rolled_back"
        return result
    visit, check = _agreed_tenants(conn, run_id, folder, meta, bypass)
    conn.commit()
    if is_sync_run(run_id):
        _refuse_sync_undo(run, record, comps, force, visit)  # under the lock
    else:
        if folder and not force:
            # Backups older than key layouts were written with every SQLite column unchanged.
            layout = meta.get("key_layout", VERBATIM)
            count, result.changed_rows = changed_since(
                folder, run.target, run_id, comps, bypass, layout, visit
            )
            if count:
                raise RollbackRefused(
                    f"Rollback refused: {count} row(s) written by run {run_id} were changed "
                    "in PostgreSQL since",
                    "Nothing was deleted. Review them; rerun with --force to delete them too.",
                    details=result.changed_rows[:20],
                )
        run.lock()
    result.deleted = take_back(conn, run_id, comps, bypass, visit, check)
    return result


def _refuse_sync_undo(
    run: Run,
    record: run_ledger.RunRecord,
    comps: list[Component],
    force: bool,
    tenants: list[str] | None,
) -> None:
    """A sync is undone newest first (a later one built on its rows), and, unless `force`,
    only while PostgreSQL still holds what it wrote; checked under the migration lock,
    which the rollback then keeps. Under RLS the tenants visited are `tenants`."""
    conn = run.conn
    act_as_bookkeeper(conn)
    newer = conn.execute(
        "SELECT run_id FROM llmspell_migrate.runs WHERE plan_fingerprint = "
        "(SELECT plan_fingerprint FROM llmspell_migrate.runs WHERE run_id = %s) "
        "AND status <> %s AND started_at > %s::timestamptz ORDER BY started_at",
        (record.run_id, run_ledger.ROLLED_BACK, record.started_at),
    ).fetchall()
    conn.commit()
    if newer and not force:
        raise RollbackRefused(
            f"Rollback refused: sync {record.run_id} was followed by "
            f"{', '.join(r[0] for r in newer)}",
            "Roll back the later syncs first (newest first); nothing was changed.",
        )
    run.lock()
    changed = (
        [] if force else sync_ledger.changed_since(conn, record.run_id, comps, run.bypass, tenants)
    )
    if changed:
        raise RollbackRefused(
            f"Rollback refused: {len(changed)} row(s) written by sync {record.run_id} "
            "were changed in PostgreSQL since",
            "Nothing was changed. Review them; rerun with --force to undo the sync anyway "
            "(PostgreSQL's later values of these rows are then lost).",
            details=changed[:20],
        )
