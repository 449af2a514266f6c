"""The Python API: typed results with to_dict(), typed errors with the CLI's messages."""

from __future__ import annotations

import json

import pytest

from core.errors import MigrateError, PlanError, PreflightError, SourceError
from pipelines import api, migrate


def test_results_are_typed_and_serialisable(tmp_path, sample_sqlite, target_db):
    planned = api.make_plan(
        "agent_state,sessions",
        output=tmp_path / "p.toml",
        source=sample_sqlite,
        target=target_db.dsn,
    )
    assert planned.plan["components"][0] == {
        "name": "agent_state",
        "estimated_count": 120,
        "batch_size": 500,
    }
    assert sum(planned.per_tenant["sessions"].values()) == 50
    dry = api.dry_run(tmp_path / "p.toml")
    assert dry.status == "DRY_RUN" and dry.preflight.source_records == 170
    lines: list[str] = []
    done = api.execute(tmp_path / "p.toml", emit=lines.append)
    assert done.status == "SUCCESS" and done.validation.passed
    assert "[1/2] Migrating component: agent_state" in lines
    assert set(done.stages) >= {"preflight_and_backup", "copy", "validation"}
    report = api.verify(tmp_path / "p.toml", full=True)
    assert report.passed and report.checksum_samples == 170
    check = api.validate_backend("sqlite", "agent_state,sessions", source=str(sample_sqlite))
    assert check.ok and [c.records for c in check.components] == [120, 50]
    for result in (planned, dry, done, report, check):
        json.dumps(result.to_dict())  # every result is plain data


@pytest.mark.parametrize(
    "call,error",
    [
        (lambda p: api.make_plan("bogus_store", source=p), MigrateError),
        (lambda p: api.make_plan("agent_state", source=p.parent / "missing.db"), SourceError),
        (lambda p: api.dry_run(p.parent / "missing.toml"), PlanError),
    ],
)
def test_errors_are_typed_with_the_cli_message(tmp_path, sample_sqlite, capsys, call, error):
    with pytest.raises(error) as err:
        call(sample_sqlite)
    assert err.value.message and err.value.hint
    assert err.value.exit_code == 2


def test_api_and_cli_say_the_same(tmp_path, sample_sqlite, capsys):
    with pytest.raises(MigrateError) as err:
        api.make_plan("agent_state,bogus_store", source=sample_sqlite)
    code = migrate.run(
        [
            "plan",
            "--components",
            "agent_state,bogus_store",
            "--source",
            str(sample_sqlite),
            "--output",
            str(tmp_path / "x.toml"),
        ]
    )
    stderr = capsys.readouterr().err
    assert code == err.value.exit_code
    assert err.value.message in stderr and err.value.hint in stderr


def test_preflight_error_carries_the_records(tmp_path, sample_sqlite, target_db):
    import sqlite3

    conn = sqlite3.connect(sample_sqlite)
    conn.execute("UPDATE sessions SET session_id = 'not-a-uuid' WHERE rowid = 1")
    conn.commit()
    conn.close()
    api.make_plan(
        "sessions", output=tmp_path / "p.toml", source=sample_sqlite, target=target_db.dsn
    )
    with pytest.raises(PreflightError) as err:
        api.execute(tmp_path / "p.toml")
    assert any("not-a-uuid" in d for d in err.value.details)
    assert err.value.to_dict()["exit_code"] == 2


def test_stop_embedded_stops_only_the_tools_own_server(monkeypatch, capsys):
    import shutil

    from destinations import embedded_server
    from tests.conftest import private_pg_dir

    data = private_pg_dir()
    monkeypatch.setenv("LLMSPELL_MIGRATE_PGDATA", str(data))
    try:
        embedded_server.ensure_running(data)
        assert (data / "postmaster.pid").exists()
        assert migrate.run(["stop-embedded"]) == 0
        assert "Stopped the embedded PostgreSQL" in capsys.readouterr().out
        assert not (data / "postmaster.pid").exists()
        assert (data / "PG_VERSION").exists()  # the data stays
        assert migrate.run(["stop-embedded"]) == 0
        assert "No embedded PostgreSQL is running" in capsys.readouterr().out
    finally:
        embedded_server.stop(data, mode="immediate")
        shutil.rmtree(data.parent, ignore_errors=True)
