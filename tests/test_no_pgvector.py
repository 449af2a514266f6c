"""A PostgreSQL server without pgvector: init-target, execute --dry-run and execute say what
is missing (the `vector` extension llmspell's V3 migration needs) and what to install, while
a plan without memory components still runs on an llmspell schema without the vector tables.

The embedded server ships pgvector, so the server without it is the machine's own PostgreSQL
(any `/usr/lib/postgresql/<N>/bin`, or `pg_ctl` on PATH), started in a private data folder
of its own (the installation is not touched); the tests skip where there is none, or where
it has pgvector. The server's answer itself (`vector_support`) is checked on the embedded
server, and the decision (`pgvector_problem`) for every answer."""

from __future__ import annotations

import glob
import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest

from destinations import target_schema
from destinations.target_schema import VectorSupport, pgvector_problem, vector_support
from pipelines import api
from sources.memory_sample import MemorySpec
from sources.sample_db import SampleSpec
from tests.helpers import run_cli, sample_file, with_params

SPEC = SampleSpec(
    agents=30,
    workflows=8,
    sessions=8,
    kv=10,
    tenants=2,
    seed=5,
    memory=MemorySpec(vectors={384: 4}, entities=3, relationships=3, patterns=3),
)
PLAIN = "agent_state,workflow_state,sessions,kv_store"


def _bin_dirs() -> list[Path]:
    dirs = [Path(d) for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    found = shutil.which("pg_ctl")
    if found:
        dirs.append(Path(os.path.realpath(found)).parent)
    return [d for d in dirs if (d / "initdb").exists() and (d / "pg_ctl").exists()]


@pytest.fixture(scope="module")
def no_pgvector_dsn():
    """A superuser DSN (database `postgres`) of a real server whose installation has no
    pgvector: the system's PostgreSQL in a temporary data folder, Unix socket only."""
    dirs = _bin_dirs()
    if not dirs:
        pytest.skip("no system PostgreSQL to stand in for a server without pgvector")
    bindir = dirs[0]
    user = None
    root = Path(tempfile.mkdtemp(prefix="llmspell-migrate-test-novector-"))
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            pytest.skip("running as root and no `postgres` user to run PostgreSQL as")
        user = "postgres"
        os.chown(root, account.pw_uid, account.pw_gid)
    data = root / "data"

    def run(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True, user=user, cwd=root)

    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust")
    opts = f"-c listen_addresses='' -c unix_socket_directories={root} -p 5432"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start")
    dsn = f"host={root} port=5432 user=postgres dbname=postgres"
    try:
        with psycopg.connect(dsn) as conn:
            if vector_support(conn).available:
                pytest.skip(f"the system PostgreSQL in {bindir} has pgvector")
        yield dsn
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def bare_db(no_pgvector_dsn):
    """A fresh database on the server without pgvector."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(no_pgvector_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield with_params(no_pgvector_dsn, dbname=name)
    with psycopg.connect(no_pgvector_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pre_v3_db(bare_db):
    """llmspell's schema without its vector tables (as before upstream's V3)."""
    with psycopg.connect(bare_db, autocommit=True) as conn:
        target_schema.ensure_schema(conn, with_vector_tables=False)
    return bare_db


def pgvector_error(err: str) -> None:
    """One ERROR line naming the extension and why llmspell needs it; one fix line saying
    what to install and run."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 2, lines
    error, fix = lines
    assert error.startswith("ERROR: ") and "internal error" not in error, error
    assert 'pgvector extension ("vector")' in error and "V3 migration" in error, error
    assert fix.startswith("  → Solution: "), fix
    assert re.search(r"postgresql-\d+-pgvector", fix), fix
    assert "CREATE EXTENSION vector" in fix and "superuser" in fix, fix


def test_init_target_names_pgvector_and_writes_nothing(bare_db, capsys):
    code, out, err = run_cli(capsys, "init-target", "--target", bare_db)
    assert code == 2, (out, err)
    pgvector_error(err)
    assert "init-target again" in err
    with psycopg.connect(bare_db) as conn:
        assert conn.execute("SELECT to_regnamespace('llmspell')").fetchone() == (None,)
    code, out, _ = run_cli(capsys, "init-target", "--target", bare_db, "--json")
    doc = json.loads(out)
    assert code == 2 and doc["error"]["error"] == "TargetError"
    assert "pgvector" in doc["error"]["message"] and "pgvector" in doc["error"]["hint"]


def test_memory_plan_is_refused_with_what_to_install(tmp_path, pre_v3_db, capsys):
    src = tmp_path / "llmspell.db"
    sample_file(src, SPEC)
    plan = tmp_path / "plan.toml"
    api.make_plan(f"{PLAIN},episodic_memory", output=plan, source=src, target=pre_v3_db)
    for dry in (["--dry-run"], []):
        code, out, err = run_cli(capsys, "execute", "--plan", str(plan), *dry)
        assert code == 2, (dry, out, err)
        pgvector_error(err)
    with psycopg.connect(pre_v3_db) as conn:
        assert conn.execute("SELECT count(*) FROM llmspell.agent_states").fetchone() == (0,)
    assert not (tmp_path / "backups").exists()


def test_a_plan_without_memory_still_runs(tmp_path, pre_v3_db, capsys):
    src = tmp_path / "llmspell.db"
    counts = sample_file(src, SPEC)
    plan = tmp_path / "plan.toml"
    api.make_plan(PLAIN, output=plan, source=src, target=pre_v3_db)
    code, out, err = run_cli(capsys, "execute", "--plan", str(plan), "--dry-run")
    assert code == 0, (out, err)
    code, out, err = run_cli(capsys, "execute", "--plan", str(plan), "--json")
    assert code == 0, (out, err)
    assert json.loads(out)["status"] == "SUCCESS"
    with psycopg.connect(pre_v3_db) as conn:
        n = conn.execute("SELECT count(*) FROM llmspell.agent_states").fetchone()[0]
    assert n == counts["agent_state"] > 0


# -- the server's answer (embedded server: it ships pgvector) and the decision -------------
def test_vector_support_is_the_servers_answer(target_db, empty_db):
    with target_db.connect() as conn:  # the schema's database: extension created
        support = vector_support(conn)
    assert support.available and support.installed and support.database == target_db.name
    assert pgvector_problem(support) is None
    with empty_db.connect() as conn:
        support = vector_support(conn)
    assert support.available and not support.installed and support.server_major >= 13


def test_missing_extension_on_a_server_that_has_it(tmp_path, target_db, capsys):
    """pgvector on the server but not in the database (the vector tables are gone): the
    memory plan says to create the extension, not to install anything."""
    src = tmp_path / "llmspell.db"
    sample_file(src, SPEC)
    with target_db.connect(autocommit=True) as conn:
        for table in target_schema.vector_tables():
            conn.execute(f"DROP TABLE llmspell.{table}")
        conn.execute("DROP EXTENSION vector")
    plan = tmp_path / "plan.toml"
    api.make_plan(f"{PLAIN},episodic_memory", output=plan, source=src, target=target_db.dsn)
    code, _, err = run_cli(capsys, "execute", "--plan", str(plan), "--dry-run")
    assert code == 2
    assert "is not created in database" in err and "CREATE EXTENSION vector" in err, err
    assert "install" not in err.lower(), err


@pytest.mark.parametrize(
    "available, installed, expect",
    [
        (True, True, None),
        (False, True, None),  # created earlier; its files since removed: the tables stand
        (True, False, "CREATE EXTENSION vector; in database db1"),
        (False, False, "postgresql-17-pgvector"),
    ],
)
def test_pgvector_problem_for_every_answer(available, installed, expect):
    problem = pgvector_problem(VectorSupport(available, installed, 17, "db1"))
    if expect is None:
        assert problem is None
    else:
        assert problem.exit_code == 2 and expect in problem.hint
        assert "V3 migration" in problem.message
