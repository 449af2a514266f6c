"""init-target: the llmspell schema exactly as llmspell-schema.md describes it, created
idempotently, never altering what exists, with forced row-level security that really isolates
tenants for the llmspell_app role."""

from __future__ import annotations

import json
import re

import psycopg
import pytest

from core.errors import TargetError
from destinations import target_schema
from pipelines import api, migrate

TABLES = ("agent_states", "workflow_states", "sessions", "kv_store")
# Phase 3 tables (tests/test_phase3_stores.py checks them); created in this order.
ALL_TABLES = (*TABLES, "event_log", "hook_history", "artifact_content", "artifacts")

# (column, udt, varchar length, nullable) in table order, written from llmspell-schema.md.
EXPECTED_COLUMNS = {
    "agent_states": [
        ("state_id", "uuid", None, False),
        ("tenant_id", "varchar", 255, False),
        ("agent_id", "varchar", 255, False),
        ("agent_type", "varchar", 100, False),
        ("state_data", "jsonb", None, False),
        ("schema_version", "int4", None, False),
        ("data_version", "int4", None, False),
        ("checksum", "varchar", 64, False),
        ("created_at", "timestamptz", None, False),
        ("updated_at", "timestamptz", None, False),
    ],
    "workflow_states": [
        ("tenant_id", "varchar", 255, False),
        ("workflow_id", "varchar", 255, False),
        ("workflow_name", "varchar", 500, True),
        ("state_data", "jsonb", None, False),
        ("current_step", "int4", None, False),
        ("status", "varchar", 20, False),
        ("started_at", "timestamptz", None, True),
        ("completed_at", "timestamptz", None, True),
        ("last_updated", "timestamptz", None, False),
        ("created_at", "timestamptz", None, False),
    ],
    "sessions": [
        ("tenant_id", "varchar", 255, False),
        ("session_id", "uuid", None, False),
        ("session_data", "jsonb", None, False),
        ("status", "varchar", 20, False),
        ("created_at", "timestamptz", None, False),
        ("last_accessed_at", "timestamptz", None, False),
        ("expires_at", "timestamptz", None, True),
        ("artifact_count", "int4", None, False),
        ("updated_at", "timestamptz", None, False),
    ],
    "kv_store": [
        ("kv_id", "uuid", None, False),
        ("tenant_id", "varchar", 255, False),
        ("key", "varchar", 500, False),
        ("value", "bytea", None, False),
        ("metadata", "jsonb", None, True),
        ("created_at", "timestamptz", None, False),
        ("updated_at", "timestamptz", None, False),
    ],
}

# (constraint type, columns): p = primary key, u = unique
EXPECTED_KEYS = {
    "agent_states": {("p", ("state_id",)), ("u", ("tenant_id", "agent_id"))},
    "workflow_states": {("p", ("tenant_id", "workflow_id"))},
    "sessions": {("p", ("tenant_id", "session_id"))},
    "kv_store": {("p", ("kv_id",)), ("u", ("tenant_id", "key"))},
}


def columns(conn, table):
    return [
        (r[0], r[1], r[2], r[3] == "YES")
        for r in conn.execute(
            "SELECT column_name, udt_name, character_maximum_length, is_nullable "
            "FROM information_schema.columns WHERE table_schema = 'llmspell' AND table_name = %s "
            "ORDER BY ordinal_position",
            (table,),
        )
    ]


def index_defs(conn, table) -> list[str]:
    rows = conn.execute(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'llmspell' AND tablename = %s",
        (table,),
    ).fetchall()
    return [re.sub(r"[\s()]", "", r[0]) for r in rows]


def catalog(conn, acl: bool = True) -> dict:
    """Everything init-target may create, for before/after comparisons. `acl=False` leaves out
    the table grants (init-target grants llmspell_app its privileges on every table)."""
    out = {}
    for table in TABLES:
        reg = conn.execute("SELECT to_regclass(%s)", (f"llmspell.{table}",)).fetchone()[0]
        if reg is None:
            out[table] = None
            continue
        out[table] = {
            "columns": columns(conn, table),
            "indexes": sorted(
                conn.execute(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'llmspell' "
                    "AND tablename = %s",
                    (table,),
                ).fetchall()
            ),
            "constraints": sorted(
                conn.execute(
                    "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                    "WHERE conrelid = %s::regclass",
                    (f"llmspell.{table}",),
                ).fetchall()
            ),
            "triggers": sorted(
                conn.execute(
                    "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger "
                    "WHERE tgrelid = %s::regclass AND NOT tgisinternal",
                    (f"llmspell.{table}",),
                ).fetchall()
            ),
            "policies": sorted(
                conn.execute(
                    "SELECT policyname, cmd, qual, with_check FROM pg_policies "
                    "WHERE schemaname = 'llmspell' AND tablename = %s",
                    (table,),
                ).fetchall()
            ),
            "rls": conn.execute(
                "SELECT relrowsecurity, relforcerowsecurity, "
                "CASE WHEN %s THEN relacl::text END FROM pg_class WHERE oid = %s::regclass",
                (acl, f"llmspell.{table}"),
            ).fetchone(),
        }
    out["functions"] = sorted(
        r[0]
        for r in conn.execute(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'llmspell'"
        )
    )
    return out


@pytest.fixture
def initialised(empty_db):
    report = api.init_target(empty_db.dsn)
    return empty_db, report


def test_creates_the_four_tables_with_the_documented_columns(initialised):
    db, report = initialised
    assert report.created[: len(TABLES)] == [f"llmspell.{t}" for t in TABLES]
    assert report.existing == [] and report.warnings == []
    with db.connect() as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'llmspell'"
                " AND table_name NOT LIKE 'event\\_log\\_%'"  # the event log's partitions
            )
        }
        assert tables >= set(ALL_TABLES)  # and the memory stores' (tests/test_memory_stores.py)
        for table in TABLES:
            assert columns(conn, table) == EXPECTED_COLUMNS[table], table
            keys = {
                (r[0], tuple(r[1]))
                for r in conn.execute(
                    "SELECT c.contype::text, array_agg(a.attname::text ORDER BY k.ord) "
                    "FROM pg_constraint c, unnest(c.conkey) WITH ORDINALITY k(attnum, ord) "
                    "JOIN pg_attribute a ON a.attnum = k.attnum "
                    "WHERE c.conrelid = %s::regclass AND a.attrelid = c.conrelid "
                    "AND c.contype IN ('p', 'u') GROUP BY c.oid, c.contype",
                    (f"llmspell.{table}",),
                )
            }
            assert keys == EXPECTED_KEYS[table], table


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO llmspell.agent_states (tenant_id, agent_id, agent_type, state_data, "
        "checksum, schema_version) VALUES ('t', 'a', 'x', '{}', 'c', 0)",
        "INSERT INTO llmspell.agent_states (tenant_id, agent_id, agent_type, state_data, "
        "checksum, data_version) VALUES ('t', 'a', 'x', '{}', 'c', 0)",
        "INSERT INTO llmspell.workflow_states (tenant_id, workflow_id, state_data, status) "
        "VALUES ('t', 'w', '{}', 'sleeping')",
        "INSERT INTO llmspell.workflow_states (tenant_id, workflow_id, state_data, "
        "current_step) VALUES ('t', 'w', '{}', -1)",
        "INSERT INTO llmspell.sessions (tenant_id, session_id, session_data, status) "
        "VALUES ('t', gen_random_uuid(), '{}', 'open')",
        "INSERT INTO llmspell.sessions (tenant_id, session_id, session_data, artifact_count) "
        "VALUES ('t', gen_random_uuid(), '{}', -1)",
    ],
    ids=[
        "schema_version>0",
        "data_version>0",
        "workflow-status",
        "current_step>=0",
        "session-status",
        "artifact_count>=0",
    ],
)
def test_check_constraints(initialised, statement):
    db, _ = initialised
    with db.connect() as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(statement)


def test_indexes_including_gin_and_expression_indexes(initialised):
    db, _ = initialised
    with db.connect() as conn:
        agent = index_defs(conn, "agent_states")
        workflow = index_defs(conn, "workflow_states")
        sessions = index_defs(conn, "sessions")
        kv = index_defs(conn, "kv_store")

    def has(defs, fragment):
        return any(d.endswith(fragment) or fragment in d for d in defs)

    assert has(agent, "USINGbtreetenant_id")
    assert has(agent, "USINGbtreeagent_type")
    assert has(agent, "USINGbtreeupdated_atDESC")
    assert has(agent, "USINGginstate_data")
    assert has(agent, "state_data->'state'::text->>'execution_state'::text")
    assert has(agent, "state_data->'metadata'::text->>'name'::text")
    assert has(workflow, "USINGginstate_data")
    assert has(sessions, "USINGginsession_data")
    for defs in (agent, workflow, sessions, kv):
        assert has(defs, "USINGbtreetenant_id")
    # the unique keys have their indexes
    assert any("UNIQUEINDEX" in d and d.endswith("tenant_id,agent_id") for d in agent)
    assert any("UNIQUEINDEX" in d and d.endswith("tenant_id,key") for d in kv)


def test_before_update_triggers_exist(initialised):
    db, _ = initialised
    with db.connect() as conn:
        for table in TABLES:
            rows = conn.execute(
                "SELECT tgtype FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
                (f"llmspell.{table}",),
            ).fetchall()
            # ROW (1) + BEFORE (2) + UPDATE (16)
            assert any(t & 1 and t & 2 and t & 16 for (t,) in rows), table


def test_triggers_rewrite_on_update_and_insert_keeps_values(initialised):
    db, _ = initialised
    old = "2020-01-01T00:00:00Z"
    with db.connect(autocommit=True) as conn:
        conn.execute(
            "INSERT INTO llmspell.agent_states (tenant_id, agent_id, agent_type, state_data, "
            "checksum, data_version, created_at, updated_at) "
            "VALUES ('t', 'a', 'llm', '{\"n\": 1}', 'c', 7, %s, %s)",
            (old, old),
        )
        row = conn.execute(
            "SELECT data_version, updated_at = %s::timestamptz FROM llmspell.agent_states",
            (old,),
        ).fetchone()
        assert row == (7, True)  # an INSERT keeps what it is given
        conn.execute("UPDATE llmspell.agent_states SET checksum = 'd'")
        row = conn.execute(
            "SELECT data_version, updated_at > now() - interval '1 minute' "
            "FROM llmspell.agent_states"
        ).fetchone()
        assert row == (7, True)  # same state: version kept, updated_at moved
        conn.execute("UPDATE llmspell.agent_states SET state_data = '{\"n\": 2}'")
        assert conn.execute("SELECT data_version FROM llmspell.agent_states").fetchone() == (8,)

        conn.execute(
            "INSERT INTO llmspell.workflow_states (tenant_id, workflow_id, state_data, status, "
            "last_updated) VALUES ('t', 'w', '{}', 'pending', %s)",
            (old,),
        )
        conn.execute("UPDATE llmspell.workflow_states SET status = 'running'")
        started, done, fresh = conn.execute(
            "SELECT started_at IS NOT NULL, completed_at IS NOT NULL, "
            "last_updated > now() - interval '1 minute' FROM llmspell.workflow_states"
        ).fetchone()
        assert (started, done, fresh) == (True, False, True)
        conn.execute("UPDATE llmspell.workflow_states SET status = 'completed'")
        assert conn.execute(
            "SELECT completed_at IS NOT NULL FROM llmspell.workflow_states"
        ).fetchone() == (True,)

        conn.execute(
            "INSERT INTO llmspell.sessions (tenant_id, session_id, session_data, "
            "last_accessed_at, updated_at) VALUES ('t', gen_random_uuid(), '{}', %s, %s)",
            (old, old),
        )
        conn.execute("UPDATE llmspell.sessions SET artifact_count = 1")
        assert conn.execute(
            "SELECT updated_at > %s::timestamptz, last_accessed_at > %s::timestamptz "
            "FROM llmspell.sessions",
            (old, old),
        ).fetchone() == (True, True)

        conn.execute(
            "INSERT INTO llmspell.kv_store (tenant_id, key, value, updated_at) "
            "VALUES ('t', 'k', '\\x00ff', %s)",
            (old,),
        )
        conn.execute("UPDATE llmspell.kv_store SET value = '\\x01'")
        assert conn.execute(
            "SELECT updated_at > %s::timestamptz FROM llmspell.kv_store", (old,)
        ).fetchone() == (True,)


def test_rls_enabled_forced_with_four_policies(initialised):
    db, _ = initialised
    with db.connect() as conn:
        for table in TABLES:
            assert conn.execute(
                "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = %s::regclass",
                (f"llmspell.{table}",),
            ).fetchone() == (True, True), table
            policies = conn.execute(
                "SELECT cmd, coalesce(qual, ''), coalesce(with_check, '') FROM pg_policies "
                "WHERE schemaname = 'llmspell' AND tablename = %s",
                (table,),
            ).fetchall()
            assert sorted(p[0] for p in policies) == ["DELETE", "INSERT", "SELECT", "UPDATE"]
            for cmd, qual, check in policies:
                text = qual if cmd != "INSERT" else check
                assert "tenant_id" in text and "current_setting('app.current_tenant_id'" in text
                assert "true)" in text  # missing_ok: no tenant set means no rows, not an error
            update = next(p for p in policies if p[0] == "UPDATE")
            assert "current_setting" in update[2]  # cannot move a row to another tenant


def test_app_role_without_password_and_its_grants(initialised):
    db, _ = initialised
    with db.connect() as conn:
        role = conn.execute(
            "SELECT rolcanlogin, rolsuper, rolbypassrls, rolpassword IS NULL "
            "FROM pg_authid WHERE rolname = 'llmspell_app'"
        ).fetchone()
        assert role == (True, False, False, True)
        for schema in ("llmspell", "llmspell_migrate"):
            assert conn.execute(
                "SELECT has_schema_privilege('llmspell_app', %s, 'USAGE'), "
                "has_schema_privilege('llmspell_app', %s, 'CREATE')",
                (schema, schema),
            ).fetchone() == (True, False)
        bookkeeping = [
            f"llmspell_migrate.{name}"
            for (name,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'llmspell_migrate'"
            )
        ]
        assert "llmspell_migrate.runs" in bookkeeping
        for table in [f"llmspell.{t}" for t in TABLES] + bookkeeping:
            for priv in ("SELECT", "INSERT", "UPDATE", "DELETE"):
                assert conn.execute(
                    "SELECT has_table_privilege('llmspell_app', %s, %s)", (table, priv)
                ).fetchone()[0], (table, priv)
            for priv in ("TRUNCATE", "TRIGGER", "REFERENCES"):
                assert not conn.execute(
                    "SELECT has_table_privilege('llmspell_app', %s, %s)", (table, priv)
                ).fetchone()[0], (table, priv)


def test_idempotent(initialised):
    db, first = initialised
    with db.connect() as conn:
        before = catalog(conn)
    second = api.init_target(db.dsn)
    assert second.created == []
    assert second.existing == first.created  # every table, the memory stores' included
    assert second.warnings == [] and second.role_created is False
    with db.connect() as conn:
        assert catalog(conn) == before


def test_cli_init_target_twice(empty_db, capsys):
    assert migrate.run(["init-target", "--target", empty_db.dsn]) == 0
    out = capsys.readouterr().out
    for t in TABLES:
        assert f"Created llmspell.{t}" in out
    assert "Target schema ready." in out
    assert migrate.run(["init-target", "--target", empty_db.dsn, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["created"] == []
    assert doc["existing"][: len(TABLES)] == [f"llmspell.{t}" for t in TABLES]
    assert doc["warnings"] == [] and doc["role_created"] is False


def test_existing_table_is_never_altered(empty_db):
    with empty_db.connect(autocommit=True) as conn:
        conn.execute("CREATE SCHEMA llmspell")
        conn.execute(
            "CREATE TABLE llmspell.kv_store (kv_id UUID PRIMARY KEY, tenant_id VARCHAR(255) "
            "NOT NULL, key VARCHAR(500) NOT NULL, value BYTEA NOT NULL, metadata JSONB, "
            "created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL, "
            "owner_note TEXT, UNIQUE (tenant_id, key))"
        )
        conn.execute(
            "INSERT INTO llmspell.kv_store VALUES (gen_random_uuid(), 't', 'k', '\\x00', NULL, "
            "now(), now(), 'keep me')"
        )
        before = catalog(conn, acl=False)["kv_store"]
    report = api.init_target(empty_db.dsn)
    assert "llmspell.kv_store" in report.existing
    assert report.created[:3] == [f"llmspell.{t}" for t in TABLES if t != "kv_store"]
    assert "llmspell.kv_store" not in report.created
    assert any("llmspell.kv_store" in w for w in report.warnings)
    with empty_db.connect() as conn:
        after = catalog(conn, acl=False)
        assert after["kv_store"] == before  # no column, index, trigger, policy or RLS added
        assert conn.execute("SELECT owner_note FROM llmspell.kv_store").fetchone() == ("keep me",)
        # the tables it did create are complete
        assert after["agent_states"]["rls"][:2] == (True, True)
        assert len(after["agent_states"]["policies"]) == 4


def test_existing_table_of_another_shape_is_reported_not_a_crash(empty_db, capsys):
    with empty_db.connect(autocommit=True) as conn:
        conn.execute("CREATE SCHEMA llmspell")
        conn.execute("CREATE TABLE llmspell.kv_store (id SERIAL PRIMARY KEY, k TEXT, v BYTEA)")
        before = catalog(conn, acl=False)["kv_store"]
    rc = migrate.run(["init-target", "--target", empty_db.dsn])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    assert rc == 0
    assert "WARNING: llmspell.kv_store" in out.out
    assert "tenant_id" in out.out  # the warning says what does not match
    with empty_db.connect() as conn:
        assert catalog(conn, acl=False)["kv_store"] == before


def test_init_target_as_app_role_is_refused_cleanly(target_db, empty_db, capsys):
    # target_db guarantees the llmspell_app role exists in the cluster
    with pytest.raises(TargetError, match="Cannot create the llmspell schema"):
        api.init_target(empty_db.app_dsn)
    assert migrate.run(["init-target", "--target", empty_db.app_dsn]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "schema owner or a superuser" in err
    with empty_db.connect() as conn:
        assert conn.execute("SELECT to_regnamespace('llmspell')").fetchone()[0] is None


def test_ensure_schema_on_a_connection(empty_db):
    with psycopg.connect(empty_db.dsn, autocommit=True) as conn:
        report = target_schema.ensure_schema(conn)
        target_schema.check_schema(conn, [])  # bookkeeping tables exist
    assert len(report.created) == 4 + 7 + 4  # Phase 1's four, memory's seven, Phase 3's four


# -- row-level security in practice -----------------------------------------------------------
def _seed_two_tenants(db):
    with db.connect(autocommit=True) as conn:  # superuser: bypasses RLS
        for tenant, n in (("tenant-a", 3), ("tenant-b", 2)):
            for i in range(n):
                conn.execute(
                    "INSERT INTO llmspell.agent_states (tenant_id, agent_id, agent_type, "
                    "state_data, checksum) VALUES (%s, %s, 'llm', '{}', 'c')",
                    (tenant, f"agent-{i}"),
                )
                conn.execute(
                    "INSERT INTO llmspell.kv_store (tenant_id, key, value) VALUES (%s, %s, %s)",
                    (tenant, f"k{i}", b"\x00"),
                )


def test_rls_tenant_sees_only_its_rows(target_db):
    _seed_two_tenants(target_db)
    with target_db.connect(app=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("llmspell_app",)
        # no tenant set: nothing visible, no error
        assert conn.execute("SELECT count(*) FROM llmspell.agent_states").fetchone() == (0,)
        conn.execute("SELECT set_config('app.current_tenant_id', 'tenant-a', false)")
        for table in ("agent_states", "kv_store"):
            rows = conn.execute(
                f"SELECT DISTINCT tenant_id, count(*) OVER () FROM llmspell.{table}"
            )
            assert rows.fetchall() == [("tenant-a", 3)]
        assert conn.execute(
            "SELECT count(*) FROM llmspell.agent_states WHERE tenant_id = 'tenant-b'"
        ).fetchone() == (0,)
        # deleting another tenant's rows touches nothing
        assert (
            conn.execute("DELETE FROM llmspell.agent_states WHERE tenant_id = 'tenant-b'").rowcount
            == 0
        )
        conn.commit()
    assert target_db.count("agent_states") == 5


def test_rls_refuses_writing_another_tenants_row(target_db):
    _seed_two_tenants(target_db)
    with target_db.connect(app=True) as conn:
        conn.execute("SELECT set_config('app.current_tenant_id', 'tenant-a', false)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "INSERT INTO llmspell.agent_states (tenant_id, agent_id, agent_type, state_data, "
                "checksum) VALUES ('tenant-b', 'intruder', 'llm', '{}', 'c')"
            )
        conn.rollback()
        conn.execute("SELECT set_config('app.current_tenant_id', 'tenant-a', false)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute("UPDATE llmspell.kv_store SET tenant_id = 'tenant-b' WHERE key = 'k0'")
        conn.rollback()
        conn.execute("SELECT set_config('app.current_tenant_id', 'tenant-a', false)")
        # its own tenant's row goes in
        conn.execute(
            "INSERT INTO llmspell.agent_states (tenant_id, agent_id, agent_type, state_data, "
            "checksum) VALUES ('tenant-a', 'new', 'llm', '{}', 'c')"
        )
        conn.commit()
    with target_db.connect() as conn:
        counts = dict(
            conn.execute(
                "SELECT tenant_id, count(*) FROM llmspell.agent_states GROUP BY 1"
            ).fetchall()
        )
    assert counts == {"tenant-a": 4, "tenant-b": 2}
