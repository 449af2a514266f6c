"""Execute end to end against a real PostgreSQL: fidelity of every column, both roles."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import pytest

from core.model import registry
from pipelines import api
from pipelines.shared.plan import load
from tests.helpers import make_plan


def _source_rows(path, query):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("as_app", [False, True], ids=["superuser", "llmspell_app"])
def test_round_trip_every_column(tmp_path, sample_sqlite, target_db, as_app):
    dsn = target_db.app_dsn if as_app else target_db.dsn
    plan = make_plan(tmp_path, sample_sqlite, dsn)
    result = api.execute(plan)
    assert result.status == "SUCCESS"
    assert result.validation.passed
    for c in result.validation.components:  # llmspell's get() replayed for the same sample
        assert c.readback.role == "llmspell_app" and c.readback.mismatch_count == 0
        assert c.readback.compared == c.readback.matched == c.compared > 0
        assert c.readback.decoded == 0  # matched by prints inside PostgreSQL
    with target_db.connect() as conn:
        # The llmspell key layout: SQLite's `agent:<type>:<id>` row (agent_id `<type>:<id>`)
        # lands where llmspell's PostgreSQL backend looks it up; every other column as is.
        src = _source_rows(
            sample_sqlite,
            "SELECT state_id, tenant_id, substr(agent_id, instr(agent_id, ':') + 1) AS id, "
            "substr(agent_id, 1, instr(agent_id, ':') - 1), state_data, "
            "schema_version, data_version, checksum, created_at, updated_at "
            "FROM agent_states ORDER BY tenant_id, id",
        )
        tgt = conn.execute(
            "SELECT replace(state_id::text, '-', ''), tenant_id, agent_id, agent_type, "
            "state_data, schema_version, data_version, checksum, "
            "extract(epoch FROM created_at)::bigint, extract(epoch FROM updated_at)::bigint "
            "FROM llmspell.agent_states ORDER BY tenant_id, agent_id"
        ).fetchall()
        assert len(src) == len(tgt) == 120
        for s, t in zip(src, tgt):
            assert s[:4] == t[:4]
            assert json.loads(s[4]) == t[4]
            assert s[5:] == t[5:]

        src = _source_rows(
            sample_sqlite,
            "SELECT tenant_id, workflow_id, workflow_name, state_data, current_step, "
            "status, started_at, completed_at, last_updated, created_at "
            "FROM workflow_states ORDER BY tenant_id, workflow_id",
        )
        tgt = conn.execute(
            "SELECT tenant_id, workflow_id, workflow_name, state_data, current_step, status, "
            "extract(epoch FROM started_at)::bigint, extract(epoch FROM completed_at)::bigint, "
            "extract(epoch FROM last_updated)::bigint, extract(epoch FROM created_at)::bigint "
            "FROM llmspell.workflow_states ORDER BY tenant_id, workflow_id"
        ).fetchall()
        assert len(src) == len(tgt) == 40
        assert any(s[6] is None for s in src)  # NULL timestamps exist and must stay NULL
        for s, t in zip(src, tgt):
            assert s[:3] == t[:3] and json.loads(s[3]) == t[3] and s[4:] == t[4:]

        src = _source_rows(
            sample_sqlite,
            "SELECT tenant_id, session_id, session_data, status, created_at, "
            "last_accessed_at, expires_at, artifact_count, updated_at "
            "FROM sessions ORDER BY tenant_id, session_id",
        )
        tgt = conn.execute(
            "SELECT tenant_id, session_id::text, session_data, status, "
            "extract(epoch FROM created_at)::bigint, extract(epoch FROM last_accessed_at)::bigint,"
            " extract(epoch FROM expires_at)::bigint, artifact_count, "
            "extract(epoch FROM updated_at)::bigint "
            "FROM llmspell.sessions ORDER BY tenant_id, session_id"
        ).fetchall()
        assert len(src) == len(tgt) == 50
        for s, t in zip(src, tgt):
            assert s[:2] == t[:2] and json.loads(s[2]) == t[2] and s[3:] == t[3:]

        src = _source_rows(
            sample_sqlite,
            "SELECT kv_id, tenant_id, key, value, metadata, created_at, updated_at "
            "FROM kv_store ORDER BY tenant_id, key",
        )
        tgt = conn.execute(
            "SELECT replace(kv_id::text, '-', ''), tenant_id, key, value, metadata, "
            "extract(epoch FROM created_at)::bigint, extract(epoch FROM updated_at)::bigint "
            "FROM llmspell.kv_store ORDER BY tenant_id, key"
        ).fetchall()
        assert len(src) == len(tgt) == 60
        for s, t in zip(src, tgt):
            assert s[:3] == t[:3]
            assert bytes(s[3]) == bytes(t[3])  # byte-identical BLOB -> BYTEA
            assert (None if s[4] is None else json.loads(s[4])) == t[4]
            assert s[5:] == t[5:]
        # no dlt bookkeeping in the llmspell schema
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'llmspell'"
            )
        }
        # every component's table, artifacts' content table, and the event log's month
        # partitions (event_log_YYYY_MM)
        assert {t for t in tables if not t.startswith("event_log_")} == {
            c.pg_table for c in registry.COMPONENTS.values()
        } | {"artifact_content"}


def test_llmspell_reader_finds_records_under_rls(tmp_path, sample_sqlite, target_db):
    """What an llmspell PostgresBackend does: set the tenant, select by natural key."""
    api.execute(make_plan(tmp_path, sample_sqlite, target_db.app_dsn))
    tenant, agent_id, state = _source_rows(
        sample_sqlite, "SELECT tenant_id, agent_id, state_data FROM agent_states LIMIT 1"
    )[0]
    tenant2, session_id = _source_rows(
        sample_sqlite, "SELECT tenant_id, session_id FROM sessions LIMIT 1"
    )[0]
    with target_db.connect(app=True) as conn:
        conn.execute("SELECT set_config('app.current_tenant_id', %s, false)", (tenant,))
        # SQLite key agent:<agent_id>; PostgreSQL's get reads its third part as agent_id
        row = conn.execute(
            "SELECT state_data FROM llmspell.agent_states WHERE tenant_id = %s AND agent_id = %s",
            (tenant, f"agent:{agent_id}".split(":")[2]),
        ).fetchone()
        assert row[0] == json.loads(state)
        others = conn.execute(
            "SELECT count(*) FROM llmspell.agent_states WHERE tenant_id <> %s", (tenant,)
        ).fetchone()[0]
        assert others == 0  # RLS: a tenant sees only its own rows
        conn.execute("SELECT set_config('app.current_tenant_id', %s, false)", (tenant2,))
        assert conn.execute(
            "SELECT 1 FROM llmspell.sessions WHERE tenant_id = %s AND session_id = %s",
            (tenant2, session_id),
        ).fetchone()


def test_dry_run_writes_nothing(tmp_path, sample_sqlite, target_db):
    plan = make_plan(tmp_path, sample_sqlite, target_db.dsn)
    before = target_db.snapshot()
    result = api.dry_run(plan)
    assert result.status == "DRY_RUN"
    assert [c.source_count for c in result.preflight.components] == [120, 40, 50, 60]
    assert target_db.snapshot() == before
    assert not (tmp_path / "backups").exists()
    assert not (tmp_path / ".llmspell-migrate" / "dlt").exists()


def test_rerun_reports_already_migrated_and_changes_nothing(tmp_path, sample_sqlite, target_db):
    plan = make_plan(tmp_path, sample_sqlite, target_db.dsn)
    api.execute(plan)
    before = target_db.snapshot()
    again = api.execute(plan)
    assert again.status == "SUCCESS"
    assert sum(again.written.values()) == 0
    assert again.already_present == {
        "agent_state": 120,
        "workflow_state": 40,
        "sessions": 50,
        "kv_store": 60,
    }
    assert target_db.snapshot() == before


def test_tenant_filter_migrates_only_chosen_tenants(tmp_path, sample_sqlite, target_db):
    tenants = sorted(
        {r[0] for r in _source_rows(sample_sqlite, "SELECT tenant_id FROM agent_states")}
    )
    plan = make_plan(tmp_path, sample_sqlite, target_db.dsn, tenants=[tenants[0]])
    assert load(plan).tenants == [tenants[0]]
    result = api.execute(plan)
    assert result.status == "SUCCESS"
    with target_db.connect() as conn:
        found = {r[0] for r in conn.execute("SELECT DISTINCT tenant_id FROM llmspell.agent_states")}
    assert found == {tenants[0]}


def test_backup_holds_every_record(tmp_path, sample_sqlite, target_db):
    result = api.execute(make_plan(tmp_path, sample_sqlite, target_db.dsn))
    folder = Path(result.backup_path)
    lines = (folder / "source" / "kv_store.jsonl").read_text().splitlines()
    assert len(lines) == 60
    rec = json.loads(lines[0])
    blob = base64.b64decode(rec["row"]["value"]["base64"])
    conn = sqlite3.connect(sample_sqlite)
    value = conn.execute(
        "SELECT value FROM kv_store WHERE tenant_id = ? AND key = ?", (rec["tenant_id"], rec["key"])
    ).fetchone()[0]
    conn.close()
    assert bytes(value) == blob
    assert (folder / "plan.toml").exists() and (folder / "rollback-metadata.toml").exists()
