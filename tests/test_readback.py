"""Read-back (llmspell's PostgreSQL `get` replayed as llmspell_app): PostgreSQL decides the
matching records, and every record it does not match is still compared the slow way, so a
changed value, a changed number form, a missing row and changed kv bytes are all named."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest

from core.model import registry
from pipelines import api
from sources.key_routing import LLMSPELL, classify_db
from sources.sqlite_reader import SourceDB
from validation.readback import readback

ALL = "agent_state,workflow_state,sessions,kv_store"


@pytest.fixture
def migrated(tmp_path, sample_sqlite, target_db):
    plan = tmp_path / "plan.toml"
    api.make_plan(ALL, output=plan, source=sample_sqlite, target=target_db.app_dsn)
    assert api.execute(plan).status == "SUCCESS"
    return sample_sqlite, target_db


def _readback(source, target_db, name: str):
    comp = registry.get(name)
    with SourceDB(source) as db, psycopg.connect(target_db.dsn) as conn:
        reach = classify_db(db, [comp], None, LLMSPELL)[comp.name]
        return readback(db, conn, comp, reach, 100, None)


def _first(source, query: str) -> tuple:
    con = sqlite3.connect(source)
    try:
        return con.execute(query).fetchone()
    finally:
        con.close()


def test_untouched_target_matches_every_record(migrated):
    source, target_db = migrated
    for name, count in (("agent_state", 120), ("sessions", 50), ("kv_store", 60)):
        result = _readback(source, target_db, name)
        assert result.role == "llmspell_app"
        assert (result.compared, result.matched, result.mismatch_count) == (count, count, 0)
        assert result.decoded == 0  # every record matched by its print, inside PostgreSQL


def test_changed_rows_are_named(migrated):
    source, target_db = migrated
    tenant, agent = _first(
        source, "SELECT tenant_id, agent_id FROM agent_states ORDER BY tenant_id, agent_id"
    )
    kv_tenant, kv_key = _first(source, "SELECT tenant_id, key FROM kv_store ORDER BY 1, 2")
    sess_tenant, sess_id = _first(
        source, "SELECT tenant_id, session_id FROM sessions ORDER BY 1, 2 LIMIT 1"
    )
    with target_db.connect() as conn:
        conn.execute(  # llmspell layout: agent_id is the third key part
            "UPDATE llmspell.agent_states SET state_data = state_data || '{\"x\": 1.0}' "
            "WHERE tenant_id = %s AND agent_id = %s",
            (tenant, agent.split(":", 1)[1]),
        )
        conn.execute(
            "UPDATE llmspell.kv_store SET value = value || '\\x00'::bytea "
            "WHERE tenant_id = %s AND key = %s",
            (kv_tenant, kv_key),
        )
        conn.execute(
            "DELETE FROM llmspell.sessions WHERE tenant_id = %s AND session_id = %s::uuid",
            (sess_tenant, sess_id),
        )

    agents = _readback(source, target_db, "agent_state")
    assert (agents.compared, agents.matched, agents.mismatch_count) == (120, 119, 1)
    assert f"key=agent:{agent}" in agents.mismatches[0]
    assert "$.x: not in the SQLite value" in agents.mismatches[0]

    kv = _readback(source, target_db, "kv_store")
    assert (kv.matched, kv.mismatch_count) == (59, 1)
    assert f"key={kv_key}" in kv.mismatches[0] and "bytes on PostgreSQL" in kv.mismatches[0]

    sessions = _readback(source, target_db, "sessions")
    assert (sessions.matched, sessions.mismatch_count) == (49, 1)
    assert "finds nothing" in sessions.mismatches[0]


def test_number_form_the_source_did_not_have_is_a_mismatch(migrated):
    """JSONB keeps 1.0 and 1 apart and so does llmspell (float vs integer): a stored value
    equal to the source's only as a number is still reported."""
    source, target_db = migrated
    tenant, wf = _first(source, "SELECT tenant_id, workflow_id FROM workflow_states ORDER BY 1, 2")
    with target_db.connect() as conn:
        conn.execute(
            "UPDATE llmspell.workflow_states SET state_data = jsonb_build_object('n', 1) "
            "WHERE tenant_id = %s AND workflow_id = %s",
            (tenant, wf),
        )
    _source_data_to(source, tenant, wf)
    result = _readback(source, target_db, "workflow_state")
    assert result.mismatch_count == 1
    assert "1.0 (float) on SQLite, 1 (int) on PostgreSQL" in result.mismatches[0]


def _source_data_to(source, tenant: str, wf: str) -> None:
    """The source value becomes {"n": 1.0} (a test-only copy of the source is changed)."""
    con = sqlite3.connect(source)
    try:
        con.execute(
            "UPDATE workflow_states SET state_data = '{\"n\": 1.0}' "
            "WHERE tenant_id = ? AND workflow_id = ?",
            (tenant, wf),
        )
        con.commit()
    finally:
        con.close()


def test_validation_shares_its_target_prints_with_read_back(tmp_path, migrated):
    """In the validation stage read-back takes the value's proof from the comparison's print
    of the very row `get` reads (PostgreSQL prints each row once) and only asks whether
    `get` finds it, as llmspell_app; a row changed since still fails both."""
    source, target_db = migrated
    plan = tmp_path / "plan.toml"
    report = api.verify(plan, full=True)
    for c in report.components:
        rb = c.readback
        assert rb.role == "llmspell_app" and rb.mismatch_count == 0, c.component
        assert rb.compared == rb.matched == rb.by_comparison == c.compared > 0, c.component
    tenant, agent = _first(
        source, "SELECT tenant_id, agent_id FROM agent_states ORDER BY tenant_id, agent_id"
    )
    with target_db.connect() as conn:
        conn.execute(
            "UPDATE llmspell.agent_states SET state_data = state_data || '{\"x\": 1.0}' "
            "WHERE tenant_id = %s AND agent_id = %s",
            (tenant, agent.split(":", 1)[1]),
        )
    report = api.verify(plan, full=True)
    agents = next(c for c in report.components if c.component == "agent_state")
    assert agents.mismatch_count == 1
    rb = agents.readback
    assert (rb.compared, rb.matched, rb.mismatch_count) == (120, 119, 1)
    assert rb.by_comparison == 119 and "$.x: not in the SQLite value" in rb.mismatches[0]
