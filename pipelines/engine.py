"""The migration engine: Pre-flight -> Backup -> Batch copy -> Validation -> Success/Rollback.

A run either ends fully migrated and validated, or with every row it wrote removed again:
any failure after the first write (validation mismatch, constraint violation, lost
connection, Ctrl-C/SIGTERM) deletes exactly the rows in the run's ledger. A crash that left
no chance to roll back leaves the run marked `running`; the next execute of the same plan
adopts it, skips what is already there and finishes the job.
"""

from __future__ import annotations

import datetime as dt
import os
import pickle
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import duckdb
import psycopg
from dlt.common.exceptions import SignalReceivedException

from core import child, files, interrupts, settings
from core.errors import (
    MigrateError,
    MigrationFailed,
    PreflightError,
    SourceError,
    TargetError,
    UsageError,
    ValidationFailed,
)
from destinations import connection, run_ledger, target_schema
from destinations.postgres_writer import WriterPool, role_bypasses_rls
from pipelines import backup as backup_mod
from pipelines import copy_stage, preflight, store_steps, sync_baseline
from pipelines import progress as progress_mod
from pipelines.plan import Plan
from pipelines.report import render_validation
from pipelines.results import ExecuteResult
from sources import installation
from sources.key_routing import mappers
from sources.sqlite_reader import SourceDB
from validation.stage import Validator

Emit = Callable[[str], None]


def source_paths_for(plan: Plan, override: str | list[str] | None) -> list[str]:
    """The files a run reads: `--source` (repeatable) over the plan's files, the main
    database first."""
    given = [override] if isinstance(override, str) else list(override or [])
    paths = given or plan.source_paths or [str(p) for p in installation.discover().paths]
    return [str(Path(p).expanduser()) for p in paths]


def source_path_for(plan: Plan, override: str | list[str] | None) -> str:
    """The main database of a run (for messages and the run record)."""
    return source_paths_for(plan, override)[0]


def prepare_target(target: connection.Target) -> None:
    """The embedded server is ours: give it the llmspell schema without being asked."""
    if target.embedded:
        with connection.connect(target, autocommit=True) as conn:
            target_schema.ensure_schema(conn)


def sigterm_as_interrupt():
    """SIGTERM takes the same path as Ctrl-C, so a stopped run still rolls back; and either
    stops the run at once, in any stage, cancelling the queries in flight
    (`core.interrupts`)."""
    return interrupts.stopping()


MAX_WORKERS = 32
ENV_WORKERS = "LLMSPELL_MIGRATE_WORKERS"


def check_workers(workers: int | None) -> int:
    """--workers, else LLMSPELL_MIGRATE_WORKERS, else 2; refused up front when not 1-32."""
    where = "--workers"
    if workers is None:
        raw = os.environ.get(ENV_WORKERS, "").strip()
        if not raw:
            return 2
        where = ENV_WORKERS
        try:
            workers = int(raw)
        except ValueError:
            raise UsageError(
                f"{ENV_WORKERS}={raw!r} is not a whole number",
                f"Set {ENV_WORKERS} to a number of writer connections from 1 to {MAX_WORKERS}, "
                "or unset it (default 2).",
            ) from None
    if not 1 <= workers <= MAX_WORKERS:
        raise UsageError(
            f"{where} {workers} is outside 1-{MAX_WORKERS}",
            f"Use 1 to {MAX_WORKERS} writer connections (default 2: both cores of a small server).",
        )
    return workers


def check_server_capacity(conn: psycopg.Connection, workers: int) -> None:
    """The run needs `workers` writer connections besides this one and validation's: refuse
    before anything is written when the server cannot take them all."""
    free, limit = conn.execute(
        "SELECT current_setting('max_connections')::int"
        " - current_setting('superuser_reserved_connections')::int"
        " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),"
        " current_setting('max_connections')::int"
    ).fetchone()
    conn.rollback()
    needed = workers + 1  # writers, plus validation's DuckDB session next to this one
    if needed > free:
        raise PreflightError(
            f"--workers {workers} needs {needed} more connections, but the server has "
            f"{max(free, 0)} free (max_connections {limit})",
            f"Use --workers {max(1, free - 1)} or fewer, or raise max_connections.",
        )


def new_run_id(now: dt.datetime) -> str:
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


class Engine:
    def __init__(
        self,
        plan: Plan,
        *,
        source: str | list[str] | None = None,
        target: str | None = None,
        emit: Emit = print,
        workers: int | None = None,
        keep_packages: bool = False,
        allow_unreachable: bool = False,
        progress: progress_mod.Listener | None = None,
    ):
        self.plan = plan
        self.allow_unreachable = allow_unreachable
        self.source_paths = source_paths_for(plan, source)
        self.source_path = self.source_paths[0]
        self.target_override = target
        self.emit = emit
        # stages report their counts here; by default the guide's copy lines through `emit`
        self.progress = progress or progress_mod.PlainLines(emit)
        self.workers = check_workers(workers)
        self.keep_packages = keep_packages

    # -- the steps shared by dry-run and execute -------------------------------------------
    def _preflight(
        self,
        db: SourceDB,
        conn: psycopg.Connection,
        bypass: bool,
        backup: backup_mod.BackupWriter | None,
        result: ExecuteResult,
    ) -> preflight.PreflightReport:
        report = preflight.count_source(db, self.plan)
        comps = [cp.component for cp in self.plan.components]
        # Reachability first: records llmspell could not find stop the run before a backup.
        report.key_layout = self.plan.key_layout
        report.reachability = preflight.classify_source(
            db, comps, self.plan.tenants, self.plan.key_layout
        )
        preflight.check_reachability(report, self.allow_unreachable)
        target_schema.check_schema(conn, comps)
        tenants = report.tenants
        existing = {c.name: preflight.existing_target_keys(conn, c, tenants, bypass) for c in comps}
        if backup is None:
            overlaps = preflight.scan_source(db, self.plan, existing, report, self.progress)
        else:  # the backup is written on the other core while Python checks the records
            with ThreadPoolExecutor(max_workers=1) as pool:
                done = pool.submit(self._export, backup, db, report)
                try:
                    overlaps = preflight.scan_source(db, self.plan, existing, report, self.progress)
                finally:
                    done.result()
        report.warnings += preflight.number_change_lines(report)
        self._check_conflicts(db, overlaps, bypass, report, result)
        store_steps.refuse_collisions(db, conn, self.plan, bypass)
        store_steps.refuse_dangling(db, conn, self.plan, bypass)
        return report

    def _mappers(self, report: preflight.PreflightReport) -> dict:
        """The key layout's re-keying per component (the write path and validation share it)."""
        comps = [cp.component for cp in self.plan.components]
        return mappers(comps, self.plan.key_layout, report.keep_verbatim)

    def _check_conflicts(
        self,
        db: SourceDB,
        overlaps: dict[str, set[tuple[str, str]]],
        bypass: bool,
        report: preflight.PreflightReport,
        result: ExecuteResult,
    ) -> None:
        if not any(overlaps.values()):
            return
        comps = [cp.component for cp in self.plan.components if overlaps.get(cp.name)]
        conflicts: list[str] = []
        total = 0
        with Validator(
            str(db.read_path),
            self.target.dsn,
            bypass,
            comps,
            self.plan.tenants,
            self._mappers(report),
        ) as validator:
            for comp in comps:
                found = validator.compare(comp, 100, 0, only=overlaps[comp.name])
                report.component(comp.name).already_present = found.matched
                result.already_present[comp.name] = found.matched
                total += found.mismatch_count
                conflicts += [str(m) for m in found.mismatches]
        if total:
            raise PreflightError(
                f"{total} record(s) already in the target differ from the source "
                "(same tenant and key)",
                "Decide which copy is right: remove or fix those rows in PostgreSQL, or "
                "exclude their tenants (--tenant); nothing was written.",
                details=conflicts[: preflight.MAX_LISTED],
            )

    def _open(self) -> tuple[SourceDB, psycopg.Connection, bool]:
        db = SourceDB(self.source_paths, tenant_map=self.plan.tenant_map)
        try:
            comps = [cp.component for cp in self.plan.components]
            for comp in comps:
                db.require(comp)
            db.require_tenants(comps, self.plan.tenants)
            connection.check_identity(
                self.plan.target_identity, self.target_override, self.plan.target_connection
            )
            self.target = connection.resolve(self.target_override, self.plan.target_connection)
            prepare_target(self.target)
            conn = connection.connect(self.target)
            try:
                # Schema first: the run ledger lives beside llmspell's tables.
                target_schema.check_schema(conn, comps)
                bypass = role_bypasses_rls(conn)
                self.missing_bookkeeping = target_schema.missing_bookkeeping(conn)
                blocker = (
                    target_schema.bookkeeping_blocker(conn) if self.missing_bookkeeping else None
                )
                conn.commit()
                if blocker:
                    raise TargetError(
                        f"The migration's bookkeeping ({', '.join(self.missing_bookkeeping)}) "
                        "is not in the target and this role may not create it",
                        blocker[0].upper() + blocker[1:] + "; nothing was written.",
                    )
                check_server_capacity(conn, self.workers)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            db.close()
            raise
        return db, conn, bypass

    def _result(self, dry_run: bool) -> ExecuteResult:
        """A result to fill in; called after `_open`, which resolves the target."""
        return ExecuteResult(
            status="DRY_RUN" if dry_run else "FAILED",
            dry_run=dry_run,
            components=self.plan.component_names,
            target=self.target.where,
            source=self.source_path,
        )

    # -- dry-run -----------------------------------------------------------------------------
    def dry_run(self) -> ExecuteResult:
        started = time.perf_counter()
        self.emit("[DRY-RUN] Migration validation starting...")
        with source_errors_refused(self.source_path):
            db, conn, bypass = self._open()
            result = self._result(True)
            try:
                unfinished = None
                if not self.missing_bookkeeping:
                    unfinished = run_ledger.find_unfinished(conn, self.plan.fingerprint())
                needs_backup = self.plan.backup_enabled and not (
                    unfinished and unfinished.backup_path
                )
                if needs_backup:
                    self._check_backup_location()
                self._check_staging(needs_backup)
                report = self._preflight(db, conn, bypass, None, result)
            finally:
                conn.close()
                db.close()
        result.preflight = report
        result.source_records = report.source_records
        for warning in report.warnings:
            self.emit(f"[DRY-RUN] WARNING: {warning}")
        self.emit("[DRY-RUN] Pre-flight validation passed")
        if self.missing_bookkeeping:
            self.emit(
                "[DRY-RUN] Would create the migration's bookkeeping: "
                + ", ".join(self.missing_bookkeeping)
            )
        if unfinished:
            self.emit(f"[DRY-RUN] Would resume interrupted run {unfinished.run_id}")
        self.emit(f"[DRY-RUN] Would migrate {len(report.components)} components")
        for c in report.components:
            extra = f" ({c.already_present} already in target)" if c.already_present else ""
            self.emit(f"[DRY-RUN]   - {c.name}: {c.source_count} records{extra}")
        result.status = "DRY_RUN"
        result.duration = time.perf_counter() - started
        return result

    def _check_staging(self, with_backup: bool) -> None:
        """dlt's staging needs about the source's size again (with the backup's on one disk)."""
        copy_stage.check_space(
            Path(self.source_path),
            backup_mod.backup_root(self.plan) if with_backup else None,
            sum(backup_mod.estimate_bytes(Path(p)) for p in self.source_paths),
        )

    def _check_backup_location(self) -> None:
        backup_mod.check_location(
            backup_mod.backup_root(self.plan),
            sum(backup_mod.estimate_bytes(Path(p)) for p in self.source_paths),
        )

    # -- execute -----------------------------------------------------------------------------
    def execute(self) -> ExecuteResult:
        """Pre-flight and backup, then (only if they pass) copy and validate; any failure
        after the first write rolls the run back."""
        started = time.perf_counter()
        now = dt.datetime.now()
        self.emit("Migration starting...")
        with source_errors_refused(self.source_path):
            db, conn, bypass = self._open()
        result = self._result(False)
        writer: WriterPool | None = None
        run_started = False
        working = ExitStack()  # dlt's working folder, held until its packages are finished
        try:
            with sigterm_as_interrupt(), SourcePrinter(db, self.plan) as printer:
                if self.missing_bookkeeping:
                    self._create_bookkeeping(conn)
                run_ledger.acquire_lock(conn)
                working.enter_context(copy_stage.working_folder(self.target.where))
                unfinished = run_ledger.find_unfinished(conn, self.plan.fingerprint())
                run_id = unfinished.run_id if unfinished else new_run_id(now)
                if unfinished:
                    result.run_id, result.resumed_run = run_id, True
                    self.emit(
                        f"Resuming interrupted run {run_id} (started {unfinished.started_at})"
                    )
                self._check_staging(self.plan.backup_enabled and not result.resumed_run)
                t0 = time.perf_counter()
                result.stages["open"] = t0 - started
                with source_errors_refused(self.source_path):
                    report = self._preflight_and_backup(db, conn, bypass, run_id, now, result)
                result.preflight = report
                result.source_records = report.source_records
                if unfinished and not result.backup_path:
                    result.backup_path = unfinished.backup_path
                result.stages["preflight_and_backup"] = time.perf_counter() - t0
                if not unfinished:
                    run_ledger.start_run(
                        conn,
                        run_id,
                        self.plan.fingerprint(),
                        self.plan.component_names,
                        self.source_path,
                        result.backup_path,
                        report.tenants,
                    )
                    result.run_id = run_id  # only now does `rollback --run-id` know it
                run_started = True
                for line in store_steps.prepare_target(conn, db, self.plan):
                    self.emit(line)
                writer = self._writer(run_id, report, result)
                self._copy(
                    db, writer, report, result, lambda: self._complete(db, bypass, printer, result)
                )
                writer = None
                result.status = "SUCCESS"
                result.target_records = result.validation.target_records
        except (Exception, KeyboardInterrupt) as exc:
            if writer is not None:
                writer.abandon()
            if run_started:
                self._rollback(result, exc)
            raise self._failure(exc, result, run_started) from exc
        finally:
            result.duration = time.perf_counter() - started
            try:
                if not conn.closed:
                    run_ledger.release_lock(conn)
            except psycopg.Error:
                pass
            conn.close()
            db.close()
            if run_started:
                self._finish_packages()
            working.close()
        return result

    def _preflight_and_backup(
        self,
        db: SourceDB,
        conn: psycopg.Connection,
        bypass: bool,
        run_id: str,
        now: dt.datetime,
        result: ExecuteResult,
    ) -> preflight.PreflightReport:
        """Pre-flight, with the backup written alongside on the other core. A re-run of a
        plan whose records all look present checks first and writes a backup only if there
        is something to write."""
        backup = None
        needs_backup = self.plan.backup_enabled and not result.resumed_run
        if needs_backup:
            self._check_backup_location()
            if not self._maybe_all_present(db, conn, bypass):
                backup = backup_mod.BackupWriter(backup_mod.backup_root(self.plan), run_id, now)
        try:
            report = self._preflight(db, conn, bypass, backup, result)
        except BaseException:
            if backup:
                backup.abort()
            raise
        for warning in report.warnings:
            self.emit(f"WARNING: {warning}")
        nothing_to_write = all(c.already_present == c.source_count for c in report.components)
        if needs_backup and backup is None and not nothing_to_write:
            backup = backup_mod.BackupWriter(backup_mod.backup_root(self.plan), run_id, now)
            try:
                self._export(backup, db, report)
            except BaseException:
                backup.abort()
                raise
        if backup:
            backup.write_key_map(report.reachability)
            result.backup_path = str(
                backup.commit(
                    self.plan, self.target.display, self.source_paths, report.tenants
                ).resolve()
            )
            self.emit(f"Backup written: {result.backup_path}")
        elif needs_backup:
            self.emit("Every record is already in the target: nothing to write, no backup taken")
        return report

    def _export(
        self, backup: backup_mod.BackupWriter, db: SourceDB, report: preflight.PreflightReport
    ) -> None:
        """Write the backup, its progress counted in records (a component at a time)."""
        counts = {c.name: c.source_count for c in report.components}
        counter = progress_mod.StageCounter(self.progress, progress_mod.BACKUP, counts)
        backup.export(
            db.read_path,
            [cp.component for cp in self.plan.components],
            self.plan.tenants,
            lambda _name, n: counter.advance(n),
        )
        counter.finish()

    def _maybe_all_present(self, db: SourceDB, conn: psycopg.Connection, bypass: bool) -> bool:
        """True when the target already holds at least as many keys as the source, per
        component: then the records are probably migrated and the backup can wait."""
        for cp in self.plan.components:
            per_tenant = db.counts_by_tenant(cp.component, self.plan.tenants)
            source = sum(per_tenant.values())
            if source and source > preflight.count_target_keys(
                conn, cp.component, sorted(per_tenant), bypass
            ):
                return False
        return True

    def _failure(self, exc: BaseException, result: ExecuteResult, wrote: bool) -> MigrateError:
        """The error to raise for `exc`, with the run's result attached."""
        if is_interrupt(exc):
            err: MigrateError = MigrationFailed(
                "Migration interrupted (Ctrl-C or SIGTERM)",
                "Everything this run wrote was rolled back; re-run the plan when ready."
                if wrote
                else "Nothing was written; re-run the plan when ready.",
            )
        elif isinstance(exc, MigrateError):
            err = exc
        else:
            err = MigrationFailed(
                f"Migration execution failed: {_describe(exc)}",
                "Everything this run wrote was rolled back; fix the cause and re-run.",
            )
        err.result = result
        return err

    def _create_bookkeeping(self, conn: psycopg.Connection) -> None:
        """First contact with a target llmspell set up: add the tool's own schema beside it."""
        try:
            with conn.transaction():
                target_schema.ensure_bookkeeping(conn)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise TargetError(
                f"Cannot create the migration's bookkeeping: {exc.diag.message_primary}",
                f"Run {settings.cli_command()} init-target as the schema owner or a superuser; "
                "nothing was written.",
            ) from exc
        conn.commit()
        self.emit("Created the migration's bookkeeping: " + ", ".join(self.missing_bookkeeping))

    def _finish_packages(self) -> None:
        try:
            copy_stage.finish_packages(self.keep_packages)
        except Exception as exc:  # the run's outcome stands; the files can be pruned later
            self.emit(f"WARNING: could not clean dlt's load packages: {_describe(exc)}")

    def _writer(
        self, run_id: str, report: preflight.PreflightReport, result: ExecuteResult
    ) -> WriterPool:
        # Keys can already be in the target only on a resumed run or when pre-flight found
        # identical rows; otherwise a plain INSERT is cheaper and a conflict is an error.
        skip_existing = result.resumed_run or any(c.already_present for c in report.components)
        return WriterPool(
            lambda: connection.connect(self.target),
            run_id,
            skip_existing=skip_existing,
            workers=self.workers,
        )

    def _copy(
        self,
        db: SourceDB,
        writer: WriterPool,
        report: preflight.PreflightReport,
        result: ExecuteResult,
        complete: Callable[[], None],
    ) -> None:
        """One dlt run for every component; its completion is `complete` (the validation)."""
        t0 = time.perf_counter()
        if copy_stage.discard_pending():
            self.emit("Discarded an unfinished dlt load package from an interrupted run")
        # Components with their own copy (artifacts) follow the dlt run, before validation.
        comps = [cp.component for cp in self.plan.components if not cp.component.own_copy]
        totals = {c.name: c.source_count for c in report.components}
        # nothing to copy: every record already there, or none in the source (an empty
        # component in the dlt run would leave it without a load, so without its completion)
        done = {c.name for c in report.components if c.already_present == c.source_count}

        def completed() -> None:
            writer.close()  # every batch is committed: the connections are done
            inserted = writer.inserted
            for comp in comps:
                result.written[comp.name] = inserted.get(comp.name, 0)
            # Skipping rows already there: pre-flight proved any such row identical.
            result.written.update(
                store_steps.copy_own(self.target, db, self.plan, result.run_id, True, self.emit)
            )
            result.stages["copy"] = time.perf_counter() - t0
            complete()

        delivery = copy_stage.Delivery(
            writer, comps, totals, self.emit, completed, skip=done, progress=self.progress
        )
        todo = [c for c in comps if c.name not in done]
        if not todo:
            delivery.complete("")
            return
        copy_stage.copy(
            delivery,
            db.read_path,
            todo,
            max(cp.batch_size for cp in self.plan.components if cp.component in todo),
            self.plan.tenants,
            self.workers,
            self._mappers(report),
        )

    def _complete(
        self, db: SourceDB, bypass: bool, printer: SourcePrinter, result: ExecuteResult
    ) -> None:
        waited = time.perf_counter()
        prints = printer.result()
        result.stages["source_prints_wait"] = time.perf_counter() - waited
        if prints is None:
            self.emit(
                f"WARNING: the source's fingerprints were not computed ahead "
                f"({printer.failure}); validation computes them now"
            )
        baseline = self._start_baseline(db, bypass, result)
        try:
            self._validate(db, bypass, result, prints)
        except BaseException:
            baseline.abandon()
            raise
        waited = time.perf_counter()
        baseline.commit()
        result.stages["sync_baseline"] = time.perf_counter() - waited
        # still inside dlt's load: the package is marked loaded only after the run is
        with connection.connect(self.target) as conn:
            run_ledger.set_status(conn, result.run_id, run_ledger.COMPLETED)

    def _start_baseline(
        self, db: SourceDB, bypass: bool, result: ExecuteResult
    ) -> sync_baseline.BaselineRecorder:
        """What this run wrote, fingerprinted on both sides (the baseline of `sync`),
        recorded alongside validation and kept only if the run validates."""
        return sync_baseline.BaselineRecorder(
            str(db.read_path),
            self.target,
            bypass,
            [cp.component for cp in self.plan.components],
            self.plan.tenants,
            self._mappers(result.preflight),
            result.run_id,
        )

    def _validate(
        self,
        db: SourceDB,
        bypass: bool,
        result: ExecuteResult,
        source_prints: dict[str, str] | None = None,
    ) -> None:
        t0 = time.perf_counter()
        self.emit("")
        self.emit("Validating migration...")
        comps = [cp.component for cp in self.plan.components]
        checked = result.preflight
        counts = {c.name: c.source_count for c in checked.components}
        counter = progress_mod.StageCounter(self.progress, progress_mod.VALIDATION, counts)
        with Validator(
            str(db.read_path),
            self.target.dsn,
            bypass,
            comps,
            self.plan.tenants,
            self._mappers(checked),
        ) as validator:
            report = validator.validate(
                comps,
                self.plan.checksum_sample_percent,
                self.plan.full_comparison_threshold,
                source_prints,
                checked.reachability,
                counter.component_done,
            )
        counter.finish()
        result.validation = report
        result.stages["validation"] = time.perf_counter() - t0
        for line in render_validation(report, self.plan.full_comparison_threshold):
            self.emit(line)
        if not report.passed:
            failed = [c for c in report.components if not c.passed]
            first = failed[0]
            if not first.counts_ok:
                msg = (
                    f"{first.component} count mismatch ({first.source_count} source ≠ "
                    f"{first.target_count} target)"
                )
            elif first.mismatches:
                msg = f"{first.component} checksum mismatch for key '{first.mismatches[0].key}'"
            else:
                msg = (
                    f"{first.component}: llmspell's PostgreSQL backend returns a different "
                    f"value: {(first.readback.mismatches or ['(not listed)'])[0]}"
                )
            raise ValidationFailed(
                f"Validation failed: {msg}",
                "The run was rolled back. Inspect the mismatches above (verify --json gives "
                "them all), fix the cause and re-run.",
                details=[str(m) for c in failed for m in c.mismatches][:20]
                + [f"missing: {k}" for c in failed for k in c.missing][:20]
                + [m for c in failed if c.readback for m in c.readback.mismatches][:20],
            )

    def _rollback(self, result: ExecuteResult, exc: BaseException) -> None:
        comps = [cp.component for cp in self.plan.components]
        self.emit("")
        self.emit(f"[ERROR] {getattr(exc, 'message', None) or _describe(exc)}")
        self.emit("[INFO] Rolling back all components...")
        try:
            with connection.connect(self.target) as conn:
                bypass = role_bypasses_rls(conn)
                conn.commit()
                deleted = run_ledger.delete_written(conn, result.run_id, comps, bypass)
                run_ledger.set_status(conn, result.run_id, run_ledger.ROLLED_BACK)
        except (MigrateError, psycopg.Error) as err:
            self.emit(f"[ERROR] Rollback could not complete: {err}")
            self.emit(
                f"[INFO] Run {result.run_id} stays marked running; re-run the plan to "
                "resume, or `rollback --run-id` it once PostgreSQL is back."
            )
            return
        result.rolled_back = deleted
        for name, n in deleted.items():
            self.emit(f"[INFO] Deleted {n} records from {name}")
        self.emit("[INFO] Rollback complete. Source data unchanged.")


class SourcePrinter:
    """Computes the source side of validation in a worker process, started with pre-flight.

    Pre-flight and copy keep PostgreSQL and Python busy but leave gaps; the worker (at lower
    priority) fills them, so validation later only reads the target. The worker is
    `pipelines.prints_worker` in a fresh interpreter (`core.child`): never the caller's
    script or notebook again. If it fails for any reason, `failure` says why and validation
    computes the same fingerprints itself; if the run stops early, the worker is
    terminated, not waited for."""

    def __init__(self, db: SourceDB, plan: Plan):
        self.dir = str(files.scratch_dir("prints"))
        self.failure: str | None = None
        self._log = open(os.path.join(self.dir, "worker.log"), "w+b")  # noqa: SIM115
        args = (
            str(db.read_path),
            plan.component_names,
            plan.tenants,
            plan.checksum_sample_percent,
            plan.full_comparison_threshold,
            self.dir,
            plan.key_layout,
        )
        self.process = child.start("pipelines.prints_worker", args, self._log)

    def result(self) -> dict[str, str] | None:
        """The worker's files per component, or None (then `failure` says why)."""
        try:
            status, payload = child.receive(self.process.stdout)
        except (EOFError, OSError, pickle.UnpicklingError):
            code = self.process.wait()
            said = child.stderr_tail(self._log)
            self.failure = f"the worker exited with code {code}" + (f": {said}" if said else "")
            return None
        if status != "ok":
            self.failure = f"the worker failed: {payload}"
            return None
        return payload

    def __enter__(self) -> SourcePrinter:
        return self

    def __exit__(self, *exc) -> None:
        child.stop(self.process)
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def is_interrupt(exc: BaseException) -> bool:
    """Ctrl-C or SIGTERM, however it surfaced: as KeyboardInterrupt, as dlt's
    SignalReceivedException (possibly wrapped in PipelineStepFailed), or as DuckDB's
    'Query interrupted' (or any error after a stop was requested)."""
    if interrupts.requested():  # whatever error the cancelled work raised on its way out
        return True
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(
            seen, (KeyboardInterrupt, SignalReceivedException, duckdb.InterruptException)
        ):
            return True
        if isinstance(seen, RuntimeError) and "Query interrupted" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextmanager
def source_errors_refused(path: str):
    """A corrupted or unreadable source found before the first write is bad input (exit 2),
    not a failed migration."""
    try:
        yield
    except (
        sqlite3.DatabaseError,
        UnicodeDecodeError,
        duckdb.IOException,
        duckdb.InvalidInputException,
    ) as exc:
        raise SourceError(
            f"{path} cannot be read: {str(exc).strip().splitlines()[0] if str(exc) else exc}",
            "Check it with `sqlite3 <file> 'PRAGMA integrity_check'` and repair or restore it; "
            "nothing was written.",
        ) from None


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
