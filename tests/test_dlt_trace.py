"""What dlt's own command line says about a migration: one run covering every component, a
failed run recorded as failed (naming the component and the error), no warnings, and no
parquet copy of the migrated rows left behind."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from core.errors import MigrationFailed
from core.model.components import KV_STORE, SESSIONS
from pipelines import migrate
from pipelines.stages.copy_stage import Delivery
from tests.helpers import make_plan
from tests.test_hardening import tiny_mount as _tiny_mount

REPO = Path(__file__).resolve().parents[1]
tiny_mount = _tiny_mount  # the fixture: a small tmpfs where the machine lets us
COMPONENTS = ("agent_state", "workflow_state", "sessions", "kv_store")


def dlt_cli(command: str, cwd: Path) -> str:
    """`dlt pipeline --pipelines-dir … llmspell_migrate <command>` from another process."""
    pipelines_dir = Path(os.environ["LLMSPELL_MIGRATE_HOME"]) / "dlt"
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("dlt")), "pipeline", "--pipelines-dir"]
        + [str(pipelines_dir), "llmspell_migrate", command],
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    return out


def package_files(kind: str = "*.parquet") -> list[Path]:
    return sorted((Path(os.environ["LLMSPELL_MIGRATE_HOME"]) / "dlt").rglob(kind))


def test_clean_run_is_one_dlt_run_covering_every_component(tmp_path, sample_sqlite, target_db):
    plan = make_plan(tmp_path, sample_sqlite, target_db.dsn)
    assert migrate.run(["execute", "--plan", str(plan)]) == 0
    trace = dlt_cli("trace", tmp_path)
    print(trace)
    assert "Step run COMPLETED" in trace
    assert "FAILED" not in trace
    normalized = trace.split("Normalized data for the following tables:")[1]
    for comp, n in zip(COMPONENTS, (120, 40, 50, 60)):
        assert f"- {comp}: {n} row(s)" in normalized
    assert "into dataset llmspell" in trace
    assert "is LOADED and contains no failed jobs" in trace
    for command in ("info", "trace", "load-package"):
        out = dlt_cli(command, tmp_path)
        assert "WARNING" not in out and "warning" not in out.lower(), out
        assert "could not be imported" not in out and "dummy" not in out, out
    package = dlt_cli("load-package", tmp_path)
    for comp in COMPONENTS:
        assert f"table: {comp} in completed_jobs" in package
    # the job files are still listed by dlt, but hold none of the migrated rows
    files = package_files()
    assert files and all(f.stat().st_size == 0 for f in files), files


def test_failed_run_trace_says_failed_and_names_the_component(tmp_path, sample_sqlite, target_db):
    victim = (
        sqlite3.connect(sample_sqlite)
        .execute("SELECT session_id FROM sessions ORDER BY tenant_id, session_id LIMIT 1 OFFSET 30")
        .fetchone()[0]
    )
    with target_db.connect(autocommit=True) as conn:
        conn.execute(
            "ALTER TABLE llmspell.sessions ADD CONSTRAINT test_refuse "
            f"CHECK (session_id <> '{victim}') NOT VALID"
        )
    plan = make_plan(tmp_path, sample_sqlite, target_db.dsn, batch_size=100)
    assert migrate.run(["execute", "--plan", str(plan)]) == 1
    assert target_db.count("sessions") == target_db.count("agent_states") == 0
    trace = dlt_cli("trace", tmp_path)
    print(trace)
    assert "Step load FAILED" in trace and "Step run FAILED" in trace
    assert "COMPLETED in" not in trace.split("Step load")[1]
    failure = trace.split("Step load FAILED")[1]
    assert "sessions: CheckViolation" in failure and "test_refuse" in failure
    assert "ABORTED" in trace
    for command in ("info", "load-package"):  # dlt may warn about the failed load itself
        out = dlt_cli(command, tmp_path)
        assert "could not be imported" not in out and "callable" not in out, out
    files = package_files()
    assert files and all(f.stat().st_size == 0 for f in files), files


def test_validation_failure_is_a_failed_load(tmp_path, sample_sqlite, target_db):
    with target_db.connect(autocommit=True) as conn:  # a target that silently alters one value
        conn.execute("""
            CREATE FUNCTION llmspell.test_tamper() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN NEW.artifact_count := NEW.artifact_count + 1; RETURN NEW; END $$;
            CREATE TRIGGER test_tamper BEFORE INSERT ON llmspell.sessions
                FOR EACH ROW EXECUTE FUNCTION llmspell.test_tamper();""")
    plan = make_plan(tmp_path, sample_sqlite, target_db.dsn)
    assert migrate.run(["execute", "--plan", str(plan)]) == 1
    trace = dlt_cli("trace", tmp_path)
    assert "Step load FAILED" in trace
    assert "ValidationFailed" in trace and "sessions" in trace.split("Step load FAILED")[1]
    files = package_files()
    assert files and all(f.stat().st_size == 0 for f in files), files


@pytest.mark.parametrize("keep", [False, True], ids=["default", "keep-packages"])
def test_keep_packages_and_prune(tmp_path, sample_sqlite, target_db, keep):
    plan = make_plan(tmp_path, sample_sqlite, target_db.dsn)
    args = ["execute", "--plan", str(plan)] + (["--keep-packages"] if keep else [])
    assert migrate.run(args) == 0
    sizes = [f.stat().st_size for f in package_files()]
    assert sizes and (all(sizes) if keep else not any(sizes))
    assert migrate.run(["prune", "--keep", "0"]) == 0
    assert package_files() == []
    assert not list((tmp_path / "backups").glob("migration-*"))


def test_dlt_staging_space_is_checked_before_writing(
    tmp_path, sample_sqlite, target_db, capsys, tiny_mount, monkeypatch
):
    home = tiny_mount("size=16k") / "home"  # dlt's folder lives in the tool's home
    monkeypatch.setenv("LLMSPELL_MIGRATE_HOME", str(home))
    plan = make_plan(tmp_path, sample_sqlite, target_db.dsn)
    for dry in (["--dry-run"], []):
        assert migrate.run(["execute", "--plan", str(plan), *dry]) == 2
        err = capsys.readouterr().err
        assert "not enough disk space for dlt's staging" in err, err
    assert target_db.count("agent_states") == 0
    assert not list((tmp_path / "backups").glob("migration-*"))


def test_a_job_refused_after_another_failed_names_the_first_error():
    """dlt's trace may report either failed job; the follow-on one must still name the first
    component and its error (first line only: PostgreSQL's DETAIL can hold row values)."""

    def refuse(comp, batch):
        raise ValueError('new row violates check constraint "test_refuse"\nDETAIL: secret row')

    lines: list[str] = []
    delivery = Delivery(  # no writer: neither batch gets as far as writing
        None,
        [SESSIONS, KV_STORE],
        {"sessions": 1, "kv_store": 1},
        lines.append,
        lambda: None,
        transform=refuse,
    )
    batch = pa.record_batch([pa.array([1])], names=["x"])
    with pytest.raises(ValueError):
        delivery.deliver("sessions", batch)
    with pytest.raises(MigrationFailed) as refused:
        delivery.deliver("kv_store", batch)
    text = str(refused.value)
    assert "kv_store: not written, sessions failed first" in text
    assert "sessions: ValueError" in text and "test_refuse" in text
    assert "secret row" not in text
