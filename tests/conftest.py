"""Shared fixtures: a real PostgreSQL (embedded, or the server LLMSPELL_TEST_PG_DSN names), a
fresh database with the llmspell schema per test, and real sample SQLite files."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from core import files
from destinations import embedded_server, target_schema
from sources.sample_db import SampleSpec, generate


def with_params(dsn: str, **params) -> str:
    base = conninfo_to_dict(dsn)
    base.update(params)
    return make_conninfo(**base)


def private_pg_dir() -> Path:
    """A data folder for an embedded server outside pytest's tmp tree: pytest makes its
    folders private (0700) at each session start, which would lock the server's own user out
    of a data folder kept there."""
    return Path(tempfile.mkdtemp(prefix="llmspell-migrate-test-pg-")) / "data"


@pytest.fixture(scope="session", autouse=True)
def no_scratch_left():
    """Tests kill runs on purpose (SIGKILL): what those leave in the temp dir is removed the
    way the tool's next run removes it, so a test session leaves nothing behind."""
    yield
    files.sweep_stale_scratch()


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    """A superuser DSN for the server the tests use."""
    env = os.environ.get("LLMSPELL_TEST_PG_DSN")
    if env:
        yield env
        return
    data = private_pg_dir()
    server = embedded_server.ensure_running(data)
    yield with_params(server.dsn, dbname="postgres")
    embedded_server.stop(data, mode="immediate")
    shutil.rmtree(data.parent, ignore_errors=True)


@dataclass
class TargetDB:
    name: str
    dsn: str  # superuser (bypasses RLS)
    app_dsn: str  # the same database as llmspell_app (subject to RLS)

    def connect(self, app: bool = False, **kw) -> psycopg.Connection:
        return psycopg.connect(self.app_dsn if app else self.dsn, **kw)

    def snapshot(self) -> dict[str, list[tuple]]:
        """Every llmspell row, for before/after comparisons."""
        out = {}
        with self.connect() as conn:
            for table in ("agent_states", "workflow_states", "sessions", "kv_store"):
                rows = conn.execute(f"SELECT * FROM llmspell.{table} ORDER BY 1, 2, 3").fetchall()
                out[table] = rows
        return out

    def count(self, table: str) -> int:
        with self.connect() as conn:
            return conn.execute(f"SELECT count(*) FROM llmspell.{table}").fetchone()[0]


def _new_db(admin_dsn: str, schema: bool) -> TargetDB:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = with_params(admin_dsn, dbname=name)
    if schema:
        with psycopg.connect(dsn, autocommit=True) as conn:
            target_schema.ensure_schema(conn)
    app = with_params(dsn, options="-c role=llmspell_app")
    return TargetDB(name, dsn, app)


def _database(admin_dsn: str, schema: bool):
    db = _new_db(admin_dsn, schema=schema)
    yield db
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')


@pytest.fixture
def target_db(pg_admin_dsn) -> TargetDB:
    """A fresh database with the llmspell schema, dropped afterwards."""
    yield from _database(pg_admin_dsn, schema=True)


@pytest.fixture
def empty_db(pg_admin_dsn) -> TargetDB:
    """A fresh database without the llmspell schema."""
    yield from _database(pg_admin_dsn, schema=False)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Each test gets its own working folder, tool home and no configured target."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LLMSPELL_MIGRATE_HOME", str(tmp_path / ".llmspell-migrate"))
    for var in ("LLMSPELL_MIGRATE_TARGET", "LLMSPELL_MIGRATE_PASSWORD", "PGPASSWORD"):
        monkeypatch.delenv(var, raising=False)
    yield tmp_path
    # An embedded server the test started in its home (a fuzzed plan without a target, say)
    # is stopped with it, not left running after the suite.
    own = tmp_path / ".llmspell-migrate" / "postgres"
    if (own / "postmaster.pid").exists():
        embedded_server.stop(own)


SMALL = SampleSpec(agents=120, workflows=40, sessions=50, kv=60, tenants=3, seed=11)


_SAMPLES: dict[str, tuple[Path, dict[str, int]]] = {}
_SAMPLE_DIR = Path(tempfile.mkdtemp(prefix="llmspell-migrate-test-samples-"))


def sample_file(path: Path, spec: SampleSpec) -> dict[str, int]:
    """`generate(path, spec)` for tests, copied from one file per spec and session: the
    generator is seeded, so the copy is the same database, and the big specs are built once
    instead of once per test."""
    key = repr(spec)
    if key not in _SAMPLES:
        built = _SAMPLE_DIR / f"{len(_SAMPLES)}.db"
        _SAMPLES[key] = (built, generate(built, spec))
    built, counts = _SAMPLES[key]
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(built, path)
    return dict(counts)


@pytest.fixture(scope="session", autouse=True)
def no_sample_files_left():
    yield
    shutil.rmtree(_SAMPLE_DIR, ignore_errors=True)


@pytest.fixture
def sample_sqlite(tmp_path) -> Path:
    path = tmp_path / "llmspell.db"
    sample_file(path, SMALL)
    return path


@pytest.fixture
def other_target_db(pg_admin_dsn) -> TargetDB:
    """A second fresh database with the llmspell schema (another target), dropped afterwards."""
    yield from _database(pg_admin_dsn, schema=True)
