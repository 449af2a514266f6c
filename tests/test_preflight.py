"""Pre-flight refusals: records PostgreSQL cannot store, conflicting target rows, a missing
schema, a source that changed since the plan. A refusal writes nothing anywhere, and the
SQLite source is never modified by plan, dry-run or execute."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import psycopg
import pytest

from core import settings
from core.errors import PreflightError, TargetError
from pipelines import api, migrate
from sources.sample_db import SampleSpec
from tests.helpers import make_plan, sample_file

SPEC = SampleSpec(agents=8, workflows=5, sessions=6, kv=4, tenants=2, seed=21)


@pytest.fixture
def src(tmp_path) -> Path:
    path = tmp_path / "src" / "llmspell.db"
    sample_file(path, SPEC)
    return path


def _sql(path: Path, statement: str, params=()) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(statement, params)
        conn.commit()
    finally:
        conn.close()


def _one(path: Path, query: str):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(query).fetchone()
    finally:
        conn.close()


def _runs(db) -> int:
    with db.connect() as conn:
        return conn.execute("SELECT count(*) FROM llmspell_migrate.runs").fetchone()[0]


def _no_backup_left(tmp_path: Path) -> None:
    root = tmp_path / "backups"
    leftovers = [p.name for p in root.iterdir()] if root.exists() else []
    assert all(name.startswith(".partial") for name in leftovers), leftovers
    assert not any(p.name == "rollback-metadata.toml" for p in tmp_path.rglob("*"))


def _folder_state(folder: Path) -> list[tuple[str, int, str]]:
    return sorted(
        (p.name, p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in folder.iterdir()
    )


# -- records PostgreSQL cannot store ---------------------------------------------------------
def _first_agent(src):
    return _one(src, "SELECT tenant_id, agent_type, agent_id FROM agent_states ORDER BY rowid")


def _first_workflow(src):
    return _one(src, "SELECT tenant_id, workflow_id FROM workflow_states ORDER BY rowid")


def _case_invalid_json(src):
    tenant, kind, agent = _first_agent(src)
    _sql(src, "UPDATE agent_states SET state_data = '{\"a\": 1,' WHERE agent_id = ?", (agent,))
    return tenant, f"agent:{agent}", "state_data is not valid JSON"


def _case_nan(src):
    tenant, kind, agent = _first_agent(src)
    _sql(
        src,
        'UPDATE agent_states SET state_data = \'{"score": NaN, "ok": true}\' WHERE agent_id = ?',
        (agent,),
    )
    return tenant, f"agent:{agent}", "state_data is not valid JSON"


def _case_nul_in_json_string(src):
    tenant, workflow = _first_workflow(src)
    _sql(
        src,
        'UPDATE workflow_states SET state_data = \'{"note": "a\\u0000b"}\' '
        "WHERE workflow_id = ? AND tenant_id = ?",
        (workflow, tenant),
    )
    return tenant, f"custom:workflow_{workflow}:state", "state_data contains \\u0000"


def _case_invalid_utf8_text(src):
    tenant, workflow = _first_workflow(src)
    _sql(
        src,
        "UPDATE workflow_states SET workflow_name = CAST(x'4142ff43' AS TEXT) "
        "WHERE workflow_id = ? AND tenant_id = ?",
        (workflow, tenant),
    )
    return tenant, f"custom:workflow_{workflow}:state", "workflow_name is not valid UTF-8"


def _case_session_id_not_uuid(src):
    tenant, sid = _one(src, "SELECT tenant_id, session_id FROM sessions ORDER BY rowid")
    _sql(src, "UPDATE sessions SET session_id = 'not-a-uuid' WHERE session_id = ?", (sid,))
    return tenant, "session:not-a-uuid", "session_id is 'not-a-uuid', not a UUID"


def _case_agent_type_too_long(src):
    tenant, _, agent = _first_agent(src)
    long_type = "t" * 101
    # A two-part key (`agent:lonely`) keeps its SQLite columns in every key layout.
    _sql(
        src,
        "UPDATE agent_states SET agent_type = ?, agent_id = 'lonely' "
        "WHERE agent_id = ? AND tenant_id = ?",
        (long_type, agent, tenant),
    )
    return tenant, "agent:lonely", "agent_type is 101 characters, over VARCHAR(100)"


def _case_kv_metadata_not_json(src):
    tenant, key = _one(src, "SELECT tenant_id, key FROM kv_store ORDER BY rowid")
    _sql(
        src,
        "UPDATE kv_store SET metadata = 'not json' WHERE key = ? AND tenant_id = ?",
        (key, tenant),
    )
    return tenant, key, "metadata is not valid JSON"


BAD = {
    "invalid-json": _case_invalid_json,
    "nan": _case_nan,
    "nul-in-json-string": _case_nul_in_json_string,
    "invalid-utf8-text": _case_invalid_utf8_text,
    "session-id-not-uuid": _case_session_id_not_uuid,
    "agent-type-too-long": _case_agent_type_too_long,
    "kv-metadata-not-json": _case_kv_metadata_not_json,
}


@pytest.mark.parametrize("case", list(BAD))
def test_unstorable_record_is_refused_by_key(tmp_path, src, target_db, case, capsys):
    tenant, key, problem = BAD[case](src)
    plan = make_plan(tmp_path, src, target_db.dsn)
    before = target_db.snapshot()

    for run in (api.dry_run, api.execute):
        with pytest.raises(PreflightError) as info:
            run(plan)
        exc = info.value
        assert exc.exit_code == 2
        assert exc.message == "Pre-flight failed: 1 source record(s) cannot be stored in PostgreSQL"
        assert len(exc.details) == 1
        detail = exc.details[0]
        assert repr(key) in detail and tenant in detail and problem in detail, detail

    assert migrate.run(["execute", "--plan", str(plan)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "cannot be stored in PostgreSQL" in err
    assert target_db.snapshot() == before
    assert _runs(target_db) == 0
    _no_backup_left(tmp_path)


def test_every_unstorable_record_is_listed(tmp_path, src, target_db):
    expected = [BAD[name](src) for name in ("nan", "invalid-utf8-text", "session-id-not-uuid")]
    plan = make_plan(tmp_path, src, target_db.dsn)
    before = target_db.snapshot()
    with pytest.raises(PreflightError) as info:
        api.execute(plan)
    assert "3 source record(s)" in info.value.message
    joined = "\n".join(info.value.details)
    for _tenant, key, problem in expected:
        assert repr(key) in joined and problem in joined
    assert target_db.snapshot() == before
    _no_backup_left(tmp_path)


def test_bad_record_outside_the_tenant_filter_does_not_block(tmp_path, src, target_db):
    tenant, _, _ = BAD["invalid-json"](src)
    other = _one(src, f"SELECT DISTINCT tenant_id FROM agent_states WHERE tenant_id <> '{tenant}'")
    plan = make_plan(tmp_path, src, target_db.dsn, components="agent_state", tenants=[other[0]])
    result = api.dry_run(plan)
    assert result.status == "DRY_RUN"


# -- rows already in the target ---------------------------------------------------------------
def test_conflicting_row_in_target_is_refused(tmp_path, src, target_db, capsys):
    tenant, workflow = _first_workflow(src)
    with target_db.connect(autocommit=True) as conn:  # superuser
        conn.execute(
            "INSERT INTO llmspell.workflow_states (tenant_id, workflow_id, state_data, status) "
            "VALUES (%s, %s, '{\"written\": \"by someone else\"}', 'pending')",
            (tenant, workflow),
        )
    plan = make_plan(tmp_path, src, target_db.dsn)
    before = target_db.snapshot()
    for run in (api.dry_run, api.execute):
        with pytest.raises(PreflightError) as info:
            run(plan)
        assert "1 record(s) already in the target differ from the source" in info.value.message
        assert info.value.exit_code == 2
        assert len(info.value.details) >= 1
        assert all(workflow in d and tenant in d for d in info.value.details)
    assert migrate.run(["execute", "--plan", str(plan), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert workflow in err and "Traceback" not in err
    assert target_db.snapshot() == before
    assert _runs(target_db) == 0
    _no_backup_left(tmp_path)


def test_same_key_for_another_tenant_is_no_conflict(tmp_path, src, target_db):
    _, workflow = _first_workflow(src)
    with target_db.connect(autocommit=True) as conn:
        conn.execute(
            "INSERT INTO llmspell.workflow_states (tenant_id, workflow_id, state_data) "
            "VALUES ('tenant-elsewhere', %s, '{}')",
            (workflow,),
        )
    result = api.execute(make_plan(tmp_path, src, target_db.dsn, components="workflow_state"))
    assert result.status == "SUCCESS"
    assert result.written == {"workflow_state": SPEC.workflows}
    assert target_db.count("workflow_states") == SPEC.workflows + 1


def test_identical_rows_count_as_already_migrated(tmp_path, src, target_db):
    tenants = sorted(
        {r for (r,) in sqlite3.connect(src).execute("SELECT tenant_id FROM agent_states")}
    )
    first = api.execute(make_plan(tmp_path, src, target_db.dsn, tenants=[tenants[0]]))
    assert first.status == "SUCCESS"
    migrated = dict(first.written)
    assert sum(migrated.values()) > 0

    plan = make_plan(tmp_path, src, target_db.dsn)  # every tenant now
    before = target_db.snapshot()
    dry = api.dry_run(plan)
    assert dry.already_present == migrated
    assert {c.name: c.already_present for c in dry.preflight.components} == migrated
    assert target_db.snapshot() == before

    result = api.execute(plan)
    assert result.status == "SUCCESS"
    assert result.already_present == migrated
    assert sum(result.written.values()) == SPEC.total - sum(migrated.values())
    assert result.validation.passed


# -- the target schema --------------------------------------------------------------------
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "execute"])
def test_missing_schema_is_refused_with_init_target_hint(tmp_path, src, empty_db, dry_run, capsys):
    plan = make_plan(tmp_path, src, empty_db.dsn)
    argv = ["execute", "--plan", str(plan)] + (["--dry-run"] if dry_run else [])
    try:
        rc = migrate.run(argv)
    except psycopg.Error as exc:  # what happens today: the error escapes as a traceback
        pytest.fail(f"raw {type(exc).__name__} escaped: {exc}")
    err = capsys.readouterr().err
    assert rc == 2
    assert 'relation "llmspell.agent_states" does not exist' in err
    assert f"{settings.cli_command()} init-target" in err
    with empty_db.connect() as conn:
        assert conn.execute("SELECT to_regnamespace('llmspell')").fetchone()[0] is None
    _no_backup_left(tmp_path)


def test_missing_llmspell_tables_are_refused_with_init_target_hint(tmp_path, src, target_db):
    with target_db.connect(autocommit=True) as conn:
        conn.execute("DROP SCHEMA llmspell CASCADE")  # bookkeeping schema stays
    plan = make_plan(tmp_path, src, target_db.dsn)
    for run in (api.dry_run, api.execute):
        with pytest.raises(TargetError) as info:
            run(plan)
        assert 'relation "llmspell.agent_states" does not exist' in info.value.message
        assert f"{settings.cli_command()} init-target" in info.value.hint
        assert info.value.exit_code == 2
    with target_db.connect() as conn:
        assert conn.execute("SELECT to_regnamespace('llmspell')").fetchone()[0] is None
    _no_backup_left(tmp_path)


def test_wrong_column_type_in_target_is_refused(tmp_path, src, target_db):
    with target_db.connect(autocommit=True) as conn:
        conn.execute("DROP INDEX llmspell.idx_sessions_data_gin")
        conn.execute("ALTER TABLE llmspell.sessions ALTER COLUMN session_data TYPE TEXT")
    plan = make_plan(tmp_path, src, target_db.dsn, components="sessions")
    with pytest.raises(
        TargetError, match=r"llmspell.sessions.session_data is text, expected jsonb"
    ):
        api.dry_run(plan)


# -- the source changed since the plan --------------------------------------------------------
def test_source_changed_since_plan_warns_and_passes(tmp_path, src, target_db):
    plan = make_plan(tmp_path, src, target_db.dsn, components="agent_state,kv_store")
    _sql(
        src,
        "INSERT INTO agent_states (tenant_id, agent_id, agent_type, state_data, checksum) "
        "SELECT tenant_id, agent_id || '-new', agent_type, state_data, checksum "
        "FROM agent_states LIMIT 2",
    )
    lines: list[str] = []
    result = api.dry_run(plan, emit=lines.append)
    assert result.status == "DRY_RUN"
    check = result.preflight.component("agent_state")
    assert (check.estimated_count, check.source_count) == (SPEC.agents, SPEC.agents + 2)
    warnings = result.preflight.warnings
    assert any(
        w.startswith("agent_state: source now holds 10 records, the plan estimated 8")
        for w in warnings
    ), warnings
    assert not any(w.startswith("kv_store") for w in warnings)
    assert any("WARNING" in ln and "agent_state" in ln for ln in lines)
    assert "[DRY-RUN] Pre-flight validation passed" in lines


# -- the source is never touched --------------------------------------------------------------
def test_source_file_unchanged_by_plan_dry_run_and_execute(tmp_path, src, target_db, capsys):
    folder = src.parent
    state = _folder_state(folder)
    assert [name for name, *_ in state] == ["llmspell.db"]

    plan = make_plan(tmp_path, src, target_db.dsn)
    assert _folder_state(folder) == state
    api.dry_run(plan)
    assert _folder_state(folder) == state
    result = api.execute(plan)
    assert result.status == "SUCCESS"
    assert _folder_state(folder) == state
    assert migrate.run(["execute", "--plan", str(plan), "--dry-run"]) == 0
    assert migrate.run(["execute", "--plan", str(plan)]) == 0
    capsys.readouterr()
    assert _folder_state(folder) == state


def test_source_unchanged_after_a_refused_run(tmp_path, src, target_db):
    BAD["nan"](src)
    state = _folder_state(src.parent)
    plan = make_plan(tmp_path, src, target_db.dsn)
    with pytest.raises(PreflightError):
        api.execute(plan)
    assert _folder_state(src.parent) == state


def test_live_source_with_wal_is_read_but_not_touched(tmp_path, src, target_db):
    """llmspell has the database open: committed records sit in the -wal file."""
    writer = sqlite3.connect(src)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute(
            "INSERT INTO kv_store (tenant_id, key, value) VALUES ('tenant-acme', 'live:1', x'00')"
        )
        writer.commit()
        assert Path(f"{src}-wal").exists()
        state = _folder_state(src.parent)

        plan = make_plan(tmp_path, src, target_db.dsn, components="kv_store")
        result = api.dry_run(plan)
        assert result.preflight.component("kv_store").source_count == SPEC.kv + 1
        assert any("WAL present" in w for w in result.preflight.warnings)
        result = api.execute(plan)
        assert result.status == "SUCCESS"
        assert target_db.count("kv_store") == SPEC.kv + 1
        assert _folder_state(src.parent) == state
    finally:
        writer.close()
