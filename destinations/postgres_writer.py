"""Write batches of source records into the llmspell tables, for any role.

PostgreSQL refuses COPY FROM into a table whose row-level security applies to the current
role, so every batch is COPYed into a TEMP staging table (raw SQLite values) and moved with
one INSERT ... SELECT per tenant under `set_config('app.current_tenant_id', tenant, true)`;
the type conversions (`::uuid`, `::jsonb`, `to_timestamp`) happen in that SELECT. A role that
bypasses RLS moves the whole batch in one INSERT. The keys of the rows inserted are recorded,
in the same transaction, under the run's id in `llmspell_migrate.written_keys` (one row per
batch and tenant): that ledger is what rollback deletes, so rows that were in the target
before the run are never touched. When rows may already be there (a resumed run, or rows
pre-flight proved identical) the INSERT skips them (`ON CONFLICT DO NOTHING`), which also
makes a re-delivered batch harmless.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import queue
import threading
from collections.abc import Callable

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql

from core.model.components import Component
from destinations.target_schema import BOOKKEEPING_SCHEMA, act_as_tenant


def cast_expr(col) -> sql.Composable:
    """The column's staged (raw SQLite) value converted in the INSERT ... SELECT."""
    return col.cast(sql.Identifier(col.name))


_CSV = pacsv.WriteOptions(include_header=False, quoting_style="needed")


def csv_for_copy(comp: Component, batch: pa.RecordBatch | pa.Table) -> memoryview:
    """The batch as CSV for COPY, written by Arrow in C: the rows never become Python objects
    (a JSON text with emoji costs 4 bytes a character as a Python str, 1 here). NULL is an
    unquoted empty field and '' a quoted one, as COPY's CSV format reads them; BYTEA goes in
    PostgreSQL's hex form."""
    arrays = []
    for col in comp.columns:
        values = batch.column(col.name)
        if col.kind.copy_text is not None:  # in the text COPY takes for the staging column
            values = pa.array([col.copy_text(v) for v in values.to_pylist()], pa.string())
        arrays.append(values)
    return table_csv(pa.Table.from_arrays(arrays, names=comp.column_names))


def table_csv(table: pa.Table) -> memoryview:
    """A table as CSV for COPY (no header, NULL unquoted, '' quoted), written by Arrow in C."""
    if any(c.num_chunks != 1 for c in table.columns):
        # one chunk per column: pyarrow 26 writes garbage for a table whose first chunk is
        # empty (as concat_tables of an empty table and a batch gives)
        table = table.combine_chunks()
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, _CSV)
    return memoryview(sink.getvalue())


def role_bypasses_rls(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    return bool(row and row[0])


class ComponentStatements:
    """The staging DDL, COPY and INSERT statements of one component."""

    def __init__(self, comp: Component):
        self.comp = comp
        self.stage = sql.Identifier(f"llmspell_migrate_stage_{comp.name}")
        cols = [sql.Identifier(c.name) for c in comp.columns]
        self.create_stage = sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS"
        ).format(
            self.stage,
            sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.kind.stage))
                for c in comp.columns
            ),
        )
        self.copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
            self.stage, sql.SQL(", ").join(cols)
        )
        self.clear_stage = sql.SQL("TRUNCATE {}").format(self.stage)
        key = sql.Identifier(comp.key_column)
        parts = dict(
            table=sql.Identifier(comp.pg_table),
            cols=sql.SQL(", ").join(cols),
            conv=sql.SQL(", ").join(cast_expr(c) for c in comp.columns),
            stage=self.stage,
            key=key,
            conflict_cols=sql.SQL(", ").join(
                map(sql.Identifier, comp.conflict or ("tenant_id", comp.key_column))
            ),
        )
        self.inserts = {
            (skip, per_tenant): self._insert(parts, skip, per_tenant)
            for skip in (False, True)
            for per_tenant in (False, True)
        }

    @staticmethod
    def _insert(parts: dict, skip_existing: bool, per_tenant: bool) -> sql.Composed:
        """INSERT ... SELECT with the casts, recording the inserted keys in the ledger (one
        row per batch and tenant). `skip_existing` adds ON CONFLICT DO NOTHING, needed only
        when keys may already be there (a resumed run, or rows pre-flight found identical)."""
        insert = sql.SQL(
            "INSERT INTO llmspell.{table} ({cols}) SELECT {conv} FROM {stage}{where}{conflict} "
            "RETURNING tenant_id, {key}::text AS k"
        ).format(
            where=sql.SQL(" WHERE tenant_id = %(tenant)s") if per_tenant else sql.SQL(""),
            conflict=sql.SQL(" ON CONFLICT ({}) DO NOTHING").format(parts["conflict_cols"])
            if skip_existing
            else sql.SQL(""),
            **parts,
        )
        return sql.SQL(
            "WITH ins AS ({insert}) INSERT INTO {book}.written_keys "
            "(run_id, component, tenant_id, natural_keys) "
            "SELECT %(run_id)s, %(component)s, tenant_id, array_agg(k) FROM ins GROUP BY tenant_id "
            "RETURNING cardinality(natural_keys)"
        ).format(insert=insert, book=sql.Identifier(BOOKKEEPING_SCHEMA))


class LlmspellWriter:
    """One connection, one transaction per batch, every inserted row in the run's ledger."""

    def __init__(self, conn: psycopg.Connection, run_id: str, skip_existing: bool = True):
        self.conn = conn
        self.run_id = run_id
        self.skip_existing = skip_existing
        self.bypass_rls = role_bypasses_rls(conn)
        self._statements: dict[str, ComponentStatements] = {}
        self.inserted: dict[str, int] = {}

    def statements(self, comp: Component) -> ComponentStatements:
        if comp.name not in self._statements:
            st = ComponentStatements(comp)
            self.conn.execute(st.create_stage)
            self.conn.commit()
            self._statements[comp.name] = st
        return self._statements[comp.name]

    def write_batch(self, comp: Component, batch: pa.RecordBatch | pa.Table) -> int:
        """Insert one batch atomically; returns how many rows were new."""
        st = self.statements(comp)
        data = csv_for_copy(comp, batch)
        tenants = pc.unique(batch.column("tenant_id")).to_pylist()
        args = {"run_id": self.run_id, "component": comp.name}
        inserted = 0
        # Inside a caller's transaction (sync writes every batch in one) the stage is not
        # emptied by a commit between batches: the next batch would insert this one again.
        nested = self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
        with self.conn.transaction():
            with self.conn.cursor() as cur:
                if nested:
                    cur.execute(st.clear_stage)
                with cur.copy(st.copy) as copy:
                    copy.write(data)
                del data
                if self.bypass_rls:
                    cur.execute(st.inserts[(self.skip_existing, False)], args)
                    inserted += sum(r[0] for r in cur.fetchall())
                else:
                    statement = st.inserts[(self.skip_existing, True)]
                    for tenant in tenants:
                        act_as_tenant(cur, tenant)
                        cur.execute(statement, {**args, "tenant": tenant})
                        inserted += sum(r[0] for r in cur.fetchall())
        self.inserted[comp.name] = self.inserted.get(comp.name, 0) + inserted
        return inserted


_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None


def release_memory() -> None:
    """Give freed batch memory back to the OS, so memory follows the batch, not the run:
    Arrow's pool and glibc's heap otherwise keep every batch's high-water mark."""
    pa.default_memory_pool().release_unused()
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


class WriterPool:
    """At most `workers` connections, one per dlt loader thread at a time.

    A single INSERT into the GIN-indexed tables keeps one PostgreSQL backend busy on one core;
    dlt's loader runs several jobs at once (several files per table), and each job's thread
    borrows a connection here for one batch. `write` returns only after the batch and its
    ledger entry are committed, so what dlt records as loaded is in the target. Batches hold
    different keys, so concurrent ones never conflict.
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection],
        run_id: str,
        skip_existing: bool = True,
        workers: int = 2,
    ):
        self._connect = connect
        self.run_id = run_id
        self.skip_existing = skip_existing
        self.workers = max(1, workers)
        self._lock = threading.Lock()
        self._free: queue.Queue[LlmspellWriter] = queue.Queue()
        self.writers = [LlmspellWriter(connect(), run_id, skip_existing)]
        self._free.put(self.writers[0])
        self.bypass_rls = self.writers[0].bypass_rls

    @property
    def inserted(self) -> dict[str, int]:
        total: dict[str, int] = {}
        with self._lock:
            writers = list(self.writers)
        for writer in writers:
            for name, n in writer.inserted.items():
                total[name] = total.get(name, 0) + n
        return total

    def _borrow(self) -> LlmspellWriter:
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            grow = len(self.writers) < self.workers
            if grow:
                writer = LlmspellWriter(self._connect(), self.run_id, self.skip_existing)
                self.writers.append(writer)
                return writer
        return self._free.get()  # every connection busy: wait for one

    def write(self, comp: Component, batch: pa.RecordBatch | pa.Table) -> int:
        """Insert one batch and commit it with its ledger entry; returns how many rows were new."""
        writer = self._borrow()
        try:
            return writer.write_batch(comp, batch)
        finally:
            del batch
            release_memory()
            self._free.put(writer)

    def close(self) -> None:
        with self._lock:
            for writer in self.writers:
                writer.conn.close()

    def abandon(self) -> None:
        """Stop mid-batch: open transactions are cancelled and aborted, never half-committed."""
        with self._lock:
            writers = list(self.writers)
        for writer in writers:
            try:
                writer.conn.cancel_safe(timeout=5)
            except Exception:
                pass
            try:
                writer.conn.close()
            except Exception:
                pass
