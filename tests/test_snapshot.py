"""A source llmspell is writing is snapshotted consistently every time (SQLite's backup API),
and a closed database's snapshot is a copy, not a link llmspell could write through."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sources.sample_db import SampleSpec
from sources.sqlite_reader import SourceDB
from tests.conftest import sample_file

ROOT = Path(__file__).resolve().parents[1]

# llmspell-like writer: WAL mode, 20 rows every few milliseconds, large enough values that
# pages split and the WAL is checkpointed into the main file while snapshots are taken.
_WRITER = textwrap.dedent(
    """
    import sqlite3, sys, time, uuid
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("PRAGMA journal_mode=" + (sys.argv[2] if len(sys.argv) > 2 else "WAL"))
    conn.execute("PRAGMA wal_autocheckpoint=50")
    n = 0
    while True:
        conn.execute("BEGIN")
        for _ in range(20):
            conn.execute(
                "INSERT INTO kv_store (tenant_id, key, value, created_at, updated_at) "
                "VALUES ('default', ?, randomblob(700), 0, 0)", (f"live:{uuid.uuid4()}",)
            )
        conn.execute("COMMIT")
        n += 1
        if n == 3:
            print("writing", flush=True)
        time.sleep(0.002)
    """
)


@pytest.mark.parametrize("journal", ["WAL", "DELETE"])
def test_live_source_snapshots_are_consistent_every_time(tmp_path, journal):
    """WAL: llmspell's default; DELETE: a rollback journal, written in place, with no -wal
    or -shm to tell it is in use."""
    source = tmp_path / "llmspell.db"
    sample_file(source, SampleSpec(agents=50, workflows=10, sessions=10, kv=200, tenants=2))
    with sqlite3.connect(source) as conn:  # ~15 MB: a copy lasts long enough to be torn
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) "
            "INSERT INTO kv_store (tenant_id, key, value, created_at, updated_at) "
            "SELECT 'default', 'bulk:' || i, randomblob(700), 0, 0 FROM n"
        )
    conn.close()
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(source), journal], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline().strip() == "writing"  # a signal, not a sleep
        seen = []
        for _ in range(20):
            with SourceDB(source) as db:
                assert db.live or journal == "DELETE"
                check = sqlite3.connect(f"file:{db.read_path}?mode=ro", uri=True)
                try:
                    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                    seen.append(check.execute("SELECT count(*) FROM kv_store").fetchone()[0])
                finally:
                    check.close()
        assert writer.poll() is None, "the writer must still be running: the test saw writes"
    finally:
        writer.kill()
        writer.wait()
    assert seen == sorted(seen) and seen[-1] > seen[0]  # each a later commit, none torn


def test_closed_source_snapshot_is_not_a_link(tmp_path):
    source = tmp_path / "llmspell.db"
    sample_file(source, SampleSpec(agents=5, workflows=2, sessions=2, kv=2, tenants=1))
    with SourceDB(source) as db:
        assert not db.live
        assert os.stat(db.read_path).st_ino != os.stat(source).st_ino
        # llmspell opens it mid-run and writes: the snapshot keeps what it read
        with sqlite3.connect(source) as conn:
            conn.execute("DELETE FROM agent_states")
        conn.close()
        assert db.conn.execute("SELECT count(*) FROM agent_states").fetchone()[0] == 5


def test_execute_while_llmspell_writes_succeeds_every_time(tmp_path, target_db):
    """The reported failure: `execute` on a source a writer fills at a high rate stopped half
    the time with "database disk image is malformed" (its snapshot was torn)."""
    from pipelines import api

    source = tmp_path / "llmspell.db"
    sample_file(source, SampleSpec(agents=100, workflows=20, sessions=20, kv=500, tenants=2))
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(source)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline().strip() == "writing"
        plan = tmp_path / "plan.yaml"
        api.make_plan("kv_store", output=plan, source=source, target=target_db.dsn)
        for _ in range(2):
            result = api.execute(plan)
            assert result.status == "SUCCESS", result
            api.rollback(backup=result.backup_path)
        assert writer.poll() is None
    finally:
        writer.kill()
        writer.wait()
