"""Fault injection with a real PostgreSQL: after each fault the target is either exactly as it
was before the run (rolled back) or fully migrated and validated (resumed), and the source
file's bytes never change."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from destinations import embedded_server, target_schema
from pipelines import api, migrate
from tests.helpers import (
    ALL_PRINTS,
    BIG,
    cli,
    file_hashes,
    make_plan,
    private_pg_dir,
    sample_file,
    spawn,
    wait_for,
    with_params,
)

REPO = Path(__file__).resolve().parents[1]


def preexisting_rows(db) -> None:
    """Rows in the target before the run: another tenant, and the same tenant, other keys."""
    with db.connect(autocommit=True) as conn:
        for tenant in ("tenant-other", "tenant-acme"):
            conn.execute(
                "INSERT INTO llmspell.agent_states (tenant_id, agent_id, agent_type, state_data, "
                "checksum) VALUES (%s, 'pre-existing', 'llm', '{\"keep\": true}', %s)",
                (tenant, "0" * 64),
            )


@pytest.fixture
def big_source(tmp_path) -> Path:
    path = tmp_path / "big.db"
    sample_file(path, BIG)
    return path


def rows(db, table: str) -> int:
    return db.count(table)


def test_validation_failure_rolls_back_everything(tmp_path, sample_sqlite, target_db, capsys):
    preexisting_rows(target_db)
    before = target_db.snapshot()
    hashes = file_hashes(sample_sqlite)
    with target_db.connect(autocommit=True) as conn:  # a target that silently alters one value
        conn.execute("""
            CREATE FUNCTION llmspell.test_tamper() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.workflow_id = (SELECT min(workflow_id) FROM llmspell.workflow_states)
                THEN NEW.current_step := NEW.current_step + 1; END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER test_tamper BEFORE INSERT ON llmspell.sessions
                FOR EACH ROW EXECUTE FUNCTION llmspell.test_tamper();""")
        conn.execute("""
            CREATE OR REPLACE FUNCTION llmspell.test_tamper() RETURNS trigger LANGUAGE plpgsql
            AS $$ BEGIN NEW.artifact_count := NEW.artifact_count + 1; RETURN NEW; END $$""")
    plan = make_plan(tmp_path, sample_sqlite, target_db.dsn)
    code = migrate.run(["execute", "--plan", str(plan)])
    out = capsys.readouterr()
    assert code == 1
    assert "Validation failed" in out.out + out.err
    assert "Rolling back all components..." in out.out
    assert "Rollback complete. Source data unchanged." in out.out
    assert target_db.snapshot() == before
    assert file_hashes(sample_sqlite) == hashes
    with target_db.connect() as conn:
        assert (
            conn.execute("SELECT status FROM llmspell_migrate.runs").fetchone()[0] == "rolled_back"
        )
        assert conn.execute("SELECT count(*) FROM llmspell_migrate.written_keys").fetchone()[0] == 0
        # the sync baseline is recorded alongside validation: a failed run keeps none of it
        prints = conn.execute(f"SELECT count(*) FROM {ALL_PRINTS}").fetchone()
        assert prints[0] == 0


@pytest.mark.parametrize("as_app", [False, True], ids=["superuser", "llmspell_app"])
def test_constraint_violation_mid_batch_rolls_back(tmp_path, sample_sqlite, target_db, as_app):
    preexisting_rows(target_db)
    before = target_db.snapshot()
    with target_db.connect(autocommit=True) as conn:
        victim = (
            sqlite3.connect(sample_sqlite)
            .execute(
                "SELECT substr(agent_id, instr(agent_id, ':') + 1) FROM agent_states "
                "ORDER BY tenant_id, agent_id LIMIT 1 OFFSET 70"
            )
            .fetchone()[0]
        )
        conn.execute(
            "ALTER TABLE llmspell.agent_states ADD CONSTRAINT test_refuse "
            f"CHECK (agent_id <> '{victim}') NOT VALID"
        )
    plan = make_plan(
        tmp_path, sample_sqlite, target_db.app_dsn if as_app else target_db.dsn, batch_size=100
    )
    with pytest.raises(Exception) as err:
        api.execute(plan)
    assert "test_refuse" in str(err.value)
    assert err.value.result.rolled_back is not None
    assert target_db.snapshot() == before


def test_sigterm_mid_copy_rolls_back(tmp_path, big_source, target_db):
    preexisting_rows(target_db)
    before = target_db.snapshot()
    hashes = file_hashes(big_source)
    proc = spawn(make_plan(tmp_path, big_source, target_db.dsn, batch_size=1000), tmp_path)
    wait_for(proc, "Progress:", 2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    assert "Rollback complete. Source data unchanged." in out
    assert target_db.snapshot() == before
    assert file_hashes(big_source) == hashes


@pytest.mark.parametrize(
    "marker,count",
    [("Progress:", 1), ("[3/4] Migrating", 1)],
    ids=["first-component", "third-component"],
)
def test_sigkill_then_rerun_resumes_without_duplicates(
    tmp_path, big_source, target_db, marker, count
):
    preexisting_rows(target_db)
    hashes = file_hashes(big_source)
    plan = make_plan(tmp_path, big_source, target_db.dsn, batch_size=1000)
    proc = spawn(plan, tmp_path)
    wait_for(proc, marker, count)
    proc.kill()  # SIGKILL: no chance to roll back
    proc.wait()
    with target_db.connect() as conn:
        status, run_id = conn.execute("SELECT status, run_id FROM llmspell_migrate.runs").fetchone()
    assert status == "running"
    result = api.execute(plan)
    assert result.status == "SUCCESS" and result.resumed_run and result.run_id == run_id
    assert api.verify(plan, full=True).passed
    assert rows(target_db, "agent_states") == BIG.agents + 2  # + the two pre-existing rows
    assert rows(target_db, "workflow_states") == BIG.workflows
    assert rows(target_db, "sessions") == BIG.sessions
    assert rows(target_db, "kv_store") == BIG.kv
    assert file_hashes(big_source) == hashes
    # the resumed run owns every row it (and its crashed first attempt) wrote: rollback is exact
    undo = api.rollback(backup=result.backup_path, force=False)
    assert sum(undo.deleted.values()) == BIG.agents + BIG.workflows + BIG.sessions + BIG.kv
    assert rows(target_db, "agent_states") == 2


def test_second_run_is_refused_while_one_holds_the_lock(tmp_path, sample_sqlite, target_db, capsys):
    from destinations.run_ledger import LOCK_KEY

    plan = make_plan(tmp_path, sample_sqlite, target_db.dsn)
    before = target_db.snapshot()
    with target_db.connect() as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        code = migrate.run(["execute", "--plan", str(plan)])
    err = capsys.readouterr().err
    assert code == 3
    assert "Another migration is running against this target" in err
    assert target_db.snapshot() == before


def test_source_open_in_llmspell_is_never_modified(tmp_path, sample_sqlite, target_db):
    live = sqlite3.connect(sample_sqlite)  # llmspell has the file open, WAL not checkpointed
    live.execute("PRAGMA wal_autocheckpoint=0")
    live.execute(
        "INSERT INTO agent_states (tenant_id, agent_id, agent_type, state_data, checksum, "
        "created_at, updated_at) VALUES ('tenant-acme', 'in-wal-only', 'llm', '{}', ?, 1, 1)",
        ("0" * 64,),
    )
    live.commit()
    hashes = file_hashes(sample_sqlite)
    assert any(name.endswith("-wal") for name in hashes)
    plan = make_plan(tmp_path, sample_sqlite, target_db.dsn)
    result = api.execute(plan)
    assert result.status == "SUCCESS"
    assert any("open in llmspell" in w for w in result.preflight.warnings)
    assert file_hashes(sample_sqlite) == hashes
    with target_db.connect() as conn:  # the WAL's committed record was migrated too
        assert conn.execute(
            "SELECT 1 FROM llmspell.agent_states WHERE agent_id = 'in-wal-only'"
        ).fetchone()
    live.close()


@pytest.fixture
def own_server():
    """A PostgreSQL of this test's own, so it can be stopped mid-copy."""
    data = private_pg_dir()
    server = embedded_server.ensure_running(data)
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        target_schema.ensure_schema(conn)
    yield data, server.dsn
    embedded_server.stop(data, mode="immediate")
    shutil.rmtree(data.parent, ignore_errors=True)


@pytest.mark.skipif(
    os.environ.get("LLMSPELL_TEST_PG_DSN") is not None,
    reason="needs a server the test can stop (embedded)",
)
def test_postgres_stopped_mid_copy_then_resume(tmp_path, big_source, own_server):
    data, dsn = own_server
    plan = make_plan(tmp_path, big_source, dsn, batch_size=1000)
    proc = spawn(plan, tmp_path)
    wait_for(proc, "Progress:", 1)
    embedded_server.stop(data, mode="immediate")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    assert "Rollback could not complete" in out  # the server is gone: run stays resumable
    server = embedded_server.ensure_running(data)
    assert server.dsn == dsn or with_params(server.dsn) == with_params(dsn)
    result = api.execute(plan)
    assert result.status == "SUCCESS" and result.resumed_run
    assert api.verify(plan, full=True).passed


@pytest.mark.parametrize("run_validates", [False, True], ids=["abandoned", "committed"])
def test_sync_baseline_is_kept_only_if_the_run_validates(
    tmp_path, sample_sqlite, target_db, run_validates
):
    """execute records sync's baseline beside validation; its prints are written but stay
    uncommitted until validation decides (the test above cannot time that: its validation
    fails before the prints are written)."""
    from destinations import connection
    from pipelines.shared.plan import load as load_plan
    from pipelines.stages.sync_baseline import BaselineRecorder
    from sources.key_routing import classify_db, mappers
    from sources.sqlite_reader import SourceDB

    plan_path = make_plan(tmp_path, sample_sqlite, target_db.dsn)
    run_id = api.execute(plan_path, target=target_db.dsn).run_id
    count = f"SELECT count(*) FROM {ALL_PRINTS} WHERE run_id = %s"
    with target_db.connect() as conn:
        recorded = conn.execute(count, (run_id,)).fetchone()[0]
        conn.execute("DELETE FROM llmspell_migrate.print_batches WHERE run_id = %s", (run_id,))
    assert recorded > 0
    plan = load_plan(plan_path)
    comps = [cp.component for cp in plan.components]
    with SourceDB(sample_sqlite) as db:
        reach = classify_db(db, comps, None, plan.key_layout)
        routes = mappers(comps, plan.key_layout, {n: r.keep_verbatim for n, r in reach.items()})
        recorder = BaselineRecorder(
            str(db.read_path),
            connection.resolve(target_db.dsn),
            True,
            comps,
            None,
            routes,
            run_id,
        )
        assert recorder.written.wait(120), "the prints were never written"
        if run_validates:
            assert recorder.commit() == recorded
        else:
            recorder.abandon()
    with target_db.connect() as conn:
        kept = conn.execute(count, (run_id,)).fetchone()[0]
    assert kept == (recorded if run_validates else 0)


class Lines:
    """A child's merged output, read in a thread, so a test can wait for a line with a
    deadline even while the child prints nothing (blocked)."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.seen: list[str] = []
        self._new = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._new:
                self.seen.append(line)
                self._new.notify_all()
        with self._new:
            self.seen.append("")  # end of output
            self._new.notify_all()

    def wait(self, found, timeout: float = 120) -> str:
        """The first line `found(line)` accepts; AssertionError if the output ends first or
        none comes within `timeout` (a safety net for a child that hangs)."""
        at = 0
        with self._new:
            while True:
                for line in self.seen[at:]:
                    if line == "":
                        raise AssertionError("output ended:\n" + "".join(self.seen))
                    if found(line):
                        return line
                at = len(self.seen)
                if not self._new.wait(timeout):
                    raise AssertionError("no such line in time:\n" + "".join(self.seen))

    def text(self) -> str:
        self._reader.join()
        return "".join(self.seen)


def progress_event(stage: str, component: str | None = None, finished: bool | None = None):
    def found(line: str) -> bool:
        if not line.startswith("{"):
            return False
        event = json.loads(line)
        return (
            event.get("event") == "progress"
            and event.get("stage") == stage
            and (component is None or event.get("component") == component)
            and (finished is None or event.get("finished") == finished)
        )

    return found


@contextmanager
def held_in_validation(proc: subprocess.Popen, lines: Lines, target_db):
    """Once `proc` reports validation, kv_store is locked (validation reaches it last), so
    the run waits inside a PostgreSQL query; yields the lock's connection, and kills `proc`
    if the block leaves it running."""
    locker = target_db.connect()
    try:
        lines.wait(progress_event("validation"))
        locker.execute("LOCK TABLE llmspell.kv_store IN ACCESS EXCLUSIVE MODE")
        yield locker
    finally:
        locker.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_one_signal_during_validation_stops_a_blocked_query(tmp_path, big_source, target_db, sig):
    """Validation runs inside dlt's load (the destination's complete_load), where dlt's own
    handler only sets a flag: one signal must still stop it, even in a query PostgreSQL
    holds (here: waiting for a lock on kv_store, which validation reaches last)."""
    preexisting_rows(target_db)
    before = target_db.snapshot()
    plan = make_plan(tmp_path, big_source, target_db.dsn, batch_size=1000)
    proc = spawn(plan, tmp_path, "--log-format", "json")
    lines = Lines(proc)
    with held_in_validation(proc, lines, target_db) as locker:
        proc.send_signal(sig)
        # Rollback deletes from kv_store too: the lock goes once the run gave up validating.
        lines.wait(lambda line: "Rolling back all components" in line)
        locker.rollback()
        code = proc.wait(timeout=120)
    out = lines.text()
    assert code == 1, out
    assert "Migration interrupted" in out
    assert "Rollback complete. Source data unchanged." in out
    assert "Status: SUCCESS" not in out
    assert target_db.snapshot() == before
    with target_db.connect() as conn:
        assert conn.execute("SELECT status FROM llmspell_migrate.runs").fetchall() == [
            ("rolled_back",)
        ]


def test_two_runs_from_one_folder_second_refused(
    tmp_path, big_source, sample_sqlite, target_db, other_target_db
):
    """Two runs from one working folder against two targets would share dlt's working
    folder (and delete each other's load packages): the second is refused with exit 3,
    naming the first, and the first completes."""
    plan_a = tmp_path / "a.toml"
    api.make_plan("agent_state,kv_store", output=plan_a, source=big_source, target=target_db.dsn)
    plan_b = tmp_path / "b.toml"
    api.make_plan("agent_state", output=plan_b, source=sample_sqlite, target=other_target_db.dsn)
    first = spawn(plan_a, tmp_path, "--log-format", "json")
    lines = Lines(first)
    # the first run is held in its validation while the second starts
    with held_in_validation(first, lines, target_db) as locker:
        second = cli(tmp_path, "execute", "--plan", plan_b, timeout=120)
        locker.rollback()
        code = first.wait(timeout=120)
    out = lines.text()
    assert code == 0, out
    assert "FileNotFoundError" not in out
    assert second.returncode == 3, second.stdout + second.stderr
    assert f"Another migration is running from this working folder (pid {first.pid}" in (
        second.stderr
    )
    assert other_target_db.count("agent_states") == 0
    # the folder is free again: the second plan runs
    again = cli(tmp_path, "execute", "--plan", plan_b)
    assert again.returncode == 0, again.stdout + again.stderr
    assert other_target_db.count("agent_states") > 0
