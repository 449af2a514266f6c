"""The SQLite -> PostgreSQL key routing of llmspell, and JSON numbers as llmspell decodes them."""

from __future__ import annotations

import uuid

import pytest

from core.model import canonical, json_numbers
from core.model.checks import check_json
from core.model.components import AGENT_STATE, KV_STORE, SESSIONS, WORKFLOW_STATE
from core.tenant_sql import tenant_in
from sources.key_routing import (
    ANSWERS_ELSEWHERE,
    LLMSPELL,
    SAME,
    UNREACHABLE,
    VERBATIM,
    KeyMapper,
    agent_route,
    candidates_sql,
    classify,
    classify_db,
    key_columns,
    kv_route,
    pg_lookup,
    session_route,
    workflow_route,
)
from sources.sqlite_reader import SourceDB
from tests.llmspell_writes import SqliteBackend

UUID = "6f1c2b3a-1d2e-4f50-8a9b-0c1d2e3f4a5b"


def test_three_part_agent_key_is_rekeyed_under_its_own_key():
    route = agent_route("worker:a2", "a2", LLMSPELL)  # SQLite's row for agent:worker:a2
    assert route.status == SAME and route.answers_to == "agent:worker:a2"
    assert route.agent == ("a2", "worker")
    assert pg_lookup(route.answers_to) == ("agent_states", "agent_id", "a2")


def test_verbatim_three_part_agent_key_is_unreachable():
    route = agent_route("worker:a2", "a2", VERBATIM)
    assert route.status == UNREACHABLE and "agent_id 'a2'" in route.reason


@pytest.mark.parametrize("layout", [LLMSPELL, VERBATIM])
def test_two_part_agent_key_answers_to_its_type(layout):
    route = agent_route("r1", "unknown", layout)
    assert route.status == ANSWERS_ELSEWHERE and route.answers_to == "agent:unknown:r1"
    assert route.agent is None  # PostgreSQL's set refuses agent:r1: SQLite's columns stay


def test_four_part_and_overlong_agent_keys_are_unreachable():
    assert agent_route("x:y:z", "y", LLMSPELL).status == UNREACHABLE
    long = agent_route("t" * 101 + ":a", "a", LLMSPELL)
    assert long.status == UNREACHABLE and "VARCHAR(100)" in long.reason


def test_workflow_session_and_kv_routes():
    assert workflow_route("wf-1").status == SAME
    assert workflow_route("wf:1").status == UNREACHABLE
    for form in (UUID, UUID.upper(), UUID.replace("-", ""), "{" + UUID + "}"):
        assert session_route(form).status == SAME, form
    grouped = "-".join(UUID.replace("-", "")[i : i + 4] for i in range(0, 32, 4))
    assert session_route(grouped).status == UNREACHABLE  # PostgreSQL stores it, llmspell can't
    assert session_route("not-a-uuid").status == SAME  # the record checks refuse it
    assert kv_route("config:x").status == SAME
    assert kv_route(f"session:{UUID}:artifact").status == SAME
    for key, table in (
        (f"session:{UUID}", "sessions"),
        ("agent:kernel:state", "agent_states"),
        ("custom:workflow_7:state", "workflow_states"),
    ):
        route = kv_route(key)
        assert route.status == UNREACHABLE and table in route.reason, key


def test_collisions_are_unreachable_and_kept_verbatim():
    rows = [
        ("t1", ("A:dup", "dup")),
        ("t1", ("B:dup", "dup")),
        ("t1", ("dup", "unknown")),
        ("t2", ("A:dup", "dup")),  # another tenant: no collision
        ("t1", ("r1", "unknown")),
    ]
    reach = classify(AGENT_STATE, iter(rows), LLMSPELL)
    assert reach.records == 5
    assert [x.key for x in reach.unreachable] == ["agent:A:dup", "agent:B:dup", "agent:dup"]
    assert all("collides" in x.reason for x in reach.unreachable)
    assert [(x.tenant_id, x.key, x.answers_to) for x in reach.elsewhere] == [
        ("t1", "agent:r1", "agent:unknown:r1")
    ]
    assert reach.keep_verbatim == {("t1", k) for k in ("agent:A:dup", "agent:B:dup", "agent:dup")}
    verbatim = classify(AGENT_STATE, iter(rows[:2]), VERBATIM)
    assert len(verbatim.unreachable) == 2 and not verbatim.keep_verbatim


def test_mapper_rekeys_text_and_raw_rows_and_keeps_the_rest():
    names = AGENT_STATE.column_names
    row = ["agent:worker:a2"] + [None] * len(names)
    row[1 + names.index("tenant_id")] = "t1"
    row[1 + names.index("agent_id")] = "worker:a2"
    row[1 + names.index("agent_type")] = "a2"
    row[1 + names.index("state_data")] = "{}"
    mapped = KeyMapper(AGENT_STATE, LLMSPELL).row(tuple(row))
    assert mapped[1 + names.index("agent_id")] == "a2"
    assert mapped[1 + names.index("agent_type")] == "worker"
    assert mapped[1 + names.index("state_data")] == "{}"
    raw = tuple(v.encode() if isinstance(v, str) else v for v in row)
    mapped = KeyMapper(AGENT_STATE, LLMSPELL).row(raw)
    assert mapped[1 + names.index("agent_id")] == b"a2"
    assert KeyMapper(AGENT_STATE, LLMSPELL, {("t1", "agent:worker:a2")}).row(raw) == raw
    assert KeyMapper(AGENT_STATE, VERBATIM).row(tuple(row)) == tuple(row)
    for comp in (WORKFLOW_STATE, SESSIONS, KV_STORE):
        assert not KeyMapper(comp, LLMSPELL).active


def test_numbers_as_serde_json_decodes_them():
    assert json_numbers.serde_number("1e16") == ("float", 1e16)
    assert json_numbers.serde_number("10000000000000000") == ("int", 10**16)
    assert json_numbers.serde_number("-0") == ("float", -0.0)
    assert json_numbers.serde_number(str(2**64)) == ("float", float(2**64))
    assert json_numbers.serde_number("1e400")[0] == "error"
    found = json_numbers.scan('{"a": [1e16, -0, 2E3, 1.5, 1.50e1, 1e20, -0.0], "s": "x1e5"}')
    assert [(f.path, f.written, f.after_jsonb) for f in found] == [
        ("$.a[0]", "1e16", "10000000000000000"),
        ("$.a[1]", "-0", "0"),
        ("$.a[2]", "2E3", "2000"),
    ]


def test_out_of_range_number_is_refused_with_its_path():
    problem = check_json('{"a": {"b": [0, -1e400]}}')
    assert "-1e400" in problem and "$.a.b[1]" in problem and "f64" in problem
    assert check_json('{"n": 1e308, "tiny": 1e-400}') is None


def test_difference_expects_jsonb_number_forms():
    src = '{"n": 1e16, "z": -0, "f": 2.5}'
    expected = json_numbers.llmspell_value(src, through_jsonb=True)
    assert (
        canonical.difference(
            expected, json_numbers.llmspell_value('{"f": 2.5, "n": 10000000000000000, "z": 0}')
        )
        is None
    )
    diff = canonical.difference(
        expected, json_numbers.llmspell_value('{"f": 2.5, "n": 10000000000000000.0, "z": 0}')
    )
    assert diff.startswith("$.n:") and "int" in diff and "float" in diff
    assert canonical.difference(json_numbers.llmspell_value(src), expected).startswith("$.")


def _hostile_source(path):
    """Every kind of key next to plenty of plain ones, in a real SQLite file."""
    db = SqliteBackend(path)
    for t in ("t1", "t2"):
        for i in range(30):  # plain records: each answers under its own key
            db.set_agent(t, f"agent:worker:a{i}", "{}")
            db.save_workflow(t, f"wf-{i}", "{}")
            db.save_session(t, str(uuid.UUID(int=i + 1)), "{}")
            db.set_kv(t, f"config:{i}", b"v")
    t = "t1"
    for key in (
        "agent:bare",  # answers elsewhere
        "agent:x:y:z",  # four parts
        "agent:A:dup",  # collides with B:dup and with the bare `dup`
        "agent:B:dup",
        "agent:dup",
        "agent:" + "k" * 100 + ":fits",  # VARCHAR(100) exactly
        "agent:" + "k" * 101 + ":long",
        "agent:" + "é" * 60 + ":multibyte",  # 60 characters, 120 bytes: fits
        "agent:über:ü",
    ):
        db.set_agent(t, key, "{}")
    db.set_agent("t2", "agent:Z:dup", "{}")  # another tenant's dup: no collision
    db.save_workflow(t, "wf:colon", "{}")
    u = uuid.UUID(int=99)
    for form in (u.hex, str(u).upper(), "{" + str(u) + "}", "not-a-uuid", str(u)[:-1] + "g"):
        db.save_session(t, form, "{}")
    for key in (
        f"session:{u}",
        f"session:{u}:artifact",
        "agent:kernel:state",
        "Agent:kernel",
        "custom:workflow_7:state",
        "custom:workflowX",
        "sessions:x",
    ):
        db.set_kv(t, key, b"v")
    db.close()
    return path


@pytest.mark.parametrize("layout", [LLMSPELL, VERBATIM])
@pytest.mark.parametrize("tenants", [None, ["t1"]])
def test_sqlite_preselection_classifies_as_routing_every_record(tmp_path, layout, tenants):
    """classify_db routes only the rows SQLite picks; the result must be what routing every
    record in Python gives, and the plain records must not be among those rows."""
    path = _hostile_source(tmp_path / "hostile.db")
    comps = [AGENT_STATE, WORKFLOW_STATE, SESSIONS, KV_STORE]
    with SourceDB(path) as db:
        got = classify_db(db, comps, tenants, layout)
        where, args = tenant_in(tenants)
        for comp in comps:
            cols = ", ".join(key_columns(comp))
            rows = db.conn.execute(
                f"SELECT tenant_id, {cols} FROM {comp.sqlite_table}{where} "
                f"ORDER BY tenant_id, {comp.key_column}",
                args,
            ).fetchall()
            every = classify(comp, ((r[0], tuple(r[1:])) for r in rows), layout)
            assert got[comp.name] == every, comp.name
            picked = db.conn.execute(candidates_sql(comp, layout, where), args).fetchall()
            if not (comp is AGENT_STATE and layout == VERBATIM):  # there no key is SAME
                assert len(picked) < len(rows) - 29, comp.name  # plain records are not routed
