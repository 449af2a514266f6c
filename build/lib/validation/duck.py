"""DuckDB attached to both databases at once: the SQLite source and the PostgreSQL target.

The machine cannot download DuckDB extensions, so the sqlite and postgres scanners are
loaded from the files the PyPI packages `duckdb-extension-sqlite-scanner` and
`duckdb-extension-postgres-scanner` ship. SQLite is attached from the reader's private
snapshot under a name of its own (DuckDB's sqlite scanner creates -wal/-shm files even
read-only, and must not share them with Python's SQLite: `sqlite_reader.duckdb_name`).
A role subject to row-level security sees nothing without a tenant, so such a target is
attached once per tenant with `app.current_tenant_id` set in the connection options.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from core.errors import MigrateError
from destinations.connection import redact
from destinations.target_schema import TENANT_SETTING
from sources.sqlite_reader import SourceDB, duckdb_name


def _literal(text: str) -> str:
    """A DuckDB string literal (ATTACH takes no bound parameters)."""
    return "'" + text.replace("'", "''") + "'"


def extension_file(package: str, name: str) -> str:
    mod = importlib.import_module(package)
    root = Path(mod.__file__).parent / "extensions" / f"v{duckdb.__version__}"
    path = root / f"{name}.duckdb_extension"
    if not path.exists():
        raise MigrateError(
            f"DuckDB extension {name} for DuckDB {duckdb.__version__} not found at {path}",
            f"Install {package.replace('_', '-')}=={duckdb.__version__} (same version as duckdb).",
        )
    return str(path)


def connect(source_read_path: str | Path) -> duckdb.DuckDBPyConnection:
    """A DuckDB session with the source attached as `src` (read-only)."""
    # No progress bar: it would write into stdout, which may carry the --json report.
    # Bounded memory: DuckDB spills to disk rather than grow with the database's size.
    con = duckdb.connect(config={"threads": 2, "memory_limit": "256MB"})
    try:
        con.execute("SET enable_progress_bar = false")
    except duckdb.Error:  # in Jupyter DuckDB wants ipywidgets to change it; the bar is off there
        pass
    con.execute(f"LOAD '{extension_file('duckdb_extension_sqlite_scanner', 'sqlite_scanner')}'")
    con.execute(f"LOAD '{extension_file('duckdb_extension_postgres_scanner', 'postgres_scanner')}'")
    attach_source(con, source_read_path)
    return con


def attach_source(con: duckdb.DuckDBPyConnection, source_read_path: str | Path) -> None:
    """Attach the snapshot as `src`, read-only, under DuckDB's own name for it."""
    view = duckdb_name(source_read_path)
    con.execute(f"ATTACH {_literal(str(view))} AS src (TYPE sqlite, READ_ONLY)")


@contextmanager
def source_session(path: str | Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """DuckDB on any llmspell database (a notebook's way in): through a private snapshot,
    so not even DuckDB's -wal/-shm files appear beside the file llmspell writes."""
    with SourceDB(path) as db:
        con = connect(db.read_path)
        try:
            yield con
        finally:
            con.close()


def tenant_dsn(dsn: str, tenant: str | None) -> str:
    """The DSN with `app.current_tenant_id` preset, for roles subject to RLS."""
    if tenant is None:
        return dsn
    params = conninfo_to_dict(dsn)
    escaped = tenant.replace("\\", "\\\\").replace(" ", "\\ ")
    extra = f"-c {TENANT_SETTING}={escaped}"
    params["options"] = f"{params['options']} {extra}" if params.get("options") else extra
    return make_conninfo(**params)


def attach_target(
    con: duckdb.DuckDBPyConnection, dsn: str, alias: str, tenant: str | None = None
) -> None:
    try:
        con.execute(
            f"ATTACH {_literal(tenant_dsn(dsn, tenant))} AS {alias} (TYPE postgres, READ_ONLY)"
        )
    except duckdb.Error as exc:
        raise MigrateError(
            f"DuckDB could not attach PostgreSQL at {redact(dsn)}: "
            f"{str(exc).splitlines()[0].replace(dsn, redact(dsn))}",
            "Check that the target is reachable with the same connection string.",
        ) from None


def detach(con: duckdb.DuckDBPyConnection, alias: str) -> None:
    con.execute(f"DETACH {alias}")


def source_tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    """The tables of the attached SQLite source (a store's optional tables may be missing)."""
    rows = con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'src'")
    return {r[0] for r in rows.fetchall()}
