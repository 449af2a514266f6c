"""Many installations into one PostgreSQL: tenant maps and the fleet commands, with a real
PostgreSQL, real SQLite files and the tool's own processes (one per installation)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml

from pipelines import api, migrate
from pipelines.fleet.runner import Fleet
from sources.sample_db import SampleSpec
from tests.conftest import sample_file
from tests.helpers import FLEET_MAPS as MAPS
from tests.helpers import as_llmspell, fleet_installation, fleet_manifest, run_cli_json
from tests.helpers import three_installations as three
from tests.llmspell_writes import SESSION

REPO = Path(__file__).resolve().parents[1]


def test_three_colliding_installations_consolidated_with_maps(tmp_path, target_db, capsys):
    srcs = three(tmp_path)
    # As they stand, their tenants and keys collide: refused, naming both, nothing written.
    bare = fleet_manifest(
        tmp_path, target_db.dsn, {n: {"source": str(p)} for n, p in srcs.items()}, "bare.yaml"
    )
    code, doc = run_cli_json(["fleet", "execute", "--manifest", str(bare), "--json"], capsys)
    assert code == 2, doc
    assert "'team-a' and 'team-b'" in doc["error"]["message"]
    assert target_db.count("agent_states") == 0

    m = fleet_manifest(
        tmp_path, target_db.dsn, {n: {"source": str(p), **MAPS[n]} for n, p in srcs.items()}
    )
    code, planned = run_cli_json(["fleet", "plan", "--manifest", str(m), "--json"], capsys)
    assert code == 0, planned
    a = next(i for i in planned["installations"] if i["name"] == "team-a")
    assert {t["source"]: t["target"] for t in a["tenants"]} == {
        "default": "team-a",
        "system": "team-a-system",
    }
    plan_a = yaml.safe_load(Path(a["plan"]).read_text())
    assert plan_a["target"]["tenant_map"] == {"system": "team-a-system", "default": "team-a"}
    assert "password" not in Path(a["plan"]).read_text()

    code, done = run_cli_json(
        ["fleet", "execute", "--manifest", str(m), "--parallel", "2", "--json"], capsys
    )
    assert code == 0, done
    assert [i["status"] for i in done["installations"]] == ["migrated"] * 3
    assert all(i["validation"] == "PASSED" for i in done["installations"])

    for n, (dflt, system) in enumerate(
        [
            ("team-a", "team-a-system"),
            ("team-b-default", "team-b-system"),
            ("team-c", "team-c-system"),
        ],
        start=1,
    ):
        for tenant, src_tenant in ((dflt, "default"), (system, "system")):
            # llmspell's get('agent:worker:a2') under the new tenant: agent_id a2
            (state,) = as_llmspell(
                target_db,
                tenant,
                "SELECT state_data FROM llmspell.agent_states "
                "WHERE tenant_id = %s AND agent_id = 'a2'",
                tenant,
            )[0]
            assert state == {"inst": n, "tenant": src_tenant}  # the value itself is unchanged
            rows = as_llmspell(
                target_db, tenant, "SELECT tenant_id, key, value FROM llmspell.kv_store"
            )
            assert (tenant, "config:theme", f"theme-{n}".encode()) in [
                (t, k, bytes(v)) for t, k, v in rows
            ]
            rows = as_llmspell(
                target_db,
                tenant,
                "SELECT session_data FROM llmspell.sessions WHERE session_id = %s",
                SESSION,
            )
            assert rows == [({"inst": n, "messages": []},)]
        # strings derived from the tenant moved with it
        keys = [r[0] for r in as_llmspell(target_db, dflt, "SELECT key FROM llmspell.kv_store")]
        assert f"tenant:{dflt}:prefs" in keys and "tenant:default:prefs" not in keys
        scopes = as_llmspell(target_db, dflt, "SELECT scope FROM llmspell.procedural_patterns")
        assert scopes == [(f"tenant:{dflt}",)]
    # llmspell_app under a source tenant name sees nothing: every record moved
    for tenant in ("system", "default"):
        assert as_llmspell(target_db, tenant, "SELECT count(*) FROM llmspell.agent_states") == [
            (0,)
        ]
    assert target_db.count("agent_states") == 12

    # verify (in target tenants), status, and a rerun that skips everything
    out_dir = tmp_path / "fleet.fleet"
    for name in srcs:
        assert api.verify(out_dir / name / "plan.yaml", full=True).passed
    code, status = run_cli_json(["fleet", "status", "--manifest", str(m), "--json"], capsys)
    assert code == 0 and all(i["status"] == "migrated" for i in status["installations"])
    code, again = run_cli_json(["fleet", "execute", "--manifest", str(m), "--json"], capsys)
    assert code == 0 and all(i.get("skipped") for i in again["installations"])
    assert target_db.count("agent_states") == 12

    # rollback of one installation's run deletes its tenants' rows only
    b = next(i for i in done["installations"] if i["name"] == "team-b")
    undo = api.rollback(backup=b["backup_path"])
    assert sum(undo.deleted.values()) > 0
    with target_db.connect() as conn:
        tenants = {
            r[0] for r in conn.execute("SELECT DISTINCT tenant_id FROM llmspell.agent_states")
        }
    assert tenants == {"team-a", "team-a-system", "team-c", "team-c-system"}


def test_corrupt_installation_fails_alone(tmp_path, target_db, capsys):
    srcs = three(tmp_path)
    bad = tmp_path / "team-x" / "llmspell.db"
    bad.parent.mkdir()
    bad.write_bytes(b"this is not an sqlite database" * 200)
    entries = {n: {"source": str(p), **MAPS[n]} for n, p in srcs.items() if n != "team-c"}
    entries["team-x"] = {"source": str(bad), "tenant_prefix": "x-"}
    m = fleet_manifest(tmp_path, target_db.dsn, entries)
    code, done = run_cli_json(["fleet", "execute", "--manifest", str(m), "--json"], capsys)
    assert code == 1, done
    status = {i["name"]: i for i in done["installations"]}
    assert status["team-a"]["status"] == status["team-b"]["status"] == "migrated"
    assert status["team-x"]["status"] == "failed"
    assert "not a readable SQLite database" in status["team-x"]["error"]
    assert target_db.count("agent_states") == 8
    code, st = run_cli_json(["fleet", "status", "--manifest", str(m)], capsys)
    assert code == 1 and "team-x" in st and "failed" in st


def test_manifest_errors_are_exit_2_before_anything_is_written(tmp_path, target_db, capsys):
    srcs = three(tmp_path)
    a, b = str(srcs["team-a"]), str(srcs["team-b"])
    cases = [
        ({"team-a": {"source": a, "colour": "red"}}, "unknown key"),
        ({"Team_A": {"source": a}}, "names are"),
        (
            {"team-a": {"source": a, "tenant_map": {"default": "x"}, "tenant_prefix": "p-"}},
            "tenant_map and tenant_prefix together",
        ),
        ({"team-a": {"source": a, "tenant_map": {"default": ""}}}, "empty tenant"),
        ({"team-a": {"source": a, "tenant_map": {"default": "t" * 256}}}, "VARCHAR(255)"),
        ({"team-a": {"source": a}, "team-b": {"source": a, "tenant_prefix": "b-"}}, "both read"),
    ]
    for entries, said in cases:
        m = fleet_manifest(tmp_path, target_db.dsn, entries)
        code, out = run_cli_json(["fleet", "plan", "--manifest", str(m)], capsys)
        assert code == 2
        assert said in str(out), (entries, out)
    dup = tmp_path / "dup.yaml"
    dup.write_text(
        f"target: {{connection: '{target_db.dsn}'}}\ninstallations:\n"
        f"  - {{name: team-a, source: {a}}}\n  - {{name: team-a, source: {b}}}\n"
    )
    assert migrate.run(["fleet", "plan", "--manifest", str(dup)]) == 2
    assert "listed twice" in capsys.readouterr().err
    leaky = "postgresql://u:hunter2pw@localhost/db"
    pw = fleet_manifest(tmp_path, leaky, {"team-a": {"source": a}})
    assert migrate.run(["fleet", "plan", "--manifest", str(pw)]) == 2
    err = capsys.readouterr().err
    assert "password" in err and "hunter2pw" not in err
    assert not (tmp_path / "fleet.fleet").exists()
    assert target_db.count("agent_states") == 0


def test_an_interrupted_fleet_resumes(tmp_path, target_db, capsys):
    big = tmp_path / "big" / "llmspell.db"
    sample_file(big, SampleSpec(agents=4000, workflows=50, sessions=50, kv=50, tenants=2, seed=3))
    small = fleet_installation(tmp_path / "small" / "llmspell.db", 1)
    m = fleet_manifest(
        tmp_path,
        target_db.dsn,
        {
            "big": {"source": str(big), "tenant_prefix": "big-"},
            "small": {"source": str(small), **MAPS["team-a"]},
        },
    )
    fleet = Fleet(m)
    assert fleet.plan().ok
    # a reviewer's edit of the plan is kept by execute: small batches, so the kill lands mid-copy
    plan_path = fleet.layout.plan("big")
    plan = yaml.safe_load(plan_path.read_text())
    for c in plan["components"]:
        c["batch_size"] = 100
    plan_path.write_text(yaml.safe_dump(plan, sort_keys=False))
    # the installation's run, exactly as the fleet starts it, killed (-9) mid-copy
    env = dict(fleet.worker_env("big"), PYTHONUNBUFFERED="1")
    first = Path(env["PYTHONPATH"].split(os.pathsep)[0])
    assert (first / "pipelines" / "migrate.py").is_file(), first  # the folder holding it
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.migrate",
            "execute",
            "--plan",
            str(plan_path),
            "--progress",
            "plain",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    for line in proc.stdout:
        if "Progress:" in line:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    code, st = run_cli_json(["fleet", "status", "--manifest", str(m), "--json"], capsys)
    state = {i["name"]: i["status"] for i in st["installations"]}
    assert state == {"big": "interrupted", "small": "not started"}, st
    code, done = run_cli_json(["fleet", "execute", "--manifest", str(m), "--json"], capsys)
    assert code == 0, done
    last = json.loads((fleet.layout.last("big")).read_text())
    assert last["report"]["resumed_run"] is True
    assert api.verify(plan_path, full=True).passed
    with target_db.connect() as conn:
        n = conn.execute(
            "SELECT count(*) FROM llmspell.agent_states WHERE tenant_id LIKE 'big-%'"
        ).fetchone()[0]
    assert n == 4000


def test_sync_after_a_change_in_one_installation(tmp_path, target_db, capsys):
    srcs = three(tmp_path)
    m = fleet_manifest(
        tmp_path, target_db.dsn, {n: {"source": str(p), **MAPS[n]} for n, p in srcs.items()}
    )
    assert migrate.run(["fleet", "execute", "--manifest", str(m)]) == 0
    capsys.readouterr()
    c = sqlite3.connect(srcs["team-b"])
    c.execute(
        "UPDATE kv_store SET value = X'0badc0de' WHERE tenant_id = 'default' "
        "AND key = 'config:theme'"
    )
    c.execute(
        "INSERT INTO kv_store (tenant_id, key, value, created_at, updated_at) "
        "VALUES ('system', 'tenant:system:new', X'01', 1, 1)"
    )
    c.commit()
    c.close()
    code, synced = run_cli_json(["fleet", "sync", "--manifest", str(m), "--json"], capsys)
    assert code == 0, synced
    rows = as_llmspell(
        target_db,
        "team-b-default",
        "SELECT value FROM llmspell.kv_store WHERE key = 'config:theme'",
    )
    assert bytes(rows[0][0]) == b"\x0b\xad\xc0\xde"
    rows = as_llmspell(
        target_db, "team-b-system", "SELECT key FROM llmspell.kv_store WHERE key LIKE 'tenant:%'"
    )
    assert rows == [("tenant:team-b-system:new",)]
    for tenant, n in (("team-a", 1), ("team-c", 3)):  # the others are untouched
        rows = as_llmspell(
            target_db, tenant, "SELECT value FROM llmspell.kv_store WHERE key = 'config:theme'"
        )
        assert bytes(rows[0][0]) == f"theme-{n}".encode()
    code, st = run_cli_json(["fleet", "status", "--manifest", str(m), "--json"], capsys)
    assert code == 0
    assert all(i.get("in_sync_since") for i in st["installations"])


def test_tenant_map_on_a_single_plan_and_collisions(tmp_path, target_db, capsys):
    src = fleet_installation(tmp_path / "one.db", 1)
    plan = tmp_path / "p.yaml"
    args = ["plan", "--components", "all", "--source", src, "--output", plan]
    args = [str(a) for a in args] + ["--target", target_db.dsn]
    code = migrate.run([*args, "--tenant-map", "default=system"])
    assert code == 2  # default and system would share keys under `system`
    assert "same target tenant and key" in capsys.readouterr().err
    code = migrate.run([*args, "--tenant-map", "default=app", "--tenant", "default"])
    assert code == 0
    out = capsys.readouterr().out
    assert "default → app" in out
    result = api.execute(plan)
    assert result.status == "SUCCESS"
    with target_db.connect() as conn:
        assert {r[0] for r in conn.execute("SELECT tenant_id FROM llmspell.kv_store")} == {"app"}
    assert api.verify(plan, full=True).passed
    p = api.load(plan)
    assert p.tenants == ["app"] and p.source_tenants == ["default"]
    other = api.load(plan)
    other.tenant_map = {"default": "app2"}
    assert other.fingerprint() != p.fingerprint()
