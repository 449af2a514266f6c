"""Create and check the llmspell target schema in PostgreSQL.

`ensure_schema` is what `init-target` runs: it creates what is missing (schema, tables,
indexes, triggers, forced row-level security, the runtime role's grants, and our own
bookkeeping schema) and never drops or alters an existing object. `check_schema` is the
pre-flight check that the tables the plan needs exist with the columns we write.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources

import psycopg
from psycopg import sql

from pipelines.errors import TargetError
from sources.components import COMPONENTS, Component

APP_ROLE = "llmspell_app"
TENANT_SETTING = "app.current_tenant_id"
BOOKKEEPING_SCHEMA = "llmspell_migrate"

# BEFORE UPDATE triggers as llmspell has them: an UPDATE rewrites these columns, an INSERT keeps
# the values given (which is why the migration only ever INSERTs).
_TRIGGER_BODIES = {
    "agent_states": """
        NEW.updated_at := now();
        IF NEW.state_data IS DISTINCT FROM OLD.state_data THEN
            NEW.data_version := OLD.data_version + 1;
        END IF;""",
    "workflow_states": """
        NEW.last_updated := now();
        IF NEW.status = 'running' AND OLD.status <> 'running' AND NEW.started_at IS NULL THEN
            NEW.started_at := now();
        END IF;
        IF NEW.status IN ('completed', 'failed', 'cancelled')
           AND OLD.status NOT IN ('completed', 'failed', 'cancelled')
           AND NEW.completed_at IS NULL THEN
            NEW.completed_at := now();
        END IF;""",
    "sessions": """
        NEW.updated_at := now();
        NEW.last_accessed_at := now();""",
    "kv_store": """
        NEW.updated_at := now();""",
}

_BOOKKEEPING_SQL = f"""
CREATE SCHEMA IF NOT EXISTS {BOOKKEEPING_SCHEMA};
CREATE TABLE IF NOT EXISTS {BOOKKEEPING_SCHEMA}.runs (
    run_id TEXT PRIMARY KEY,
    plan_fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    components TEXT[] NOT NULL,
    source_path TEXT,
    backup_path TEXT,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS {BOOKKEEPING_SCHEMA}.written_keys (
    id BIGSERIAL PRIMARY KEY,
    run_id TEXT NOT NULL,
    component TEXT NOT NULL,
    tenant_id VARCHAR(255) NOT NULL,
    natural_keys TEXT[] NOT NULL
);
CREATE INDEX IF NOT EXISTS written_keys_run
    ON {BOOKKEEPING_SCHEMA}.written_keys (run_id, component);
"""


@dataclass
class SchemaReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    role_created: bool = False

    def to_dict(self) -> dict:
        return {
            "created": self.created,
            "existing": self.existing,
            "warnings": self.warnings,
            "role_created": self.role_created,
        }


def _table_exists(conn: psycopg.Connection, schema: str, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", (f"{schema}.{table}",)).fetchone()
    return row[0] is not None


def _role_exists(conn: psycopg.Connection, role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


def _ensure_trigger(conn: psycopg.Connection, table: str) -> None:
    fn = f"{table}_before_update"
    if conn.execute("SELECT to_regprocedure(%s)", (f"llmspell.{fn}()",)).fetchone()[0] is None:
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION llmspell.{fn}() RETURNS trigger LANGUAGE plpgsql AS {body}"
            ).format(
                fn=sql.Identifier(fn),
                body=sql.Literal(f"BEGIN{_TRIGGER_BODIES[table]}\n    RETURN NEW;\nEND"),
            )
        )
    has_trigger = conn.execute(
        "SELECT 1 FROM pg_trigger WHERE tgrelid = %s::regclass AND tgname = %s",
        (f"llmspell.{table}", f"trg_{fn}"),
    ).fetchone()
    if not has_trigger:
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER {trg} BEFORE UPDATE ON llmspell.{table} "
                "FOR EACH ROW EXECUTE FUNCTION llmspell.{fn}()"
            ).format(
                trg=sql.Identifier(f"trg_{fn}"),
                table=sql.Identifier(table),
                fn=sql.Identifier(fn),
            )
        )


def _ensure_rls(conn: psycopg.Connection, table: str) -> None:
    ident = sql.Identifier(table)
    conn.execute(sql.SQL("ALTER TABLE llmspell.{} ENABLE ROW LEVEL SECURITY").format(ident))
    conn.execute(sql.SQL("ALTER TABLE llmspell.{} FORCE ROW LEVEL SECURITY").format(ident))
    match = sql.SQL("tenant_id = current_setting({}, true)").format(sql.Literal(TENANT_SETTING))
    for command in ("SELECT", "INSERT", "UPDATE", "DELETE"):
        name = f"tenant_isolation_{command.lower()}"
        present = conn.execute(
            "SELECT 1 FROM pg_policies WHERE schemaname = 'llmspell' AND tablename = %s "
            "AND policyname = %s",
            (table, name),
        ).fetchone()
        if present:
            continue
        if command == "INSERT":
            clause = sql.SQL("WITH CHECK ({})").format(match)
        elif command == "UPDATE":
            clause = sql.SQL("USING ({m}) WITH CHECK ({m})").format(m=match)
        else:
            clause = sql.SQL("USING ({})").format(match)
        conn.execute(
            sql.SQL("CREATE POLICY {name} ON llmspell.{table} FOR {cmd} {clause}").format(
                name=sql.Identifier(name), table=ident, cmd=sql.SQL(command), clause=clause
            )
        )


_STATEMENT_END = re.compile(r";[ \t]*(?:\n|$)")
_STATEMENT_TABLE = re.compile(r"(?:CREATE TABLE IF NOT EXISTS|\bON)\s+llmspell\.(\w+)", re.I)


def _ddl_statements() -> list[tuple[str | None, str]]:
    """The schema file as (llmspell table it creates or indexes, statement) pairs."""
    ddl = resources.files("destinations").joinpath("llmspell_schema.sql").read_text()
    out = []
    for stmt in _STATEMENT_END.split(ddl):
        code = "\n".join(ln for ln in stmt.splitlines() if not ln.strip().startswith("--"))
        if code.strip():
            match = _STATEMENT_TABLE.search(code)
            out.append((match.group(1) if match else None, code))
    return out


def _rls_state(conn: psycopg.Connection, table: str) -> tuple[bool, bool]:
    row = conn.execute(
        "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = %s::regclass",
        (f"llmspell.{table}",),
    ).fetchone()
    return bool(row[0]), bool(row[1])


def ensure_schema(conn: psycopg.Connection, app_password: str | None = None) -> SchemaReport:
    """Create the llmspell schema objects that are missing, in one transaction.

    Tables that already exist are left exactly as they are; if one lacks forced RLS, that is
    reported as a warning rather than changed.
    """
    report = SchemaReport()
    tables = [c.pg_table for c in COMPONENTS.values()]
    try:
        with conn.transaction():
            before = {t: _table_exists(conn, "llmspell", t) for t in tables}
            # An existing table is left exactly as it is: no index, trigger or policy added.
            for table, statement in _ddl_statements():
                if not before.get(table):
                    conn.execute(statement)
            conn.execute(_BOOKKEEPING_SQL)
            for comp in COMPONENTS.values():
                table = comp.pg_table
                if before[table]:
                    report.existing.append(f"llmspell.{table}")
                    problems = _column_problems(conn, comp)
                    if problems:
                        report.warnings.append(
                            f"llmspell.{table} does not have the columns the migration writes "
                            f"({'; '.join(problems)}); left unchanged"
                        )
                    enabled, forced = _rls_state(conn, table)
                    if not (enabled and forced):
                        report.warnings.append(
                            f"llmspell.{table} exists without forced row-level security; "
                            "left unchanged"
                        )
                else:
                    report.created.append(f"llmspell.{table}")
                    _ensure_trigger(conn, table)
                    _ensure_rls(conn, table)
            if not _role_exists(conn, APP_ROLE):
                stmt = sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS").format(
                    sql.Identifier(APP_ROLE)
                )
                if app_password:
                    stmt = stmt + sql.SQL(" PASSWORD {}").format(sql.Literal(app_password))
                conn.execute(stmt)
                report.role_created = True
            role = sql.Identifier(APP_ROLE)
            for schema in ("llmspell", BOOKKEEPING_SCHEMA):
                conn.execute(
                    sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), role)
                )
                conn.execute(
                    sql.SQL(
                        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} TO {}"
                    ).format(sql.Identifier(schema), role)
                )
                conn.execute(
                    sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {} TO {}").format(
                        sql.Identifier(schema), role
                    )
                )
    except psycopg.errors.InsufficientPrivilege as exc:
        raise TargetError(
            f"Cannot create the llmspell schema: {exc.diag.message_primary}",
            "Run init-target as the schema owner or a superuser (the llmspell_app role cannot).",
        ) from exc
    return report


def expected_columns(component: Component) -> dict[str, str]:
    """Column name -> PostgreSQL udt name the migration writes, for the schema check."""
    udt = {
        "UUID": "uuid",
        "JSONB": "jsonb",
        "TIMESTAMPTZ": "timestamptz",
        "INTEGER": "int4",
        "BYTEA": "bytea",
        "TEXT": "text",
    }
    out = {}
    for col in component.columns:
        t = col.pg_type
        out[col.name] = "varchar" if t.startswith("VARCHAR") else udt[t]
    return out


def _column_problems(conn: psycopg.Connection, comp: Component) -> list[str]:
    """`<column> is <found>, expected <udt>` for each column we write that does not fit."""
    rows = conn.execute(
        "SELECT column_name, udt_name FROM information_schema.columns "
        "WHERE table_schema = 'llmspell' AND table_name = %s",
        (comp.pg_table,),
    ).fetchall()
    have = dict(rows)
    return [
        f"{name} is {have.get(name, 'missing')}, expected {udt}"
        for name, udt in expected_columns(comp).items()
        if have.get(name) != udt
    ]


def check_schema(conn: psycopg.Connection, components: list[Component]) -> None:
    """Refuse to run when a table the plan writes is missing or lacks a column we write."""
    for comp in components:
        if not _table_exists(conn, "llmspell", comp.pg_table):
            raise TargetError(
                f'relation "{comp.qualified_table}" does not exist',
                "Create the llmspell schema: python -m pipelines.migrate init-target "
                "(as the schema owner), or start llmspell once with its PostgreSQL backend.",
            )
        problems = _column_problems(conn, comp)
        if problems:
            raise TargetError(
                f"{comp.qualified_table}.{problems[0]}",
                "The target schema is not llmspell's; upgrade llmspell's schema or "
                "recreate it with init-target.",
            )
    if not _table_exists(conn, BOOKKEEPING_SCHEMA, "runs"):
        raise TargetError(
            f'relation "{BOOKKEEPING_SCHEMA}.runs" does not exist',
            "Run python -m pipelines.migrate init-target once as the schema owner; it adds the "
            "migration's bookkeeping tables next to llmspell's.",
        )
