"""Python's SQLite and DuckDB's (the sqlite scanner links its own copy) read one snapshot at
once, as validation does. They must never share a `-shm` index: one library opening a WAL
database the other has open truncates the index the other has mapped, and the process dies
of SIGBUS (CI saw `verify --full` killed so, on a source llmspell had open)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core.errors import SourceError

ROOT = Path(__file__).resolve().parents[1]

# A reader thread walks rows that live only in the WAL while DuckDB attaches the same
# snapshot again and again. With both libraries on one name this died of SIGBUS within a
# second, each of the three times it was run here.
_RACE = textwrap.dedent(
    """
    import sys, threading
    from sources.sqlite_reader import SourceDB
    from validation import duck

    with SourceDB(sys.argv[1]) as db:
        assert db.live, "the source should look open in llmspell (a -wal beside it)"
        stop = threading.Event()
        reads = []

        def read_wal_rows():
            n = 0
            while not stop.is_set():
                db.conn.execute("SELECT b FROM t WHERE rowid = ?", (n % 5000 + 1,)).fetchone()
                n += 1
            reads.append(n)

        reader = threading.Thread(target=read_wal_rows)
        reader.start()
        try:
            con = duck.connect(db.read_path)
            for _ in range(1000):
                seen = con.execute("SELECT count(*) FROM src.t").fetchone()[0]
                assert seen == 5000, seen
                con.execute("DETACH src")
                duck.attach_source(con, db.read_path)
            con.close()
        finally:
            stop.set()
            reader.join()
        print("reads", reads[0])
    """
)


def test_python_and_duckdb_sqlite_do_not_share_a_wal_index(tmp_path):
    source = tmp_path / "live.db"
    writer = sqlite3.connect(source)  # kept open: its records stay in the WAL
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("CREATE TABLE agent_states (agent_id TEXT)")  # an llmspell table
        writer.execute("CREATE TABLE t (a INTEGER, b TEXT)")
        writer.executemany("INSERT INTO t VALUES (?, ?)", [(i, "x" * 200) for i in range(5000)])
        writer.commit()
        assert Path(f"{source}-wal").stat().st_size > 0
        proc = subprocess.run(
            [sys.executable, "-c", _RACE, str(source)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        writer.close()
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert int(proc.stdout.split()[-1]) > 0  # the reader really ran alongside


def test_duckdb_name_refuses_a_path_outside_our_snapshots(tmp_path):
    from sources.sqlite_reader import duckdb_name

    db = tmp_path / "user.db"
    sqlite3.connect(db).close()
    with pytest.raises(SourceError) as refused:
        duckdb_name(db)
    assert "not a private snapshot" in str(refused.value)
    assert "source_session" in refused.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user.db"]
