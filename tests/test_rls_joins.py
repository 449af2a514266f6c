"""Joins from a key list onto llmspell's tables, as `llmspell_app` under forced RLS, right
after a migration loaded them (no statistics yet) must not rescan the tenant per key.

Two things made them quadratic: the planner guesses 10 keys per ledger array, and a join
condition PostgreSQL cannot prove leakproof (a cast to VARCHAR(n), or text to UUID, of the
other side) cannot use the table's (tenant_id, key) index under RLS. Measured on 200k
records: execute's sync baseline took 52 s (483 s with no statistics at all) instead of
8 s. The old rollback delete reads 2.2M rows for 1,500 keys here (at 200k the planner
happened to pick a hash join). The tests count rows PostgreSQL reads and throws away
(EXPLAIN ANALYZE), not seconds."""

from __future__ import annotations

import json
import uuid

import pyarrow as pa
import pytest
from psycopg import sql

from core.model.registry import COMPONENTS
from destinations import run_ledger, sync_ledger
from destinations.target_schema import act_as_tenant
from tests.helpers import database

TENANT = "tenant-rls"
RUN = "20260101-000000-rlsjoin"
N = 1500
OTHER_TENANTS = 9
# key column kinds: VARCHAR(500) (kv_store), UUID (sessions), VARCHAR(255) (agent_state)
CASES = ["kv_store", "sessions", "agent_state"]


def _keys(name: str) -> list[str]:
    if name == "sessions":
        return [str(uuid.UUID(int=i + 1)) for i in range(N)]
    return [f"key-{i:05d}" for i in range(N)]


@pytest.fixture(scope="module")
def loaded(pg_admin_dsn):
    """A target with N rows of one tenant in each case's table, a run ledger listing them,
    and no statistics (autovacuum off, never analyzed)."""
    gen = database(pg_admin_dsn, True)
    db = next(gen)
    with db.connect() as conn:
        for name in CASES:
            comp = COMPONENTS[name]
            conn.execute(
                sql.SQL("ALTER TABLE llmspell.{} SET (autovacuum_enabled = false)").format(
                    sql.Identifier(comp.pg_table)
                )
            )
        keys = {name: _keys(name) for name in CASES}
        conn.execute(
            "INSERT INTO llmspell.kv_store (tenant_id, key, value) "
            "SELECT %s, k, '\\x00' FROM unnest(%s::text[]) k",
            (TENANT, keys["kv_store"]),
        )
        conn.execute(
            "INSERT INTO llmspell.sessions (tenant_id, session_id, session_data) "
            "SELECT %s, k::uuid, '{}' FROM unnest(%s::text[]) k",
            (TENANT, keys["sessions"]),
        )
        conn.execute(
            "INSERT INTO llmspell.agent_states (tenant_id, agent_id, agent_type, state_data, "
            "checksum) "
            "SELECT %s, k, 'bench', '{}', 'x' FROM unnest(%s::text[]) k",
            (TENANT, keys["agent_state"]),
        )
        for name in CASES:
            conn.execute(
                "INSERT INTO llmspell_migrate.written_keys (run_id, component, tenant_id, "
                "natural_keys) VALUES (%s, %s, %s, %s)",
                (RUN, name, TENANT, keys[name]),
            )
        unanalyzed = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'llmspell'::regnamespace "
            "AND relname IN ('kv_store', 'sessions', 'agent_states') AND reltuples >= 0"
        ).fetchone()[0]
        assert unanalyzed == 0, "the tables should have no statistics"
    yield db, keys
    next(gen, None)


def _thrown_away(plan: list, table: str) -> tuple[int, int]:
    """(rows removed by join filters and by filters on `table`'s scans, rows those scans
    returned), summed over every node of an EXPLAIN (ANALYZE, FORMAT JSON) plan."""
    removed = returned = 0
    stack = [plan[0]["Plan"]]
    while stack:
        node = stack.pop()
        loops = node.get("Actual Loops", 1)
        removed += int(node.get("Rows Removed by Join Filter", 0) * loops)
        if node.get("Relation Name") == table and "Scan" in node["Node Type"]:
            removed += int(node.get("Rows Removed by Filter", 0) * loops)
            returned += int(node.get("Actual Rows", 0) * loops)
        stack += node.get("Plans", [])
    return removed, returned


def _explain(conn, statement: sql.Composable, params: dict) -> list:
    row = conn.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + statement, params).fetchone()[0]
    return row if isinstance(row, list) else json.loads(row)


@pytest.mark.parametrize("name", CASES)
def test_rollback_delete_reads_each_key_once(loaded, name):
    db, _ = loaded
    comp = COMPONENTS[name]
    with db.connect(app=True) as conn:
        with conn.transaction(force_rollback=True):
            act_as_tenant(conn, TENANT)
            plan = _explain(
                conn,
                run_ledger.delete_written_sql(comp),
                {"run": RUN, "comp": name, "tenant": TENANT},
            )
    removed, returned = _thrown_away(plan, comp.pg_table)
    assert plan[0]["Plan"]["Actual Rows"] == 0 and returned == N, plan
    assert removed < N, f"{removed} rows read and thrown away for {N} keys"


@pytest.mark.parametrize("name", CASES)
def test_sync_prints_read_each_target_row_once(loaded, name):
    db, keys = loaded
    comp = COMPONENTS[name]
    # as in an execute, the stage holds every tenant's prints; the others' rows are not in
    # this target (they only make the stage big, as it is)
    others = [f"other-{i}" for i in range(OTHER_TENANTS) for _ in range(N)]
    prints = pa.table(
        {
            "tenant_id": [TENANT] * N + others,
            "nkey": keys[name] * (1 + OTHER_TENANTS),
            "llmspell_key": keys[name] * (1 + OTHER_TENANTS),
            "source_fp": pa.array(range(N * (1 + OTHER_TENANTS)), pa.int64()),
        }
    )
    with db.connect(app=True) as conn:
        with conn.transaction(force_rollback=True):
            written = sync_ledger.write_prints(conn, RUN, comp, prints, False, ledger_only=True)
            assert written == N
            act_as_tenant(conn, TENANT)
            sync_ledger.clear_prints(conn, RUN, comp)  # as write_prints does before inserting
            plan = _explain(
                conn,
                sync_ledger.prints_insert_sql(comp, True, True),
                {"run": RUN, "comp": name, "tenant": TENANT},
            )
    removed, returned = _thrown_away(plan, comp.pg_table)
    assert returned == N, plan
    assert removed < N, f"{removed} rows read and thrown away for {N} keys"
