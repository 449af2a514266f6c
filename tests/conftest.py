"""Shared fixtures: a real PostgreSQL (embedded, or the server LLMSPELL_TEST_PG_DSN names), a
fresh database with the llmspell schema per test (cloned from a template built once per
worker, see tests/helpers.py), and real sample SQLite files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psycopg
import pytest

from core import files
from destinations import embedded_server
from tests.helpers import (  # noqa: F401 (older tests import these from here)
    SAMPLE_DIR,
    SMALL,
    TargetDB,
    database,
    drop_templates,
    private_pg_dir,
    sample_file,
    with_params,
)


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
        drop_templates()
        return
    data = private_pg_dir()
    server = embedded_server.ensure_running(data)
    admin = with_params(server.dsn, dbname="postgres")
    # This throwaway server need not survive a power cut: no fsync (the WAL is still written,
    # so a crash of the server itself recovers as before). Never done to a server named by
    # LLMSPELL_TEST_PG_DSN.
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET fsync = off")
        conn.execute("SELECT pg_reload_conf()")
    yield admin
    drop_templates()
    embedded_server.stop(data, mode="immediate")
    shutil.rmtree(data.parent, ignore_errors=True)


@pytest.fixture
def target_db(pg_admin_dsn) -> TargetDB:
    """A fresh database with the llmspell schema, dropped afterwards."""
    yield from database(pg_admin_dsn, schema=True)


@pytest.fixture
def other_target_db(pg_admin_dsn) -> TargetDB:
    """A second fresh database with the llmspell schema (another target), dropped afterwards."""
    yield from database(pg_admin_dsn, schema=True)


@pytest.fixture
def empty_db(pg_admin_dsn) -> TargetDB:
    """A fresh database without the llmspell schema."""
    yield from database(pg_admin_dsn, schema=False)


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


@pytest.fixture(scope="session", autouse=True)
def no_sample_files_left():
    yield
    shutil.rmtree(SAMPLE_DIR, ignore_errors=True)


@pytest.fixture
def sample_sqlite(tmp_path) -> Path:
    path = tmp_path / "llmspell.db"
    sample_file(path, SMALL)
    return path


# `make test` hands whole files to two workers (--dist loadfile), in collection order: a long
# file collected last leaves one worker idle while the other finishes it. The longest files
# (by `pytest --durations=0`, summed per file) are collected first, the rest as before —
# longest-first keeps the two workers' ends close. Order within a file is unchanged.
LONGEST_FILES = (
    "test_faults.py",
    "test_hardening.py",
    "test_fuzz.py",
    "test_docs_commands.py",
    "test_sync.py",
    "test_plan_target.py",
    "test_dlt_trace.py",
    "test_memory_stores.py",
    "test_artifacts.py",
    "test_preflight.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole
