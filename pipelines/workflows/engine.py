"""The migration engine: Pre-flight -> Backup -> Batch copy -> Validation -> Success/Rollback.

`Engine.execute` reads as the run does, stage by stage; what every run shares (opening the
source snapshot and the target, bookkeeping, lock, ledger, signals, rollback, the failure
report) is `pipelines.stages.run.Run`.

A run either ends fully migrated and validated, or with every row it wrote removed again:
any failure after the first write (validation mismatch, constraint violation, lost
connection, Ctrl-C/SIGTERM) deletes exactly the rows in the run's ledger. A crash that left
no chance to roll back leaves the run marked `running`; the next execute of the same plan
adopts it, skips what is already there and finishes the job.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core import files
from core.errors import PreflightError, UsageError, ValidationFailed
from destinations import connection, target_schema
from destinations.postgres_writer import WriterPool
from pipelines.shared import progress as progress_mod
from pipelines.shared.plan import Plan
from pipelines.stages import backup as backup_mod
from pipelines.stages import copy_stage, preflight, store_steps, sync_baseline
from pipelines.stages.results import ExecuteResult
from pipelines.stages.run import (
    MIGRATION,
    Emit,
    Run,
    describe,
    new_run_id,
    source_errors_refused,
    source_paths_for,
    take_back,
)
from pipelines.stages.validation_lines import render_validation
from sources.key_routing import mappers
from sources.sqlite_reader import SourceDB
from validation.stage import TargetPrintsListener, Validator

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


class Engine:
    """Execute and dry-run of a plan, each one `Run` (`pipelines.stages.run`): its stages in order
    in `execute`, the dlt load's completion (`_loaded`) the last of them."""

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
        self.comps = [cp.component for cp in plan.components]
        self.allow_unreachable = allow_unreachable
        self.source_paths = source_paths_for(plan, source)
        self.source_path = self.source_paths[0]
        self.target_override = target
        self.emit = emit
        # stages report their counts here; by default the guide's copy lines through `emit`
        self.progress = progress or progress_mod.PlainLines(emit)
        self.workers = check_workers(workers)
        self.keep_packages = keep_packages

    def _open(self, dry_run: bool) -> Run:
        run = Run.open(
            MIGRATION,
            self.plan,
            self.source_paths,
            self.target_override,
            self.emit,
            workers=self.workers,
        )
        run.result = ExecuteResult(
            status="DRY_RUN" if dry_run else "FAILED",
            dry_run=dry_run,
            components=self.plan.component_names,
            target=run.target.where,
            source=self.source_path,
        )
        return run

    # -- execute -----------------------------------------------------------------------------
    def execute(self) -> ExecuteResult:
        """Pre-flight and backup, then (only if they pass) copy and validate; any failure
        after the first write rolls the run back (`Run`)."""
        now = dt.datetime.now()
        self.emit("Migration starting...")
        run = self._open(dry_run=False)
        result: ExecuteResult = run.result
        with run:
            # 1. bookkeeping, lock, dlt's working folder; a crashed run of this plan resumes
            run.create_bookkeeping()
            run.lock()
            run.hold(copy_stage.working_folder(run.target.where))
            unfinished = run.unfinished(self.plan.fingerprint())
            run_id = unfinished.run_id if unfinished else new_run_id(now)
            if unfinished:
                result.run_id, result.resumed_run = run_id, True
                self.emit(f"Resuming interrupted run {run_id} (started {unfinished.started_at})")
            self._check_staging(self.plan.backup_enabled and not result.resumed_run)
            t0 = time.perf_counter()
            result.stages["open"] = t0 - run.started
            # 2. pre-flight, the backup written alongside
            with source_errors_refused(self.source_path):
                report = self._preflight_and_backup(run, run_id, now, result)
            result.preflight = report
            result.source_records = report.source_records
            if unfinished and not result.backup_path:
                result.backup_path = unfinished.backup_path
            result.stages["preflight_and_backup"] = time.perf_counter() - t0
            # 3. in the ledger: from here on a failure rolls back what the run wrote
            undo = self._undo(run, run_id)
            if unfinished:
                run.resume(run_id, undo)
            else:
                run.start(
                    run_id,
                    self.plan.fingerprint(),
                    self.plan.component_names,
                    self.source_path,
                    result.backup_path,
                    report.tenants,
                    undo,
                )
            run.at_end(self._finish_packages)
            for line in store_steps.prepare_target(run.conn, run.db, self.plan):
                self.emit(line)
            # 4. copy: one dlt run, whose load completes with the rest of the run (_loaded)
            writer = self._writer(run, run_id, report, result)
            done_with_writer = run.on_failure(writer.abandon)
            self._copy(run, writer, report, result)
            done_with_writer()
            result.status = "SUCCESS"
            result.target_records = result.validation.target_records
        return result

    def _loaded(
        self,
        run: Run,
        writer: WriterPool,
        result: ExecuteResult,
        copy_started: float,
    ) -> None:
        """dlt's load completion: every batch is committed. The run ends here, inside the
        load, so that dlt records the load as complete only once the run is: 5. artifacts
        (after the rows they refer to), 6. validation beside the sync baseline, 7. run
        completed. Anything raised here fails the load in dlt's trace."""
        writer.close()  # every batch is committed: the connections are done
        for comp in self.comps:
            if not comp.own_copy:
                result.written[comp.name] = writer.inserted.get(comp.name, 0)
        # Skipping rows already there: pre-flight proved any such row identical.
        result.written.update(
            store_steps.copy_own(run.target, run.db, self.plan, result.run_id, True, self.emit)
        )
        result.stages["copy"] = time.perf_counter() - copy_started
        prints = result.preflight.source_prints  # written by pre-flight's pass over the source
        baseline = self._start_baseline(run, result)
        try:
            self._validate(run, result, prints, baseline)
        except BaseException:
            baseline.abandon()
            raise
        waited = time.perf_counter()
        baseline.commit()
        result.stages["sync_baseline"] = time.perf_counter() - waited
        run.complete()  # still inside dlt's load: the package is marked loaded after this

    def _undo(self, run: Run, run_id: str):
        """How a failed execute takes back its rows: every key in its ledger deleted."""

        def undo(conn) -> dict[str, int]:
            self.emit("[INFO] Rolling back all components...")
            deleted = take_back(conn, run_id, self.comps, run.bypass)
            for name, n in deleted.items():
                self.emit(f"[INFO] Deleted {n} records from {name}")
            self.emit("[INFO] Rollback complete. Source data unchanged.")
            return deleted

        return undo

    # -- dry-run -----------------------------------------------------------------------------
    def dry_run(self) -> ExecuteResult:
        started = time.perf_counter()
        self.emit("[DRY-RUN] Migration validation starting...")
        with source_errors_refused(self.source_path):
            run = self._open(dry_run=True)
            result: ExecuteResult = run.result
            try:
                unfinished = None
                if not run.missing_bookkeeping:
                    unfinished = run.unfinished(self.plan.fingerprint())
                needs_backup = self.plan.backup_enabled and not (
                    unfinished and unfinished.backup_path
                )
                if needs_backup:
                    self._check_backup_location()
                self._check_staging(needs_backup)
                report = self._preflight(run, None, result)
            finally:
                run.close()
        result.preflight = report
        result.source_records = report.source_records
        for warning in report.warnings:
            self.emit(f"[DRY-RUN] WARNING: {warning}")
        self.emit("[DRY-RUN] Pre-flight validation passed")
        if run.missing_bookkeeping:
            self.emit(
                "[DRY-RUN] Would create the migration's bookkeeping: "
                + ", ".join(run.missing_bookkeeping)
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

    # -- the stages --------------------------------------------------------------------------
    def _preflight(
        self,
        run: Run,
        backup: backup_mod.BackupWriter | None,
        result: ExecuteResult,
        prints_dir: str | None = None,
    ) -> preflight.PreflightReport:
        """Every check that can refuse the run; with `prints_dir` (execute) the same pass
        over the records writes validation's source prints there."""
        db, conn, bypass = run.db, run.conn, run.bypass
        report = preflight.count_source(db, self.plan)
        comps = self.comps
        # Reachability first: records llmspell could not find stop the run before a backup.
        report.key_layout = self.plan.key_layout
        report.reachability = preflight.classify_source(
            db, comps, self.plan.tenants, self.plan.key_layout
        )
        preflight.check_reachability(report, self.allow_unreachable)
        target_schema.check_schema(conn, comps)
        tenants = report.tenants
        existing = {c.name: preflight.existing_target_keys(conn, c, tenants, bypass) for c in comps}
        warn = report.warnings.append
        scan = (db, self.plan, existing, report, self.progress, prints_dir, warn)
        if backup is None:
            overlaps = preflight.scan_source(*scan)
        else:  # the backup is written on the other core while Python checks the records
            with ThreadPoolExecutor(max_workers=1) as pool:
                done = pool.submit(self._export, backup, db, report)
                try:
                    overlaps = preflight.scan_source(*scan)
                finally:
                    done.result()
        report.warnings += preflight.number_change_lines(report)
        self._check_conflicts(run, overlaps, report, result)
        store_steps.refuse_collisions(db, conn, self.plan, bypass)
        store_steps.refuse_dangling(db, conn, self.plan, bypass)
        return report

    def _mappers(self, report: preflight.PreflightReport) -> dict:
        """The key layout's re-keying per component (the write path and validation share it)."""
        return mappers(self.comps, self.plan.key_layout, report.keep_verbatim)

    def _validator(self, run: Run, comps, report: preflight.PreflightReport) -> Validator:
        return Validator(
            str(run.db.read_path),
            run.target.dsn,
            run.bypass,
            comps,
            self.plan.tenants,
            self._mappers(report),
        )

    def _check_conflicts(
        self,
        run: Run,
        overlaps: dict[str, set[tuple[str, str]]],
        report: preflight.PreflightReport,
        result: ExecuteResult,
    ) -> None:
        if not any(overlaps.values()):
            return
        comps = [c for c in self.comps if overlaps.get(c.name)]
        conflicts: list[str] = []
        total = 0
        with self._validator(run, comps, report) as validator:
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

    def _preflight_and_backup(
        self, run: Run, run_id: str, now: dt.datetime, result: ExecuteResult
    ) -> preflight.PreflightReport:
        """Pre-flight, with the backup written alongside on the other core. A re-run of a
        plan whose records all look present checks first and writes a backup only if there
        is something to write."""
        backup = None
        needs_backup = self.plan.backup_enabled and not result.resumed_run
        if needs_backup:
            self._check_backup_location()
            if not self._maybe_all_present(run):
                backup = self._new_backup(run_id, now)
        prints_dir = files.scratch_dir("prints")
        run.at_end(lambda: shutil.rmtree(prints_dir, ignore_errors=True))
        try:
            report = self._preflight(run, backup, result, str(prints_dir))
        except BaseException:
            if backup:
                backup.abort()
            raise
        for warning in report.warnings:
            self.emit(f"WARNING: {warning}")
        nothing_to_write = all(c.already_present == c.source_count for c in report.components)
        if needs_backup and backup is None and not nothing_to_write:
            backup = self._new_backup(run_id, now)
            try:
                self._export(backup, run.db, report)
            except BaseException:
                backup.abort()
                raise
        if backup:
            backup.write_key_map(report.reachability)
            result.backup_path = str(
                backup.commit(
                    self.plan, run.target.display, self.source_paths, report.tenants
                ).resolve()
            )
            self.emit(f"Backup written: {result.backup_path}")
        elif needs_backup:
            self.emit("Every record is already in the target: nothing to write, no backup taken")
        return report

    def _new_backup(self, run_id: str, now: dt.datetime) -> backup_mod.BackupWriter:
        return backup_mod.BackupWriter(backup_mod.backup_root(self.plan), run_id, now)

    def _export(
        self, backup: backup_mod.BackupWriter, db: SourceDB, report: preflight.PreflightReport
    ) -> None:
        """Write the backup, its progress counted in records (a component at a time)."""
        counts = {c.name: c.source_count for c in report.components}
        counter = progress_mod.StageCounter(self.progress, progress_mod.BACKUP, counts)
        backup.export(
            db.read_path,
            self.comps,
            self.plan.tenants,
            lambda _name, n: counter.advance(n),
        )
        counter.finish()

    def _maybe_all_present(self, run: Run) -> bool:
        """True when the target already holds at least as many keys as the source, per
        component: then the records are probably migrated and the backup can wait."""
        for comp in self.comps:
            per_tenant = run.db.counts_by_tenant(comp, self.plan.tenants)
            source = sum(per_tenant.values())
            if source and source > preflight.count_target_keys(
                run.conn, comp, sorted(per_tenant), run.bypass
            ):
                return False
        return True

    def _finish_packages(self) -> None:
        try:
            copy_stage.finish_packages(self.keep_packages)
        except Exception as exc:  # the run's outcome stands; the files can be pruned later
            self.emit(f"WARNING: could not clean dlt's load packages: {describe(exc)}")

    def _writer(
        self, run: Run, run_id: str, report: preflight.PreflightReport, result: ExecuteResult
    ) -> WriterPool:
        # Keys can already be in the target only on a resumed run or when pre-flight found
        # identical rows; otherwise a plain INSERT is cheaper and a conflict is an error.
        skip_existing = result.resumed_run or any(c.already_present for c in report.components)
        return WriterPool(
            lambda: connection.connect(run.target),
            run_id,
            skip_existing=skip_existing,
            workers=self.workers,
        )

    def _copy(
        self,
        run: Run,
        writer: WriterPool,
        report: preflight.PreflightReport,
        result: ExecuteResult,
    ) -> None:
        """One dlt run for every component; its load completes with `_loaded`."""
        t0 = time.perf_counter()
        if copy_stage.discard_pending():
            self.emit("Discarded an unfinished dlt load package from an interrupted run")
        # Components with their own copy (artifacts) follow the dlt run, before validation.
        comps = [c for c in self.comps if not c.own_copy]
        totals = {c.name: c.source_count for c in report.components}
        # nothing to copy: every record already there, or none in the source (an empty
        # component in the dlt run would leave it without a load, so without its completion)
        done = {c.name for c in report.components if c.already_present == c.source_count}
        delivery = copy_stage.Delivery(
            writer,
            comps,
            totals,
            self.emit,
            lambda: self._loaded(run, writer, result, t0),
            skip=done,
            progress=self.progress,
        )
        todo = [c for c in comps if c.name not in done]
        if not todo:
            delivery.complete("")
            return
        copy_stage.copy(
            delivery,
            run.db.read_path,
            todo,
            max(cp.batch_size for cp in self.plan.components if cp.component in todo),
            self.plan.tenants,
            self.workers,
            self._mappers(report),
        )

    def _start_baseline(self, run: Run, result: ExecuteResult) -> sync_baseline.BaselineRecorder:
        """What this run wrote, fingerprinted on both sides (the baseline of `sync`),
        recorded alongside validation and kept only if the run validates."""
        return sync_baseline.BaselineRecorder(
            str(run.db.read_path),
            run.target,
            run.bypass,
            self.comps,
            self.plan.tenants,
            self._mappers(result.preflight),
            result.run_id,
            shared=True,  # the target prints come from validation's comparison
            # and the source prints from pre-flight's pass over the records
            source_files={
                name: files
                for name, files in result.preflight.source_prints.items()
                if name in result.preflight.record_prints
            },
        )

    def _validate(
        self,
        run: Run,
        result: ExecuteResult,
        source_prints: dict[str, dict[str, list[str]]] | None = None,
        target_prints: TargetPrintsListener | None = None,
    ) -> None:
        t0 = time.perf_counter()
        self.emit("")
        self.emit("Validating migration...")
        comps = self.comps
        checked = result.preflight
        counts = {c.name: c.source_count for c in checked.components}
        counter = progress_mod.StageCounter(self.progress, progress_mod.VALIDATION, counts)
        with self._validator(run, comps, checked) as validator:
            report = validator.validate(
                comps,
                self.plan.checksum_sample_percent,
                self.plan.full_comparison_threshold,
                source_prints,
                checked.reachability,
                counter.component_done,
                target_prints,
            )
        counter.finish()
        result.validation = report
        result.stages["validation"] = time.perf_counter() - t0
        for line in render_validation(report, self.plan.full_comparison_threshold):
            self.emit(line)
        if not report.passed:
            raise validation_failure(report)


def validation_failure(report) -> ValidationFailed:
    """The failure report of a migration's validation that did not pass."""
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
    return ValidationFailed(
        f"Validation failed: {msg}",
        "The run was rolled back. Inspect the mismatches above (verify --json gives "
        "them all), fix the cause and re-run.",
        details=[str(m) for c in failed for m in c.mismatches][:20]
        + [f"missing: {k}" for c in failed for k in c.missing][:20]
        + [m for c in failed if c.readback for m in c.readback.mismatches][:20],
    )
