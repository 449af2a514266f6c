"""Events and hook history: real SQLite files laid out as llmspell lays them out, migrated as
llmspell_app into a real PostgreSQL, read back with llmspell's PostgreSQL backend SQL."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import pytest

from pipelines import migrate
from sources.sample_db import SampleSpec
from tests.helpers import make_plan, sample_file

SPEC = SampleSpec(agents=4, workflows=2, sessions=6, kv=2, tenants=2, seed=5, events=60, hooks=25)
UTC = dt.UTC

# llmspell's PostgreSQL backend (event_log.rs, hook_history.rs), verbatim in substance.
EVENTS_BY_TIME = (
    "SELECT event_id, event_type, correlation_id, timestamp, sequence, language, payload "
    "FROM llmspell.event_log WHERE tenant_id = %s AND timestamp >= %s AND timestamp <= %s "
    "ORDER BY sequence ASC"
)
HOOK_BY_ID = (
    "SELECT execution_id, hook_id, hook_type, correlation_id, hook_context, result_data, "
    "timestamp, duration_ms, triggering_component, component_id, modified_operation, tags, "
    "retention_priority, context_size, contains_sensitive_data, metadata "
    "FROM llmspell.hook_history WHERE tenant_id = %s AND execution_id = %s"
)


@pytest.fixture
def src(tmp_path) -> Path:
    path = tmp_path / "llmspell.db"
    sample_file(path, SPEC)
    return path


def _as_tenant(conn, tenant):
    conn.execute("SELECT set_config('app.current_tenant_id', %s, false)", (tenant,))


def _rows(src: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(src) as conn:
        return conn.execute(sql).fetchall()


def test_events_land_in_their_months_and_read_back_by_time_range(tmp_path, src, target_db):
    plan = make_plan(tmp_path, src, target_db.app_dsn, "events")
    partitions = "SELECT count(*) FROM pg_inherits WHERE inhparent = 'llmspell.event_log'::regclass"
    with target_db.connect() as conn:
        (before,) = conn.execute(partitions).fetchone()
    dry = ["execute", "--plan", str(plan), "--target", target_db.app_dsn, "--dry-run"]
    assert migrate.run(dry) == 0
    with target_db.connect() as conn:  # a dry-run creates no partition
        assert conn.execute(partitions).fetchone() == (before,)
    assert migrate.run(["execute", "--plan", str(plan), "--target", target_db.app_dsn]) == 0
    source = _rows(
        src,
        "SELECT tenant_id, event_id, event_type, correlation_id, timestamp, sequence, language, "
        "payload FROM event_log",
    )
    months = {dt.datetime.fromtimestamp(r[4], UTC).strftime("%Y_%m") for r in source}
    assert len(months) >= 4  # several past months, none of them the schema's own
    with target_db.connect() as conn:
        placed = conn.execute(
            "SELECT tableoid::regclass::text, to_char(timestamp AT TIME ZONE 'UTC', 'YYYY_MM') "
            "FROM llmspell.event_log"
        ).fetchall()
    assert len(placed) == len(source)
    assert all(part == f"llmspell.event_log_{month}" for part, month in placed)
    with target_db.connect() as conn:  # months have no RLS of their own: the app may not read
        readable = conn.execute(  # one directly (every tenant's rows), only via the parent
            "SELECT c.oid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'llmspell.event_log'::regclass"
            " AND has_table_privilege('llmspell_app', c.oid, 'SELECT')"
        ).fetchall()
    assert readable == []
    # Through the partitioned parent, as llmspell reads a tenant's events in a time range.
    tenant = source[0][0]
    mine = sorted((r for r in source if r[0] == tenant), key=lambda r: r[4])
    lo, hi = mine[len(mine) // 4][4], mine[3 * len(mine) // 4][4]
    want = [r for r in mine if lo <= r[4] <= hi]
    with target_db.connect(app=True) as conn:
        _as_tenant(conn, tenant)
        got = conn.execute(
            EVENTS_BY_TIME,
            (tenant, dt.datetime.fromtimestamp(lo, UTC), dt.datetime.fromtimestamp(hi, UTC)),
        ).fetchall()
        _as_tenant(conn, "someone-else")
        assert conn.execute("SELECT count(*) FROM llmspell.event_log").fetchone()[0] == 0
    assert len(got) == len(want) > 0
    by_id = {r[1]: r for r in want}
    for event_id, etype, corr, ts, seq, lang, payload in got:
        row = by_id[str(event_id)]
        assert (etype, str(corr), int(ts.timestamp()), seq, lang) == (
            row[2],
            row[3],
            row[4],
            row[5],
            row[6],
        )
        assert payload == json.loads(row[7])
    assert [r[4] for r in got] == sorted(r[4] for r in got)  # ORDER BY sequence: per tenant


def test_hooks_keep_context_bytes_and_never_null_tags(tmp_path, src, target_db):
    plan = make_plan(tmp_path, src, target_db.app_dsn, "hooks")
    assert migrate.run(["execute", "--plan", str(plan), "--target", target_db.app_dsn]) == 0
    source = _rows(
        src,
        "SELECT tenant_id, execution_id, hook_context, tags, modified_operation, result_data, "
        "timestamp, context_size FROM hook_history",
    )
    assert any(r[3] is None for r in source)  # the sample holds NULL tags
    with target_db.connect(app=True) as conn:
        for tenant, exec_id, context, tags, modified, result, ts, size in source:
            _as_tenant(conn, tenant)
            row = conn.execute(HOOK_BY_ID, (tenant, exec_id)).fetchone()
            assert bytes(row[4]) == context  # lz4 bytes, byte for byte
            assert int.from_bytes(bytes(row[4])[:4], "little") == size
            assert row[11] == (json.loads(tags) if tags else [])
            assert row[10] is bool(modified)
            assert row[5] == json.loads(result)
            assert int(row[6].timestamp()) == ts
    with target_db.connect() as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM llmspell.hook_history WHERE tags IS NULL"
            ).fetchone()[0]
            == 0
        )


def test_execution_id_shared_by_two_tenants_is_refused_by_id(tmp_path, src, target_db, capsys):
    with sqlite3.connect(src) as conn:
        tenant, exec_id = conn.execute(
            "SELECT tenant_id, execution_id FROM hook_history LIMIT 1"
        ).fetchone()
        other = conn.execute(
            "SELECT tenant_id FROM hook_history WHERE tenant_id <> ? LIMIT 1", (tenant,)
        ).fetchone()[0]
        conn.execute(
            "UPDATE hook_history SET execution_id = ? WHERE rowid = (SELECT rowid FROM "
            "hook_history WHERE tenant_id = ? LIMIT 1)",
            (exec_id, other),
        )
    plan = make_plan(tmp_path, src, target_db.dsn, "hooks")
    capsys.readouterr()
    assert migrate.run(["execute", "--plan", str(plan), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"hooks execution_id {exec_id}" in err and "in the source" in err
    assert target_db.count("hook_history") == 0


def test_execution_id_held_by_another_tenant_in_target_is_refused(tmp_path, src, target_db, capsys):
    ((tenant, exec_id),) = _rows(src, "SELECT tenant_id, execution_id FROM hook_history LIMIT 1")
    with target_db.connect() as conn:
        conn.execute(
            "INSERT INTO llmspell.hook_history (execution_id, tenant_id, hook_id, hook_type, "
            "correlation_id, hook_context, result_data, timestamp, duration_ms, "
            "triggering_component, component_id, context_size) VALUES (%s, 'tenant-other', 'h', "
            "'t', gen_random_uuid(), '\\x00', '{}', now(), 1, 'a', 'c', 1)",
            (exec_id,),
        )
    plan = make_plan(tmp_path, src, target_db.dsn, "hooks")
    capsys.readouterr()
    assert migrate.run(["execute", "--plan", str(plan)]) == 2
    err = capsys.readouterr().err
    held = f"{exec_id}: tenant {tenant!r} in the source, already held by tenant 'tenant-other'"
    assert held in err
    assert target_db.count("hook_history") == 1


def test_events_and_hooks_roll_back_and_verify(tmp_path, src, target_db, capsys):
    plan = make_plan(tmp_path, src, target_db.dsn, "events,hooks")
    capsys.readouterr()
    assert migrate.run(["execute", "--plan", str(plan), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "SUCCESS"
    assert doc["written"] == {"events": SPEC.events, "hooks": SPEC.hooks}
    assert migrate.run(["verify", "--plan", str(plan), "--full"]) == 0
    # A changed byte in a hook's compressed context is a validation mismatch, by id.
    with target_db.connect() as conn:
        conn.execute(
            "UPDATE llmspell.hook_history SET hook_context = hook_context || '\\x00'::bytea "
            "WHERE execution_id = (SELECT execution_id FROM llmspell.hook_history LIMIT 1)"
        )
    capsys.readouterr()
    assert migrate.run(["verify", "--plan", str(plan), "--full"]) != 0
    assert "hook_context" in capsys.readouterr().out
    backup = ["rollback", "--backup", doc["backup_path"]]
    assert migrate.run(backup) == 2  # the changed hook row stops it...
    assert "hook_context" in capsys.readouterr().err
    assert migrate.run([*backup, "--force"]) == 0  # ...unless forced
    assert target_db.count("event_log") == 0 and target_db.count("hook_history") == 0


def test_unstorable_events_and_hooks_are_listed_by_key(tmp_path, src, target_db, capsys):
    with sqlite3.connect(src) as conn:
        (event_id,) = conn.execute("SELECT event_id FROM event_log LIMIT 1").fetchone()
        conn.execute("UPDATE event_log SET correlation_id = 'nope' WHERE event_id = ?", (event_id,))
        (exec_id,) = conn.execute("SELECT execution_id FROM hook_history LIMIT 1").fetchone()
        conn.execute(
            "UPDATE hook_history SET tags = '{\"a\": 1}', modified_operation = 2 "
            "WHERE execution_id = ?",
            (exec_id,),
        )
    plan = make_plan(tmp_path, src, target_db.dsn, "events,hooks")
    capsys.readouterr()
    assert migrate.run(["execute", "--plan", str(plan), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"'event:{event_id}': correlation_id is 'nope', not a UUID" in err
    assert f"'hook:{exec_id}': tags is not a JSON array of strings" in err
    assert f"'hook:{exec_id}': modified_operation is 2, not 0 or 1" in err
