"""`sync` on a real SQLite file that an independent writer changes between runs, into a real
PostgreSQL: the target ends equal to the source, a second sync is a no-op, rollback of a
sync is exact, a SIGKILL mid-sync is undone by the next sync, a two-sided change is refused.

One module-scoped migration (execute as the superuser); the syncs run as `llmspell_app`, so
every bookkeeping table is used under row-level security."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from core.errors import EXIT_USAGE, MigrateError
from pipelines import api, migrate
from sources.memory_sample import MemorySpec
from sources.sample_db import SampleSpec
from tests.helpers import ALL_PRINTS, executed_world

REPO = Path(__file__).resolve().parent.parent
SPEC = SampleSpec(
    agents=40,
    workflows=12,
    sessions=12,
    kv=20,
    tenants=2,
    seed=9,
    memory=MemorySpec(vectors={384: 6}, entities=6, relationships=6, patterns=6),
    events=20,
    hooks=10,
)
COMPONENTS = (
    "agent_state,workflow_state,sessions,kv_store,episodic_memory,semantic_memory,"
    "procedural_memory,events,hooks"
)
TABLES = (
    "agent_states",
    "workflow_states",
    "sessions",
    "kv_store",
    "vector_embeddings_384",
    "entities",
    "relationships",
    "procedural_patterns",
    "event_log",
    "hook_history",
)


def snapshot(dsn: str) -> dict[str, list]:
    """Every llmspell row of the migrated tables, as text, in key order."""
    with psycopg.connect(dsn) as conn:
        return {
            t: conn.execute(f"SELECT t::text FROM llmspell.{t} t ORDER BY 1").fetchall()
            for t in TABLES
        }


def first(c: sqlite3.Connection, sql: str, *args):
    return c.execute(sql, args).fetchone()


def llmspell_writes(path: Path) -> dict[str, dict[str, int]]:
    """What llmspell does to its SQLite file between two runs, across tenants and stores:
    returns the expected change counts per component."""
    c = sqlite3.connect(path)
    tenants = [r[0] for r in c.execute("SELECT DISTINCT tenant_id FROM agent_states ORDER BY 1")]
    for t in tenants:  # same second, same data_version, same updated_at: only the content
        (aid,) = first(c, "SELECT agent_id FROM agent_states WHERE tenant_id = ? ORDER BY 1", t)
        c.execute(
            "UPDATE agent_states SET state_data = json_set(state_data, '$.synced', ?) "
            "WHERE tenant_id = ? AND agent_id = ?",
            (t, t, aid),
        )
    t = tenants[0]
    (aid,) = first(c, "SELECT agent_id FROM agent_states WHERE tenant_id = ? ORDER BY 1 DESC", t)
    c.execute(  # an update with timestamp and version moving, as llmspell's save does
        "UPDATE agent_states SET state_data = '{\"v\": 2}', data_version = data_version + 1, "
        "updated_at = updated_at + 5 WHERE tenant_id = ? AND agent_id = ?",
        (t, aid),
    )
    c.execute(
        "INSERT INTO agent_states (tenant_id, agent_id, agent_type, state_data, checksum, "
        "created_at, updated_at) VALUES (?, 'worker:new-1', 'worker', '{\"new\": true}', ?, "
        "1700000000, 1700000000)",
        (tenants[1], hashlib.sha256(b'{"new": true}').hexdigest()),
    )
    (gone,) = first(
        c,
        "SELECT agent_id FROM agent_states WHERE tenant_id = ? ORDER BY 1 LIMIT 1 OFFSET 1",
        tenants[1],
    )
    c.execute("DELETE FROM agent_states WHERE tenant_id = ? AND agent_id = ?", (tenants[1], gone))
    c.execute(
        "UPDATE workflow_states SET status = 'completed', current_step = current_step + 1 "
        "WHERE rowid = (SELECT min(rowid) FROM workflow_states)"
    )
    c.execute(
        "UPDATE sessions SET session_data = json_set(session_data, '$.note', 'x') "
        "WHERE rowid = (SELECT min(rowid) FROM sessions)"
    )
    c.execute(
        "INSERT INTO sessions (tenant_id, session_id, session_data, status, created_at, "
        "last_accessed_at, updated_at) VALUES (?, ?, '{}', 'active', 1, 1, 1)",
        (tenants[0], str(uuid.UUID(int=77))),
    )
    c.execute(
        "UPDATE kv_store SET value = X'00ff01' WHERE rowid = (SELECT min(rowid) FROM kv_store)"
    )
    c.execute("DELETE FROM kv_store WHERE rowid = (SELECT max(rowid) FROM kv_store)")
    c.execute(
        "INSERT INTO kv_store (tenant_id, key, value, created_at, updated_at) "
        "VALUES (?, 'config:new', X'01', 5, 5)",
        (tenants[1],),
    )
    c.execute(  # an appended event (a new id and sequence), one removed by retention
        "INSERT INTO event_log (tenant_id, event_id, event_type, correlation_id, timestamp, "
        "sequence, language, payload) SELECT tenant_id, ?, event_type, correlation_id, "
        "timestamp + 1, sequence + 100000, language, payload FROM event_log "
        "WHERE rowid = (SELECT max(rowid) FROM event_log)",
        (str(uuid.UUID(int=5)),),
    )
    c.execute("DELETE FROM event_log WHERE rowid = (SELECT min(rowid) FROM event_log)")
    c.execute(
        "INSERT INTO hook_history SELECT lower(hex(randomblob(16))), ?, tenant_id, "
        "hook_id, hook_type, correlation_id, hook_context, result_data, timestamp, "
        "duration_ms, triggering_component, component_id, modified_operation, tags, "
        "retention_priority, context_size, contains_sensitive_data, metadata, created_at "
        "FROM hook_history WHERE rowid = (SELECT min(rowid) FROM hook_history)",
        (str(uuid.UUID(int=6)),),
    )
    c.execute(
        "UPDATE procedural_patterns SET frequency = frequency + 1 "
        "WHERE rowid = (SELECT min(rowid) FROM procedural_patterns)"
    )
    c.execute(
        "UPDATE entities SET properties = '{\"renamed\": 1}' "
        "WHERE rowid = (SELECT min(rowid) FROM entities)"
    )
    c.execute(
        "UPDATE vector_metadata SET metadata = '{\"k\": 3}' "
        "WHERE rowid = (SELECT min(rowid) FROM vector_metadata)"
    )
    c.commit()
    c.close()
    none = {"inserted": 0, "updated": 0, "deleted": 0}
    return {
        "agent_state": {"inserted": 1, "updated": len(tenants) + 1, "deleted": 1},
        "workflow_state": {**none, "updated": 1},
        "sessions": {**none, "inserted": 1, "updated": 1},
        "kv_store": {"inserted": 1, "updated": 1, "deleted": 1},
        "episodic_memory_384": {**none, "updated": 1},
        "semantic_memory_entities": {**none, "updated": 1},
        "procedural_memory": {**none, "updated": 1},
        "events": {**none, "inserted": 1, "deleted": 1},
        "hooks": {**none, "inserted": 1},
    }


def counts(result) -> dict[str, dict[str, int]]:
    """Changes per component that had any."""
    out = {}
    for name, c in result.changes.items():
        c = {k: v for k, v in c.items() if k != "unchanged"}
        if any(c.values()):
            out[name] = c
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory, pg_admin_dsn):
    """A source, its plan executed into a fresh database, then changed by llmspell."""
    yield from executed_world(tmp_path_factory, pg_admin_dsn, "sync", SPEC, COMPONENTS)


def source_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_execute_records_what_it_wrote(world):
    with world["db"].connect() as conn:
        (n,) = conn.execute(f"SELECT count(*) FROM {ALL_PRINTS}").fetchone()
        (m,) = conn.execute(
            "SELECT coalesce(sum(cardinality(natural_keys)), 0) FROM llmspell_migrate.written_keys"
        ).fetchone()
        (odd,) = conn.execute(
            f"SELECT count(*) FROM {ALL_PRINTS} WHERE target_fp IS NULL OR source_fp IS NULL"
        ).fetchone()
    assert n == m > 0 and odd == 0


def test_sync_catches_up_every_change(world):
    db, plan = world["db"], world["plan"]
    # nothing changed yet: nothing to write, no backup
    quiet = api.sync(plan, target=db.app_dsn)
    assert quiet.status == "NO_CHANGES" and quiet.total_changes == 0 and not quiet.backup_path
    expected = llmspell_writes(world["src"])
    hashed = source_hash(world["src"])
    dry = api.sync(plan, target=db.app_dsn, dry_run=True)
    assert dry.status == "DRY_RUN" and counts(dry) == expected
    before = snapshot(db.dsn)
    world["before_first_sync"] = before
    result = api.sync(plan, target=db.app_dsn)
    assert result.status == "SUCCESS", result
    assert counts(result) == expected
    assert source_hash(world["src"]) == hashed  # the source is never modified
    # every touched record validated, read back as llmspell_app, counts of the whole component
    agents = result.validated["agent_state"]
    assert agents["matched"] == agents["written"] == 4
    assert agents["readback"]["mismatch_count"] == 0 and agents["readback"]["compared"] == 4
    assert all(c["source"] == c["target"] for c in agents["per_tenant"].values())
    # the target is the source as llmspell reads it: full comparison, read-back included
    report = api.verify(plan, target=db.dsn, full=True)
    assert report.passed, [str(m) for c in report.components for m in c.mismatches]
    world["after_first_sync"] = snapshot(db.dsn)
    world["first_sync"] = result


def test_second_sync_writes_nothing(world, capsys):
    from destinations.run_ledger import LOCK_KEY

    db = world["db"]
    argv = ["sync", "--plan", str(world["plan"]), "--target", db.app_dsn, "--json"]
    code = migrate.run(argv)
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["status"] == "NO_CHANGES" and doc["total_changes"] == 0
    assert snapshot(db.dsn) == world["after_first_sync"]
    with db.connect(autocommit=True) as holder:  # another run holds the target: exit 3
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        assert migrate.run(argv) == 3
    assert json.loads(capsys.readouterr().out)["error"]["error"] == "LockBusy"


def test_rollback_of_a_sync_restores_the_target_exactly(world):
    db, first_sync = world["db"], world["first_sync"]
    undo = api.rollback(backup=first_sync.backup_path, target=db.dsn)
    assert undo.status == "rolled_back"
    assert snapshot(db.dsn) == world["before_first_sync"]
    # the next sync finds the same changes again (the rolled-back run's prints stopped counting)
    again = api.sync(world["plan"], target=db.app_dsn)
    assert counts(again) == counts(first_sync)
    assert snapshot(db.dsn) == world["after_first_sync"]


def _lock_holders(conn: psycopg.Connection) -> int:
    from destinations.run_ledger import LOCK_KEY

    return conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s::bigint::oid",
        (LOCK_KEY,),
    ).fetchone()[0]


def test_sigkill_mid_sync_is_undone_by_the_next_sync(world):
    db, plan = world["db"], world["plan"]
    c = sqlite3.connect(world["src"])
    c.execute(
        "UPDATE kv_store SET value = X'0badc0de' WHERE rowid = (SELECT min(rowid) FROM kv_store)"
    )
    c.execute("DELETE FROM agent_states WHERE rowid = (SELECT max(rowid) FROM agent_states)")
    c.commit()
    c.close()
    before = snapshot(db.dsn)
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    with db.connect() as blocker:
        # The sync may read the prints, not add to them: it stops after applying and
        # validating, just before it records what it wrote and completes.
        blocker.execute("LOCK TABLE llmspell_migrate.record_prints IN SHARE MODE")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipelines.migrate",
                "sync",
                "--plan",
                str(plan),
                "--target",
                db.app_dsn,
            ],
            cwd=world["home"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        with db.connect(autocommit=True) as watch:
            while not watch.execute(
                "SELECT count(*) FROM pg_locks WHERE relation = "
                "'llmspell_migrate.record_prints'::regclass AND NOT granted"
            ).fetchone()[0]:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.05)
            proc.kill()  # SIGKILL while the sync's writes are committed, the run unfinished
            proc.wait()
            blocker.rollback()
            while _lock_holders(watch):  # the killed session's backend goes away
                time.sleep(0.05)
    with db.connect() as conn:
        (status,) = conn.execute(
            "SELECT status FROM llmspell_migrate.runs ORDER BY started_at DESC LIMIT 1"
        ).fetchone()
    assert status == "running" and snapshot(db.dsn) != before
    result = api.sync(plan, target=db.app_dsn)
    assert result.undone_run and result.status == "SUCCESS"
    assert counts(result)["kv_store"]["updated"] == 1
    assert counts(result)["agent_state"]["deleted"] == 1
    assert api.verify(plan, target=db.dsn, full=True).passed
    # the undone run restored exactly the pre-sync target; roll this one back to see it
    api.rollback(backup=result.backup_path, target=db.dsn)
    assert snapshot(db.dsn) == before
    api.sync(plan, target=db.app_dsn)


def test_a_change_on_both_sides_is_refused_with_the_target_untouched(world, capsys):
    db, plan = world["db"], world["plan"]
    c = sqlite3.connect(world["src"])
    tenant, aid = first(c, "SELECT tenant_id, agent_id FROM agent_states ORDER BY 1, 2")
    c.execute(
        'UPDATE agent_states SET state_data = \'{"side": "sqlite"}\' '
        "WHERE tenant_id = ? AND agent_id = ?",
        (tenant, aid),
    )
    c.execute("UPDATE kv_store SET value = X'aa' WHERE rowid = (SELECT max(rowid) FROM kv_store)")
    c.execute(  # a key llmspell also created on PostgreSQL meanwhile, with another value
        "INSERT INTO kv_store (tenant_id, key, value, created_at, updated_at) "
        "VALUES (?, 'config:both', X'01', 9, 9)",
        (tenant,),
    )
    c.commit()
    c.close()
    with db.connect() as conn:
        conn.execute(
            "INSERT INTO llmspell.kv_store (tenant_id, key, value) VALUES (%s, 'config:both', "
            "'\\x02')",
            (tenant,),
        )
    with db.connect() as conn:  # llmspell on PostgreSQL wrote the same agent meanwhile
        conn.execute(
            'UPDATE llmspell.agent_states SET state_data = \'{"side": "pg"}\' '
            "WHERE tenant_id = %s AND agent_id = %s",
            (tenant, aid.split(":")[-1]),
        )
    before = snapshot(db.dsn)
    code = migrate.run(["sync", "--plan", str(plan), "--target", db.app_dsn])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert f"agent_state tenant={tenant} key='agent:{aid}'" in err
    assert "changed in the source and changed in PostgreSQL" in err
    assert f"kv_store tenant={tenant} key='config:both': new in the source" in err
    assert "Nothing was written" in err and "--prefer-source" in err
    assert snapshot(db.dsn) == before
    with pytest.raises(MigrateError):  # the dry run names it too
        api.sync(plan, target=db.app_dsn, dry_run=True)


def test_prefer_source_resolves_both_sided_changes_and_rollback_restores_postgres(world):
    """After the refusal above, --prefer-source writes the source's copies; PostgreSQL's rows
    go to the pre-images, and rolling the sync back puts them back exactly."""
    db, plan = world["db"], world["plan"]
    before = snapshot(db.dsn)
    with pytest.raises(MigrateError):  # the conflicts of the test above still stand
        api.sync(plan, target=db.app_dsn, dry_run=True)
    done = api.sync(plan, target=db.app_dsn, prefer_source=True)
    assert done.status == "SUCCESS"
    with db.connect() as conn:
        assert (
            conn.execute(
                'SELECT state_data FROM llmspell.agent_states WHERE state_data = \'{"side": "pg"}\''
            ).fetchall()
            == []
        )
        assert (
            conn.execute(
                "SELECT value FROM llmspell.kv_store WHERE key = 'config:both'"
            ).fetchone()[0]
            == b"\x01"
        )
    assert api.verify(plan, target=db.dsn, full=True).passed
    assert api.sync(plan, target=db.app_dsn).status == "NO_CHANGES"
    undo = api.rollback(backup=done.backup_path, target=db.dsn)
    assert undo.status == "rolled_back"
    assert snapshot(db.dsn) == before


def test_rollback_of_a_sync_refuses_to_lose_later_postgres_writes(world, capsys):
    """After the switch llmspell writes to PostgreSQL: undoing the last sync must not throw
    those writes away unless told to (`--force`)."""
    db, plan = world["db"], world["plan"]
    c = sqlite3.connect(world["src"])
    tenant, key = first(c, "SELECT tenant_id, key FROM kv_store ORDER BY 1, 2")
    c.execute("UPDATE kv_store SET value = X'0b0b' WHERE tenant_id = ? AND key = ?", (tenant, key))
    gone_tenant, gone = first(c, "SELECT tenant_id, key FROM kv_store ORDER BY 1 DESC, 2 DESC")
    c.execute("DELETE FROM kv_store WHERE tenant_id = ? AND key = ?", (gone_tenant, gone))
    c.commit()
    c.close()
    before_sync = snapshot(db.dsn)
    # (the two-sided changes of the tests above still stand: the source's copies win here)
    done = api.sync(plan, target=db.app_dsn, prefer_source=True)
    assert done.status == "SUCCESS"
    with db.connect() as conn:  # llmspell, now on PostgreSQL, writes both keys again
        conn.execute(
            "UPDATE llmspell.kv_store SET value = '\\x0c' WHERE tenant_id = %s AND key = %s",
            (tenant, key),
        )
        conn.execute(
            "INSERT INTO llmspell.kv_store (tenant_id, key, value) VALUES (%s, %s, '\\x0d')",
            (gone_tenant, gone),
        )
    after_llmspell = snapshot(db.dsn)
    code = migrate.run(["rollback", "--backup", str(done.backup_path), "--target", db.app_dsn])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert "Rollback refused: 2 row(s) written by sync" in err
    assert f"kv_store tenant={tenant} key={key!r}: written by the sync, changed" in err
    assert f"kv_store tenant={gone_tenant} key={gone!r}: deleted by the sync, exists again" in err
    assert "--force" in err
    assert snapshot(db.dsn) == after_llmspell
    undo = api.rollback(backup=done.backup_path, target=db.app_dsn, force=True)
    assert undo.status == "rolled_back"
    assert snapshot(db.dsn) == before_sync
