"""Create and check the llmspell target schema in PostgreSQL.

`ensure_schema` is what `init-target` runs: it creates what is missing (schema, tables,
indexes, triggers, forced row-level security, the runtime role's grants, and our own
bookkeeping schema) and never drops or alters an existing llmspell object (our own
bookkeeping tables are completed: a `tenants` column, forced RLS on the key ledger and on
the run records).
`check_schema` is the pre-flight check that the tables the plan needs exist with the columns
we write; `missing_bookkeeping`/`ensure_bookkeeping` let `execute` add the tool's own schema on
a target llmspell set up, and `bookkeeping_blocker` says who must when the role may not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources

import psycopg
from psycopg import sql

from core.errors import TargetError
from core.model.components import Component
from core.model.kinds import VECTOR
from core.model.registry import COMPONENTS
from core.settings import cli_command
from destinations.store_ddl import AFTER_CREATE

APP_ROLE = "llmspell_app"
TENANT_SETTING = "app.current_tenant_id"


def act_as_tenant(conn, tenant: str) -> None:
    """Make the current transaction see and write only `tenant`'s rows (llmspell's RLS
    setting, local to the transaction). `conn` is a psycopg connection or cursor."""
    conn.execute("SELECT set_config(%s, %s, true)", (TENANT_SETTING, tenant))


def act_as_bookkeeper(conn) -> None:
    """Clear the tenant setting for the rest of the current transaction: the run records
    (`llmspell_migrate.runs`) are reached only by a session acting as no tenant. A statement
    on them may follow tenant work in the same transaction (a savepoint's setting lasts to
    the end of the outer transaction)."""
    conn.execute("SELECT set_config(%s, '', true)", (TENANT_SETTING,))


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
    "procedural_patterns": """
        NEW.updated_at := now();""",
}

_BOOK = sql.Identifier(BOOKKEEPING_SCHEMA)
_BOOKKEEPING_SQL = f"""
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
ALTER TABLE {BOOKKEEPING_SCHEMA}.runs ADD COLUMN IF NOT EXISTS tenants TEXT[];
-- how the run's record_prints were taken (run_ledger.PRINT_SCHEME); NULL: by a version
-- before it (DuckDB's hash(), PostgreSQL's hashtextextended), never compared with today's
ALTER TABLE {BOOKKEEPING_SCHEMA}.runs ADD COLUMN IF NOT EXISTS print_scheme TEXT;
CREATE TABLE IF NOT EXISTS {BOOKKEEPING_SCHEMA}.written_keys (
    id BIGSERIAL PRIMARY KEY,
    run_id TEXT NOT NULL,
    component TEXT NOT NULL,
    tenant_id VARCHAR(255) NOT NULL,
    natural_keys TEXT[] NOT NULL
);
CREATE INDEX IF NOT EXISTS written_keys_run
    ON {BOOKKEEPING_SCHEMA}.written_keys (run_id, component);
CREATE TABLE IF NOT EXISTS {BOOKKEEPING_SCHEMA}.record_prints (
    run_id TEXT NOT NULL,
    component TEXT NOT NULL,
    tenant_id VARCHAR(255) NOT NULL,
    nkey TEXT NOT NULL,
    llmspell_key TEXT,
    source_fp BIGINT,
    target_fp BIGINT,
    PRIMARY KEY (run_id, component, tenant_id, nkey)
);
CREATE INDEX IF NOT EXISTS record_prints_key
    ON {BOOKKEEPING_SCHEMA}.record_prints (component, tenant_id, nkey);
-- an execute's baseline, compact: one row per (run, component, tenant, batch of keys in key
-- order), the keys and both prints as arrays (not a heap row and two index entries a record)
CREATE TABLE IF NOT EXISTS {BOOKKEEPING_SCHEMA}.print_batches (
    run_id TEXT NOT NULL,
    component TEXT NOT NULL,
    tenant_id VARCHAR(255) NOT NULL,
    batch INTEGER NOT NULL,
    nkeys TEXT[] NOT NULL,
    llmspell_keys TEXT[] NOT NULL,
    source_fps BIGINT[] NOT NULL,
    target_fps BIGINT[] NOT NULL,
    PRIMARY KEY (run_id, component, tenant_id, batch)
);
CREATE TABLE IF NOT EXISTS {BOOKKEEPING_SCHEMA}.preimages (
    run_id TEXT NOT NULL,
    component TEXT NOT NULL,
    tenant_id VARCHAR(255) NOT NULL,
    nkey TEXT NOT NULL,
    row_image JSONB NOT NULL,
    PRIMARY KEY (run_id, component, tenant_id, nkey)
);
"""
# Tenant-data tables of the bookkeeping: the written keys (rollback), the fingerprints of
# what was written (sync's baseline) and the pre-images of rows a sync replaced or deleted.
TENANT_TABLES = ("written_keys", "record_prints", "print_batches", "preimages")
# The ledger's keys are tenant data: a role under RLS sees and writes only the rows of the
# tenant it set, like llmspell's own tables.
_LEDGER_POLICY = "tenant_isolation"
# `runs` names every tenant a run covered, the source and the backup: no tenant may read or
# change it. Its policy lets through only a session with no tenant set: the tool's own
# bookkeeping statements (a run as `llmspell_app` touches `runs` outside any tenant's
# transaction) and roles that bypass RLS; a session with `app.current_tenant_id` set (every
# tenant session of llmspell's) sees no run and can write none. Forced, so a role that owns
# the table (`llmspell_app`, when the schema was made AUTHORIZATION llmspell_app) is bound too.
RUNS_POLICY = "no_tenant_session"


def _ensure_ledger_policy(conn: psycopg.Connection) -> None:
    """Forced row-level security and the tenant policy on every table in TENANT_TABLES."""
    for table in TENANT_TABLES:
        for switch in ("ENABLE", "FORCE"):
            conn.execute(
                sql.SQL("ALTER TABLE {}.{} {} ROW LEVEL SECURITY").format(
                    _BOOK, sql.Identifier(table), sql.SQL(switch)
                )
            )
        present = conn.execute(
            "SELECT 1 FROM pg_policies WHERE schemaname = %s AND tablename = %s "
            "AND policyname = %s",
            (BOOKKEEPING_SCHEMA, table, _LEDGER_POLICY),
        ).fetchone()
        if present:
            continue
        match = sql.SQL("tenant_id = current_setting({}, true)").format(sql.Literal(TENANT_SETTING))
        conn.execute(
            sql.SQL("CREATE POLICY {} ON {}.{} USING ({m}) WITH CHECK ({m})").format(
                sql.Identifier(_LEDGER_POLICY), _BOOK, sql.Identifier(table), m=match
            )
        )


def _ensure_runs_policy(conn: psycopg.Connection) -> None:
    """Forced row-level security on `runs`: only sessions with no tenant set reach it."""
    for switch in ("ENABLE", "FORCE"):
        conn.execute(
            sql.SQL("ALTER TABLE {}.runs {} ROW LEVEL SECURITY").format(_BOOK, sql.SQL(switch))
        )
    present = conn.execute(
        "SELECT 1 FROM pg_policies WHERE schemaname = %s AND tablename = 'runs' "
        "AND policyname = %s",
        (BOOKKEEPING_SCHEMA, RUNS_POLICY),
    ).fetchone()
    if present:
        return
    no_tenant = sql.SQL("coalesce(current_setting({}, true), '') = ''").format(
        sql.Literal(TENANT_SETTING)
    )
    conn.execute(
        sql.SQL("CREATE POLICY {} ON {}.runs USING ({m}) WITH CHECK ({m})").format(
            sql.Identifier(RUNS_POLICY), _BOOK, m=no_tenant
        )
    )


def _runs_protected(conn: psycopg.Connection) -> bool:
    forced = conn.execute(
        "SELECT relrowsecurity AND relforcerowsecurity FROM pg_class WHERE oid = %s::regclass",
        (f"{BOOKKEEPING_SCHEMA}.runs",),
    ).fetchone()[0]
    policy = conn.execute(
        "SELECT 1 FROM pg_policies WHERE schemaname = %s AND tablename = 'runs' "
        "AND policyname = %s",
        (BOOKKEEPING_SCHEMA, RUNS_POLICY),
    ).fetchone()
    return bool(forced and policy)


def missing_bookkeeping(conn: psycopg.Connection) -> list[str]:
    """What of the tool's bookkeeping is not in the target yet (empty when complete)."""
    missing = []
    has_schema = conn.execute(
        "SELECT 1 FROM pg_namespace WHERE nspname = %s", (BOOKKEEPING_SCHEMA,)
    ).fetchone()
    if not has_schema:
        missing.append(f"schema {BOOKKEEPING_SCHEMA}")
    for table in ("runs", *TENANT_TABLES):
        if not _table_exists(conn, BOOKKEEPING_SCHEMA, table):
            missing.append(f"table {BOOKKEEPING_SCHEMA}.{table}")
    if not missing:
        for column in ("tenants", "print_scheme"):
            has_column = conn.execute(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = %s "
                "AND table_name = 'runs' AND column_name = %s",
                (BOOKKEEPING_SCHEMA, column),
            ).fetchone()
            if not has_column:
                missing.append(f"column {BOOKKEEPING_SCHEMA}.runs.{column}")
        for table in TENANT_TABLES:
            forced = conn.execute(
                "SELECT relforcerowsecurity FROM pg_class WHERE oid = %s::regclass",
                (f"{BOOKKEEPING_SCHEMA}.{table}",),
            ).fetchone()[0]
            policy = conn.execute(
                "SELECT 1 FROM pg_policies WHERE schemaname = %s AND tablename = %s",
                (BOOKKEEPING_SCHEMA, table),
            ).fetchone()
            if not (forced and policy):
                missing.append(f"row-level security on {BOOKKEEPING_SCHEMA}.{table}")
        if not _runs_protected(conn):
            missing.append(f"row-level security on {BOOKKEEPING_SCHEMA}.runs")
    return missing


def ensure_bookkeeping(conn: psycopg.Connection) -> None:
    """Create (or complete) the bookkeeping schema, in the caller's transaction, and let the
    runtime role use it when that role exists."""
    # IF NOT EXISTS still needs CREATE on the database: a schema made for us is used as is
    if not conn.execute(
        "SELECT 1 FROM pg_namespace WHERE nspname = %s", (BOOKKEEPING_SCHEMA,)
    ).fetchone():
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(_BOOK))
    conn.execute(_BOOKKEEPING_SQL)
    _ensure_ledger_policy(conn)
    _ensure_runs_policy(conn)
    if _role_exists(conn, APP_ROLE):
        _grant_app(conn, BOOKKEEPING_SCHEMA)


def _grant_app(conn: psycopg.Connection, schema: str) -> None:
    role, ident = sql.Identifier(APP_ROLE), sql.Identifier(schema)
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(ident, role))
    conn.execute(
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} TO {}").format(
            ident, role
        )
    )
    conn.execute(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {} TO {}").format(ident, role))
    # Partitions carry no row-level security of their own: read directly they would show every
    # tenant's rows. The app reaches them only through their parent, where RLS applies (and
    # PostgreSQL checks the parent's privileges, not the partition's).
    partitions = conn.execute(
        "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relispartition AND c.relkind IN ('r', 'p')",
        (schema,),
    ).fetchall()
    for (name,) in partitions:
        conn.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(sql.SQL(name), role))


def bookkeeping_blocker(conn: psycopg.Connection) -> str | None:
    """Why the connected role cannot create the missing bookkeeping, as the statement to run
    and the role to run it as; None when it can."""
    row = conn.execute(
        "SELECT current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), "
        "pg_get_userbyid(d.datdba), has_database_privilege(current_database(), 'CREATE'), "
        "(SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = %s) "
        "FROM pg_database d WHERE d.datname = current_database()",
        (BOOKKEEPING_SCHEMA,),
    ).fetchone()
    me, superuser, db_owner, may_create_schema, schema_owner = row
    if superuser or me == schema_owner or (schema_owner is None and may_create_schema):
        return None
    if schema_owner is None:
        return (
            f"as {db_owner} (the database owner) or a superuser, run: CREATE SCHEMA "
            f"{BOOKKEEPING_SCHEMA} AUTHORIZATION {me};  then re-run this command"
        )
    return (
        f"as {schema_owner} (owner of schema {BOOKKEEPING_SCHEMA}) or a superuser, run: "
        f"{cli_command()} init-target  then re-run this command"
    )


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


VECTOR_EXTENSION = VECTOR.extension  # pgvector's extension name


@dataclass(frozen=True)
class VectorSupport:
    """What the server says about pgvector: whether its extension can be created here (the
    server has its files: `pg_available_extensions`) and whether this database has it."""

    available: bool
    installed: bool
    server_major: int
    database: str


def vector_support(conn: psycopg.Connection) -> VectorSupport:
    """The server's own answer about pgvector, for `pgvector_problem`."""
    available, installed, major, database = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = %s), "
        "EXISTS (SELECT 1 FROM pg_extension WHERE extname = %s), "
        "current_setting('server_version_num')::int / 10000, current_database()",
        (VECTOR_EXTENSION, VECTOR_EXTENSION),
    ).fetchone()
    return VectorSupport(bool(available), bool(installed), int(major), database)


def vector_tables() -> list[str]:
    """llmspell's tables with a pgvector column (upstream V3's vector_embeddings_<dim>)."""
    return sorted(
        c.pg_table
        for c in COMPONENTS.values()
        if any(col.kind.extension == VECTOR_EXTENSION for col in c.columns)
    )


def pgvector_problem(support: VectorSupport, init: bool = False) -> TargetError | None:
    """The error for a target whose llmspell schema cannot have its vector tables: the
    server lacks pgvector (install it), or it has it but this database does not (create the
    extension). None when the extension is there. `init`: the caller is init-target itself."""
    if support.installed:
        return None
    again = "run init-target again" if init else f"run {cli_command()} init-target"
    if not support.available:
        return TargetError(
            f'The PostgreSQL server has no pgvector extension ("{VECTOR_EXTENSION}"); '
            "llmspell's schema needs it (its V3 migration creates the vector_embeddings_* "
            "tables of episodic memory with vector columns)",
            f"Install pgvector on the server (e.g. the postgresql-{support.server_major}-pgvector "
            f"package) and, as a superuser, run CREATE EXTENSION {VECTOR_EXTENSION}; in database "
            f"{support.database}; then {again}.",
        )
    return TargetError(
        f'The pgvector extension ("{VECTOR_EXTENSION}") is not created in database '
        f"{support.database}; llmspell's schema needs it (its V3 migration: the "
        "vector_embeddings_* tables of episodic memory)",
        f"As a superuser, run CREATE EXTENSION {VECTOR_EXTENSION}; in database "
        f"{support.database}; then {again}.",
    )


def _vector_tables_without_extension(
    conn: psycopg.Connection, before: dict[str, bool], report: SchemaReport
) -> set[str]:
    """Create pgvector's extension for the vector tables still missing. A server without
    pgvector is refused (nothing is created: llmspell's own schema needs it); when pgvector
    is there but this role may not create its extension, those tables are skipped with a
    warning saying what to do, and every other table is still created."""
    missing = {t for t in vector_tables() if not before[t]}
    if not missing:
        return set()
    support = vector_support(conn)
    if support.installed:
        return set()
    if not support.available:
        raise pgvector_problem(support, init=True)
    try:
        with conn.transaction():  # a savepoint: a refusal leaves the rest of the work intact
            conn.execute(
                sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(
                    sql.Identifier(VECTOR_EXTENSION)
                )
            )
        return set()
    except psycopg.errors.InsufficientPrivilege as exc:
        report.warnings.append(
            f"{', '.join(sorted(missing))} not created: {exc.diag.message_primary}; "
            "as a superuser run CREATE EXTENSION vector; in this database, then init-target "
            "again"
        )
        return missing
    except (psycopg.errors.FeatureNotSupported, psycopg.errors.UndefinedFile) as exc:
        # listed as available but its files are not usable (e.g. removed since)
        raise pgvector_problem(
            VectorSupport(False, False, support.server_major, support.database), init=True
        ) from exc


def ensure_schema(
    conn: psycopg.Connection,
    app_password: str | None = None,
    bookkeeping: bool = True,
    with_vector_tables: bool = True,
) -> SchemaReport:
    """Create the llmspell schema objects that are missing, in one transaction, and (unless
    `bookkeeping` is false: the schema as llmspell itself sets it up) the tool's bookkeeping.

    Tables that already exist are left exactly as they are; if one lacks forced RLS, that is
    reported as a warning rather than changed. On a server without pgvector nothing is
    created (a TargetError says what to install), unless `with_vector_tables` is false: then
    llmspell's vector tables are left out (a schema like one made before upstream's V3, for
    targets that hold no memory components) and pgvector is not needed.
    """
    report = SchemaReport()
    comps = {c.pg_table: c for c in COMPONENTS.values()}
    tables = list(dict.fromkeys(t for t, _ in _ddl_statements() if t))
    try:
        with conn.transaction():
            before = {t: _table_exists(conn, "llmspell", t) for t in tables}
            if with_vector_tables:
                skipped = _vector_tables_without_extension(conn, before, report)
            else:
                skipped = {t for t in vector_tables() if not before[t]}
            # An existing table is left exactly as it is: no index, trigger or policy added.
            for table, statement in _ddl_statements():
                if not before.get(table) and table not in skipped:
                    conn.execute(statement)
            if bookkeeping:
                ensure_bookkeeping(conn)
            for table in tables:
                comp = comps.get(table)
                if table in skipped:
                    continue
                if before[table]:
                    report.existing.append(f"llmspell.{table}")
                    problems = _column_problems(conn, comp) if comp else []
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
                    if table in _TRIGGER_BODIES:
                        _ensure_trigger(conn, table)
                    if table in AFTER_CREATE:
                        conn.execute(AFTER_CREATE[table])
                    _ensure_rls(conn, table)
            if not _role_exists(conn, APP_ROLE):
                stmt = sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS").format(
                    sql.Identifier(APP_ROLE)
                )
                if app_password:
                    stmt = stmt + sql.SQL(" PASSWORD {}").format(sql.Literal(app_password))
                conn.execute(stmt)
                report.role_created = True
            for schema in ("llmspell", BOOKKEEPING_SCHEMA) if bookkeeping else ("llmspell",):
                _grant_app(conn, schema)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise TargetError(
            f"Cannot create the llmspell schema: {exc.diag.message_primary}",
            "Run init-target as the schema owner or a superuser (the llmspell_app role cannot).",
        ) from exc
    return report


def expected_columns(component: Component) -> dict[str, str]:
    """Column name -> PostgreSQL udt name the migration writes, for the schema check."""
    return {col.name: col.udt for col in component.columns}


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
            if comp.pg_table in vector_tables():
                problem = pgvector_problem(vector_support(conn))
                if problem:
                    raise problem
            raise TargetError(
                f'relation "{comp.qualified_table}" does not exist',
                f"Create the llmspell schema: {cli_command()} init-target "
                "(as the schema owner), or start llmspell once with its PostgreSQL backend.",
            )
        problems = _column_problems(conn, comp)
        if problems:
            raise TargetError(
                f"{comp.qualified_table}.{problems[0]}",
                "The target schema is not llmspell's; upgrade llmspell's schema or "
                "recreate it with init-target.",
            )
