"""CLI failures: each a clear message and a fix, a non-zero exit, never a Python traceback."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from core.model import registry
from pipelines import api, migrate
from sources.sample_db import SampleSpec
from tests.helpers import cli, one_line_error, sample_file

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/x"
SUPPORTED_MSG = f"Only {', '.join(registry.SUPPORTED)} are supported."


@pytest.fixture
def small_db(tmp_path) -> Path:
    path = tmp_path / "src" / "llmspell.db"
    sample_file(path, SampleSpec(agents=6, workflows=3, sessions=4, kv=2, tenants=2, seed=9))
    return path


def _plan_argv(source, *extra) -> list[str]:
    return ["plan", "--source", str(source), "--target", UNREACHABLE, "-o", "p.toml", *extra]


# -- the source -----------------------------------------------------------------------------
def test_missing_sqlite_file(tmp_path, capsys):
    assert migrate.run(_plan_argv(tmp_path / "nope.db")) == 2
    out = capsys.readouterr()
    one_line_error(out.err, "SQLite database not found", "nope.db")
    assert "--source" in out.err  # the fix names the option
    assert not (tmp_path / "p.toml").exists()
    assert not (tmp_path / "nope.db").exists()  # not created by trying to open it


def test_empty_file_is_not_an_llmspell_database(tmp_path, capsys):
    empty = tmp_path / "empty.db"
    empty.touch()
    assert migrate.run(_plan_argv(empty)) == 2
    one_line_error(capsys.readouterr().err, "is not an llmspell database", "empty.db")
    assert empty.read_bytes() == b""  # still empty: nothing was written into it
    assert sorted(p.name for p in tmp_path.iterdir()) == [".llmspell-migrate", "empty.db"] or (
        sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]
    )


def test_non_sqlite_file(tmp_path, capsys):
    junk = tmp_path / "notes.db"
    junk.write_bytes(b"this is not a database, just some text\n" * 200)
    assert migrate.run(_plan_argv(junk)) == 2
    one_line_error(capsys.readouterr().err, "is not a readable SQLite database", "notes.db")


def test_directory_as_source(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    assert migrate.run(_plan_argv(tmp_path / "data")) == 2
    one_line_error(capsys.readouterr().err, "Not a file")


def test_sqlite_without_llmspell_tables(tmp_path, capsys):
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes (body) VALUES ('hello')")
    conn.commit()
    conn.close()
    assert migrate.run(_plan_argv(other)) == 2
    err = one_line_error(capsys.readouterr().err, "is not an llmspell database")
    assert "agent_states" in err


def test_component_not_present_in_source(tmp_path, small_db, capsys):
    conn = sqlite3.connect(small_db)
    conn.execute("DROP TABLE sessions")
    conn.commit()
    conn.close()
    assert migrate.run(_plan_argv(small_db, "--components", "agent_state,sessions")) == 2
    one_line_error(capsys.readouterr().err, "Component 'sessions' not found in source")
    assert not (tmp_path / "p.toml").exists()


def test_component_dropped_after_planning_is_refused_by_execute(tmp_path, small_db, capsys):
    api.make_plan("agent_state,sessions", output="p.toml", source=small_db, target=UNREACHABLE)
    conn = sqlite3.connect(small_db)
    conn.execute("DROP TABLE sessions")
    conn.commit()
    conn.close()
    for extra in (["--dry-run"], []):
        assert migrate.run(["execute", "--plan", "p.toml", *extra]) == 2
        one_line_error(capsys.readouterr().err, "Component 'sessions' not found in source")
    assert not (tmp_path / "backups").exists()


@pytest.mark.parametrize(
    "components,needle",
    [
        ("bogus_store", f"{SUPPORTED_MSG} Got: bogus_store"),
        ("agent_state,vectors", f"{SUPPORTED_MSG} Got: vectors"),
        ("agent_states", f"{SUPPORTED_MSG} Got: agent_states"),
        ("agent_state,agent_state", "named twice"),
        (",", "No component given"),
    ],
)
def test_unsupported_component(tmp_path, small_db, components, needle, capsys):
    assert migrate.run(_plan_argv(small_db, "--components", components)) == 2
    one_line_error(capsys.readouterr().err, needle)
    assert not (tmp_path / "p.toml").exists()


@pytest.mark.parametrize(
    "option,value,needle",
    [
        ("--from", "redis", "Phase 1: Only 'sqlite' is supported as source backend"),
        ("--to", "mysql", "Only 'postgres' is supported as target backend"),
    ],
)
def test_unsupported_backend(tmp_path, small_db, option, value, needle, capsys):
    assert migrate.run(_plan_argv(small_db, option, value)) == 2
    one_line_error(capsys.readouterr().err, needle)


# -- the target -----------------------------------------------------------------------------
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "execute"])
def test_postgres_unreachable(tmp_path, small_db, dry_run, capsys):
    api.make_plan("agent_state", output="p.toml", source=small_db, target=UNREACHABLE)
    argv = ["execute", "--plan", "p.toml"] + (["--dry-run"] if dry_run else [])
    rc = migrate.run(argv)
    assert rc != 0 and rc == 2
    err = one_line_error(
        capsys.readouterr().err, "could not connect to PostgreSQL", "127.0.0.1", "nobody"
    )
    assert "\t" not in err
    assert not (tmp_path / "backups").exists()


def test_postgres_unreachable_names_the_cause(tmp_path, small_db, capsys):
    """The guide's message: `could not connect to server: Connection refused`."""
    api.make_plan("agent_state", output="p.toml", source=small_db, target=UNREACHABLE)
    assert migrate.run(["execute", "--plan", "p.toml", "--dry-run"]) == 2
    one_line_error(capsys.readouterr().err, "Connection refused")


def test_init_target_unreachable(capsys):
    assert migrate.run(["init-target", "--target", UNREACHABLE]) == 2
    one_line_error(capsys.readouterr().err, "could not connect to PostgreSQL")


def test_password_in_target_is_not_echoed_on_connection_failure(tmp_path, small_db, capsys):
    api.make_plan("agent_state", output="p.toml", source=small_db, target=UNREACHABLE)
    dsn = "postgresql://nobody:S3cretPw@127.0.0.1:1/x"
    assert migrate.run(["execute", "--plan", "p.toml", "--dry-run", "--target", dsn]) == 2
    out = capsys.readouterr()
    one_line_error(out.err, "could not connect to PostgreSQL")
    assert "S3cretPw" not in out.out + out.err


# -- --json ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "case",
    ["missing-source", "unsupported-component", "unreachable", "missing-plan", "bad-plan"],
)
def test_json_errors_parse(tmp_path, small_db, case, capsys):
    if case == "missing-source":
        argv = _plan_argv(tmp_path / "nope.db", "--json")
        needle = "SQLite database not found"
    elif case == "unsupported-component":
        argv = _plan_argv(small_db, "--components", "bogus_store", "--json")
        needle = "Got: bogus_store"
    elif case == "unreachable":
        api.make_plan("agent_state", output="p.toml", source=small_db, target=UNREACHABLE)
        argv = ["execute", "--plan", "p.toml", "--dry-run", "--json"]
        needle = "could not connect to PostgreSQL"
    elif case == "missing-plan":
        argv = ["execute", "--plan", "nope.toml", "--json"]
        needle = "Plan file not found"
    else:
        (tmp_path / "bad.toml").write_text("components:\n  - name: agent_state\n    size: 5\n")
        argv = ["execute", "--plan", "bad.toml", "--json"]
        needle = "unknown key 'components[0].size'"
    rc = migrate.run(argv)
    assert rc == 2
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert doc["status"] == "FAILED"
    assert needle in doc["error"]["message"]
    assert doc["error"]["hint"]
    assert doc["error"]["exit_code"] == 2
    assert "Traceback" not in out.err


def test_json_plan_and_dry_run_success_parse(tmp_path, small_db, target_db, capsys):
    assert migrate.run(_plan_argv(small_db, "--target", target_db.dsn, "--json")) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["plan"]["components"][0] == {
        "name": "agent_state",
        "estimated_count": 6,
        "batch_size": 500,
    }
    assert migrate.run(["execute", "--plan", "p.toml", "--dry-run", "--json"]) == 0
    out = capsys.readouterr()
    doc = json.loads(out.out)  # stdout holds only the JSON report; progress went to stderr
    assert doc["status"] == "DRY_RUN" and doc["dry_run"] is True
    assert [c["source_count"] for c in doc["preflight"]["components"]] == [6, 3, 4]
    assert "[DRY-RUN] Pre-flight validation passed" in out.err


def test_no_command_prints_help(capsys):
    assert migrate.run([]) == 2
    assert "plan" in capsys.readouterr().out


def test_bad_option_exits_2():
    with pytest.raises(SystemExit) as info:
        migrate.run(["plan", "--no-such-option"])
    assert info.value.code == 2


# -- the real command line ------------------------------------------------------------------
def test_subprocess_missing_source_and_unsupported_component(tmp_path, small_db):
    r = cli(tmp_path, *_plan_argv(tmp_path / "nope.db"))
    assert r.returncode == 2
    one_line_error(r.stderr, "SQLite database not found")
    r = cli(tmp_path, *_plan_argv(small_db, "--components", "bogus_store"))
    assert r.returncode == 2
    one_line_error(r.stderr, f"{SUPPORTED_MSG} Got: bogus_store")


def test_subprocess_unreachable_target_json(tmp_path, small_db):
    api.make_plan("agent_state", output=tmp_path / "p.toml", source=small_db, target=UNREACHABLE)
    r = cli(tmp_path, "execute", "--plan", "p.toml", "--dry-run", "--json")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    doc = json.loads(r.stdout)
    assert "could not connect to PostgreSQL" in doc["error"]["message"]


def test_subprocess_bad_source_record_with_invalid_utf8_key(tmp_path, small_db, target_db):
    """A key holding invalid UTF-8 is named in the error without crashing the printer."""
    conn = sqlite3.connect(small_db)
    conn.execute(
        "UPDATE agent_states SET agent_id = CAST(x'41ff42' AS TEXT) "
        "WHERE rowid = (SELECT min(rowid) FROM agent_states)"
    )
    conn.commit()
    conn.close()
    api.make_plan("agent_state", output=tmp_path / "p.toml", source=small_db, target=target_db.dsn)
    r = cli(tmp_path, "execute", "--plan", "p.toml", "--dry-run")
    assert r.returncode == 2
    err = one_line_error(r.stderr, "cannot be stored in PostgreSQL")
    assert "agent_id is not valid UTF-8" in r.stderr
    assert err
    r = cli(tmp_path, "execute", "--plan", "p.toml", "--json")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    details = json.loads(r.stdout)["error"]["details"]
    assert len(details) == 1 and "agent_id is not valid UTF-8" in details[0]
