"""The run records (`llmspell_migrate.runs`) are no tenant's to read or change, and rollback
never lets a changed record decide which tenants it visits or mark a run rolled back while
ledger rows of it are left."""

from __future__ import annotations

import psycopg
import pytest

from destinations import target_schema
from pipelines import api, migrate
from tests.helpers import make_plan
from tests.test_first_contact import OWNER, llmspell_made  # noqa: F401 (a fixture)

TENANT = "SELECT set_config('app.current_tenant_id', 'tenant-globex', false)"


def _status(db, run_id: str) -> str:
    with db.connect() as conn:
        return conn.execute(
            "SELECT status FROM llmspell_migrate.runs WHERE run_id = %s", (run_id,)
        ).fetchone()[0]


def _tenant_session_is_shut_out(app_dsn: str, run_id: str) -> None:
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        conn.execute(TENANT)
        assert conn.execute("SELECT count(*) FROM llmspell_migrate.runs").fetchone()[0] == 0
        update = conn.execute(
            "UPDATE llmspell_migrate.runs SET tenants = array['tenant-globex'] WHERE run_id = %s",
            (run_id,),
        )
        assert update.rowcount == 0
        delete = conn.execute("DELETE FROM llmspell_migrate.runs WHERE run_id = %s", (run_id,))
        assert delete.rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO llmspell_migrate.runs (run_id, plan_fingerprint, status, "
                "components, tenants) VALUES ('forged', 'x', 'completed', '{kv_store}', "
                "'{tenant-globex}')"
            )


@pytest.mark.parametrize("as_app", [False, True])
def test_a_tenant_session_neither_reads_nor_changes_run_records(
    tmp_path, sample_sqlite, target_db, as_app
):
    plan = make_plan(tmp_path, sample_sqlite, target_db.app_dsn if as_app else target_db.dsn)
    result = api.execute(plan)
    assert result.status == "SUCCESS"
    _tenant_session_is_shut_out(target_db.app_dsn, result.run_id)
    with target_db.connect() as conn:
        (tenants,) = conn.execute(
            "SELECT tenants FROM llmspell_migrate.runs WHERE run_id = %s", (result.run_id,)
        ).fetchone()
    assert len(tenants) == 3  # unchanged
    # the tool's own sessions (no tenant set) still work: a rollback as llmspell_app
    undone = api.rollback(backup=result.backup_path, target=target_db.app_dsn)
    assert sum(undone.deleted.values()) == 270 and target_db.count("agent_states") == 0
    assert _status(target_db, result.run_id) == "rolled_back"


def test_schema_the_app_role_owns_binds_it_too(tmp_path, sample_sqlite, llmspell_made):  # noqa: F811
    with llmspell_made.connect(autocommit=True) as conn:
        conn.execute("CREATE SCHEMA llmspell_migrate AUTHORIZATION llmspell_app")
    result = api.execute(make_plan(tmp_path, sample_sqlite, llmspell_made.app_dsn))
    assert result.status == "SUCCESS"
    _tenant_session_is_shut_out(llmspell_made.app_dsn, result.run_id)


def test_existing_bookkeeping_gets_the_policy_on_the_next_run(
    tmp_path, sample_sqlite, target_db, capsys
):
    # the bookkeeping as earlier versions left it: `runs` without row-level security
    with target_db.connect(autocommit=True) as conn:
        conn.execute("DROP POLICY IF EXISTS no_tenant_session ON llmspell_migrate.runs")
        conn.execute("ALTER TABLE llmspell_migrate.runs NO FORCE ROW LEVEL SECURITY")
        conn.execute("ALTER TABLE llmspell_migrate.runs DISABLE ROW LEVEL SECURITY")
        assert target_schema.missing_bookkeeping(conn) == [
            "row-level security on llmspell_migrate.runs"
        ]
    plan = make_plan(tmp_path, sample_sqlite, target_db.dsn)
    assert migrate.run(["execute", "--plan", str(plan), "--dry-run"]) == 0
    assert "row-level security on llmspell_migrate.runs" in capsys.readouterr().out
    result = api.execute(plan)
    assert result.status == "SUCCESS"
    with target_db.connect() as conn:
        assert target_schema.missing_bookkeeping(conn) == []
    _tenant_session_is_shut_out(target_db.app_dsn, result.run_id)


@pytest.mark.parametrize("as_app", [True, False])
def test_rollback_refuses_a_record_whose_tenants_were_changed(
    tmp_path, sample_sqlite, target_db, capsys, as_app
):
    result = api.execute(make_plan(tmp_path, sample_sqlite, target_db.app_dsn))
    before = target_db.snapshot()
    # a record changed before its table was protected (or by a hand)
    with target_db.connect(autocommit=True) as conn:
        conn.execute(
            "UPDATE llmspell_migrate.runs SET tenants = array['tenant-globex'] WHERE run_id = %s",
            (result.run_id,),
        )
    dsn = target_db.app_dsn if as_app else target_db.dsn
    code = migrate.run(["rollback", "--backup", result.backup_path, "--target", dsn])
    captured = capsys.readouterr()
    assert code == 2
    assert "disagree on which tenants it wrote" in captured.err
    assert "the backup names tenant-acme, tenant-initech: not in its record" in captured.err
    assert "Rollback" not in captured.out or "complete" not in captured.out
    assert target_db.snapshot() == before  # nothing deleted
    assert _status(target_db, result.run_id) == "completed"
    with target_db.connect() as conn:
        left = conn.execute("SELECT count(*) FROM llmspell_migrate.written_keys").fetchone()[0]
    assert left > 0


def test_rollback_refuses_a_backup_that_does_not_name_a_tenant_of_the_ledger(
    tmp_path, sample_sqlite, target_db, capsys
):
    result = api.execute(make_plan(tmp_path, sample_sqlite, target_db.dsn))
    before = target_db.snapshot()
    meta = tmp_path / "meta.toml"
    path = f"{result.backup_path}/rollback-metadata.toml"
    text = open(path, encoding="utf-8").read()
    meta.write_text(text)
    changed = text.replace('"tenant-initech"', '"tenant-x"')
    assert changed != text
    with open(path, "w", encoding="utf-8") as f:
        f.write(changed)
    assert migrate.run(["rollback", "--backup", result.backup_path]) == 2
    err = capsys.readouterr().err
    assert "the run's ledger holds rows of tenant-initech: not in the backup" in err
    assert target_db.snapshot() == before


def test_run_is_not_marked_rolled_back_while_ledger_rows_are_left(
    tmp_path, sample_sqlite, target_db, capsys
):
    result = api.execute(make_plan(tmp_path, sample_sqlite, target_db.dsn))
    before = target_db.snapshot()
    with target_db.connect(autocommit=True) as conn:
        conn.execute(
            "UPDATE llmspell_migrate.runs SET components = array['kv_store'] WHERE run_id = %s",
            (result.run_id,),
        )
    assert migrate.run(["rollback", "--run-id", result.run_id, "--target", target_db.dsn]) == 2
    err = capsys.readouterr().err
    assert "ledger still holds rows" in err and "agent_state tenant=tenant-acme" in err
    assert target_db.snapshot() == before  # not even kv_store's rows: one transaction
    assert _status(target_db, result.run_id) == "completed"
    assert OWNER  # the first-contact fixture's module is imported for its fixture
