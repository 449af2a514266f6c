"""Exit codes that tell the truth (0 ok, 1 failed and rolled back, 2 bad input with nothing
written), and a closed stdout that ends a command quietly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

from pipelines import api
from tests.helpers import make_plan, only_error, run_cli, with_params

REPO = Path(__file__).resolve().parent.parent


def test_rollback_of_an_unknown_run_starts_no_server(tmp_path, capsys):
    home = tmp_path / ".llmspell-migrate"
    code, _, err = run_cli(capsys, "rollback", "--run-id", "nosuch")
    assert code == 2
    only_error(err, "nosuch", "--target", anywhere=True)
    assert not (home / "postgres").exists()  # no embedded server created or started


def test_rollback_of_an_unknown_run_on_a_target_is_exit_2(target_db, capsys):
    code, _, err = run_cli(capsys, "rollback", "--run-id", "nosuch", "--target", target_db.dsn)
    assert code == 2
    only_error(err, "nosuch", anywhere=True)
    code, out, _ = run_cli(capsys, "rollback", "--run-id", "x", "--target", target_db.dsn, "--json")
    assert code == 2 and json.loads(out)["error"]["exit_code"] == 2


def test_rollback_of_an_unknown_run_without_bookkeeping_is_exit_2(empty_db, capsys):
    code, _, err = run_cli(capsys, "rollback", "--run-id", "nosuch", "--target", empty_db.dsn)
    assert code == 2
    only_error(err, "nosuch", anywhere=True)


def test_rollback_takes_a_backup_or_a_run_id_not_both(tmp_path, target_db, capsys):
    argv = ["rollback", "--backup", str(tmp_path), "--run-id", "r1", "--target", target_db.dsn]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    only_error(err, "--backup", "--run-id", anywhere=True)


def test_sync_after_the_run_was_rolled_back_says_so(tmp_path, sample_sqlite, target_db, capsys):
    plan = make_plan(tmp_path, sample_sqlite, target_db.dsn)
    done = api.execute(plan)
    assert api.rollback(backup=done.backup_path).status == "rolled_back"
    for dry in (["--dry-run"], []):
        code, out, err = run_cli(capsys, "sync", "--plan", str(plan), *dry)
        assert code == 2, (out, err)
        only_error(err, "rolled back", done.run_id, "execute --plan", anywhere=True)
        assert "insert" not in out.lower(), out
    assert target_db.count("agent_states") == 0


def test_a_database_that_does_not_exist_is_named(tmp_path, sample_sqlite, target_db, capsys):
    missing = with_params(target_db.dsn, dbname="no_such_db_h1")
    code, _, err = run_cli(capsys, "init-target", "--target", missing)
    assert code == 2
    missing_db = 'database "no_such_db_h1" does not exist'
    only_error(err, missing_db, "createdb", "CREATE DATABASE", anywhere=True)
    plan = make_plan(tmp_path, sample_sqlite, target_db.dsn)
    code, _, err = run_cli(capsys, "execute", "--plan", str(plan), "--dry-run", "--target", missing)
    assert code == 2
    only_error(err, 'database "no_such_db_h1" does not exist', anywhere=True)
    with psycopg.connect(with_params(target_db.dsn, dbname="postgres")) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'no_such_db_h1'")
        assert exists.fetchone() is None


def _closed_stdout(tmp_path: Path, *argv: str) -> tuple[int, str]:
    """Run the command with nobody reading its stdout (`... | head -0`)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.migrate", *argv],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read().decode()
    return proc.wait(timeout=120), err


def test_a_closed_stdout_ends_quietly(tmp_path, sample_sqlite, target_db):
    plan = tmp_path / "p.toml"
    for argv in (
        ["plan", "--components", "agent_state", "--source", str(sample_sqlite),
         "--target", target_db.dsn, "--output", str(plan), "--json"],
        ["plan", "--components", "agent_state", "--source", str(sample_sqlite),
         "--target", target_db.dsn, "--output", str(plan)],
        ["validate", "--backend", "sqlite", "--source", str(sample_sqlite), "--json"],
        ["execute", "--plan", str(plan), "--dry-run"],
        ["--help"],
    ):  # fmt: skip
        code, err = _closed_stdout(tmp_path, *argv)
        assert code == 0, (argv, err)
        assert err.strip() == "", (argv, err)
    assert plan.exists()
