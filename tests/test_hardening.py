"""Bad input on purpose, as a new user tries it (issue 10): each case names what it guards.

Every case runs the real CLI entry (`migrate.run`, or a subprocess where a signal or the
process's own exit matters) against a real SQLite file and a real PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from core import settings
from sources.sample_db import SampleSpec
from sources.sqlite_reader import SourceDB
from tests.helpers import (
    BIG,
    SMALL,
    file_hashes,
    make_plan,
    one_line_error,
    run_cli,
    sample_file,
    spawn,
    wait_for,
)

SECRET = "s3cr3t-pw"
MEDIUM = SampleSpec(agents=60, workflows=20, sessions=20, kv=20, tenants=2, seed=4)


@pytest.fixture
def src(tmp_path) -> Path:
    path = tmp_path / "llmspell.db"
    sample_file(path, MEDIUM)
    return path


# -- 1. plan --output never destroys the source ---------------------------------------------
@pytest.mark.parametrize("how", ["same-path", "symlink", "hardlink", "wal-file"])
def test_plan_output_refuses_the_source(tmp_path, src, capsys, how):
    output = {
        "same-path": src,
        "symlink": tmp_path / "link.db",
        "hardlink": tmp_path / "hard.db",
        "wal-file": Path(f"{src}-wal"),
    }[how]
    if how == "symlink":
        output.symlink_to(src)
    if how == "hardlink":
        os.link(src, output)
    hashes = file_hashes(src)
    code, _, err = run_cli(capsys, "plan", "--components", "agent_state", "--source", str(src),
                           "--output", str(output), "--force")  # fmt: skip
    assert code == 2
    one_line_error(err, "source database")
    assert file_hashes(src) == hashes


def test_plan_output_keeps_a_file_that_is_not_a_plan(tmp_path, src, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    argv = [
        "plan",
        "--components",
        "agent_state",
        "--source",
        str(src),
        "-o",
        str(notes),
        "--target",
        "postgresql://nobody@127.0.0.1:1/x",
    ]  # fmt: skip  (no embedded server)
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    one_line_error(err, "is not a migration plan")
    assert notes.read_text() == "my notes\n"
    code, _, _ = run_cli(capsys, *argv, "--force")
    assert code == 0
    assert "components" in yaml.safe_load(notes.read_text())
    code, _, _ = run_cli(capsys, *argv)  # now it is a plan: re-planning replaces it
    assert code == 0


@pytest.mark.parametrize("where", ["folder", "missing-folder"])
def test_plan_output_bad_place_is_exit_2_and_leaves_nothing(tmp_path, src, capsys, where):
    folder = tmp_path / "out"
    folder.mkdir()
    output = folder if where == "folder" else tmp_path / "nope" / "dir" / "p.toml"
    code, _, err = run_cli(capsys, "plan", "--components", "agent_state", "--source", str(src),
                           "-o", str(output))  # fmt: skip
    assert code == 2
    one_line_error(err, str(output))
    assert list(folder.iterdir()) == []
    assert not list(tmp_path.glob(".*.tmp"))


# -- 2. private files -----------------------------------------------------------------------
def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*")}


def test_backups_and_dlt_files_are_private_whatever_the_umask(tmp_path, src, target_db, capsys):
    plan = make_plan(tmp_path, src, target_db.dsn)
    old = os.umask(0)
    try:
        code, out, _ = run_cli(capsys, "execute", "--plan", str(plan))
    finally:
        os.umask(old)
    assert code == 0, out
    backups = tmp_path / "backups"
    for root in (backups, settings.pipelines_dir()):
        modes = _modes(root)
        assert modes, root
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        loose = {p: oct(m) for p, m in modes.items() if m & 0o077}
        assert not loose, f"{root}: {loose}"
    files = [p for p in backups.rglob("*") if p.is_file()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)


def test_snapshot_of_a_live_database_is_private(tmp_path, src):
    live = sqlite3.connect(src)  # llmspell has it open: a -wal and -shm exist
    live.execute("PRAGMA journal_mode=WAL")
    live.execute("INSERT INTO kv_store (tenant_id, key, value, created_at, updated_at) "
                 "VALUES ('t', 'k-live', x'00', 1, 1)")  # fmt: skip
    live.commit()
    old = os.umask(0)
    try:
        with SourceDB(src) as db:
            assert db.live
            snap = db.read_path
            assert stat.S_IMODE(snap.parent.stat().st_mode) == 0o700
            for p in snap.parent.iterdir():
                assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, p
    finally:
        os.umask(old)
        live.close()


# -- 3. a hot rollback journal ------------------------------------------------------------------
def _die_mid_transaction(path: Path, rows: int) -> None:
    """A writer that inserts `rows` agent states in one transaction, spills them into the
    database file, and dies (os._exit) without committing: a hot journal is left behind."""
    code = f"""
import os, sqlite3
c = sqlite3.connect({str(path)!r}, isolation_level=None)
c.execute("PRAGMA cache_size=5")
c.execute("BEGIN")
for i in range({rows}):
    c.execute("INSERT INTO agent_states (state_id, tenant_id, agent_id, agent_type, state_data,"
              " schema_version, data_version, checksum, created_at, updated_at) VALUES"
              " (lower(hex(randomblob(16))), 'tenant-uncommitted', 'ghost-' || ?, 'x',"
              " json_object('pad', hex(randomblob(400))), 1, 1, 'c', 1, 1)", (i,))
os._exit(0)
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    journal = Path(f"{path}-journal")
    assert journal.exists() and journal.stat().st_size > 0


@pytest.mark.parametrize("rows", [5, 3000], ids=["small-transaction", "spilled-transaction"])
def test_hot_journal_is_rolled_back_in_the_snapshot(tmp_path, target_db, capsys, rows):
    path = tmp_path / "journal.db"
    sample_file(path, MEDIUM)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
    committed = sqlite3.connect(path).execute("SELECT count(*) FROM agent_states").fetchone()[0]
    _die_mid_transaction(path, rows)
    hashes = file_hashes(path)
    plan = make_plan(tmp_path, path, target_db.dsn)
    code, out, err = run_cli(capsys, "execute", "--plan", str(plan))
    assert code == 0, out + err
    assert "hot rollback journal" in out
    assert target_db.count("agent_states") == committed
    with target_db.connect() as conn:
        ghosts = conn.execute(
            "SELECT count(*) FROM llmspell.agent_states WHERE tenant_id = 'tenant-uncommitted'"
        ).fetchone()[0]
    assert ghosts == 0
    assert file_hashes(path) == hashes  # the journal was not replayed into the source


# -- 4. passwords never leave the process -----------------------------------------------------
@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://u@localhost/db?password={SECRET}",
        f"POSTGRESQL://u:{SECRET}@localhost/db",
        f"Postgres://u:{SECRET}@localhost/db?sslmode=disable",
    ],
    ids=["query-password", "upper-case-scheme", "mixed-case-scheme"],
)
def test_password_in_dsn_never_reaches_the_plan(tmp_path, src, capsys, dsn):
    plan = tmp_path / "p.toml"
    code, out, err = run_cli(capsys, "plan", "--components", "agent_state", "--source", str(src),
                             "--target", dsn, "-o", str(plan))  # fmt: skip
    assert code == 0, err
    assert SECRET not in plan.read_text() + out + err
    assert yaml.safe_load(plan.read_text())["target"]["connection"].startswith("postgres")


@pytest.mark.parametrize(
    "dsn",
    [
        f"mysql://root:{SECRET}@localhost/db",
        f"host=localhost password={SECRET} dbname",
        f"host=localhost password='{SECRET} dbname=x",
    ],
    ids=["other-scheme", "malformed-keywords", "unterminated-quote"],
)
@pytest.mark.parametrize("via", ["--target", "env", "plan"])
def test_bad_dsn_is_a_one_line_exit_2_without_the_password(tmp_path, src, capsys, monkeypatch,
                                                           dsn, via):  # fmt: skip
    plan = tmp_path / "p.toml"
    assert run_cli(capsys, "plan", "--components", "agent_state", "--source", str(src),
                   "--target", "postgresql://u@127.0.0.1:1/x", "-o", str(plan))[0] == 0  # fmt: skip
    argv = ["execute", "--plan", str(plan), "--dry-run"]
    if via == "--target":
        argv += ["--target", dsn]
    elif via == "env":
        doc = yaml.safe_load(plan.read_text())
        del doc["target"]["connection"]
        plan.write_text(yaml.safe_dump(doc))
        monkeypatch.setenv("LLMSPELL_MIGRATE_TARGET", dsn)
    else:
        doc = yaml.safe_load(plan.read_text())
        doc["target"]["connection"] = dsn
        plan.write_text(yaml.safe_dump(doc))
    for extra in ([], ["--json"]):
        code, out, err = run_cli(capsys, *argv, *extra)
        assert code == 2
        assert SECRET not in out + err
        if not extra:
            one_line_error(err)


# -- 5. dry-run checks where the backup goes ------------------------------------------------------
@pytest.fixture
def tiny_mount(tmp_path):
    """Mount a small tmpfs (read-only or nearly full) where the machine lets us."""
    mounted = []

    def mount(options: str) -> Path:
        where = tmp_path / f"mnt{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                              capture_output=True)  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], check=False)


@pytest.mark.parametrize("where", ["under-a-file", "read-only-filesystem", "full-disk"])
def test_unwritable_backup_location_is_refused_before_writing(tmp_path, src, target_db, capsys,
                                                              tiny_mount, where):  # fmt: skip
    if where == "under-a-file":
        blocker = tmp_path / "a-file"
        blocker.write_text("x")
        backup_path, needle = blocker / "backups", "not a folder"
    elif where == "read-only-filesystem":
        backup_path, needle = tiny_mount("ro,size=1m") / "backups", "read-only"
    else:
        backup_path, needle = tiny_mount("size=16k") / "backups", "not enough disk space"
    plan = make_plan(tmp_path, src, target_db.dsn)
    doc = yaml.safe_load(plan.read_text())
    doc["rollback"]["backup_path"] = str(backup_path)
    plan.write_text(yaml.safe_dump(doc))
    for dry in (["--dry-run"], []):
        code, out, err = run_cli(capsys, "execute", "--plan", str(plan), *dry)
        assert code == 2, out
        one_line_error(err, "backup", needle)
        assert "Ready for actual migration" not in out
    assert target_db.count("agent_states") == 0
    assert not backup_path.exists()


# -- 6. tenants ---------------------------------------------------------------------------------
def test_unknown_tenant_is_exit_2_naming_the_real_ones(tmp_path, src, target_db, capsys):
    plan = make_plan(tmp_path, src, target_db.dsn)
    for argv in (
        ["execute", "--plan", str(plan), "--tenant", "tenant-typo"],
        ["execute", "--plan", str(plan), "--dry-run", "--tenant", "tenant-typo"],
        ["verify", "--plan", str(plan), "--tenant", "tenant-typo"],
        ["validate", "--backend", "sqlite", "--source", str(src), "--tenant", "tenant-typo"],
        ["validate", "--backend", "postgres", "--target", target_db.dsn, "--tenant", "typo"],
    ):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2, argv
        line = one_line_error(err, "unknown tenant")
        assert "typo" in line
        if argv[0] != "validate" or argv[2] == "sqlite":
            assert "tenant-acme" in err  # the tenants that exist are named
    assert target_db.count("agent_states") == 0
    assert not (tmp_path / "backups").exists()


def test_verify_and_validate_honour_tenant(tmp_path, src, target_db, capsys):
    plan = make_plan(tmp_path, src, target_db.dsn)
    assert run_cli(capsys, "execute", "--plan", str(plan), "--tenant", "tenant-acme")[0] == 0
    per_tenant = dict(
        sqlite3.connect(src).execute("SELECT tenant_id, count(*) FROM agent_states GROUP BY 1")
    )
    code, out, _ = run_cli(capsys, "verify", "--plan", str(plan), "--tenant", "tenant-acme",
                           "--json")  # fmt: skip
    assert code == 0  # the other tenant was not migrated, and verify does not look at it
    agent = next(c for c in json.loads(out)["components"] if c["component"] == "agent_state")
    assert agent["source_count"] == agent["target_count"] == per_tenant["tenant-acme"]
    code, out, _ = run_cli(capsys, "verify", "--plan", str(plan), "--json")
    assert code == 1  # without --tenant the missing tenant shows
    one = ["--components", "agent_state", "--json", "--tenant"]
    code, out, _ = run_cli(capsys, "validate", "--backend", "sqlite", "--source", str(src), *one,
                           "tenant-globex")  # fmt: skip
    comp = json.loads(out)["components"][0]
    assert comp["per_tenant"] == {"tenant-globex": per_tenant["tenant-globex"]}
    code, out, _ = run_cli(capsys, "validate", "--backend", "postgres", "--target", target_db.dsn,
                           *one, "tenant-acme")  # fmt: skip
    assert json.loads(out)["components"][0]["per_tenant"] == {
        "tenant-acme": per_tenant["tenant-acme"]
    }


# -- 7. exit 2, not a traceback -------------------------------------------------------------
@pytest.mark.parametrize("mode", ["execute", "dry-run"])
@pytest.mark.parametrize(
    "workers", ["0", "-3", "33", "abc-env", "0-env", "-1-env", "33-env", "1.5-env", "two-env"]
)
def test_bad_workers_refused_before_any_backup(tmp_path, src, target_db, capsys, monkeypatch,
                                               workers, mode):  # fmt: skip
    plan = make_plan(tmp_path, src, target_db.dsn)
    argv = ["execute", "--plan", str(plan)] + (["--dry-run"] if mode == "dry-run" else [])
    if workers.endswith("-env"):
        monkeypatch.setenv("LLMSPELL_MIGRATE_WORKERS", workers.removesuffix("-env"))
    else:
        argv += ["--workers", workers]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    one_line_error(err, "LLMSPELL_MIGRATE_WORKERS" if workers.endswith("-env") else "--workers")
    assert not (tmp_path / "backups").exists()
    assert target_db.count("agent_states") == 0


def test_more_workers_than_the_server_allows_is_refused(tmp_path, src, target_db, capsys):
    plan = make_plan(tmp_path, src, target_db.dsn)
    held = []  # other clients take the server's connections until 4 are left
    try:
        while True:
            with target_db.connect(autocommit=True) as probe:
                free = probe.execute(
                    "SELECT current_setting('max_connections')::int"
                    " - current_setting('superuser_reserved_connections')::int"
                    " - (SELECT count(*) FROM pg_stat_activity"
                    "    WHERE backend_type = 'client backend')"
                ).fetchone()[0]
            if free <= 5 or len(held) > 500:
                break
            held.append(target_db.connect(autocommit=True))
        dry = run_cli(capsys, "execute", "--plan", str(plan), "--workers", "8", "--dry-run")
        code, _, err = run_cli(capsys, "execute", "--plan", str(plan), "--workers", "8")
    finally:
        for conn in held:
            conn.close()
    assert code == 2
    one_line_error(err, "--workers 8", "free")
    assert dry[0] == 2  # the dry-run checks what execute would need
    one_line_error(dry[2], "--workers 8", "free")
    assert not (tmp_path / "backups").exists()


@pytest.mark.parametrize("damage", ["garbage-page", "truncated"])
def test_corrupted_source_is_exit_2(tmp_path, target_db, capsys, damage):
    path = tmp_path / "corrupt.db"
    sample_file(path, BIG)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    plan = make_plan(tmp_path, path, target_db.dsn, batch_size=1000)
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        start = len(data) // 2 // 4096 * 4096
        data[start : start + 4096 * 8] = os.urandom(4096 * 8)
    path.write_bytes(bytes(data))
    hashes = file_hashes(path)
    for dry in (["--dry-run"], []):
        code, out, err = run_cli(capsys, "execute", "--plan", str(plan), *dry)
        assert code == 2, out + err
        one_line_error(err)
    assert target_db.count("agent_states") == 0
    assert file_hashes(path) == hashes


# -- 8. Ctrl-C ----------------------------------------------------------------------------------
def test_ctrl_c_mid_copy_is_the_friendly_message(tmp_path, target_db):
    big = tmp_path / "big.db"
    sample_file(big, BIG)
    proc = spawn(make_plan(tmp_path, big, target_db.dsn, batch_size=1000), tmp_path)
    wait_for(proc, "Progress:", 2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    assert "Traceback" not in out
    assert "Migration interrupted" in out
    assert "Rollback complete. Source data unchanged." in out
    assert target_db.count("agent_states") == 0


# -- 9. reports that tell the truth ---------------------------------------------------------------
def test_dry_run_reports_the_real_source_count(tmp_path, src, target_db, capsys):
    plan = make_plan(tmp_path, src, target_db.dsn)
    total = sum(
        sqlite3.connect(src).execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("agent_states", "workflow_states", "sessions", "kv_store")
    )
    code, out, _ = run_cli(capsys, "execute", "--plan", str(plan), "--dry-run")
    assert code == 0
    assert f"Source Records: {total} (would migrate {total}, 0 already in target)" in out
    assert "Source Records: 0" not in out


def test_failed_run_reports_what_it_rolled_back_not_a_throughput(tmp_path, src, target_db,
                                                                 capsys):  # fmt: skip
    with target_db.connect(autocommit=True) as conn:  # the last agent row is refused
        conn.execute(
            "ALTER TABLE llmspell.agent_states ADD CONSTRAINT test_refuse "
            f"CHECK (agent_id <> {_literal(_last_agent(src))})"
        )
    plan = make_plan(tmp_path, src, target_db.dsn)
    code, out, err = run_cli(capsys, "execute", "--plan", str(plan))
    assert code == 1
    report = out[out.index("Migration Report") :]
    assert "Records/sec" not in report and "Written:" not in report
    assert "Rolled back:" in report
    assert target_db.count("agent_states") == 0


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _last_agent(src: Path) -> str:
    return (
        sqlite3.connect(src)
        .execute(  # the agent_id the llmspell key layout writes for it
            "SELECT substr(agent_id, instr(agent_id, ':') + 1) FROM agent_states "
            "ORDER BY tenant_id DESC, agent_id DESC LIMIT 1"
        )
        .fetchone()[0]
    )


def test_sampled_verify_says_it_checked_a_sample(tmp_path, target_db, capsys):
    path = tmp_path / "llmspell.db"
    sample_file(path, SMALL)
    plan = make_plan(tmp_path, path, target_db.dsn)
    assert run_cli(capsys, "execute", "--plan", str(plan))[0] == 0
    code, out, _ = run_cli(capsys, "verify", "--plan", str(plan))
    assert code == 0
    agent = out[out.index("Component: agent_state") :]
    line = next(ln for ln in agent.splitlines() if "Semantic validation" in ln)
    assert "sampled records" in line, line


def test_preflight_failure_prints_no_run_id(tmp_path, src, target_db, capsys):
    first = (
        sqlite3.connect(src)
        .execute(  # the agent_id the llmspell key layout writes for it
            "SELECT tenant_id, substr(agent_id, instr(agent_id, ':') + 1) FROM agent_states LIMIT 1"
        )
        .fetchone()
    )
    with target_db.connect(autocommit=True) as conn:  # a different row under the same key
        conn.execute(
            "INSERT INTO llmspell.agent_states (tenant_id, agent_id, agent_type, state_data, "
            "checksum) VALUES (%s, %s, 'x', '{\"other\": 1}', 'c')",
            first,
        )
    plan = make_plan(tmp_path, src, target_db.dsn)
    code, out, err = run_cli(capsys, "execute", "--plan", str(plan), "--json")
    assert code == 2
    assert json.loads(out)["run_id"] is None
    code, out, err = run_cli(capsys, "execute", "--plan", str(plan))
    assert code == 2
    assert "Run:" not in out + err


def test_json_log_lines_go_to_stderr(tmp_path, src, target_db, capsys):
    plan = make_plan(tmp_path, src, target_db.dsn)
    code, out, err = run_cli(capsys, "execute", "--plan", str(plan), "--log-format", "json")
    assert code == 0
    assert "Migration Report" in out
    assert '"time"' not in out
    logs = [json.loads(ln) for ln in err.splitlines() if ln.strip()]
    assert logs and all({"time", "level", "message"} <= set(d) for d in logs)


# -- 10. leftovers ------------------------------------------------------------------------------
def _our_scratch() -> set[str]:
    root = Path(tempfile.gettempdir())
    return {p.name for p in root.glob(f"llmspell-migrate-*-{os.getpid()}-*")}


def test_runs_leave_no_scratch_and_crashes_are_swept(tmp_path, src, target_db, capsys):
    before = _our_scratch()
    plan = make_plan(tmp_path, src, target_db.dsn)
    assert run_cli(capsys, "execute", "--plan", str(plan), "--dry-run")[0] == 0
    assert run_cli(capsys, "execute", "--plan", str(plan))[0] == 0
    assert run_cli(capsys, "verify", "--plan", str(plan))[0] == 0
    assert _our_scratch() == before
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = Path(tempfile.gettempdir()) / f"llmspell-migrate-src-{dead.pid}-crashed"
    left.mkdir()
    (left / "source.db").write_bytes(b"x")
    with SourceDB(src):
        pass
    assert not left.exists()


def test_rerun_of_a_migrated_plan_takes_no_new_backup(tmp_path, src, target_db, capsys):
    plan = make_plan(tmp_path, src, target_db.dsn)
    assert run_cli(capsys, "execute", "--plan", str(plan))[0] == 0
    code, out, _ = run_cli(capsys, "execute", "--plan", str(plan))
    assert code == 0
    assert "no backup taken" in out
    assert len([p for p in (tmp_path / "backups").iterdir()]) == 1


def test_duplicate_key_in_plan_is_refused(tmp_path, src, target_db, capsys):
    plan = make_plan(tmp_path, src, target_db.dsn)
    text = plan.read_text().replace(
        "validation:\n", "validation:\n  checksum_sample_percent: 100\n", 1
    )
    plan.write_text(text)
    code, _, err = run_cli(capsys, "execute", "--plan", str(plan), "--dry-run")
    assert code == 2
    one_line_error(err, "checksum_sample_percent", "twice")
