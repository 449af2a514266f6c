"""The copy stage: a dlt pipeline from the SQLite source to the llmspell destination.

One `pipeline.run` per component, in plan order, so progress and failures are per component.
The pipeline has a stable name and working folder (see `pipelines.settings`), so
`dlt pipeline --pipelines-dir .llmspell-migrate/dlt llmspell_migrate info|trace` shows the
last run. A package left pending by a crashed run is aborted first: the rows it delivered
are already in the target and recorded in the run's ledger, and re-delivered rows are
skipped by their key, so re-extracting everything is both simpler and exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import dlt
import psycopg
from dlt.common.runtime.signals import raise_if_signalled
from dlt.pipeline.exceptions import PipelineStepFailed

from destinations.llmspell_destination import llmspell_postgres
from destinations.postgres_writer import ParallelWriter
from pipelines import settings
from pipelines.errors import MigrateError, MigrationFailed
from sources.components import Component
from sources.llmspell_source import llmspell_sqlite


class Progress:
    """The guide's `Progress: 420/1000 records (42%)` lines, every 10%."""

    def __init__(self, comp: Component, total: int, emit: Callable[[str], None]):
        self.comp = comp
        self.total = total
        self.done = 0
        self.emit = emit
        self.next_step = 10
        self.started = time.perf_counter()

    def advance(self, n: int) -> None:
        self.done += n
        pct = 100 if self.total == 0 else int(self.done * 100 / self.total)
        if self.done < self.total and pct >= self.next_step:
            self.emit(f"Progress: {self.done}/{self.total} records ({min(pct, 100)}%)")
            self.next_step = (pct // 10 + 1) * 10

    def finish(self) -> None:
        elapsed = time.perf_counter() - self.started
        self.emit(f"Progress: {self.done}/{self.total} records (100%) - {elapsed:.1f}s")


def make_pipeline(destination=None) -> dlt.Pipeline:
    """The pipeline, attached to `destination` (dlt cannot re-create a custom destination
    from its saved state, so every use passes one). Its working folder is private: load
    packages hold migrated rows in clear. (The tool's home folder itself stays open: the
    embedded PostgreSQL's own user must reach its data folder there.)"""
    settings.private_dir(settings.pipelines_dir())
    return dlt.pipeline(
        pipeline_name=settings.PIPELINE_NAME,
        pipelines_dir=str(settings.pipelines_dir()),
        dataset_name=settings.DATASET_NAME,
        destination=destination or llmspell_postgres(_refuse, 1000),
    )


def _refuse(batch) -> None:
    raise MigrationFailed(
        "internal: batch delivered to a placeholder destination", "Report this as a bug."
    )


def _root_cause(exc: BaseException) -> BaseException:
    seen = exc
    while seen.__cause__ is not None:
        seen = seen.__cause__
    return seen


def copy_component(
    writer: ParallelWriter,
    source_read_path: Path,
    comp: Component,
    batch_size: int,
    tenants: list[str] | None,
    progress: Progress,
) -> int:
    """Copy one component; returns the number of rows newly inserted."""
    before = writer.inserted.get(comp.name, 0)

    def on_batch(batch) -> None:
        raise_if_signalled()  # Ctrl-C / SIGTERM stop between batches; rollback follows
        writer.write_batch(comp, batch)
        progress.advance(batch.num_rows)

    source = llmspell_sqlite(
        path=str(source_read_path),
        components=[comp.name],
        batch_size=batch_size,
        tenants=tenants,
        snapshot=False,
    )
    pipeline = make_pipeline(llmspell_postgres(on_batch, batch_size))
    try:
        try:
            pipeline.run(source)
        finally:
            settings.make_private(settings.pipelines_dir())
        writer.flush()  # batches still in flight on the other connections
    except PipelineStepFailed as exc:
        cause = _root_cause(exc)
    except psycopg.Error as exc:
        cause = exc
    else:
        return writer.inserted.get(comp.name, 0) - before
    if isinstance(cause, MigrateError):
        raise cause from None
    raise MigrationFailed(
        f"Migration execution failed in {comp.name}: {type(cause).__name__}: "
        f"{str(cause).strip().splitlines()[0] if str(cause).strip() else ''}",
        "Everything this run wrote was rolled back; fix the cause and re-run the plan.",
    ) from cause


def discard_pending() -> bool:
    """Abort a load package a crashed run left behind; True if there was one."""
    pipeline = make_pipeline()
    if not pipeline.has_pending_data:
        return False
    pipeline.abort_packages()
    return True
