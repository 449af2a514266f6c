"""The copy stage: one dlt `pipeline.run` from the SQLite source to the llmspell destination.

Every component of the run is a resource of one source, so dlt's trace, info and load
package cover the whole migration (`dlt pipeline --pipelines-dir .llmspell-migrate/dlt
llmspell_migrate trace`). The extract writes several parquet files per component and dlt's
loader loads `workers` of them at once; each batch is committed before the sink returns, and
the load completes only after the engine's validation passed (the destination's
`complete_load`). A failed batch or validation fails the load: the trace says so and names the
component and the error, and dlt aborts the package.

The load packages hold a parquet copy of every migrated row: once the run is over (migrated
or rolled back) their job files are emptied, unless the user keeps them (`--keep-packages`);
dlt's record of the package (its jobs, state and trace) stays for `dlt pipeline`. A package
left pending by a crashed run is aborted first: the rows it delivered are already in the
target and in the run's ledger, and re-delivered rows are skipped by their key.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dlt
import pyarrow as pa
from dlt.common.exceptions import SignalReceivedException
from dlt.common.runtime.collector_base import Collector
from dlt.common.runtime.signals import raise_if_signalled
from dlt.common.storages.load_package import PackageStorage
from dlt.pipeline.exceptions import PipelineStepFailed

from core import files, interrupts, settings
from core.errors import LockBusy, MigrateError, MigrationFailed, PreflightError
from core.model.components import Component
from destinations.llmspell_destination import Delivery as Receiver
from destinations.llmspell_destination import llmspell_postgres
from destinations.postgres_writer import WriterPool
from pipelines.shared.progress import COPY, Counter, Listener, PlainLines
from pipelines.stages.progress_dlt import DltSteps
from sources.key_routing import KeyMapper
from sources.llmspell_source import llmspell_sqlite

# Batches per parquet file: dlt's loader parallelizes over files, so a component is split
# into files of a few batches to keep `workers` connections busy within one component.
FILE_BATCHES = 2
JOB_FOLDERS = (
    PackageStorage.NEW_JOBS_FOLDER,
    PackageStorage.STARTED_JOBS_FOLDER,
    PackageStorage.COMPLETED_JOBS_FOLDER,
    PackageStorage.FAILED_JOBS_FOLDER,
)

# A per-batch row transformation (e.g. key re-mapping) applied before the batch is written.
Transform = Callable[[Component, pa.RecordBatch], pa.RecordBatch]


class Delivery:
    """What the destination's sink writes into during one run: per-component progress, the
    first failure (and which component it hit), and the validation as the load's completion.

    Called from dlt's loader threads; once one batch failed, the others stop at their next
    batch, so dlt drains quickly and the rollback starts from a quiet target."""

    def __init__(
        self,
        pool: WriterPool,
        comps: list[Component],
        totals: dict[str, int],
        emit: Callable[[str], None],
        on_complete: Callable[[], None],
        skip: set[str] = frozenset(),
        transform: Transform | None = None,
        progress: Listener | None = None,
    ):
        self.pool = pool
        self.by_table = {c.name: c for c in comps}
        self.order = comps
        self.totals = totals
        self.emit = emit
        self.on_complete = on_complete
        self.transform = transform
        self.listener = progress or PlainLines(emit)  # default: the guide's lines
        self.progress: dict[str, Counter] = {}
        self.error: BaseException | None = None
        self.failed_in: str | None = None
        self._lock = threading.Lock()
        for comp in comps:
            if comp.name in skip:
                self._start(comp)
                self.emit(
                    f"All {totals[comp.name]} records already migrated; nothing to copy"
                    if totals[comp.name]
                    else "No records in the source; nothing to copy"
                )
                self.progress[comp.name].finished = True

    def _start(self, comp: Component) -> Counter:
        self.emit("")
        number = self.order.index(comp) + 1  # its place in the plan; dlt may start any first
        self.emit(f"[{number}/{len(self.order)}] Migrating component: {comp.name}")
        progress = Counter(self.listener, COPY, comp.name, self.totals.get(comp.name, 0))
        self.progress[comp.name] = progress
        return progress

    def _fail(self, where: str, exc: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error, self.failed_in = exc, where

    def deliver(self, table: str, batch: pa.RecordBatch) -> None:
        comp = self.by_table[table]
        with self._lock:
            if self.error is not None:  # dlt may report this job's error, not the first one
                first = str(self.error).splitlines()[0] if str(self.error) else ""
                raise MigrationFailed(
                    f"{table}: not written, {self.failed_in} failed first "
                    f"({self.failed_in}: {type(self.error).__name__}: {first})",
                    "See that error.",
                )
            if table not in self.progress:
                self._start(comp)
        try:
            raise_if_signalled()  # Ctrl-C / SIGTERM stop between batches; rollback follows
            if self.transform is not None:
                batch = self.transform(comp, batch)
            rows = batch.num_rows
            self.pool.write(comp, batch)
        except BaseException as exc:
            self._fail(table, exc)
            raise
        with self._lock:
            self.progress[table].advance(rows)

    def complete(self, load_id: str) -> None:
        with self._lock:
            for comp in self.order:  # components with nothing in the source
                (self.progress.get(comp.name) or self._start(comp)).finish()
        try:
            # Inside dlt's load step dlt's handlers hold SIGINT/SIGTERM (the first signal only
            # sets a flag its loader reads between jobs): a signal caught while the last jobs
            # drained stops here, and the validation takes them back, so one signal stops it.
            raise_if_signalled()
            with interrupts.stopping():
                self.on_complete()
        except BaseException as exc:
            self._fail("validation", exc)
            raise


@contextmanager
def _pipeline_settings(workers: int, rows_per_file: int) -> Iterator[None]:
    """dlt settings of this pipeline only (sections named after it): loader workers, files of
    a few batches, and a failed job aborting its package within the same run."""
    prefix = settings.PIPELINE_NAME.upper() + "__"
    values = {
        "LOAD__WORKERS": str(max(1, workers)),
        "LOAD__AUTO_ABORT_ON_TERMINAL_ERROR": "true",
        "DATA_WRITER__FILE_MAX_ITEMS": str(rows_per_file),
    }
    saved = {k: os.environ.get(prefix + k) for k in values}
    os.environ.update({prefix + k: v for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(prefix + k, None)
            else:
                os.environ[prefix + k] = v


def make_pipeline(
    batch_size: int = 1000, progress: Collector | None = None, delivery: Receiver | None = None
) -> dlt.Pipeline:
    """The pipeline. Its working folder is private: load packages hold migrated rows in
    clear. (The tool's home folder itself stays open: the embedded PostgreSQL's own user
    must reach its data folder there.) `progress`: dlt's collector for its steps;
    `delivery`: what the destination writes the batches into (none: it refuses them)."""
    files.private_dir(settings.pipelines_dir())
    return dlt.pipeline(
        pipeline_name=settings.PIPELINE_NAME,
        pipelines_dir=str(settings.pipelines_dir()),
        dataset_name=settings.DATASET_NAME,
        destination=llmspell_postgres(batch_size, delivery),
        **({"progress": progress} if progress is not None else {}),
    )


def _root_cause(exc: BaseException) -> BaseException:
    seen = exc
    while seen.__cause__ is not None:
        seen = seen.__cause__
    return seen


def copy(
    delivery: Delivery,
    source_read_path: Path,
    comps: list[Component],
    batch_size: int,
    tenants: list[str] | None,
    workers: int,
    mappers: dict[str, KeyMapper] | None = None,
) -> None:
    """Run the copy of `comps` (and, as its completion, the validation) as one dlt run; each
    row as `mappers` (the key layout's re-keying, per component) writes it."""
    source = llmspell_sqlite(
        path=str(source_read_path),
        components=[c.name for c in comps],
        batch_size=batch_size,
        tenants=tenants,
        snapshot=False,
        mappers=mappers,
    )
    with _pipeline_settings(workers, batch_size * FILE_BATCHES):
        pipeline = make_pipeline(batch_size, DltSteps(delivery.listener, delivery.totals), delivery)
        try:
            pipeline.run(source)
            return
        except PipelineStepFailed as exc:
            cause = delivery.error or _root_cause(exc)
        finally:
            files.make_private(settings.pipelines_dir())
    if isinstance(cause, MigrateError | KeyboardInterrupt | SignalReceivedException):
        raise cause from None
    where = delivery.failed_in or "the copy"
    text = str(cause).strip().splitlines()
    raise MigrationFailed(
        f"Migration execution failed in {where}: {type(cause).__name__}"
        + (f": {text[0]}" if text else ""),
        "Everything this run wrote was rolled back; fix the cause and re-run the plan.",
    ) from cause


RUN_LOCK = "run.lock"  # in dlt's working folder: which run uses it now


@contextmanager
def working_folder(target: str) -> Iterator[None]:
    """Hold dlt's working folder (one pipeline, `llmspell_migrate`) for one run, or refuse at
    once with LockBusy (exit 3) naming the run that holds it. Two runs from one tool home
    would otherwise share its load packages and delete each other's files; runs against
    different targets at once need homes of their own (LLMSPELL_MIGRATE_HOME). The lock is
    the kernel's (flock): a run killed outright holds it no longer, so the next run of its
    plan resumes."""
    folder = files.private_dir(settings.pipelines_dir())
    path = folder / RUN_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(path) from None
        holder = {"pid": os.getpid(), "since": f"{dt.datetime.now():%Y-%m-%d %H:%M:%S}"}
        holder["target"] = target
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def _busy(path: Path) -> LockBusy:
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        holder = {}
    who = ""
    if holder.get("pid"):
        since, target = holder.get("since", "?"), holder.get("target", "?")
        who = f" (pid {holder['pid']}, since {since}, target {target})"
    return LockBusy(
        f"Another migration is running from this working folder{who}",
        f"Wait for it to finish, or give this run its own tool home (LLMSPELL_MIGRATE_HOME): "
        f"both would use dlt's working folder {path.parent}; nothing was written.",
    )


def discard_pending() -> bool:
    """Abort a load package a crashed run left behind; True if there was one."""
    pipeline = make_pipeline()
    if not pipeline.has_pending_data:
        return False
    pipeline.abort_packages()
    return True


def finish_packages(keep: bool) -> list[str]:
    """After a run (migrated or rolled back): a package still pending is recorded as aborted
    and, unless `keep`, every package's job files are emptied. dlt keeps its record of the
    packages (state, job list, trace); the parquet copies of the migrated rows are gone.
    Returns the load ids cleaned."""
    pipeline = make_pipeline()
    storage = pipeline._get_load_storage()  # dlt has no public API for a package's files
    if not storage.is_storage_ready():
        return []
    for load_id in storage.list_normalized_packages():
        storage.complete_load_package(load_id, aborted=True)
    normalize = pipeline._get_normalize_storage()
    if normalize.is_storage_ready():
        for load_id in normalize.extracted_packages.list_packages():
            normalize.extracted_packages.delete_package(load_id)
    if keep:
        return []
    cleaned = []
    for load_id in storage.list_loaded_packages():
        package = Path(storage.loaded_packages.storage.make_full_path(load_id))
        emptied = False
        for folder in JOB_FOLDERS:
            for job in (package / folder).glob("*"):
                if job.is_file() and job.stat().st_size:
                    job.write_bytes(b"")
                    emptied = True
        if emptied:
            cleaned.append(load_id)
    return cleaned


def prune_packages(keep: int) -> list[str]:
    """Delete all but the `keep` newest finished load packages; returns the load ids deleted."""
    pipeline = make_pipeline()
    storage = pipeline._get_load_storage()
    if not storage.is_storage_ready():
        return []
    loaded = sorted(storage.list_loaded_packages(), key=float)
    doomed = loaded[: max(0, len(loaded) - keep)]
    for load_id in doomed:
        storage.delete_loaded_package(load_id)
    return doomed


def staging_bytes(source_file: Path) -> int:
    """dlt's staging holds the source's rows once, as parquet (no more than the SQLite file)."""
    size = source_file.stat().st_size
    wal = Path(f"{source_file}-wal")
    return size + (wal.stat().st_size if wal.exists() else 0)


def _existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def check_space(source_file: Path, backup_root: Path | None, backup_bytes: int) -> None:
    """Disk for dlt's staging (and the backup, when both live on one file system)."""
    staging = settings.pipelines_dir()
    needed = staging_bytes(source_file)
    probe = _existing(staging)
    if backup_root is not None and _existing(backup_root).stat().st_dev == probe.stat().st_dev:
        needed += backup_bytes
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise PreflightError(
            f"not enough disk space for dlt's staging in {staging}: {free // 2**20} MiB free, "
            f"about {needed // 2**20} MiB needed (with the backup if on the same disk)",
            "Free space, or point LLMSPELL_MIGRATE_HOME to a larger disk; nothing was written.",
        )
