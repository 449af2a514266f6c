"""Write batches of source records into the llmspell tables, for any role.

PostgreSQL refuses COPY FROM into a table whose row-level security applies to the current
role, so every batch is COPYed into a TEMP staging table (raw SQLite values) and moved with
one INSERT ... SELECT per tenant under `set_config('app.current_tenant_id', tenant, true)`;
the type conversions (`::uuid`, `::jsonb`, `to_timestamp`) happen in that SELECT. A role that
bypasses RLS moves the whole batch in one INSERT. Every row inserted is recorded, in the same
transaction, under the run's id in `llmspell_migrate.written`: that ledger is what rollback
deletes, so rows that were in the target before the run are never touched. Rows already
present with the same key are skipped (`ON CONFLICT DO NOTHING`), which makes a re-delivered
batch harmless; pre-flight has already proved such rows identical.
"""

from __future__ import annotations

import psycopg
import pyarrow as pa
from psycopg import sql

from destinations.target_schema import BOOKKEEPING_SCHEMA, TENANT_SETTING
from sources.components import BLOB, EPOCH, HEXID, INT, JSON, UUID, Component

_STAGE_TYPES = {EPOCH: "BIGINT", INT: "BIGINT", BLOB: "BYTEA"}


def _convert(col) -> sql.Composable:
    ident = sql.Identifier(col.name)
    if col.kind == JSON:
        return sql.SQL("{}::jsonb").format(ident)
    if col.kind in (HEXID, UUID):
        return sql.SQL("{}::uuid").format(ident)
    if col.kind == EPOCH:
        return sql.SQL("to_timestamp({})").format(ident)
    if col.kind == INT:
        return sql.SQL("{}::integer").format(ident)
    return ident


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
                sql.SQL("{} {}").format(
                    sql.Identifier(c.name), sql.SQL(_STAGE_TYPES.get(c.kind, "TEXT"))
                )
                for c in comp.columns
            ),
        )
        self.copy = sql.SQL("COPY {} ({}) FROM STDIN").format(self.stage, sql.SQL(", ").join(cols))
        key = sql.Identifier(comp.key_column)
        insert = sql.SQL(
            "INSERT INTO llmspell.{table} ({cols}) SELECT {conv} FROM {stage} {where} "
            "ON CONFLICT (tenant_id, {key}) DO NOTHING RETURNING tenant_id, {key}::text"
        )
        ledger = sql.SQL(
            "WITH ins AS ({insert}) INSERT INTO {book}.written "
            "(run_id, component, tenant_id, natural_key) "
            "SELECT %(run_id)s, %(component)s, ins.tenant_id, ins.{key} FROM ins"
        )
        parts = dict(
            table=sql.Identifier(comp.pg_table),
            cols=sql.SQL(", ").join(cols),
            conv=sql.SQL(", ").join(_convert(c) for c in comp.columns),
            stage=self.stage,
            key=key,
        )
        self.insert_all = ledger.format(
            insert=insert.format(where=sql.SQL(""), **parts),
            book=sql.Identifier(BOOKKEEPING_SCHEMA),
            key=key,
        )
        self.insert_tenant = ledger.format(
            insert=insert.format(where=sql.SQL("WHERE tenant_id = %(tenant)s"), **parts),
            book=sql.Identifier(BOOKKEEPING_SCHEMA),
            key=key,
        )


class LlmspellWriter:
    """One connection, one transaction per batch, every inserted row in the run's ledger."""

    def __init__(self, conn: psycopg.Connection, run_id: str):
        self.conn = conn
        self.run_id = run_id
        self.bypass_rls = role_bypasses_rls(conn)
        self._statements: dict[str, ComponentStatements] = {}
        self.inserted: dict[str, int] = {}
        self.delivered: dict[str, int] = {}

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
        columns = [batch.column(c.name).to_pylist() for c in comp.columns]
        tenants = sorted(set(batch.column("tenant_id").to_pylist()))
        args = {"run_id": self.run_id, "component": comp.name}
        inserted = 0
        with self.conn.transaction():
            with self.conn.cursor() as cur:
                with cur.copy(st.copy) as copy:
                    for row in zip(*columns):
                        copy.write_row(row)
                if self.bypass_rls:
                    cur.execute(st.insert_all, args)
                    inserted += cur.rowcount
                else:
                    for tenant in tenants:
                        cur.execute("SELECT set_config(%s, %s, true)", (TENANT_SETTING, tenant))
                        cur.execute(st.insert_tenant, {**args, "tenant": tenant})
                        inserted += cur.rowcount
        self.inserted[comp.name] = self.inserted.get(comp.name, 0) + inserted
        self.delivered[comp.name] = self.delivered.get(comp.name, 0) + batch.num_rows
        return inserted
