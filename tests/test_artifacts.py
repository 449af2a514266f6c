"""Artifacts: content as bytea below 1 MiB and as a large object from 1 MiB, PostgreSQL's
reference counts, large objects readable by llmspell_app, foreign keys in order, dangling
artifacts refused by id, rollback unlinking exactly the run's large objects, and validation
comparing the bytes. Real SQLite laid out as llmspell lays it out, read back with llmspell's
PostgreSQL backend SQL (artifacts.rs) as llmspell_app."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from pipelines import migrate
from sources.sample_db import SampleSpec
from tests.helpers import make_plan, sample_file

SPEC = SampleSpec(
    agents=2, workflows=1, sessions=6, kv=1, tenants=2, seed=4, artifacts=14, large_artifact=True
)
MIB = 1 << 20
GET_CONTENT = (
    "SELECT storage_type, data, large_object_oid FROM llmspell.artifact_content "
    "WHERE tenant_id = %s AND content_hash = %s"
)
LIST_SESSION = (
    "SELECT artifact_id FROM llmspell.artifacts WHERE tenant_id = %s AND session_id = %s "
    "ORDER BY sequence"
)


@pytest.fixture
def src(tmp_path) -> Path:
    path = tmp_path / "llmspell.db"
    sample_file(path, SPEC)
    return path


def _source(src: Path, sql: str, args=()) -> list[tuple]:
    with sqlite3.connect(src) as conn:
        return conn.execute(sql, args).fetchall()


def _large_objects(target_db) -> set[int]:
    with target_db.connect() as conn:
        return {r[0] for r in conn.execute("SELECT oid FROM pg_largeobject_metadata")}


def _read_content(conn, tenant, digest) -> tuple[str, bytes]:
    """What llmspell's PostgreSQL backend returns for the content (large object via lo_get,
    as llmspell_app: it must be allowed to read it)."""
    kind, data, oid = conn.execute(GET_CONTENT, (tenant, digest)).fetchone()
    if kind == "large_object":
        data = conn.execute("SELECT lo_get(%s)", (oid,)).fetchone()[0]
    return kind, bytes(data)


def test_content_both_storage_types_refcounts_and_rows_as_llmspell_app(tmp_path, src, target_db):
    plan = make_plan(tmp_path, src, target_db.app_dsn, "sessions,artifacts")
    assert migrate.run(["execute", "--plan", str(plan), "--target", target_db.app_dsn]) == 0
    content = _source(
        src,
        "SELECT c.tenant_id, c.content_hash, c.data, c.is_compressed, (SELECT count(*) FROM "
        "artifacts a WHERE a.tenant_id = c.tenant_id AND a.content_hash = c.content_hash) "
        "FROM artifact_content c",
    )
    kinds = set()
    with target_db.connect(app=True) as conn:
        for tenant, digest, data, compressed, refs in content:
            conn.execute("SELECT set_config('app.current_tenant_id', %s, false)", (tenant,))
            kind, got = _read_content(conn, tenant, digest)
            assert got == data, digest
            assert kind == ("bytea" if len(data) < MIB else "large_object")
            kinds.add(kind)
            count, flag = conn.execute(
                "SELECT reference_count, is_compressed FROM llmspell.artifact_content "
                "WHERE tenant_id = %s AND content_hash = %s",
                (tenant, digest),
            ).fetchone()
            assert count == 1 + refs  # PostgreSQL's convention, not SQLite's count
            assert flag is bool(compressed)
        assert kinds == {"bytea", "large_object"}
        assert any(r[3] for r in content)  # compressed content kept compressed, with its flag
        for tenant, session in _source(src, "SELECT DISTINCT tenant_id, session_id FROM artifacts"):
            conn.execute("SELECT set_config('app.current_tenant_id', %s, false)", (tenant,))
            got = [r[0] for r in conn.execute(LIST_SESSION, (tenant, session))]
            want = [
                r[0]
                for r in _source(
                    src,
                    "SELECT artifact_id FROM artifacts WHERE tenant_id = ? AND session_id = ? "
                    "ORDER BY sequence",
                    (tenant, session),
                )
            ]
            assert got == want and got
        row = conn.execute("SELECT tags, metadata FROM llmspell.artifacts LIMIT 1").fetchone()
        assert row[0] is None or isinstance(row[0], list)
        assert isinstance(row[1], dict)


def test_rollback_unlinks_exactly_the_runs_large_objects(tmp_path, src, target_db, capsys):
    with target_db.connect() as conn:  # someone else's large object: must survive
        (theirs,) = conn.execute("SELECT lo_from_bytea(0, 'keep me')").fetchone()
    before = _large_objects(target_db)
    plan = make_plan(tmp_path, src, target_db.dsn, "sessions,artifacts")
    capsys.readouterr()
    assert migrate.run(["execute", "--plan", str(plan), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (new,) = _large_objects(target_db) - before
    with target_db.connect(app=True) as conn:  # created by a superuser, readable by the app
        assert len(conn.execute("SELECT lo_get(%s)", (new,)).fetchone()[0]) >= MIB
    backup = Path(doc["backup_path"])
    files = list((backup / "source" / "artifact_content").iterdir())
    assert max(f.stat().st_size for f in files) >= MIB  # large content as a file, not base64
    assert migrate.run(["rollback", "--backup", str(backup)]) == 0
    assert _large_objects(target_db) == before and theirs in before
    for table in ("artifacts", "artifact_content", "sessions"):
        assert target_db.count(table) == 0, table


def test_failed_run_rolls_back_its_large_objects(tmp_path, src, target_db, capsys):
    """An artifact row colliding in the target (same session and sequence, another id) fails
    the INSERT after the content and its large object were written: all of it goes again."""
    sessions_only = make_plan(tmp_path, src, target_db.dsn, "sessions", "s.toml")
    assert migrate.run(["execute", "--plan", str(sessions_only)]) == 0
    tenant, session, seq = _source(
        src, "SELECT tenant_id, session_id, sequence FROM artifacts ORDER BY rowid DESC LIMIT 1"
    )[0]
    with target_db.connect() as conn:
        conn.execute(
            "INSERT INTO llmspell.artifact_content (tenant_id, content_hash, storage_type, data, "
            "size_bytes) VALUES (%s, 'theirs', 'bytea', '\\x01', 1)",
            (tenant,),
        )
        conn.execute(
            "INSERT INTO llmspell.artifacts (tenant_id, artifact_id, session_id, sequence, "
            "content_hash, metadata, name, artifact_type, mime_type, size_bytes) VALUES "
            "(%s, 'their-artifact', %s, %s, 'theirs', '{}', 'n', 't', 'm', 1)",
            (tenant, session, seq),
        )
    before = _large_objects(target_db)
    plan = make_plan(tmp_path, src, target_db.dsn, "artifacts", "a.toml")
    capsys.readouterr()
    assert migrate.run(["execute", "--plan", str(plan)]) == 1
    err = capsys.readouterr().err
    assert "Migration execution failed in artifacts: UniqueViolation" in err
    assert "unique_session_sequence" in err
    assert _large_objects(target_db) == before
    assert target_db.count("artifacts") == 1 and target_db.count("artifact_content") == 1


def test_dangling_artifacts_are_refused_by_id(tmp_path, src, target_db, capsys):
    with sqlite3.connect(src) as conn:
        a_id, tenant, session = conn.execute(
            "SELECT artifact_id, tenant_id, session_id FROM artifacts LIMIT 1"
        ).fetchone()
        conn.execute(
            "DELETE FROM sessions WHERE tenant_id = ? AND session_id = ?", (tenant, session)
        )
        conn.execute(
            "UPDATE artifacts SET content_hash = 'feed' WHERE rowid = (SELECT max(rowid) FROM "
            "artifacts)"
        )
        (b_id,) = conn.execute(
            "SELECT artifact_id FROM artifacts WHERE content_hash = 'feed'"
        ).fetchone()
    plan = make_plan(tmp_path, src, target_db.dsn, "sessions,artifacts")
    capsys.readouterr()
    assert migrate.run(["execute", "--plan", str(plan), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{a_id!r}: session {session} is in neither the source nor the target" in err
    assert f"{b_id!r}: content feed is in neither the source nor the target" in err
    assert _large_objects(target_db) == set() and target_db.count("sessions") == 0


def test_validation_compares_large_object_bytes(tmp_path, src, target_db, capsys):
    plan = make_plan(tmp_path, src, target_db.dsn, "sessions,artifacts")
    assert migrate.run(["execute", "--plan", str(plan)]) == 0
    with target_db.connect() as conn:
        conn.execute(
            "SELECT lo_put(large_object_oid, 12345, '\\xff00'::bytea) FROM "
            "llmspell.artifact_content WHERE storage_type = 'large_object'"
        )
    capsys.readouterr()
    assert migrate.run(["verify", "--plan", str(plan), "--full"]) != 0
    out = capsys.readouterr().out
    assert "artifact_content" in out and "sha256" in out


def test_sigkill_after_content_then_rerun_resumes(tmp_path, target_db):
    """Killed (SIGKILL) once the content is in and the artifact rows are being written: the
    same plan resumes the run, adds no second copy of any large object, and its rollback
    still unlinks exactly the run's large objects."""
    from tests.test_faults import spawn, wait_for

    src = tmp_path / "many.db"
    sample_file(
        src,
        SampleSpec(
            agents=1,
            workflows=1,
            sessions=20,
            kv=1,
            tenants=2,
            seed=8,
            artifacts=3000,
            large_artifact=True,
        ),
    )
    before = _large_objects(target_db)
    plan = tmp_path / "plan.toml"
    argv = ["plan", "--components", "sessions,artifacts", "--source", str(src), "-o", str(plan)]
    assert migrate.run([*argv, "--target", target_db.dsn, "--batch-size", "100"]) == 0
    proc = spawn(plan, tmp_path)
    wait_for(proc, "Content:")
    proc.kill()
    proc.wait()
    with target_db.connect() as conn:
        (status,) = conn.execute("SELECT status FROM llmspell_migrate.runs").fetchone()
    assert status == "running"
    assert target_db.count("artifacts") < 3000
    assert migrate.run(["execute", "--plan", str(plan)]) == 0
    assert target_db.count("artifacts") == 3000
    assert len(_large_objects(target_db) - before) == 1
    assert migrate.run(["verify", "--plan", str(plan), "--full"]) == 0
    backup = next((tmp_path / "backups").iterdir())
    assert migrate.run(["rollback", "--backup", str(backup)]) == 0
    assert _large_objects(target_db) == before


def test_report_says_large_objects_are_outside_row_level_security(tmp_path, src, target_db, capsys):
    """What the note warns of is real: a session acting as one tenant reads another tenant's
    large object by its OID. The execute report (text and --json) says so, with what to do."""
    plan = make_plan(tmp_path, src, target_db.app_dsn, "sessions,artifacts")
    capsys.readouterr()
    assert migrate.run(["execute", "--plan", str(plan)]) == 0
    out = capsys.readouterr().out
    assert "Security:" in out
    assert "large objects, which have no row-level security" in out
    assert "llmspell's own PostgreSQL backend stores them the same way" in out
    assert "lo_compat_privileges off" in out and "below 1 MiB" in out
    with target_db.connect() as conn:
        tenant, oid = conn.execute(
            "SELECT tenant_id, large_object_oid FROM llmspell.artifact_content "
            "WHERE storage_type = 'large_object' LIMIT 1"
        ).fetchone()
    with target_db.connect(app=True) as conn:
        conn.execute("SELECT set_config('app.current_tenant_id', 'tenant-other', false)")
        rows = "SELECT count(*) FROM llmspell.artifact_content WHERE tenant_id = %s"
        assert conn.execute(rows, (tenant,)).fetchone()[0] == 0  # its row: hidden by RLS
        assert len(conn.execute("SELECT lo_get(%s)", (oid,)).fetchone()[0]) >= MIB
    # the JSON report carries it too; a run without artifacts does not
    assert migrate.run(["execute", "--plan", str(plan), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert any("no row-level security" in n for n in doc["security_notes"])
    other = make_plan(tmp_path, src, target_db.app_dsn, components="sessions", name="other.toml")
    capsys.readouterr()
    assert migrate.run(["execute", "--plan", str(other)]) == 0
    assert "Security:" not in capsys.readouterr().out
