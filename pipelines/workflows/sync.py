"""`sync`: bring a migrated target up to date with the source as it is now.

Step sequence (after a completed `execute` of the same plan):
  open + lock -> undo an interrupted sync -> diff (source now vs what was last written,
  target now vs what was last written, for every changed key) -> pre-flight (conflicts,
  unsupported changes, reachability, record checks) -> backup of the pre-images -> apply in
  one transaction (pre-images saved, old rows deleted, new rows inserted under the run's
  ledger) -> validation of every touched record, read-back and per-tenant counts -> prints of
  what was written, run completed. A failure after the apply restores the pre-images and
  removes the inserts; a SIGKILL leaves the run `running`, and the next sync restores it
  before it starts. Only rows a run of this tool wrote, unchanged in PostgreSQL since, are
  ever replaced or deleted: anything else is a conflict and nothing is written.

Artifacts go through execute's content writer (`destinations.artifact_sync`): removed first,
inserted last, with their content (bytea or large object) copied before them and content no
longer referenced deleted after them (a large object's bytes kept as a pre-image copy); a
session replaced carries its artifacts across its foreign key's cascade.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
import time
from dataclasses import dataclass, field

import psycopg
import pyarrow as pa

from core import files
from core.errors import (
    PreflightError,
    ValidationFailed,
)
from core.model.components import ARTIFACTS, SESSIONS, Component
from destinations import artifact_sync, artifact_writer, connection, run_ledger, sync_ledger
from destinations.postgres_writer import LlmspellWriter
from destinations.target_schema import act_as_tenant
from pipelines.shared.plan import Plan
from pipelines.stages import backup as backup_mod
from pipelines.stages import preflight, store_steps
from pipelines.stages.run import (
    SYNC,
    SYNC_PREFIX,
    Emit,
    Run,
    is_sync_run,
    new_run_id,
    source_errors_refused,
    source_paths_for,
    take_back,
)
from pipelines.stages.sync_baseline import source_prints
from sources import change_set
from sources.key_routing import mappers
from sources.llmspell_source import rows_to_arrow
from sources.memory_checks import cross_record_problems
from sources.record_checks import RecordChecker
from sources.sqlite_reader import SourceDB
from sources.sqlite_schema import create_schema
from validation import artifact_content, duck
from validation.readback import readback
from validation.stage import Validator

MAX_LISTED = preflight.MAX_LISTED
__all__ = ["Sync", "SyncResult", "is_sync_run", "sync_fingerprint"]


def sync_fingerprint(executed: str) -> str:
    """Sync runs are recorded apart from the plan's execute runs (which resume by its own)."""
    return f"sync:{executed}"


@dataclass
class SyncResult:
    status: str  # SUCCESS | NO_CHANGES | DRY_RUN | FAILED
    dry_run: bool
    components: list[str]
    target: str
    source: str
    run_id: str | None = None
    changes: dict[str, dict[str, int]] = field(default_factory=dict)
    # new source keys the target already held identically: tracked from now on, not written
    adopted: dict[str, int] = field(default_factory=dict)
    undone_run: str | None = None  # an interrupted sync restored before this one
    backup_path: str | None = None
    validated: dict[str, dict] = field(default_factory=dict)
    rolled_back: dict[str, int] | None = None
    warnings: list[str] = field(default_factory=list)
    duration: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def total_changes(self) -> int:
        return sum(c["inserted"] + c["updated"] + c["deleted"] for c in self.changes.values())

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["duration_s"] = round(d.pop("duration"), 3)
        d["stages_s"] = {k: round(v, 3) for k, v in d.pop("stages").items()}
        d["total_changes"] = self.total_changes
        return d


@dataclass
class _Plan:
    """One component's planned writes after pre-flight."""

    comp: Component
    changes: change_set.ChangeSet
    write: pa.Table  # records to insert (inserts not already there, and updates)
    remove: pa.Table  # keys whose target row is replaced or deleted
    adopt: pa.Table  # inserts the target already holds identically


class Sync:
    def __init__(
        self,
        plan: Plan,
        *,
        source: str | list[str] | None = None,
        target: str | None = None,
        emit: Emit = print,
        allow_unreachable: bool = False,
        executed_fingerprint: str | None = None,
        prefer_source: bool = False,
    ):
        self.plan = plan
        # a two-sided change is written from the source (PostgreSQL's row -> pre-images)
        self.prefer_source = prefer_source
        # the identity of the plan as executed (before --tenant narrowed this sync)
        self.executed = executed_fingerprint or plan.fingerprint()
        self.emit = emit
        self.source_paths = source_paths_for(plan, source)
        self.source_path = self.source_paths[0]
        self.target_override = target
        self.allow_unreachable = allow_unreachable
        self.comps = [cp.component for cp in plan.components]

    # -- the run -------------------------------------------------------------------------
    def run(self, dry_run: bool = False) -> SyncResult:
        run = Run.open(
            SYNC, self.plan, self.source_paths, self.target_override, self.emit, workers=1
        )
        self.target, self.bypass = run.target, run.bypass
        result = run.result = SyncResult(
            "DRY_RUN" if dry_run else "FAILED",
            dry_run,
            self.plan.component_names,
            self.target.where,
            self.source_path,
        )
        db, conn = run.db, run.conn
        with run:
            # 1. bookkeeping and lock; an interrupted sync is restored first
            if dry_run and run.missing_bookkeeping:
                self.emit(
                    "[DRY-RUN] Would complete the migration's bookkeeping: "
                    + ", ".join(run.missing_bookkeeping)
                )
            if not dry_run:
                run.create_bookkeeping()
                run.lock()
            self._require_execute(conn)
            unfinished = run.unfinished(sync_fingerprint(self.executed))
            if unfinished and dry_run:
                self.emit(f"[DRY-RUN] Would first restore interrupted sync {unfinished.run_id}")
            elif unfinished:
                self._undo(conn, unfinished.run_id, "interrupted")
                result.undone_run = unfinished.run_id
            # 2. diff and pre-flight
            t0 = time.perf_counter()
            with source_errors_refused(self.source_path):
                planned = self._preflight(db, conn, result)
            result.stages["diff_and_preflight"] = time.perf_counter() - t0
            for p in planned:
                counts = p.changes.counts()
                if p.adopt.num_rows:  # found identical in the target: tracked, not written
                    counts["inserted"] -= p.adopt.num_rows
                    result.adopted[p.comp.name] = p.adopt.num_rows
                result.changes[p.comp.name] = counts
            todo = [p for p in planned if p.changes.total]
            if dry_run:
                result.status = "DRY_RUN"
                return result
            if not todo:
                result.status = "NO_CHANGES"
                return result
            # 3. the pre-images' backup, then the ledger: a failure from here restores them
            now = dt.datetime.now()
            run_id = new_run_id(now, SYNC_PREFIX)
            tenants = sorted({t for p in todo for t, _ in p.changes.keys()})
            result.backup_path = self._backup(conn, run_id, now, todo, tenants)
            run.start(
                run_id,
                sync_fingerprint(self.executed),
                self.plan.component_names,
                self.source_path,
                result.backup_path,
                tenants,
                lambda undo_conn: self._undo(undo_conn, run_id, "failed"),
            )
            for line in store_steps.prepare_target(conn, db, self.plan):
                self.emit(line)
            # 4. apply in one transaction, 5. validate, 6. the new baseline, completed
            t0 = time.perf_counter()
            self._apply(conn, db, run_id, todo)
            result.stages["apply"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            prints = self._validate(db, todo, result)
            result.stages["validation"] = time.perf_counter() - t0
            with conn.transaction():
                for p in todo:
                    sync_ledger.write_prints(conn, run_id, p.comp, prints[p.comp.name], self.bypass)
            run.complete()
            result.status = "SUCCESS"
        return result

    # -- before the first write ----------------------------------------------------------
    def _require_execute(self, conn: psycopg.Connection) -> None:
        fp = self.executed
        pending = run_ledger.find_unfinished(conn, fp)
        if pending:
            raise PreflightError(
                f"execute run {pending.run_id} of this plan was interrupted and is unfinished",
                "Re-run `execute --plan` with this plan to finish it (or roll it back), then "
                "sync; nothing was written.",
            )
        if run_ledger.completed_run(conn, fp) is None:
            latest = run_ledger.latest_run(conn, fp)
            if latest is not None and latest.status == run_ledger.ROLLED_BACK:
                raise PreflightError(
                    f"execute run {latest.run_id} of this plan was rolled back: "
                    f"{self.target.where} holds none of its records, so there is nothing to sync",
                    "Migrate again with `execute --plan` and this plan (sync catches up only "
                    "after a completed execute); nothing was written.",
                )
            raise PreflightError(
                f"this plan was never executed into {self.target.where}",
                "sync catches up after a completed `execute --plan` of the same plan: run "
                "that first; nothing was written.",
            )
        earlier = run_ledger.runs_printed_otherwise(conn, [fp, sync_fingerprint(fp)])
        if earlier:
            raise PreflightError(
                "the sync baseline of this plan was recorded by an earlier llmspell-migrate "
                f"(run {', '.join(earlier)}): its prints are DuckDB's hash() and PostgreSQL's "
                "hashtextextended, which change between versions, so they cannot tell what "
                "changed since",
                "Nothing was written. Finish this cutover with the llmspell-migrate version "
                "that started it, or roll the plan's runs back (`rollback --backup`, newest "
                "first) and `execute` again: that records a baseline this version reads.",
            )

    def _own_runs(self) -> list[str] | None:
        """A plan sharing its target with other installations (a tenant map, or a fleet's
        run) diffs against its own runs only: another installation's rows are not deletions."""
        if self.plan.tenant_map or run_ledger.lock_scope():
            return [self.executed, sync_fingerprint(self.executed)]
        return None

    def _preflight(self, db: SourceDB, conn: psycopg.Connection, result: SyncResult) -> list[_Plan]:
        plan = self.plan
        reach = preflight.classify_source(db, self.comps, plan.tenants, plan.key_layout)
        keep = {n: r.keep_verbatim for n, r in reach.items()}
        self.reach = reach
        self.mappers = mappers(self.comps, plan.key_layout, keep)
        con = duck.connect(db.read_path)
        try:
            now = {
                c.name: source_prints(con, c, plan.tenants, self.mappers.get(c.name))
                for c in self.comps
            }
        finally:
            con.close()
        seen = {t for table in now.values() for t in table.column("tenant_id").to_pylist()}
        visit = sorted(seen | sync_ledger.known_tenants(conn))
        if plan.tenants:
            visit = [t for t in visit if t in plan.tenants]
        planned: list[_Plan] = []
        conflicts: list[str] = []
        for comp in self.comps:
            base = sync_ledger.baseline(
                conn, comp, visit, plan.tenants, self.bypass, fingerprints=self._own_runs()
            )
            changes = change_set.diff(comp.name, now[comp.name], base)
            planned.append(self._classify(db, conn, comp, changes, conflicts))
        if conflicts:
            raise PreflightError(
                f"{len(conflicts)} record(s) changed in PostgreSQL since this tool wrote them "
                "(or hold a row it did not write) and changed in the source too",
                "Nothing was written. To keep the source's copy of each, sync again with "
                "--prefer-source (PostgreSQL's rows go to the pre-image backup; rollback "
                "--backup puts them back); to keep PostgreSQL's, make the source record "
                "match it in llmspell first.",
                details=conflicts[:MAX_LISTED] + _more(conflicts),
            )
        self._refuse_unsupported(planned)
        if any(p.comp.name == ARTIFACTS.name and p.write.num_rows for p in planned):
            store_steps.refuse_dangling(db, conn, plan, self.bypass)  # content, session, size
        self._check_reachability(planned, result)
        self._check_records(db, planned)
        return planned

    def _classify(
        self,
        db: SourceDB,
        conn: psycopg.Connection,
        comp: Component,
        changes: change_set.ChangeSet,
        conflicts: list[str],
    ) -> _Plan:
        """Split one component's changes by what the target holds now for their keys."""
        by_tenant: dict[str, list[str]] = {}
        for t, k in sorted(changes.keys()):
            by_tenant.setdefault(t, []).append(k)
        held = sync_ledger.target_prints(conn, comp, by_tenant, self.bypass)
        write, remove, adopt, present = [], [], [], []
        for kind in ("inserts", "updates", "deletes"):
            for row in getattr(changes, kind).to_pylist():
                key = (row["tenant_id"], row["nkey"])
                where = f"{comp.name} tenant={key[0]} key={row['llmspell_key']!r}"
                target_now = held.get(key)
                if kind == "inserts":
                    (write if target_now is None else present).append(row)
                    continue
                if target_now is None:
                    if kind == "updates" and self.prefer_source:
                        write.append(row)
                    elif kind == "updates":
                        conflicts.append(
                            f"{where}: changed in the source, deleted in PostgreSQL since it "
                            "was written"
                        )
                    continue  # deleted on both sides: nothing to do
                if target_now != row["base_target_fp"] and not self.prefer_source:
                    side = "changed" if kind == "updates" else "deleted"
                    conflicts.append(
                        f"{where}: {side} in the source and changed in PostgreSQL since it "
                        "was written"
                    )
                    continue
                remove.append(row)
                if kind == "updates":
                    write.append(row)
        if present:  # new in the source, a row already in PostgreSQL: the same record?
            schema = change_set.CHANGE_SCHEMA
            table = pa.Table.from_pylist(present, schema)
            with self._validator(db) as validator:
                differ = {(m[0], m[1]) for m in self._differences(validator, comp, table)}
            for row in present:
                if (row["tenant_id"], row["nkey"]) in differ and self.prefer_source:
                    remove.append(row)
                    write.append(row)
                elif (row["tenant_id"], row["nkey"]) in differ:
                    conflicts.append(
                        f"{comp.name} tenant={row['tenant_id']} key={row['llmspell_key']!r}: "
                        "new in the source, and PostgreSQL already holds a different row "
                        "under this key"
                    )
                else:
                    adopt.append(row)
        schema = change_set.CHANGE_SCHEMA
        return _Plan(
            comp,
            changes,
            pa.Table.from_pylist(write, schema),
            pa.Table.from_pylist(remove, schema),
            pa.Table.from_pylist(adopt, schema),
        )

    def _validator(self, db: SourceDB) -> Validator:
        return Validator(
            str(db.read_path),
            self.target.dsn,
            self.bypass,
            self.comps,
            self.plan.tenants,
            self.mappers,
        )

    def _differences(
        self, validator: Validator, comp: Component, rows: pa.Table
    ) -> list[tuple[str, str, list[str]]]:
        """Validation's canonical comparison of these records (source as the key layout
        writes them, target as PostgreSQL holds them): (tenant, key, what differs) of each
        one that is not equal, absent rows included."""
        cmp = validator.comparer(comp)
        wanted = pa.table({"t": rows.column("tenant_id"), "k": rows.column("llmspell_key")})
        validator.con.register("sync_wanted", wanted)
        try:
            cmp.restrict_to("sync_wanted")  # only these records of the source
            src = cmp.source_fingerprints(100, None)
            keys = list(zip(rows.column("tenant_id").to_pylist(), rows.column("nkey").to_pylist()))
            tgt = cmp.target_fingerprints(keys)
            s_fp = dict(
                zip(
                    zip(src.column("tenant_id").to_pylist(), src.column("nkey").to_pylist()),
                    src.column("fp").to_pylist(),
                )
            )
            lkeys = dict(
                zip(
                    zip(src.column("tenant_id").to_pylist(), src.column("nkey").to_pylist()),
                    src.column("llmspell_key").to_pylist(),
                )
            )
            t_fp = dict(
                zip(
                    zip(tgt.column("tenant_id").to_pylist(), tgt.column("nkey").to_pylist()),
                    tgt.column("fp").to_pylist(),
                )
            )
            out = []
            for key in keys:
                if key in s_fp and s_fp[key] == t_fp.get(key):
                    continue
                lkey = lkeys.get(key, key[1])
                why = [str(m) for m in cmp.explain(key[0], key[1], lkey)]
                out.append((key[0], key[1], why or [f"{comp.name} {key}: differs"]))
            return out
        finally:
            validator.con.unregister("sync_wanted")

    def _refuse_unsupported(self, planned: list[_Plan]) -> None:
        """A session deleted in the source while PostgreSQL holds artifacts of it that the
        sync does not delete: its foreign key would delete them too (a session sync replaces
        carries its artifacts across: `artifact_sync.carry_out`)."""
        sessions = next((p for p in planned if p.comp.name == SESSIONS.name), None)
        if sessions is None or not sessions.remove.num_rows:
            return
        rewritten = _keys(sessions.write)
        gone = sessions.remove.filter(
            pa.array(
                [
                    (t, k) not in rewritten
                    for t, k in zip(
                        sessions.remove.column("tenant_id").to_pylist(),
                        sessions.remove.column("nkey").to_pylist(),
                    )
                ]
            )
        )
        arts = next((p for p in planned if p.comp.name == ARTIFACTS.name), None)
        leaving = _by_tenant(arts.remove) if arts is not None else {}
        problems = self._sessions_with_artifacts(gone, leaving) if gone.num_rows else []
        if problems:
            raise PreflightError(
                f"{len(problems)} session(s) deleted in the source still own artifacts in "
                "PostgreSQL that the sync does not delete (the session's foreign key would "
                "delete them)",
                "Delete those artifacts in llmspell too (or keep the session), then sync "
                "again; nothing was written.",
                details=problems[:MAX_LISTED] + _more(problems),
            )

    def _sessions_with_artifacts(
        self, remove: pa.Table, leaving: dict[str, list[str]]
    ) -> list[str]:
        """Sessions sync would delete that own artifacts in PostgreSQL (but those with ids
        in `leaving`, which the sync deletes first)."""
        out = []
        shown = dict(
            zip(remove.column("nkey").to_pylist(), remove.column("llmspell_key").to_pylist())
        )
        with connection.connect(self.target) as conn:
            if conn.execute("SELECT to_regclass('llmspell.artifacts')").fetchone()[0] is None:
                return out
            with conn.transaction():
                for tenant, keys in _by_tenant(remove).items():
                    act_as_tenant(conn, tenant)
                    for session, n in conn.execute(
                        "SELECT session_id::text, count(*) FROM llmspell.artifacts WHERE "
                        "tenant_id = %s AND session_id = ANY(%s::uuid[]) AND NOT "
                        "artifact_id = ANY(%s) GROUP BY 1",
                        (tenant, keys, leaving.get(tenant, [])),
                    ):
                        out.append(
                            f"sessions tenant={tenant} key={shown.get(session)!r}: "
                            f"deleted in the source, and {n} artifact(s) in PostgreSQL "
                            "belong to it"
                        )
        return out

    def _check_reachability(self, planned: list[_Plan], result: SyncResult) -> None:
        """Records llmspell could not find on PostgreSQL stop the sync when they are among
        those it would write (as in execute, unless --allow-unreachable)."""
        report = preflight.PreflightReport(key_layout=self.plan.key_layout)
        for p in planned:
            r = self.reach.get(p.comp.name)
            if r is None:
                continue
            writing = set(
                zip(
                    p.write.column("tenant_id").to_pylist(),
                    p.write.column("llmspell_key").to_pylist(),
                )
            )
            sub = type(r)(r.component, r.layout, len(writing))
            sub.elsewhere = [x for x in r.elsewhere if (x.tenant_id, x.key) in writing]
            sub.unreachable = [x for x in r.unreachable if (x.tenant_id, x.key) in writing]
            report.reachability[p.comp.name] = sub
        preflight.check_reachability(report, self.allow_unreachable)
        result.warnings += report.warnings
        for w in report.warnings:
            self.emit(f"WARNING: {w}")

    def _check_records(self, db: SourceDB, planned: list[_Plan]) -> None:
        bad, total = [], 0
        for p in planned:
            if not p.write.num_rows:
                continue
            checker = RecordChecker(p.comp)
            for rows in self._source_rows(db, p, raw=False):
                problems = checker.check_rows(rows)
                total += len(problems)
                bad += [str(b) for b in problems[: max(0, MAX_LISTED - len(bad))]]
            problems = cross_record_problems(db, p.comp, self.plan.tenants)
            total += len(problems)
            bad += [str(b) for b in problems[: max(0, MAX_LISTED - len(bad))]]
        if total:
            raise PreflightError(
                f"{total} changed source record(s) cannot be stored in PostgreSQL",
                "Fix or remove these records in llmspell (this tool never modifies the "
                "source), then sync again; nothing was written.",
                details=bad,
            )

    def _source_rows(self, db: SourceDB, p: _Plan, raw: bool = True, batch: int = 2000):
        """The records to write, as the key layout writes them, in batches: TEXT as UTF-8
        bytes for the writer (`raw`), as str for the record checks."""
        comp = p.comp
        with SourceDB(db.read_path, snapshot=False, raw_text=raw) as src:
            src.conn.execute("CREATE TEMP TABLE IF NOT EXISTS sync_wanted (t TEXT, k TEXT)")
            src.conn.execute("DELETE FROM sync_wanted")
            src.conn.executemany(
                "INSERT INTO sync_wanted VALUES (?, ?)",
                zip(
                    p.write.column("tenant_id").to_pylist(),
                    p.write.column("llmspell_key").to_pylist(),
                ),
            )
            query, args = src.select_sql(comp, self.plan.tenants, only="sync_wanted")
            cur = src.conn.execute(query, args)
            mapper = self.mappers.get(comp.name)
            while rows := cur.fetchmany(batch):
                yield mapper.rows(rows) if mapper else rows

    # -- backup, apply -------------------------------------------------------------------
    def _backup(
        self,
        conn: psycopg.Connection,
        run_id: str,
        now: dt.datetime,
        todo: list[_Plan],
        tenants: list[str],
    ) -> str | None:
        """The rows the sync will replace or delete, as PostgreSQL holds them now, beside
        the plan and the metadata `rollback --backup` reads (with the sync's `tenants`)."""
        if not self.plan.backup_enabled:
            return None
        root = backup_mod.backup_root(self.plan)
        backup_mod.check_location(root, 0)
        backup = backup_mod.BackupWriter(root, run_id, now, backup_mod.SYNC)
        conn.commit()
        try:
            for p in todo:
                with conn.transaction():
                    backup.write_lines(p.comp.name, self._preimages(conn, p))
            final = backup.commit(self.plan, self.target.display, self.source_paths, tenants)
        except BaseException:
            backup.abort()
            raise
        self.emit(f"Backup written: {final.resolve()}")
        return str(final.resolve())

    def _preimages(self, conn: psycopg.Connection, p: _Plan):
        """The rows of `p` the sync replaces or deletes, as PostgreSQL holds them now."""
        for tenant, keys in _by_tenant(p.remove).items():
            act_as_tenant(conn, tenant)
            for (image,) in conn.execute(_images_sql(p.comp), (tenant, keys)):
                yield {"tenant_id": tenant, "row": image}

    def _apply(self, conn: psycopg.Connection, db: SourceDB, run_id: str, todo: list[_Plan]):
        """Every change in one transaction: a crash leaves the target as it was. Artifacts
        go first out (before the sessions they belong to) and last in (after their sessions
        and content); a session replaced carries its artifacts across; content no artifact
        refers to any more goes after them."""
        writer = LlmspellWriter(conn, run_id, skip_existing=False)
        for p in todo:
            if p.write.num_rows:
                writer.statements(p.comp)  # staging tables first: they commit on creation
        conn.commit()  # so that the block below is one real transaction, not a savepoint
        arts = next((p for p in todo if p.comp.name == ARTIFACTS.name), None)
        rest = [p for p in todo if p is not arts]
        content = artifact_writer.ContentCopy()
        dropped = [0, 0]
        with conn.transaction():
            stale: dict[str, set[str]] = {}  # content the removed artifacts referred to
            if arts is not None:
                for tenant, keys in _by_tenant(arts.remove).items():
                    act_as_tenant(conn, tenant)
                    stale[tenant] = artifact_sync.referenced_content(conn, tenant, keys)
                    sync_ledger.replace_out(conn, run_id, arts.comp, tenant, keys)
            for p in rest:
                carried = []
                if p.comp.name == SESSIONS.name:
                    carried = sorted(_by_tenant(p.write.filter(_among(p.write, p.remove))))
                    for tenant, keys in _by_tenant(
                        p.write.filter(_among(p.write, p.remove))
                    ).items():
                        act_as_tenant(conn, tenant)
                        artifact_sync.carry_out(conn, tenant, keys)
                for tenant, keys in _by_tenant(p.remove).items():
                    act_as_tenant(conn, tenant)
                    sync_ledger.replace_out(conn, run_id, p.comp, tenant, keys)
                for rows in self._source_rows(db, p):
                    writer.write_batch(p.comp, rows_to_arrow(p.comp, rows))
                for tenant in carried:  # the replaced sessions' artifacts, back unchanged
                    act_as_tenant(conn, tenant)
                    artifact_sync.carry_back(conn, tenant)
            if arts is not None:
                for tenant, ids in _by_tenant_llmspell(arts.write).items():
                    marks = ", ".join("?" * len(ids))
                    hashes = [
                        r[0]
                        for r in db.conn.execute(
                            "SELECT DISTINCT content_hash FROM artifacts WHERE tenant_id = ? "
                            f"AND artifact_id IN ({marks})",
                            (tenant, *ids),
                        )
                    ]
                    act_as_tenant(conn, tenant)
                    artifact_sync.copy_missing_content(
                        conn, db.conn, run_id, tenant, hashes, content
                    )
                for rows in self._source_rows(db, arts):
                    writer.write_batch(arts.comp, rows_to_arrow(arts.comp, rows))
                for tenant, hashes in stale.items():
                    act_as_tenant(conn, tenant)
                    rows, los = artifact_sync.drop_unreferenced(
                        conn, db.conn, run_id, tenant, hashes
                    )
                    dropped[0] += rows
                    dropped[1] += los
        self.emit(
            "Applied (one transaction): " + "; ".join(f"{p.comp.name} {_applied(p)}" for p in todo)
        )
        if arts is not None:
            self.emit(
                f"Artifact content: {content.inserted} row(s) added ({content.bytes:,} bytes, "
                f"{len(content.large_objects)} as large objects), {dropped[0]} no longer "
                f"referenced deleted ({dropped[1]} large object(s) unlinked, pre-images kept)"
            )

    # -- validation ----------------------------------------------------------------------
    def _validate(self, db: SourceDB, todo: list[_Plan], result: SyncResult) -> dict:
        """Every written record compared with the source (validation's canonical form),
        every deleted key gone, the whole component's per-tenant counts, llmspell's read-back
        of written keys. Returns the prints to record per component."""
        self.emit("Validating sync...")
        problems: list[str] = []
        prints: dict[str, pa.Table] = {}
        with self._validator(db) as validator:
            for p in todo:
                written = pa.concat_tables([p.write, p.adopt])
                differ = self._differences(validator, p.comp, written) if written.num_rows else []
                for _, _, why in differ:
                    problems += why
                checked: dict = {
                    "written": written.num_rows,
                    "matched": written.num_rows - len(differ),
                }
                gone = p.changes.deletes
                by_tenant: dict[str, list[str]] = {}
                for t, k in zip(
                    gone.column("tenant_id").to_pylist(), gone.column("nkey").to_pylist()
                ):
                    by_tenant.setdefault(t, []).append(k)
                with connection.connect(self.target) as conn:
                    still = sync_ledger.target_prints(conn, p.comp, by_tenant, self.bypass)
                checked["deleted_gone"] = gone.num_rows - len(still)
                if still:
                    problems.append(
                        f"{p.comp.name}: {len(still)} deleted record(s) still in the target"
                    )
                counts = self._counts(validator, p)
                checked["per_tenant"] = counts
                problems += [
                    f"{p.comp.name} tenant={t}: {c['source']} source records, {c['target']} "
                    "of them in the target"
                    for t, c in counts.items()
                    if c["source"] != c["target"]
                ]
                r = self.reach.get(p.comp.name)
                if r is not None and p.write.num_rows:
                    back = self._readback(db, p, r)
                    checked["readback"] = back.to_dict()
                    problems += back.mismatches
                if p.comp.name == ARTIFACTS.name:
                    checked["content"] = self._validate_content(db, p, problems)
                result.validated[p.comp.name] = checked
                prints[p.comp.name] = pa.concat_tables(
                    [
                        written.select(["tenant_id", "nkey", "llmspell_key", "source_fp"]),
                        gone.select(["tenant_id", "nkey", "llmspell_key", "source_fp"]),
                    ]
                )
        if problems:
            raise ValidationFailed(
                f"Sync validation failed: {problems[0]}",
                "The sync was rolled back (pre-images restored, inserts removed). Inspect the "
                "differences, fix the cause and sync again.",
                details=problems[:MAX_LISTED],
            )
        return prints

    def _validate_content(self, db: SourceDB, p: _Plan, problems: list[str]) -> dict:
        """The content of the changed tenants compared with the source in full (bytes as
        SHA-256 on both sides, storage type, reference counts, llmspell_app's access), and no
        content row left that neither the source nor an artifact holds."""
        tenants = sorted({t for t, _ in p.changes.keys()})
        with connection.connect(self.target) as conn:
            got = artifact_content.compare(db.conn, conn, tenants, 100, 0)
            extra = []
            with conn.transaction():
                for tenant in tenants:
                    act_as_tenant(conn, tenant)
                    have = {
                        r[0]
                        for r in conn.execute(
                            "SELECT content_hash FROM llmspell.artifact_content c WHERE "
                            "tenant_id = %s AND NOT EXISTS (SELECT 1 FROM llmspell.artifacts a "
                            "WHERE a.tenant_id = c.tenant_id AND a.content_hash = c.content_hash)",
                            (tenant,),
                        )
                    }
                    src = {
                        r[0]
                        for r in db.conn.execute(
                            "SELECT content_hash FROM artifact_content WHERE tenant_id = ?",
                            (tenant,),
                        )
                    }
                    extra += [f"{tenant}/{h}" for h in sorted(have - src)]
        problems += [f"artifact_content {m}" for m in got.mismatches]
        problems += [f"artifact_content {k}: missing in the target" for k in got.missing]
        problems += [f"artifact_content {k}: unreferenced, not in the source" for k in extra]
        return {
            "compared": got.compared,
            "matched": got.matched,
            "missing": got.missing_count,
            "unreferenced": len(extra),
        }

    def _counts(self, validator: Validator, p: _Plan) -> dict[str, dict[str, int]]:
        """Per tenant: the source's records now, and how many of their keys the target holds."""
        cmp = validator.comparer(p.comp)
        found = p.changes.source_keys.join(
            cmp.target_keys(), ["tenant_id", "nkey"], join_type="inner"
        )
        out = {t: {"source": n, "target": 0} for t, n in p.changes.per_tenant.items()}
        for row in found.group_by("tenant_id").aggregate([("nkey", "count")]).to_pylist():
            out.setdefault(row["tenant_id"], {"source": 0, "target": 0})
            out[row["tenant_id"]]["target"] = row["nkey_count"]
        return out

    def _readback(self, db: SourceDB, p: _Plan, reach):
        """llmspell's PostgreSQL `get` for every written key, as llmspell_app: replayed over
        a scratch SQLite file holding just the written records."""
        scratch = files.scratch_dir("sync-readback")
        try:
            path = scratch / "written.db"
            conn = sqlite3.connect(path)
            try:
                create_schema(conn)
                conn.execute("ATTACH DATABASE ? AS snap", (f"file:{db.read_path}?mode=ro",))
                comp = p.comp
                conn.execute("CREATE TEMP TABLE w (t TEXT, k TEXT)")
                conn.executemany(
                    "INSERT INTO w VALUES (?, ?)",
                    zip(
                        p.write.column("tenant_id").to_pylist(),
                        p.write.column("llmspell_key").to_pylist(),
                    ),
                )
                mine = [r[1] for r in conn.execute(f"PRAGMA main.table_info({comp.sqlite_table})")]
                theirs = {
                    r[1] for r in conn.execute(f"PRAGMA snap.table_info({comp.sqlite_table})")
                }
                cols = ", ".join(c for c in mine if c in theirs)
                conn.execute(
                    f"INSERT INTO main.{comp.sqlite_table} ({cols}) SELECT {cols} FROM "
                    f"snap.{comp.sqlite_table} WHERE (tenant_id, {comp.key_sql}) IN "
                    "(SELECT t, k FROM w)"
                )
                conn.commit()
            finally:
                conn.close()
            with SourceDB(path, snapshot=False) as written, connection.connect(self.target) as pg:
                return readback(written, pg, comp, reach, 100, self.plan.tenants)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    # -- rollback ----------------------------------------------------------------------
    def _undo(self, conn: psycopg.Connection, run_id: str, why: str) -> dict[str, int]:
        self.emit(f"[INFO] Restoring the target as it was before {why} sync {run_id}...")
        done = take_back(conn, run_id, self.comps, self.bypass)
        self.emit(
            "[INFO] Restored: "
            + (", ".join(f"{k} {v}" for k, v in done.items()) or "nothing to undo")
        )
        return done


def _applied(p: _Plan) -> str:
    written, removed = _keys(p.write), _keys(p.remove)
    return (
        f"{len(written - removed)} inserted, {len(written & removed)} replaced, "
        f"{len(removed - written)} deleted"
    )


def _keys(table: pa.Table) -> set[tuple[str, str]]:
    return set(zip(table.column("tenant_id").to_pylist(), table.column("nkey").to_pylist()))


def _among(table: pa.Table, other: pa.Table) -> pa.Array:
    """A mask of `table`'s rows whose key `other` holds too."""
    keys = _keys(other)
    return pa.array(
        [
            (t, k) in keys
            for t, k in zip(table.column("tenant_id").to_pylist(), table.column("nkey").to_pylist())
        ],
        pa.bool_(),
    )


def _by_tenant_llmspell(table: pa.Table) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for t, k in zip(
        table.column("tenant_id").to_pylist(), table.column("llmspell_key").to_pylist()
    ):
        out.setdefault(t, []).append(k)
    return out


def _by_tenant(table: pa.Table) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for t, k in zip(table.column("tenant_id").to_pylist(), table.column("nkey").to_pylist()):
        out.setdefault(t, []).append(k)
    return out


def _images_sql(comp: Component):
    from psycopg import sql

    return sql.SQL(
        "SELECT to_jsonb(t) FROM llmspell.{} t WHERE tenant_id = %s AND {} = ANY(%s::{}[])"
    ).format(
        sql.Identifier(comp.pg_table),
        sql.Identifier(comp.key_column),
        sql.SQL(comp.column(comp.key_column).pg_type),
    )


def _more(items: list[str]) -> list[str]:
    return [f"... and {len(items) - MAX_LISTED} more"] if len(items) > MAX_LISTED else []
