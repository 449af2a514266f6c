"""`rollback --backup`: deletes exactly what a run wrote, refuses changed rows unless --force,
and is idempotent."""

from __future__ import annotations

from pathlib import Path

from pipelines import api, migrate
from tests.test_faults import preexisting_rows

ALL = "agent_state,workflow_state,sessions,kv_store"


def _migrate(tmp_path, sample_sqlite, db, app: bool = False):
    plan = tmp_path / "plan.toml"
    api.make_plan(ALL, output=plan, source=sample_sqlite, target=db.app_dsn if app else db.dsn)
    result = api.execute(plan)
    assert result.status == "SUCCESS"
    return result


def test_rollback_deletes_exactly_the_runs_rows(tmp_path, sample_sqlite, target_db, capsys):
    preexisting_rows(target_db)
    before = target_db.snapshot()
    result = _migrate(tmp_path, sample_sqlite, target_db)
    backup = Path(result.backup_path)
    assert (backup / "rollback-metadata.toml").read_text().count(result.run_id) >= 1
    assert migrate.run(["rollback", "--backup", str(backup)]) == 0
    out = capsys.readouterr().out
    assert "Deleted 120 records from agent_state" in out
    assert target_db.snapshot() == before  # pre-existing rows of both tenants untouched
    # idempotent
    assert migrate.run(["rollback", "--backup", str(backup)]) == 0
    assert "already rolled back" in capsys.readouterr().out
    assert target_db.snapshot() == before


def test_rollback_refuses_rows_changed_since_unless_forced(
    tmp_path, sample_sqlite, target_db, capsys
):
    result = _migrate(tmp_path, sample_sqlite, target_db, app=True)
    with target_db.connect(autocommit=True) as conn:
        changed = conn.execute(
            "UPDATE llmspell.sessions SET session_data = session_data || '{\"edited\": 1}' "
            "WHERE session_id = (SELECT session_id FROM llmspell.sessions ORDER BY 1 LIMIT 1) "
            "RETURNING tenant_id"
        ).fetchone()
    assert changed
    code = migrate.run(["rollback", "--backup", result.backup_path])
    err = capsys.readouterr().err
    assert code == 2
    assert "Rollback refused: 1 row(s)" in err and "sessions" in err and "edited" in err
    assert target_db.count("sessions") == 50  # nothing deleted
    assert migrate.run(["rollback", "--backup", result.backup_path, "--force", "--json"]) == 0
    for table in ("agent_states", "workflow_states", "sessions", "kv_store"):
        assert target_db.count(table) == 0


def test_rollback_by_run_id(tmp_path, sample_sqlite, target_db):
    result = _migrate(tmp_path, sample_sqlite, target_db)
    undo = api.rollback(run_id=result.run_id, target=target_db.dsn)
    assert undo.status == "rolled_back"
    assert undo.deleted == {
        "agent_state": 120,
        "workflow_state": 40,
        "sessions": 50,
        "kv_store": 60,
    }
    assert target_db.count("agent_states") == 0
