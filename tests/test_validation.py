"""The validation stage catches every real change and none of JSONB's legitimate ones."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import psycopg
import pytest

from core.model.canonical import json_difference, jsonb_text
from pipelines import api, migrate
from sources.sample_db import create_schema
from tests.helpers import database
from validation.source_prints import sampled

T1, T2 = "tenant-a", "tenant-b"
DOC = (
    '{"z": 1, "a": {"n": 1.0, "big": 123456789012345678901234567890, "e": 1e2, '
    '"s": "hello world \\u00e9 🚀", "neg": -0, "f": 0.70}, "a": {"n": 1.0, '
    '"big": 123456789012345678901234567890, "e": 1e2, "s": "hello world \\u00e9 🚀", '
    '"neg": -0, "f": 0.70, "list": [1, 2.50, {"k": null}]},   "flag": true}'
)


def make_source(path, agents: int = 30) -> None:
    """A small llmspell database whose JSON exercises every JSONB normalization."""
    conn = sqlite3.connect(path)
    create_schema(conn)
    for i in range(agents):
        tenant = T1 if i % 2 else T2
        doc = DOC.replace('"z": 1', f'"z": {i}')
        conn.execute(
            "INSERT INTO agent_states (state_id, tenant_id, agent_id, agent_type, state_data, "
            "schema_version, data_version, checksum, created_at, updated_at) "
            "VALUES (?, ?, ?, 'llm', ?, 1, 2, ?, ?, ?)",
            (
                f"{i:032x}",
                tenant,
                f"agent-{i}",
                doc,
                hashlib.sha256(doc.encode()).hexdigest(),
                1_735_689_600 + i,
                1_735_689_700 + i,
            ),
        )
    for i in range(10):
        conn.execute(
            "INSERT INTO workflow_states (tenant_id, workflow_id, workflow_name, state_data, "
            "current_step, status, started_at, completed_at, last_updated, created_at) "
            "VALUES (?, ?, NULL, '{\"steps\": [1, 2]}', 1, 'pending', NULL, NULL, ?, ?)",
            (T1, f"wf-{i}", 1_735_689_600, 1_735_689_600),
        )
        conn.execute(
            "INSERT INTO kv_store (kv_id, tenant_id, key, value, metadata, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, NULL, 1735689600, 1735689600)",
            (f"{i + 100:032x}", T2, f"cache:{i}", bytes([0, 255, i, 7])),
        )
    conn.commit()
    conn.close()


TABLES = ("agent_states", "workflow_states", "kv_store")


@pytest.fixture(scope="module")
def migrated_once(tmp_path_factory, pg_admin_dsn):
    """One migration for the whole module (it is the slow part); each test's damage is undone
    from a saved copy of the migrated rows (see `migrated`)."""
    tmp = tmp_path_factory.mktemp("validation")
    databases = database(pg_admin_dsn, schema=True)
    db = next(databases)
    with pytest.MonkeyPatch.context() as env:
        env.chdir(tmp)
        env.setenv("LLMSPELL_MIGRATE_HOME", str(tmp / ".llmspell-migrate"))
        for var in ("LLMSPELL_MIGRATE_TARGET", "LLMSPELL_MIGRATE_PASSWORD", "PGPASSWORD"):
            env.delenv(var, raising=False)
        src = tmp / "src.db"
        make_source(src)
        plan = tmp / "plan.toml"
        api.make_plan("agent_state,workflow_state,kv_store", output=plan, source=src, target=db.dsn)
        assert api.execute(plan).status == "SUCCESS"
    with db.connect(autocommit=True) as conn:
        conn.execute("CREATE SCHEMA test_saved")
        for table in TABLES:
            conn.execute(f"CREATE TABLE test_saved.{table} AS TABLE llmspell.{table}")
    yield plan, db
    next(databases, None)


@pytest.fixture
def migrated(migrated_once):
    """The migrated target, put back exactly as the migration left it after the test."""
    yield migrated_once
    _, db = migrated_once
    with db.connect() as conn:
        for table in TABLES:
            conn.execute(f"ALTER TABLE llmspell.{table} DISABLE TRIGGER USER")
            conn.execute(f"DELETE FROM llmspell.{table}")
            conn.execute(f"INSERT INTO llmspell.{table} SELECT * FROM test_saved.{table}")
            conn.execute(f"ALTER TABLE llmspell.{table} ENABLE TRIGGER USER")


def test_legitimate_jsonb_normalizations_pass(migrated):
    plan, db = migrated
    with db.connect() as conn:
        stored = conn.execute(
            "SELECT state_data::text FROM llmspell.agent_states WHERE agent_id = 'agent-1'"
        ).fetchone()[0]
    assert stored != DOC  # the bytes did change: order, spacing, duplicate key, 1e2
    report = api.verify(plan, full=True)
    assert report.passed, [str(m) for c in report.components for m in c.mismatches]
    assert report.checksum_samples == 30 + 10 + 10


CORRUPTIONS = [
    (
        "changed value",
        "agent_states",
        "agent_id = 'agent-3'",
        "state_data = jsonb_set(state_data, '{a,s}', '\"hello there\"')",
        "state_data",
    ),
    (
        "dropped key",
        "agent_states",
        "agent_id = 'agent-3'",
        "state_data = state_data #- '{a,f}'",
        "state_data",
    ),
    (
        "truncated string",
        "agent_states",
        "agent_id = 'agent-3'",
        "state_data = jsonb_set(state_data, '{a,s}', '\"hello world\"')",
        "state_data",
    ),
    (
        "1.0 became 1",
        "agent_states",
        "agent_id = 'agent-3'",
        "state_data = jsonb_set(state_data, '{a,n}', '1')",
        "state_data",
    ),
    (
        "big integer lost precision",
        "agent_states",
        "agent_id = 'agent-3'",
        "state_data = jsonb_set(state_data, '{a,big}', '123456789012345680000000000000')",
        "state_data",
    ),
    (
        "timestamp off by a second",
        "agent_states",
        "agent_id = 'agent-3'",
        "created_at = created_at + interval '1 second'",
        "created_at",
    ),
    (
        "NULL became a value",
        "workflow_states",
        "workflow_id = 'wf-4'",
        "workflow_name = 'named'",
        "workflow_name",
    ),
    (
        "BLOB one byte differs",
        "kv_store",
        "key = 'cache:5'",
        "value = overlay(value placing '\\x01'::bytea from 2 for 1)",
        "value",
    ),
    (
        "version changed",
        "agent_states",
        "agent_id = 'agent-3'",
        "schema_version = 2",
        "schema_version",
    ),
    (
        "id changed",
        "agent_states",
        "agent_id = 'agent-3'",
        "state_id = '00000000-0000-0000-0000-0000000000ff'",
        "state_id",
    ),
]


def _corrupt(db, table: str, where: str, change: str) -> None:
    with db.connect(autocommit=True) as conn:
        # Disable llmspell's UPDATE triggers so the change under test is the only one.
        conn.execute(f"ALTER TABLE llmspell.{table} DISABLE TRIGGER USER")
        assert conn.execute(f"UPDATE llmspell.{table} SET {change} WHERE {where}").rowcount == 1
        conn.execute(f"ALTER TABLE llmspell.{table} ENABLE TRIGGER USER")


@pytest.mark.parametrize(
    "label,table,where,change,column", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS]
)
def test_full_comparison_catches_each_corruption(migrated, label, table, where, change, column):
    plan, db = migrated
    _corrupt(db, table, where, change)
    report = api.verify(plan, full=True)
    assert not report.passed
    bad = [m for c in report.components for m in c.mismatches]
    assert sum(c.mismatch_count for c in report.components) == 1
    assert bad and all(m.column.startswith(column) for m in bad), [str(m) for m in bad]


def test_sampling_catches_a_corruption_only_in_the_sample(migrated, tmp_path):
    plan_path, db = migrated
    text = plan_path.read_text().replace(
        "full_comparison_threshold: 100", "full_comparison_threshold: 0"
    )
    sample_plan = tmp_path / "sample.toml"
    sample_plan.write_text(
        text.replace("checksum_sample_percent: 10", "checksum_sample_percent: 30")
    )
    keys = [(T1 if i % 2 else T2, f"agent:agent-{i}", f"agent-{i}") for i in range(30)]
    inside = next(k for k in keys if sampled(k[0], k[1], 30))
    outside = next(k for k in keys if not sampled(k[0], k[1], 30))
    _corrupt(db, "agent_states", f"agent_id = '{outside[2]}'", "state_data = state_data #- '{a,s}'")
    assert api.verify(sample_plan).passed  # not in the sample: sampling cannot see it
    assert not api.verify(sample_plan, full=True).passed
    _corrupt(db, "agent_states", f"agent_id = '{inside[2]}'", "state_data = state_data #- '{a,s}'")
    report = api.verify(sample_plan)
    assert not report.passed
    agent = report.components[0]
    assert agent.mode == "sample" and agent.mismatch_count == 1
    assert agent.mismatches[0].key == inside[1]


def test_count_mismatch_names_missing_keys(migrated, capsys):
    plan, db = migrated
    with db.connect(autocommit=True) as conn:
        conn.execute("DELETE FROM llmspell.kv_store WHERE key = 'cache:7'")
    code = migrate.run(["verify", "--plan", str(plan), "--json"])
    assert code == 1
    doc = json.loads(capsys.readouterr().out)
    kv = next(c for c in doc["components"] if c["component"] == "kv_store")
    assert kv["source_count"] == 10 and kv["target_count"] == 9
    assert kv["missing"] == [f"{T2}/cache:7"]


def test_mismatch_report_is_actionable_in_json(migrated, capsys):
    plan, db = migrated
    _corrupt(
        db,
        "agent_states",
        "agent_id = 'agent-3'",
        "state_data = jsonb_set(state_data, '{a,s}', '\"changed\"')",
    )
    assert migrate.run(["verify", "--plan", str(plan), "--json", "--full"]) == 1
    doc = json.loads(capsys.readouterr().out)
    m = doc["components"][0]["mismatches"][0]
    assert m["component"] == "agent_state" and m["tenant_id"] == T1
    assert m["key"] == "agent:agent-3" and m["column"].startswith("state_data $.a.s")
    assert "changed" in m["column"]


@pytest.mark.parametrize(
    "raw",
    [
        DOC,
        '{"b":1,"a":2}',
        '{"ab":1,"b":2}',
        '{"a":1,"a":2}',
        '"caf\\u00e9 \\ud83d\\ude80"',
        "1.50",
        "1e2",
        "-0",
        "-0.0",
        "123456789012345678901234567890",
        "1e400",
        "1E-2",
        "[1.0, 2.50e1, -3e-3, 0.000]",
        '{"é":1,"e":2,"zz":3,"ä":4}',
        '"tab\\tnl\\n\\u0001 \\u001f \\u007f / \\\\ \\""',
        '{"k": {"x": [true, false, null, {}, []]}}',
        '  { "a" : [ 1 , 2 ] }  ',
        "-1.0e+2",
        "0e5",
        "12.345e-10",
        '{"":1," ":2}',
    ],
)
def test_jsonb_text_matches_postgresql(target_db, raw):
    with psycopg.connect(target_db.dsn) as conn:
        expected = conn.execute("SELECT %s::jsonb::text", (raw,)).fetchone()[0]
    assert jsonb_text(raw) == expected


def test_json_difference_is_exact():
    assert json_difference('{"a": 1.0}', '{"a": 1}') == "$.a: 1.0 on SQLite, 1 on PostgreSQL"
    assert json_difference('{"a": true}', '{"a": 1}') is not None
    assert json_difference('{"a":1,"a":2}', '{"a": 2}') is None
    assert json_difference('{"n": 1e2}', '{"n": 100}') is None
    assert (
        json_difference(
            '{"n": 123456789012345678901234567890}', '{"n": 123456789012345678901234567891}'
        )
        is not None
    )


def test_validate_sqlite_backend_lists_bad_records(tmp_path, capsys):
    src = tmp_path / "src.db"
    make_source(src, agents=4)
    conn = sqlite3.connect(src)
    conn.execute("UPDATE agent_states SET checksum = ? WHERE agent_id = 'agent-1'", ("0" * 64,))
    conn.execute("UPDATE agent_states SET state_data = '{\"broken\": ' WHERE agent_id = 'agent-2'")
    conn.commit()
    conn.close()
    code = migrate.run(
        [
            "validate",
            "--backend",
            "sqlite",
            "--components",
            "agent_state",
            "--source",
            str(src),
            "--json",
        ]
    )
    assert code == 1
    doc = json.loads(capsys.readouterr().out)
    problems = doc["components"][0]["problems"]
    assert any("agent:agent-1" in p and "checksum" in p for p in problems)
    assert any("agent:agent-2" in p and "not valid JSON" in p for p in problems)
