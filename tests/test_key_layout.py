"""Migrate by key: after a run, llmspell's PostgreSQL backend returns for every key its SQLite
backend lists the same value, or the user was told before anything was written.

Sources are built the way llmspell's SQLite backend writes them (tests/llmspell_writes.py);
reads are replayed here, independently of the tool, the way llmspell's PostgreSQL backend
does them: as llmspell_app, with app.current_tenant_id set, routed by key."""

from __future__ import annotations

import json
import sqlite3
import tomllib
import uuid
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.llmspell_writes import SAVED_SESSION, SqliteBackend, reachable_db, unreachable_db

ALL = "agent_state,workflow_state,sessions,kv_store"


def _plan(capsys, tmp_path, src, target_db, *extra) -> tuple[Path, str]:
    plan = tmp_path / "plan.toml"
    code, out, err = run_cli(
        capsys, "plan", "--components", ALL, "--source", src, "--target", target_db.dsn,
        "--output", plan, *extra,
    )  # fmt: skip
    assert code == 0, err
    return plan, out


def pg_get(conn, tenant: str, key: str):
    """llmspell's PostgresBackend::get(key), replayed: the routing of backend.rs."""
    conn.execute("SELECT set_config('app.current_tenant_id', %s, false)", (tenant,))
    parts = key.split(":")
    if key.startswith("agent:"):
        assert len(parts) == 3, f"PostgreSQL refuses {key}"
        query, arg = "SELECT state_data FROM llmspell.agent_states WHERE agent_id = %s", parts[2]
    elif key.startswith("custom:workflow_"):
        assert len(parts) == 3, f"PostgreSQL refuses {key}"
        query = "SELECT state_data FROM llmspell.workflow_states WHERE workflow_id = %s"
        arg = parts[1][len("workflow_") :]
    elif key.startswith("session:") and len(parts) == 2:
        query, arg = (
            "SELECT session_data FROM llmspell.sessions WHERE session_id = %s",
            uuid.UUID(parts[1]),
        )
    else:
        query, arg = "SELECT value FROM llmspell.kv_store WHERE key = %s", key
    row = conn.execute(query + " AND tenant_id = %s", (arg, tenant)).fetchone()
    return None if row is None else row[0]


def sqlite_keys(src: Path) -> list[tuple[str, str, object]]:
    """(tenant, key, value) for every key llmspell's SQLite backend lists."""
    conn = sqlite3.connect(src)
    try:
        return conn.execute(
            "SELECT tenant_id, 'agent:' || agent_id, state_data FROM agent_states UNION ALL "
            "SELECT tenant_id, 'custom:workflow_' || workflow_id || ':state', state_data "
            "FROM workflow_states UNION ALL "
            "SELECT tenant_id, 'session:' || session_id, session_data FROM sessions UNION ALL "
            "SELECT tenant_id, key, value FROM kv_store"
        ).fetchall()
    finally:
        conn.close()


def test_llmspell_layout_every_key_reads_back(tmp_path, target_db, capsys):
    src = reachable_db(tmp_path / "llmspell.db")
    plan, out = _plan(capsys, tmp_path, src, target_db)
    assert "Key layout: llmspell" in out
    assert "tenant-a agent:r1 -> agent:unknown:r1" in out

    code, out, err = run_cli(capsys, "execute", "--plan", plan, "--dry-run")
    assert code == 0, err
    assert "6 JSON number(s) change form" in out and "$.n 1e16 -> 10000000000000000" in out
    assert target_db.count("agent_states") == 0

    code, out, err = run_cli(capsys, "execute", "--plan", plan, "--json")
    assert code == 0, err
    doc = json.loads(out)
    reach = doc["preflight"]["reachability"]
    assert [
        (x["tenant_id"], x["key"], x["answers_to"])
        for x in reach["agent_state"]["answers_elsewhere"]
    ] == [
        ("tenant-a", "agent:r1", "agent:unknown:r1"),
        ("tenant-b", "agent:r1", "agent:unknown:r1"),
    ]
    assert doc["preflight"]["number_changes"] == {"agent_state": 4, "workflow_state": 2}
    for comp in doc["validation"]["components"]:
        rb = comp["readback"]
        assert rb["role"] == "llmspell_app" and rb["compared"] == rb["matched"] == 2 * (
            2 if comp["component"] in ("agent_state", "kv_store") else 1
        )

    backup = Path(doc["backup_path"])
    key_map = json.loads((backup / "key-map.json").read_text())
    assert key_map["key_layout"] == "llmspell"
    assert key_map["components"]["agent_state"]["key_map"] == {
        "tenant-a": {"agent:r1": "agent:unknown:r1"},
        "tenant-b": {"agent:r1": "agent:unknown:r1"},
    }
    meta = tomllib.loads((backup / "rollback-metadata.toml").read_text())
    assert meta["key_layout"] == "llmspell"

    with target_db.connect() as conn:
        rows = conn.execute(
            "SELECT agent_id, agent_type FROM llmspell.agent_states WHERE tenant_id = 'tenant-a' "
            "ORDER BY agent_id"
        ).fetchall()
    assert rows == [("a2", "worker"), ("r1", "unknown")]  # only the lookup columns changed

    with target_db.connect(app=True) as conn:
        for tenant, key, value in sqlite_keys(src):
            answer = key_map["components"]["agent_state"]["key_map"].get(tenant, {}).get(key, key)
            got = pg_get(conn, tenant, answer)
            assert got is not None, (tenant, key)
            if isinstance(value, bytes):
                assert bytes(got) == value, (tenant, key)
            else:
                assert got == json.loads(value), (tenant, key)
        conn.execute("SELECT set_config('app.current_tenant_id', 'tenant-a', false)")
        got = pg_get(conn, "tenant-a", "agent:worker:a2")
        assert got["n"] == 10**16 and isinstance(got["n"], int)  # 1e16: the expected change

    code, out, _ = run_cli(capsys, "verify", "--plan", plan, "--full")
    assert code == 0 and "Read-back as llmspell (llmspell_app): ✓ 4/4 keys" in out

    with target_db.connect() as conn:
        conn.execute(
            "UPDATE llmspell.workflow_states SET state_data = jsonb_set(state_data, '{x}', "
            "'2000.0') WHERE tenant_id = 'tenant-b'"
        )
        conn.commit()
    code, out, _ = run_cli(capsys, "verify", "--plan", plan)
    assert code == 1
    assert (
        "workflow_state tenant=tenant-b key=custom:workflow_wf-ok:state: $.x: 2000 (int) on "
        "SQLite, 2000.0 (float) on PostgreSQL" in out
    )

    code, out, err = run_cli(capsys, "rollback", "--backup", backup, "--force")
    assert code == 0, err
    assert target_db.count("agent_states") == target_db.count("kv_store") == 0


def test_unreachable_records_stop_the_run_before_anything_is_written(tmp_path, target_db, capsys):
    src = unreachable_db(tmp_path / "llmspell.db")
    plan, out = _plan(capsys, tmp_path, src, target_db)
    assert "7 record(s) would be unreachable for llmspell on PostgreSQL" in out
    before = target_db.snapshot()
    expected = {
        "agent:x:y:z": "no key reaches this record",
        "agent:A:dup": "collides",
        "agent:B:dup": "collides",
        "custom:workflow_wf:1:state": "the workflow id contains ':'",
        f"session:{SAVED_SESSION}": "session manager saved this session in kv_store",
        "agent:kernel:state": "reads every agent:... key from agent_states",
        "custom:workflow_7:state": "from workflow_states",
    }
    for extra in (["--dry-run"], []):
        code, out, err = run_cli(capsys, "execute", "--plan", plan, *extra)
        assert code == 2
        assert "7 record(s) would be unreachable for llmspell after the migration" in err
        assert "--allow-unreachable" in err
        for key, reason in expected.items():
            line = next(x for x in err.splitlines() if f" tenant-a {key}: " in x)
            assert reason in line, line
    assert target_db.snapshot() == before
    assert not (tmp_path / "backups").exists() or not any((tmp_path / "backups").iterdir())

    code, out, err = run_cli(capsys, "execute", "--plan", plan, "--allow-unreachable", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["status"] == "SUCCESS" and doc["validation"]["passed"]
    assert len(doc["preflight"]["reachability"]["kv_store"]["unreachable"]) == 3
    skipped = {
        c["component"]: c["readback"]["skipped_unreachable"]
        for c in doc["validation"]["components"]
    }
    assert skipped == {"agent_state": 3, "workflow_state": 1, "sessions": 0, "kv_store": 3}
    with target_db.connect() as conn:
        agents = conn.execute(
            "SELECT agent_id, agent_type FROM llmspell.agent_states WHERE tenant_id = 'tenant-a' "
            "ORDER BY agent_id"
        ).fetchall()
        kv = conn.execute(
            "SELECT count(*) FROM llmspell.kv_store WHERE key = %s", (f"session:{SAVED_SESSION}",)
        ).fetchone()[0]
        sessions = conn.execute(
            "SELECT count(*) FROM llmspell.sessions WHERE session_id = %s", (SAVED_SESSION,)
        ).fetchone()[0]
    # colliding and unreachable records keep their SQLite columns; the rest is re-keyed
    assert agents == [("A:dup", "dup"), ("B:dup", "dup"), ("a2", "worker"), ("r1", "unknown"),
                      ("x:y:z", "y")]  # fmt: skip
    assert (kv, sessions) == (1, 0)  # never moved into another table
    key_map = json.loads((Path(doc["backup_path"]) / "key-map.json").read_text())
    assert len(key_map["components"]["agent_state"]["unreachable"]) == 3


def test_verbatim_layout_keeps_every_column(tmp_path, target_db, capsys):
    src = reachable_db(tmp_path / "llmspell.db")
    plan, _ = _plan(capsys, tmp_path, src, target_db, "--key-layout", "verbatim")
    assert "key_layout: verbatim" in plan.read_text()
    code, _, err = run_cli(capsys, "execute", "--plan", plan, "--dry-run")
    assert code == 2 and "with --key-layout verbatim the row keeps agent_id 'worker:a2'" in err

    code, out, err = run_cli(capsys, "execute", "--plan", plan, "--allow-unreachable", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["preflight"]["key_layout"] == "verbatim"
    conn = sqlite3.connect(src)
    want = conn.execute(
        "SELECT tenant_id, agent_id, agent_type, state_data FROM agent_states ORDER BY 1, 2"
    ).fetchall()
    conn.close()
    with target_db.connect() as pg:
        got = pg.execute(
            "SELECT tenant_id, agent_id, agent_type, state_data FROM llmspell.agent_states "
            "ORDER BY 1, 2"
        ).fetchall()
    assert [r[:3] for r in got] == [r[:3] for r in want]
    assert [r[3] for r in got] == [json.loads(r[3]) for r in want]
    code, out, _ = run_cli(capsys, "verify", "--plan", plan, "--full")
    assert code == 0, out

    # The same data judged by llmspell: its PostgreSQL backend cannot find agent:worker:a2.
    code, out, _ = run_cli(capsys, "verify", "--plan", plan, "--key-layout", "llmspell")
    assert code == 1
    assert (
        "agent_state tenant=tenant-a key=agent:worker:a2: get('agent:worker:a2') finds "
        "nothing" in out
    )

    code, _, err = run_cli(capsys, "rollback", "--backup", doc["backup_path"])
    assert code == 0, err
    assert target_db.count("agent_states") == 0


def test_number_outside_f64_range_is_refused_by_key_and_path(tmp_path, target_db, capsys):
    db = SqliteBackend(tmp_path / "llmspell.db")
    db.set_agent("tenant-a", "agent:worker:big", '{"ok": 1, "stats": {"n": 1e400}}')
    db.close()
    plan, _ = _plan(capsys, tmp_path, db.path, target_db)
    for extra in (["--dry-run"], [], ["--allow-unreachable"]):
        code, _, err = run_cli(capsys, "execute", "--plan", plan, *extra)
        assert code == 2
        assert "tenant-a 'agent:worker:big': state_data has the number 1e400 at $.stats.n" in err
    assert target_db.count("agent_states") == 0


@pytest.mark.parametrize("layout", ["llmspell", "verbatim"])
def test_plan_layout_is_checked(tmp_path, layout):
    from pipelines.shared.plan import from_dict

    doc = {"components": [{"name": "agent_state"}], "target": {"key_layout": layout}}
    assert from_dict(doc).key_layout == layout
    with pytest.raises(Exception) as info:
        from_dict({**doc, "target": {"key_layout": "rows"}})
    assert getattr(info.value, "exit_code", None) == 2
