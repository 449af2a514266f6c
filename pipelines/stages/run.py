"""One run's lifecycle, the same for `execute`, `sync`, `verify` and `rollback`.

    open (source snapshot, target, bookkeeping) -> lock -> ledger -> stages
        -> commit | roll back -> failure report -> close

`Run.open` opens the plan's source snapshot and its target and checks what the run needs
there (llmspell's schema, the tool's bookkeeping, free connections): anything wrong is bad
input, raised as it is, with nothing written. `with run:` is the run itself: Ctrl-C and
SIGTERM stop it in any stage; once the run is in the ledger (`start`, `resume`) a failure
takes back everything it wrote (`undo`, given by the kind of run) and is raised as the
run's failure report, its result attached; and the lock, the connection, the snapshot and
whatever the stages held (`hold`) are released, whatever happened. `take_back` is the one
rollback of a recorded run, for the failure path and for the `rollback` command alike.
"""

from __future__ import annotations

import datetime as dt
import secrets
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import psycopg
from dlt.common.exceptions import SignalReceivedException

from core import interrupts, settings
from core.errors import MigrateError, MigrationFailed, PreflightError, SourceError, TargetError
from core.model.components import Component
from destinations import artifact_sync, connection, run_ledger, target_schema
from destinations.postgres_writer import role_bypasses_rls
from pipelines.shared.plan import Plan
from sources import installation
from sources.sqlite_reader import SourceDB

Emit = Callable[[str], None]
Undo = Callable[[psycopg.Connection], dict[str, int]]

SYNC_PREFIX = "sync-"


def new_run_id(now: dt.datetime, kind: str = "") -> str:
    return f"{kind}{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def is_sync_run(run_id: str) -> bool:
    return run_id.startswith(SYNC_PREFIX)


@dataclass(frozen=True)
class Kind:
    """A kind of run, as its failure report and its rollback messages name it."""

    interrupted: str  # the report's message after Ctrl-C or SIGTERM
    failed: str  # ... after any other error that is not already the tool's own
    undone: str  # what the rollback did, when the run had written
    when_ready: str  # what to do after an interrupt
    fix: str  # what to do after a failure
    cannot_undo: str  # the rollback itself failed
    stays: str  # what then becomes of the run ({run_id})


MIGRATION = Kind(
    interrupted="Migration interrupted (Ctrl-C or SIGTERM)",
    failed="Migration execution failed",
    undone="Everything this run wrote was rolled back",
    when_ready="re-run the plan when ready",
    fix="fix the cause and re-run",
    cannot_undo="Rollback could not complete",
    stays="Run {run_id} stays marked running; re-run the plan to resume, or "
    "`rollback --run-id` it once PostgreSQL is back.",
)
SYNC = Kind(
    interrupted="Sync interrupted (Ctrl-C or SIGTERM)",
    failed="Sync failed",
    undone="The target was restored as it was before the sync",
    when_ready="sync again when ready",
    fix="fix the cause and sync again",
    cannot_undo="Restore could not complete",
    stays="Sync {run_id} stays marked running; the next sync restores it.",
)


def source_paths_for(plan: Plan, override: str | list[str] | None) -> list[str]:
    """The files a run reads: `--source` (repeatable) over the plan's files, the main
    database first."""
    given = [override] if isinstance(override, str) else list(override or [])
    paths = given or plan.source_paths or [str(p) for p in installation.discover().paths]
    return [str(Path(p).expanduser()) for p in paths]


def prepare_target(target: connection.Target) -> None:
    """The embedded server is ours: give it the llmspell schema without being asked."""
    if target.embedded:
        with connection.connect(target, autocommit=True) as conn:
            target_schema.ensure_schema(conn)


def resolve_target(plan: Plan, override: str | None) -> connection.Target:
    """The plan's target (refused when it resolves to another server than the plan's)."""
    connection.check_identity(plan.target_identity, override, plan.target_connection)
    target = connection.resolve(override, plan.target_connection)
    prepare_target(target)
    return target


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


class Run:
    """One run: its source snapshot and target, lock, ledger entry, rollback and report."""

    def __init__(
        self,
        kind: Kind,
        emit: Emit,
        db: SourceDB | None,
        target: connection.Target,
        conn: psycopg.Connection,
        bypass: bool,
        missing_bookkeeping: list[str],
    ):
        self.kind = kind
        self.emit = emit
        self.db = db
        self.target = target
        self.conn = conn
        self.bypass = bypass
        self.missing_bookkeeping = missing_bookkeeping
        self.result: Any = None  # the caller's result; attached to the failure report
        self.run_id: str | None = None
        self.undo: Undo | None = None  # set once the run is in the ledger
        self.started = time.perf_counter()
        self._locked = False
        self._held = ExitStack()  # what the stages hold until the run is over
        self._signals = ExitStack()
        self._on_failure: list[Callable[[], None]] = []

    # -- open ------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        kind: Kind,
        plan: Plan,
        source_paths: list[str],
        target: str | None,
        emit: Emit,
        *,
        workers: int | None = None,
        bookkeeping: bool = True,
    ) -> Run:
        """The plan's source snapshot (its components and tenants there) and its target
        (llmspell's schema; with `bookkeeping`, the tool's, or a role that may create it;
        with `workers`, room for that many writers). Raises before anything is written."""
        started = time.perf_counter()
        with source_errors_refused(source_paths[0]):
            db = SourceDB(source_paths, tenant_map=plan.tenant_map)
        try:
            comps = [cp.component for cp in plan.components]
            with source_errors_refused(source_paths[0]):
                for comp in comps:
                    db.require(comp)
                db.require_tenants(comps, plan.tenants)
            resolved = resolve_target(plan, target)
            conn = connection.connect(resolved)
            try:
                # Schema first: the run ledger lives beside llmspell's tables.
                target_schema.check_schema(conn, comps)
                bypass = role_bypasses_rls(conn)
                missing = target_schema.missing_bookkeeping(conn) if bookkeeping else []
                blocker = target_schema.bookkeeping_blocker(conn) if missing else None
                conn.commit()
                if blocker:
                    raise TargetError(
                        f"The migration's bookkeeping ({', '.join(missing)}) "
                        "is not in the target and this role may not create it",
                        blocker[0].upper() + blocker[1:] + "; nothing was written.",
                    )
                if workers is not None:
                    check_server_capacity(conn, workers)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            db.close()
            raise
        run = cls(kind, emit, db, resolved, conn, bypass, missing)
        run.started = started
        return run

    @classmethod
    def attach(cls, kind: Kind, target: connection.Target, emit: Emit) -> Run:
        """A run on a target alone (rollback: the source is not needed)."""
        conn = connection.connect(target)
        try:
            bypass = role_bypasses_rls(conn)
            conn.commit()
        except BaseException:
            conn.close()
            raise
        return cls(kind, emit, None, target, conn, bypass, [])

    # -- the stages' building blocks -------------------------------------------------------
    def create_bookkeeping(self) -> None:
        """First contact with a target llmspell set up: add the tool's own schema beside it."""
        if not self.missing_bookkeeping:
            return
        try:
            with self.conn.transaction():
                target_schema.ensure_bookkeeping(self.conn)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise TargetError(
                f"Cannot create the migration's bookkeeping: {exc.diag.message_primary}",
                f"Run {settings.cli_command()} init-target as the schema owner or a superuser; "
                "nothing was written.",
            ) from exc
        self.conn.commit()
        self.emit("Created the migration's bookkeeping: " + ", ".join(self.missing_bookkeeping))

    def lock(self) -> None:
        """The target-wide migration lock (exit 3 when another run holds it); released when
        the run is over."""
        run_ledger.acquire_lock(self.conn)
        self._locked = True

    def hold(self, resource: AbstractContextManager) -> Any:
        """Keep `resource` until the run is over (released last: after the rollback, the
        lock and the connections)."""
        return self._held.enter_context(resource)

    def at_end(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the run is over, whatever became of it."""
        self._held.callback(callback)

    def on_failure(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` first on a failure (before the rollback); returns a function that
        cancels it once what it guards is over."""
        self._on_failure.append(callback)
        return lambda: self._on_failure.remove(callback) if callback in self._on_failure else None

    def unfinished(self, fingerprint: str) -> run_ledger.RunRecord | None:
        return run_ledger.find_unfinished(self.conn, fingerprint)

    def start(
        self,
        run_id: str,
        fingerprint: str,
        components: list[str],
        source_path: str,
        backup_path: str | None,
        tenants: list[str],
        undo: Undo,
    ) -> None:
        """Record the run in the ledger: from now on a failure takes back what it wrote."""
        run_ledger.start_run(
            self.conn, run_id, fingerprint, components, source_path, backup_path, tenants
        )
        self.resume(run_id, undo)

    def resume(self, run_id: str, undo: Undo) -> None:
        """Carry on with a run the ledger already holds (one a crash left running)."""
        self.run_id, self.undo = run_id, undo
        if self.result is not None:
            self.result.run_id = run_id  # only now does `rollback --run-id` know it

    @property
    def wrote(self) -> bool:
        return self.undo is not None

    def complete(self) -> None:
        """The run is done and validated: mark it completed (on a connection of its own:
        the run's own may be inside dlt's load)."""
        with connection.connect(self.target) as conn:
            run_ledger.set_status(conn, self.run_id, run_ledger.COMPLETED)

    # -- the lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> Run:
        # SIGTERM takes the same path as Ctrl-C, so a stopped run still rolls back; either
        # stops the run at once, in any stage, cancelling the queries in flight.
        self._signals.enter_context(interrupts.stopping())
        return self

    def __exit__(self, kind, exc, tb) -> None:
        try:
            self._signals.close()  # a second Ctrl-C now stops the rollback: Python's own
            if isinstance(exc, Exception | KeyboardInterrupt):
                for callback in list(self._on_failure):
                    callback()
                if self.undo is not None:
                    self._roll_back(exc)
                raise self.failure(exc) from exc
        finally:
            self.close()

    def close(self) -> None:
        if self.result is not None and hasattr(self.result, "duration"):
            self.result.duration = time.perf_counter() - self.started
        try:
            try:
                if self._locked and not self.conn.closed:
                    run_ledger.release_lock(self.conn)
            except psycopg.Error:
                pass
            self.conn.close()
            if self.db is not None:
                self.db.close()
        finally:
            self._held.close()

    def _roll_back(self, exc: BaseException) -> None:
        self.emit("")
        self.emit(f"[ERROR] {getattr(exc, 'message', None) or describe(exc)}")
        try:
            with connection.connect(self.target) as conn:
                self.result.rolled_back = self.undo(conn)
        except (MigrateError, psycopg.Error) as err:
            self.emit(f"[ERROR] {self.kind.cannot_undo}: {err}")
            self.emit(f"[INFO] {self.kind.stays.format(run_id=self.run_id)}")

    def failure(self, exc: BaseException) -> MigrateError:
        """The failure report for `exc`, with the run's result attached."""
        k = self.kind
        if is_interrupt(exc):
            err: MigrateError = MigrationFailed(
                k.interrupted,
                f"{k.undone}; {k.when_ready}."
                if self.wrote
                else f"Nothing was written; {k.when_ready}.",
            )
        elif isinstance(exc, MigrateError):
            err = exc
        else:
            err = MigrationFailed(f"{k.failed}: {describe(exc)}", f"{k.undone}; {k.fix}.")
        err.result = self.result
        return err


def take_back(
    conn: psycopg.Connection,
    run_id: str,
    comps: list[Component],
    bypass: bool,
    tenants: list[str] | None = None,
    check: list[str] | None = None,
) -> dict[str, int]:
    """Undo what run `run_id` wrote and mark it rolled back, in the target's own
    transactions: a sync's inserts removed and its pre-images put back, a migration's
    inserted rows deleted. Under RLS the tenants visited are `tenants` (default: the run's
    record); `check`: tenants whose ledger must be empty afterwards."""
    if is_sync_run(run_id):
        done = artifact_sync.restore_sync(conn, run_id, comps, bypass, tenants)
    else:
        done = run_ledger.delete_written(conn, run_id, comps, bypass, tenants, check)
    run_ledger.set_status(conn, run_id, run_ledger.ROLLED_BACK)
    return done


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


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
