"""What the tests share, in one place: target databases (cloned from one schema template per
worker), sample SQLite files, and the ways a test plans, runs the CLI and reads its errors.

Fixtures live in conftest.py and use these; test files import from here."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from destinations import target_schema
from pipelines import api, migrate
from sources.sample_db import SampleSpec, generate
from tests.llmspell_writes import SESSION, SqliteBackend

REPO = Path(__file__).resolve().parents[1]
FOUR = "agent_state,workflow_state,sessions,kv_store"
# Every stored print, whichever table holds it: a sync's (`record_prints`, a row a key) and
# an execute's baseline (`print_batches`, a row per batch of keys): FROM {ALL_PRINTS}
ALL_PRINTS = (
    "(SELECT run_id, component, tenant_id, nkey, source_fp, target_fp "
    "FROM llmspell_migrate.record_prints UNION ALL SELECT b.run_id, b.component, b.tenant_id, "
    "u.nkey, u.source_fp, u.target_fp FROM llmspell_migrate.print_batches b, "
    "unnest(b.nkeys, b.source_fps, b.target_fps) AS u(nkey, source_fp, target_fp)) AS prints"
)


def with_params(dsn: str, **params) -> str:
    base = conninfo_to_dict(dsn)
    base.update(params)
    return make_conninfo(**base)


def private_pg_dir() -> Path:
    """A data folder for an embedded server outside pytest's tmp tree: pytest makes its
    folders private (0700) at each session start, which would lock the server's own user out
    of a data folder kept there."""
    return Path(tempfile.mkdtemp(prefix="llmspell-migrate-test-pg-")) / "data"


# -- target databases -----------------------------------------------------------------------
@dataclass
class TargetDB:
    name: str
    dsn: str  # superuser (bypasses RLS)
    app_dsn: str  # the same database as llmspell_app (subject to RLS)

    def connect(self, app: bool = False, **kw) -> psycopg.Connection:
        return psycopg.connect(self.app_dsn if app else self.dsn, **kw)

    def snapshot(self) -> dict[str, list[tuple]]:
        """Every llmspell row, for before/after comparisons."""
        out = {}
        with self.connect() as conn:
            for table in ("agent_states", "workflow_states", "sessions", "kv_store"):
                rows = conn.execute(f"SELECT * FROM llmspell.{table} ORDER BY 1, 2, 3").fetchall()
                out[table] = rows
        return out

    def count(self, table: str) -> int:
        with self.connect() as conn:
            return conn.execute(f"SELECT count(*) FROM llmspell.{table}").fetchone()[0]


# One template per server and worker process, built on first use: `ensure_schema` into a
# database nobody may connect to afterwards (ALLOW_CONNECTIONS false), so every clone is the
# schema exactly as `ensure_schema` leaves it on a fresh database — tables, triggers, forced
# RLS, policies, the grants to llmspell_app (per-database ACLs, copied with the catalog) and
# sequences that never advanced. llmspell_app itself is a cluster-wide role, created once by
# the template's `ensure_schema` as it was by the first test before. Tests of
# `ensure_schema` itself use `empty_db` and build the schema on their own.
_TEMPLATES: dict[str, str] = {}


def _schema_template(admin_dsn: str) -> str:
    if admin_dsn not in _TEMPLATES:
        name = f"t_template_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(with_params(admin_dsn, dbname=name), autocommit=True) as conn:
            target_schema.ensure_schema(conn)
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false')
        _TEMPLATES[admin_dsn] = name
    return _TEMPLATES[admin_dsn]


def drop_templates() -> None:
    """At the end of a worker's session: its templates go with the databases cloned from them."""
    for admin_dsn, name in list(_TEMPLATES.items()):
        try:
            with psycopg.connect(admin_dsn, autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false')
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        except psycopg.OperationalError:
            pass  # the server is already gone (an embedded one stopped before this)
        del _TEMPLATES[admin_dsn]


def new_db(admin_dsn: str, schema: bool) -> TargetDB:
    """A fresh database: a clone of the schema template, or (schema false) an empty one."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    template = f' TEMPLATE "{_schema_template(admin_dsn)}"' if schema else ""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{template}')
    dsn = with_params(admin_dsn, dbname=name)
    app = with_params(dsn, options="-c role=llmspell_app")
    return TargetDB(name, dsn, app)


def drop_db(admin_dsn: str, db: TargetDB) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')


def database(admin_dsn: str, schema: bool):
    """`new_db` for a fixture: yields the database, drops it afterwards."""
    db = new_db(admin_dsn, schema=schema)
    yield db
    drop_db(admin_dsn, db)


# -- sample SQLite files --------------------------------------------------------------------
SMALL = SampleSpec(agents=120, workflows=40, sessions=50, kv=60, tenants=3, seed=11)
BIG = SampleSpec(agents=12_000, workflows=600, sessions=600, kv=800, tenants=3, seed=5)

_SAMPLES: dict[str, tuple[Path, dict[str, int]]] = {}
SAMPLE_DIR = Path(tempfile.mkdtemp(prefix="llmspell-migrate-test-samples-"))


def executed_world(tmp_path_factory, admin_dsn: str, name: str, spec: SampleSpec, components):
    """For a module's tests: a generated source, its plan executed into a fresh database
    ({home, src, db, plan}); the database is dropped afterwards."""
    home = tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(home)
        mp.setenv("LLMSPELL_MIGRATE_HOME", str(home / ".llmspell-migrate"))
        src = home / "llmspell.db"
        generate(src, spec)
        db = new_db(admin_dsn, schema=True)
        plan = home / "plan.toml"
        api.make_plan(components, output=plan, source=src, target=db.dsn)
        assert api.execute(plan, target=db.dsn).status == "SUCCESS"
        yield {"home": home, "src": src, "db": db, "plan": plan}
    drop_db(admin_dsn, db)


def sample_file(path: Path, spec: SampleSpec) -> dict[str, int]:
    """`generate(path, spec)` for tests, copied from one file per spec and session: the
    generator is seeded, so the copy is the same database, and the big specs are built once
    instead of once per test."""
    key = repr(spec)
    if key not in _SAMPLES:
        built = SAMPLE_DIR / f"{len(_SAMPLES)}.db"
        _SAMPLES[key] = (built, generate(built, spec))
    built, counts = _SAMPLES[key]
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(built, path)
    return dict(counts)


def file_hashes(path: Path) -> dict[str, str]:
    """Bytes of the database and any -wal/-shm beside it."""
    out = {}
    for p in sorted(path.parent.glob(path.name + "*")):
        out[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# -- plans, the CLI and its errors ----------------------------------------------------------
def make_plan(
    tmp_path: Path,
    src: Path,
    target: str,
    components: str = FOUR,
    name: str = "plan.toml",
    **kw,
) -> Path:
    """`plan` through the API into `tmp_path / name` (batch_size=, tenant=, ... pass through)."""
    plan = Path(tmp_path) / name
    api.make_plan(components, output=plan, source=src, target=target, **kw)
    return plan


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """The CLI in this process: (exit code, stdout, stderr); never a traceback."""
    code = migrate.run([str(a) for a in argv])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err, out.out + out.err
    return code, out.out, out.err


def cli_env(**extra: str) -> dict[str, str]:
    """This environment (the test's own LLMSPELL_MIGRATE_HOME included), able to import the
    project from any folder."""
    return dict(os.environ, PYTHONPATH=str(REPO), **extra)


def cli(cwd: Path, *argv, env: dict[str, str] | None = None, timeout: float = 300):
    """The CLI as a child process (`python -m pipelines.migrate`) run in `cwd`."""
    return subprocess.run(
        [sys.executable, "-m", "pipelines.migrate", *map(str, argv)],
        cwd=cwd,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def spawn(plan: Path, cwd: Path, *extra: str) -> subprocess.Popen:
    """`execute --plan` as a child process whose output (stderr included) is read line by line."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.migrate", "execute", "--plan", str(plan), *extra],
        cwd=cwd,
        env=cli_env(PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(proc: subprocess.Popen, marker: str, count: int = 1, timeout: float = 120) -> str:
    """Read the child's output until `marker` has appeared `count` times."""
    seen, out = 0, []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        out.append(line)
        if marker in line:
            seen += 1
            if seen >= count:
                return "".join(out)
    raise AssertionError(f"never saw {marker!r} x{count}:\n{''.join(out)}")


def one_line_error(err: str, *needles: str) -> str:
    """Among what the CLI printed: exactly one `ERROR: ` line, holding every needle, and a
    `  → Solution: ` line; no traceback. Returns the error line."""
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR: ")]
    assert len(errors) == 1, lines
    assert any(ln.startswith("  → Solution: ") for ln in lines), lines
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def only_error(err: str, *needles: str, anywhere: bool = False) -> tuple[str, str]:
    """stderr is nothing but `ERROR: <one line>` then a non-empty `  → Solution: <one line>`;
    every needle is in the error line (`anywhere`: in the error or the solution)."""
    assert "Traceback" not in err
    lines = err.rstrip("\n").splitlines()
    assert len(lines) == 2, lines
    error, fix = lines
    assert error.startswith("ERROR: ") and "internal error" not in error, lines
    assert fix.startswith("  → Solution: ") and len(fix) > len("  → Solution: "), lines
    for needle in needles:
        assert needle in (error + fix if anywhere else error), lines
    return error, fix


# -- fleets: installations whose tenants and keys collide as they stand ----------------
FLEET_MAPS = {  # three installations mapped apart (tests/test_fleet.py, test_dagster.py)
    "team-a": {"tenant_map": {"system": "team-a-system", "default": "team-a"}},
    "team-b": {"tenant_prefix": "team-b-"},
    "team-c": {"tenant_map": {"system": "team-c-system", "default": "team-c"}},
}


def fleet_installation(path: Path, n: int) -> Path:
    """An installation as llmspell leaves it: the kernel's `system` tenant and the app's
    `default`, with the same keys every other installation uses."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = SqliteBackend(path)
    for tenant in ("system", "default"):
        db.set_agent(tenant, "agent:worker:a2", json.dumps({"inst": n, "tenant": tenant}))
        db.set_agent(tenant, "agent:r1", json.dumps({"router": n}))
        db.save_workflow(tenant, "wf-ok", json.dumps({"status": "running", "inst": n}))
        db.save_session(tenant, SESSION, json.dumps({"inst": n, "messages": []}))
        db.set_kv(tenant, "config:theme", f"theme-{n}".encode())
    db.set_kv("default", "tenant:default:prefs", f"prefs-{n}".encode())  # a tenant-scoped key
    db.conn.execute(
        "INSERT INTO procedural_patterns (pattern_id, tenant_id, scope, key, value) "
        "VALUES (?, 'default', 'tenant:default', 'tool', 'search')",
        (uuid.uuid4().hex,),
    )
    db.close()
    return path


def fleet_manifest(
    tmp_path: Path, dsn: str, entries: dict[str, dict], name: str = "fleet.yaml"
) -> Path:
    """A fleet manifest of `entries` (name -> installation keys) into `dsn`."""
    doc = {
        "target": {"connection": dsn},
        "components": "all",
        "validation": {"checksum_sample_percent": 100},
        "installations": [{"name": n, **e} for n, e in entries.items()],
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def three_installations(tmp_path: Path) -> dict[str, Path]:
    """team-a, team-b, team-c: the same tenants and keys, as real installations have."""
    return {
        name: fleet_installation(tmp_path / name / "llmspell.db", i)
        for i, name in enumerate(("team-a", "team-b", "team-c"), start=1)
    }


def as_llmspell(db, tenant: str, sql: str, *args):
    """Read as llmspell's PostgreSQL backend does: llmspell_app, app.current_tenant_id set."""
    with db.connect(app=True) as conn:
        conn.execute("SELECT set_config('app.current_tenant_id', %s, false)", (tenant,))
        return conn.execute(sql, args or None).fetchall()


def run_cli_json(argv: list[str], capsys) -> tuple[int, dict | str]:
    """The CLI in this process: (exit code, its --json report, else everything it printed)."""
    code, out, err = run_cli(capsys, *argv)
    try:
        return code, json.loads(out)
    except ValueError:
        return code, out + err
