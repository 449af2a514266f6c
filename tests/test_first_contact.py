"""First contact with a PostgreSQL that llmspell set up itself (its schema, no bookkeeping of
ours), and the bookkeeping under row-level security."""

from __future__ import annotations

import psycopg
import pytest

from destinations import target_schema
from pipelines import api, migrate
from tests.helpers import make_plan, with_params

OWNER = "llmspell_owner_test"


@pytest.fixture
def llmspell_made(empty_db):
    """The target as llmspell's own migrations leave it: the llmspell schema (tables, RLS,
    the runtime role) created by the database owner, a non-superuser; no llmspell_migrate."""
    with empty_db.connect(autocommit=True) as conn:
        conn.execute(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{OWNER}') "
            f"THEN CREATE ROLE {OWNER} LOGIN; END IF; "
            "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'llmspell_app') "
            "THEN CREATE ROLE llmspell_app LOGIN; END IF; END $$"
        )
        conn.execute(f'ALTER DATABASE "{empty_db.name}" OWNER TO {OWNER}')
    owner_dsn = with_params(empty_db.dsn, options=f"-c role={OWNER}")
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        target_schema.ensure_schema(conn, bookkeeping=False)
    with empty_db.connect() as conn:
        assert target_schema.missing_bookkeeping(conn)[0] == "schema llmspell_migrate"
    empty_db.owner_dsn = owner_dsn
    return empty_db


def bookkeeping_exists(db) -> bool:
    with db.connect() as conn:
        return conn.execute("SELECT to_regclass('llmspell_migrate.runs')").fetchone()[0] is not None


@pytest.mark.parametrize("who", ["superuser", "owner"])
def test_dry_run_and_execute_on_a_schema_llmspell_created(
    tmp_path, sample_sqlite, llmspell_made, capsys, who
):
    dsn = llmspell_made.dsn if who == "superuser" else llmspell_made.owner_dsn
    plan = make_plan(tmp_path, sample_sqlite, dsn)
    assert migrate.run(["execute", "--plan", str(plan), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "[DRY-RUN] Would create the migration's bookkeeping: schema llmspell_migrate" in out
    assert not bookkeeping_exists(llmspell_made)  # a dry run writes nothing

    assert migrate.run(["execute", "--plan", str(plan)]) == 0
    out = capsys.readouterr().out
    assert "Created the migration's bookkeeping: schema llmspell_migrate" in out
    assert "All data migrated successfully!" in out
    assert llmspell_made.count("agent_states") == 120
    with llmspell_made.connect() as conn:
        assert target_schema.missing_bookkeeping(conn) == []
        assert conn.execute("SELECT status FROM llmspell_migrate.runs").fetchone()[0] == "completed"


def test_role_without_rights_is_told_which_statement_to_run_as_whom(
    tmp_path, sample_sqlite, llmspell_made, capsys
):
    plan = make_plan(tmp_path, sample_sqlite, llmspell_made.app_dsn)
    for extra in (["--dry-run"], []):
        assert migrate.run(["execute", "--plan", str(plan)] + extra) == 2
        err = capsys.readouterr().err
        assert "may not create it" in err
        statement = "CREATE SCHEMA llmspell_migrate AUTHORIZATION llmspell_app;"
        assert f"As {OWNER} (the database owner) or a superuser, run: {statement}" in err
    assert not bookkeeping_exists(llmspell_made) and llmspell_made.count("agent_states") == 0
    # doing exactly what it says is enough
    with llmspell_made.connect(autocommit=True) as conn:
        conn.execute(statement)
    assert migrate.run(["execute", "--plan", str(plan)]) == 0
    assert llmspell_made.count("agent_states") == 120


def test_app_role_sees_only_its_own_tenants_bookkeeping(tmp_path, sample_sqlite, target_db):
    plan = make_plan(tmp_path, sample_sqlite, target_db.dsn)
    result = api.execute(plan)
    with target_db.connect() as conn:
        per_tenant = dict(
            conn.execute(
                "SELECT tenant_id, sum(cardinality(natural_keys)) FROM "
                "llmspell_migrate.written_keys GROUP BY tenant_id"
            ).fetchall()
        )
    assert len(per_tenant) == 3
    with target_db.connect(app=True) as conn:
        count = (
            "SELECT coalesce(sum(cardinality(natural_keys)), 0) FROM llmspell_migrate.written_keys"
        )
        assert conn.execute(count).fetchone()[0] == 0  # no tenant set: nothing
        for tenant, n in per_tenant.items():
            conn.execute("SELECT set_config('app.current_tenant_id', %s, false)", (tenant,))
            assert conn.execute(count).fetchone()[0] == n
            others = conn.execute(
                "SELECT count(*) FROM llmspell_migrate.written_keys WHERE tenant_id <> %s",
                (tenant,),
            ).fetchone()[0]
            assert others == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO llmspell_migrate.written_keys (run_id, component, tenant_id, "
                "natural_keys) VALUES ('x', 'kv_store', 'someone-else', '{k}')"
            )
    # rollback as the runtime role still finds every tenant's rows through the run's record
    undone = api.rollback(backup=result.backup_path, target=target_db.app_dsn)
    assert sum(undone.deleted.values()) == 270
    assert target_db.count("agent_states") == 0
    with target_db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM llmspell_migrate.written_keys").fetchone()[0] == 0
