"""`sync` carries artifacts like every other store: new ones (bytea and large object), a
changed one, a deleted one (its content and large object with it), and a changed session
that owns artifacts (its foreign key cascades: they must survive). Rollback of that sync
puts PostgreSQL back as execute left it, large objects included. Real SQLite, real
PostgreSQL; the sync runs as llmspell_app, content read back as llmspell's backend reads it."""

from __future__ import annotations

import hashlib
import sqlite3
import uuid

import pytest

from pipelines import api
from sources.sample_db import SampleSpec
from tests.helpers import executed_world

SPEC = SampleSpec(
    agents=2, workflows=1, sessions=6, kv=1, tenants=2, seed=4, artifacts=14, large_artifact=True
)
MIB = 1 << 20


def pg_state(db) -> dict:
    """Artifacts, content (bytes read as llmspell reads them) and large objects."""
    with db.connect() as conn:
        arts = conn.execute("SELECT a::text FROM llmspell.artifacts a ORDER BY 1").fetchall()
        sessions = conn.execute("SELECT s::text FROM llmspell.sessions s ORDER BY 1").fetchall()
        content = []
        for row in conn.execute(
            "SELECT tenant_id, content_hash, storage_type, data, large_object_oid, size_bytes, "
            "is_compressed, original_size_bytes, reference_count, created_at "
            "FROM llmspell.artifact_content ORDER BY 1, 2"
        ).fetchall():
            row = list(row)
            if row[2] == "large_object":
                row[3] = conn.execute("SELECT lo_get(%s)", (row[4],)).fetchone()[0]
            row[3] = hashlib.sha256(bytes(row[3])).hexdigest()
            content.append(tuple(row))
        los = sorted(r[0] for r in conn.execute("SELECT oid FROM pg_largeobject_metadata"))
    return {"artifacts": arts, "sessions": sessions, "content": content, "los": los}


def source_content(src) -> dict:
    with sqlite3.connect(src) as c:
        return {
            (t, h): hashlib.sha256(d).hexdigest()
            for t, h, d in c.execute("SELECT tenant_id, content_hash, data FROM artifact_content")
        }


def add_artifact(c: sqlite3.Connection, like: tuple, data: bytes, seq: int) -> str:
    tenant, session = like
    digest = hashlib.sha256(data).hexdigest()
    c.execute(
        "INSERT INTO artifact_content (tenant_id, content_hash, data, size_bytes, "
        "is_compressed, original_size_bytes, reference_count, created_at, last_accessed_at) "
        "VALUES (?, ?, ?, ?, 0, ?, 1, 1700000100, 1700000100)",
        (tenant, digest, data, len(data), len(data)),
    )
    aid = f"{session}:{seq}:{digest}"
    c.execute(
        "INSERT INTO artifacts (tenant_id, artifact_id, session_id, sequence, content_hash, "
        "metadata, name, artifact_type, mime_type, size_bytes, created_at, created_by, version, "
        "tags, stored_at, updated_at) VALUES (?, ?, ?, ?, ?, '{\"new\": 1}', 'new.bin', "
        "'user_input', 'application/octet-stream', ?, 1700000100, 'sync-test', 1, '[\"a\"]', "
        "1700000100, 1700000100)",
        (tenant, aid, session, seq, digest, len(data)),
    )
    return aid


@pytest.fixture(scope="module")
def world(tmp_path_factory, pg_admin_dsn):
    comps = "sessions,artifacts"
    yield from executed_world(tmp_path_factory, pg_admin_dsn, "sync-art", SPEC, comps)


def test_sync_carries_artifacts_and_rollback_restores_them(world):
    db, plan, src = world["db"], world["plan"], world["src"]
    after_execute = pg_state(db)
    assert after_execute["los"]  # the large artifact is a large object
    c = sqlite3.connect(src)
    # the large artifact goes (its content only it referred to: the large object is unlinked)
    tenant, aid, digest = c.execute(
        "SELECT a.tenant_id, a.artifact_id, a.content_hash FROM artifacts a JOIN "
        "artifact_content ac USING (tenant_id, content_hash) WHERE length(ac.data) >= ? "
        "LIMIT 1",
        (MIB,),
    ).fetchone()
    assert (
        c.execute(
            "SELECT count(*) FROM artifacts WHERE tenant_id = ? AND content_hash = ?",
            (tenant, digest),
        ).fetchone()[0]
        == 1
    )
    c.execute("DELETE FROM artifacts WHERE tenant_id = ? AND artifact_id = ?", (tenant, aid))
    c.execute(
        "DELETE FROM artifact_content WHERE tenant_id = ? AND content_hash = ?", (tenant, digest)
    )
    # one changed
    changed_tenant, changed = c.execute(
        "SELECT tenant_id, artifact_id FROM artifacts ORDER BY rowid LIMIT 1"
    ).fetchone()
    c.execute(
        "UPDATE artifacts SET name = 'renamed.txt', metadata = json_set(metadata, '$.v', 2) "
        "WHERE tenant_id = ? AND artifact_id = ?",
        (changed_tenant, changed),
    )
    # a session that owns artifacts changes (sync replaces it: its artifacts must stay)
    owner_tenant, owner = c.execute(
        "SELECT tenant_id, session_id FROM artifacts WHERE artifact_id <> ? "
        "GROUP BY 1, 2 HAVING count(*) >= 1 ORDER BY 1, 2 LIMIT 1",
        (changed,),
    ).fetchone()
    c.execute(
        "UPDATE sessions SET session_data = json_set(session_data, '$.note', 'synced') "
        "WHERE tenant_id = ? AND session_id = ?",
        (owner_tenant, owner),
    )
    owned = c.execute(
        "SELECT count(*) FROM artifacts WHERE tenant_id = ? AND session_id = ?",
        (owner_tenant, owner),
    ).fetchone()[0]
    # two new ones in that session: small (bytea) and large (large object)
    (top,) = c.execute(
        "SELECT max(sequence) FROM artifacts WHERE tenant_id = ? AND session_id = ?",
        (owner_tenant, owner),
    ).fetchone()
    small = add_artifact(c, (owner_tenant, owner), b"small new artifact " * 10, top + 1)
    big_data = uuid.uuid4().bytes * (MIB // 16 + 1000)
    add_artifact(c, (owner_tenant, owner), big_data, top + 2)
    c.commit()
    c.close()

    result = api.sync(plan, target=db.app_dsn)
    assert result.status == "SUCCESS", result
    assert result.changes["artifacts"]["inserted"] == 2
    assert result.changes["artifacts"]["updated"] == 1
    assert result.changes["artifacts"]["deleted"] == 1
    assert result.changes["sessions"]["updated"] == 1
    assert result.validated["artifacts"]["content"]["missing"] == 0
    # PostgreSQL equals the source as llmspell reads it: every content's bytes, full verify
    now = pg_state(db)
    got = {(r[0], r[1]): r[3] for r in now["content"]}
    assert got == source_content(src)
    kinds = {(r[0], r[1]): r[2] for r in now["content"]}
    assert kinds[(owner_tenant, hashlib.sha256(big_data).hexdigest())] == "large_object"
    assert kinds[(owner_tenant, small.split(":")[-1])] == "bytea"
    assert (tenant, digest) not in kinds
    with db.connect() as conn:
        (n,) = conn.execute(
            "SELECT count(*) FROM llmspell.artifacts WHERE tenant_id = %s AND session_id = %s",
            (owner_tenant, owner),
        ).fetchone()
        assert n == owned + 2  # the replaced session kept its artifacts, and got the new ones
        (name,) = conn.execute(
            "SELECT name FROM llmspell.artifacts WHERE tenant_id = %s AND artifact_id = %s",
            (changed_tenant, changed),
        ).fetchone()
        assert name == "renamed.txt"
        bad = conn.execute(
            "SELECT c.content_hash FROM llmspell.artifact_content c WHERE reference_count <> "
            "1 + (SELECT count(*) FROM llmspell.artifacts a WHERE a.tenant_id = c.tenant_id "
            "AND a.content_hash = c.content_hash)"
        ).fetchall()
        assert bad == []
    gone_oid = set(after_execute["los"]) - set(now["los"])
    assert gone_oid  # the deleted artifact's large object was unlinked
    with db.connect(app=True) as conn:  # llmspell_app reads the new large object
        conn.execute("SELECT set_config('app.current_tenant_id', %s, false)", (owner_tenant,))
        (oid,) = conn.execute(
            "SELECT large_object_oid FROM llmspell.artifact_content WHERE content_hash = %s",
            (hashlib.sha256(big_data).hexdigest(),),
        ).fetchone()
        assert bytes(conn.execute("SELECT lo_get(%s)", (oid,)).fetchone()[0]) == big_data
    report = api.verify(plan, target=db.dsn, full=True)
    assert report.passed, [str(m) for c in report.components for m in c.mismatches]
    assert api.sync(plan, target=db.app_dsn).status == "NO_CHANGES"
    # rollback: PostgreSQL as execute left it, the unlinked large object back under its OID
    undo = api.rollback(backup=result.backup_path, target=db.dsn)
    assert undo.status == "rolled_back"
    back = pg_state(db)
    assert back["content"] == after_execute["content"]
    assert back["artifacts"] == after_execute["artifacts"]
    assert back["sessions"] == after_execute["sessions"]
    assert back["los"] == after_execute["los"]
    # and the same changes sync again
    again = api.sync(plan, target=db.app_dsn)
    assert again.status == "SUCCESS" and again.changes["artifacts"] == result.changes["artifacts"]
    assert api.verify(plan, target=db.dsn, full=True).passed


def test_two_sided_artifact_change_and_orphaning_session_delete_are_refused(world):
    from core.errors import MigrateError

    db, plan, src = world["db"], world["plan"], world["src"]
    c = sqlite3.connect(src)
    tenant, aid = c.execute(
        "SELECT tenant_id, artifact_id FROM artifacts ORDER BY rowid DESC LIMIT 1"
    ).fetchone()
    c.execute(
        "UPDATE artifacts SET name = 'sqlite side' WHERE tenant_id = ? AND artifact_id = ?",
        (tenant, aid),
    )
    c.commit()
    with db.connect() as conn:  # llmspell on PostgreSQL changed the same artifact
        conn.execute(
            "UPDATE llmspell.artifacts SET name = 'pg side' WHERE tenant_id = %s "
            "AND artifact_id = %s",
            (tenant, aid),
        )
    before = pg_state(db)
    with pytest.raises(MigrateError) as refused:
        api.sync(plan, target=db.app_dsn)
    assert f"artifacts tenant={tenant} key={aid!r}" in str(refused.value.details)
    assert pg_state(db) == before
    # the source's copy wins with --prefer-source; PostgreSQL's goes to the pre-images
    done = api.sync(plan, target=db.app_dsn, prefer_source=True)
    assert done.status == "SUCCESS"
    # a session deleted in the source while its artifacts stay there: refused by key
    s_tenant, session = c.execute(
        "SELECT tenant_id, session_id FROM artifacts ORDER BY rowid LIMIT 1"
    ).fetchone()
    c.execute("PRAGMA foreign_keys = OFF")
    c.execute("DELETE FROM sessions WHERE tenant_id = ? AND session_id = ?", (s_tenant, session))
    c.commit()
    c.close()
    before = pg_state(db)
    with pytest.raises(MigrateError) as refused:
        api.sync(plan, target=db.app_dsn)
    assert "artifact(s) in PostgreSQL belong to it" in str(refused.value.details)
    assert pg_state(db) == before
