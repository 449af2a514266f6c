"""The sample generator must produce real llmspell-shaped SQLite files, deterministically, since
the demo, the tests and the benchmarks of the migration all start from them."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import uuid
from pathlib import Path

import pytest

from core.model.components import SESSION_STATUSES, WORKFLOW_STATUSES
from sources import sample_db
from sources.sample_db import SampleSpec, create_schema, generate

SPEC = SampleSpec(agents=400, workflows=120, sessions=150, kv=300, tenants=4, seed=7)
TABLES = ("_migrations", "agent_states", "workflow_states", "sessions", "kv_store")
HEX32 = re.compile(r"^[0-9a-f]{32}$")


def _dump(path: Path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return [
            (table, *row)
            for table in TABLES
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY rowid")
        ]
    finally:
        conn.close()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    path = tmp_path_factory.mktemp("sample") / "llmspell.db"
    return path, generate(path, SPEC)


@pytest.fixture
def conn(db: tuple[Path, dict[str, int]]):
    c = sqlite3.connect(db[0])
    yield c
    c.close()


def test_counts_match_rows(db, conn) -> None:
    _, counts = db
    assert counts == {"agent_state": 400, "workflow_state": 120, "sessions": 150, "kv_store": 300}
    for name, table in [
        ("agent_state", "agent_states"),
        ("workflow_state", "workflow_states"),
        ("sessions", "sessions"),
        ("kv_store", "kv_store"),
    ]:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == counts[name]
    assert conn.execute("SELECT count(*) FROM _migrations").fetchone()[0] == 15


def test_same_seed_same_bytes_other_seed_differs(db, tmp_path: Path) -> None:
    again = tmp_path / "again.db"
    generate(again, SPEC)
    assert _dump(again) == _dump(db[0])
    other = tmp_path / "other.db"
    generate(other, SampleSpec(400, 120, 150, 300, tenants=4, seed=8))
    assert _dump(other) != _dump(db[0])


def test_child_process_path_gives_the_same_file(db, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sample_db, "PARALLEL_MIN", 0)
    parallel = tmp_path / "parallel.db"
    generate(parallel, SPEC)
    assert _dump(parallel) == _dump(db[0])


def test_every_status_present(conn) -> None:
    wf = {r[0] for r in conn.execute("SELECT DISTINCT status FROM workflow_states")}
    assert wf == set(WORKFLOW_STATUSES)
    ss = {r[0] for r in conn.execute("SELECT DISTINCT status FROM sessions")}
    assert ss == set(SESSION_STATUSES)


def test_small_sample_still_has_every_status(tmp_path: Path) -> None:
    path = tmp_path / "small.db"
    generate(path, SampleSpec(agents=1, workflows=5, sessions=3, kv=1))
    conn = sqlite3.connect(path)
    assert {r[0] for r in conn.execute("SELECT status FROM workflow_states")} == set(
        WORKFLOW_STATUSES
    )
    assert {r[0] for r in conn.execute("SELECT status FROM sessions")} == set(SESSION_STATUSES)
    conn.close()


def test_checksums_are_sha256_of_stored_text(conn) -> None:
    for state_data, checksum in conn.execute("SELECT state_data, checksum FROM agent_states"):
        assert checksum == hashlib.sha256(state_data.encode("utf-8")).hexdigest()


def test_all_json_parses_and_is_not_canonical(conn) -> None:
    raw = []
    for sql in (
        "SELECT state_data FROM agent_states",
        "SELECT state_data FROM workflow_states",
        "SELECT session_data FROM sessions",
        "SELECT metadata FROM kv_store WHERE metadata IS NOT NULL",
    ):
        for (text,) in conn.execute(sql):
            json.loads(text)
            raw.append(text)
    agents = [r[0] for r in conn.execute("SELECT state_data FROM agent_states")]
    assert any("\\u" in t for t in agents), "some rows use ASCII escapes"
    assert any("🚀" in t or "東京" in t for t in agents), "some rows keep raw unicode"
    assert any("\n" in t for t in agents), "some rows are pretty-printed"
    assert any(json.dumps(json.loads(t)) != t for t in agents)
    doc = json.loads(agents[0])
    assert set(doc) >= {"agent_id", "state", "metadata", "config"}
    assert doc["state"]["execution_state"] in {"idle", "running", "paused", "completed", "failed"}
    assert any(json.loads(t)["state"]["context"]["token_budget"] > 2**53 for t in agents)


def test_kv_values_are_binary(conn) -> None:
    values = [r[0] for r in conn.execute("SELECT value FROM kv_store")]
    assert all(isinstance(v, bytes) for v in values)
    assert any(b"\x00" in v for v in values)
    assert any(b"\xff" in v for v in values)
    assert any(v == b"" for v in values)
    assert max(len(v) for v in values) <= 2048
    assert conn.execute("SELECT count(*) FROM kv_store WHERE metadata IS NULL").fetchone()[0] > 0


def test_keys_and_ids_have_llmspell_shapes(conn) -> None:
    session_key = re.compile(r"^session:[0-9a-f-]{36}$")
    for (key,) in conn.execute("SELECT key FROM kv_store"):
        assert not key.startswith(("agent:", "custom:workflow_"))
        assert not session_key.match(key)
    for row_id, session_id in conn.execute("SELECT id, session_id FROM sessions"):
        assert HEX32.match(row_id)
        assert str(uuid.UUID(session_id)) == session_id
    for (state_id,) in conn.execute("SELECT state_id FROM agent_states"):
        assert HEX32.match(state_id)
    for (kv_id,) in conn.execute("SELECT kv_id FROM kv_store"):
        assert HEX32.match(kv_id)


def test_tenants_uneven_and_keys_shared(conn) -> None:
    per_tenant = dict(
        conn.execute("SELECT tenant_id, count(*) FROM agent_states GROUP BY tenant_id")
    )
    assert set(per_tenant) == {"tenant-acme", "tenant-globex", "tenant-initech", "tenant-umbrella"}
    assert len(set(per_tenant.values())) > 1
    shared = conn.execute(
        "SELECT count(*) FROM (SELECT agent_id FROM agent_states GROUP BY agent_id"
        " HAVING count(DISTINCT tenant_id) >= 2)"
    ).fetchone()[0]
    assert shared > 0


def test_timestamps_consistent(conn) -> None:
    assert not conn.execute("SELECT 1 FROM agent_states WHERE created_at > updated_at").fetchall()
    rows = conn.execute(
        "SELECT status, started_at, completed_at, created_at, last_updated FROM workflow_states"
    )
    for status, started, completed, created, last_updated in rows:
        assert (started is None) == (status == "pending")
        assert (completed is not None) == (status in ("completed", "failed", "cancelled"))
        assert created <= last_updated
        if completed is not None:
            assert started <= completed <= last_updated
    assert conn.execute("SELECT count(*) FROM sessions WHERE expires_at IS NULL").fetchone()[0]
    assert not conn.execute(
        "SELECT 1 FROM sessions WHERE created_at > last_accessed_at OR artifact_count < 0"
    ).fetchall()


def test_average_sizes(conn) -> None:
    agent = conn.execute("SELECT avg(length(CAST(state_data AS BLOB))) FROM agent_states")
    assert 700 <= agent.fetchone()[0] <= 1600
    session = conn.execute("SELECT avg(length(CAST(session_data AS BLOB))) FROM sessions")
    assert 2000 <= session.fetchone()[0] <= 4500


def test_wal_mode_and_no_leftover_wal(db, conn) -> None:
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert not Path(f"{db[0]}-wal").exists() or Path(f"{db[0]}-wal").stat().st_size == 0


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        generate(path, SampleSpec(1, 1, 1, 1))
    assert path.read_bytes() == b"precious"
    Path(f"{path}-wal").write_bytes(b"stale wal")
    counts = generate(path, SampleSpec(2, 2, 2, 2), overwrite=True)
    assert counts == {"agent_state": 2, "workflow_state": 2, "sessions": 2, "kv_store": 2}
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").read_bytes() != b"stale wal"


def test_schema_constraints(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "schema.db")
    create_schema(conn)
    conn.execute(
        "INSERT INTO agent_states (tenant_id, agent_id, agent_type, state_data, checksum,"
        " created_at, updated_at) VALUES ('t', 'a', 'llm', '{}', 'c', 1, 1)"
    )
    state_id, schema_version, data_version = conn.execute(
        "SELECT state_id, schema_version, data_version FROM agent_states"
    ).fetchone()
    assert HEX32.match(state_id) and schema_version == 1 and data_version == 1
    with pytest.raises(sqlite3.IntegrityError):  # UNIQUE(tenant_id, agent_id)
        conn.execute(
            "INSERT INTO agent_states (tenant_id, agent_id, agent_type, state_data, checksum,"
            " created_at, updated_at) VALUES ('t', 'a', 'llm', '{}', 'c', 1, 1)"
        )
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO workflow_states (tenant_id, workflow_id, state_data, current_step,"
            " status, last_updated, created_at) VALUES ('t', 'w', '{}', 0, 'bogus', 1, 1)"
        )
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO sessions (tenant_id, session_id, session_data, status, created_at,"
            " last_accessed_at, artifact_count, updated_at)"
            " VALUES ('t', 's', '{}', 'active', 1, 1, -1, 1)"
        )
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"idx_agent_states_tenant", "idx_kv_store_tenant", "idx_sessions_tenant"} <= indexes
    conn.close()


def test_scaled_and_tenant_names() -> None:
    spec = SampleSpec.scaled(1_001, tenants=12, seed=3)
    assert spec.agents + spec.workflows + spec.sessions + spec.kv == 1_001
    assert spec.agents > spec.kv > spec.sessions > spec.workflows
    names = sample_db.tenant_ids(12)
    assert names[0] == "tenant-acme" and names[-1] == "tenant-012" and len(set(names)) == 12


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cli.db"
    assert sample_db.main([str(path), "--total", "200", "--tenants", "2"]) == 0
    out = capsys.readouterr().out
    assert "agent_state: 80" in out and "total: 200" in out
    assert sample_db.main([str(path), "--total", "10"]) == 2
