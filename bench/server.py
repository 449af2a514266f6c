"""The benchmarks' server, databases and generated source files, shared by `bench.run` and
the cases it runs (`bench.sync_case`, `bench.fleet_case`) and by `bench.profile`."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

BENCH_HOME = Path(".llmspell-migrate")
APP_ROLE = "llmspell_app"


# -- server and databases ------------------------------------------------------------------
def server_dsn(target: str | None) -> str:
    """A superuser DSN (any database) for the server under test."""
    if target:
        return target
    from destinations.embedded_server import ensure_running

    return ensure_running((BENCH_HOME / "bench-pg").resolve()).dsn


def with_db(dsn: str, db: str, role: str | None = None) -> str:
    params = conninfo_to_dict(dsn)
    params["dbname"] = db
    if role:
        extra = f"-c role={role}"
        params["options"] = f"{params['options']} {extra}" if params.get("options") else extra
    return make_conninfo(**params)


def fresh_database(admin: str, name: str) -> None:
    from destinations.target_schema import ensure_schema

    with psycopg.connect(with_db(admin, "postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(with_db(admin, name), autocommit=True) as conn:
        ensure_schema(conn)


def drop_database(admin: str, name: str) -> None:
    with psycopg.connect(with_db(admin, "postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def server_version(admin: str) -> str:
    with psycopg.connect(admin) as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


# -- source files --------------------------------------------------------------------------
def source_file(work: Path, label: str, spec) -> Path:
    """Generate once per spec; reused by every method and by later runs."""
    from sources.sample_db import generate

    path = work / f"source-{label}.db"
    marker = path.with_suffix(".spec.json")
    key = json.dumps(spec.__dict__, sort_keys=True, default=lambda o: o.__dict__)
    if path.exists() and marker.exists() and marker.read_text() == key:
        return path
    print(f"generating {path} ({spec.total} records) ...", flush=True)
    generate(path, spec, overwrite=True)
    marker.write_text(key)
    return path
