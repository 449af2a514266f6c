"""Read-back: replay llmspell's PostgreSQL backend `get(key)` for migrated keys and compare
with what its SQLite backend returns, as llmspell decodes it.

For every sampled record (all of them under full comparison) the key PostgreSQL answers to
(`sources.key_routing`) is routed the way the PostgreSQL backend routes it (agent_states by
the third key part, workflow_states by the id, sessions by UUID, else kv_store), and read as
`llmspell_app` with `app.current_tenant_id` set (row-level security applies, as for
llmspell), filtered by tenant as llmspell does. The comparison runs inside PostgreSQL
first: the SQLite text goes to the server with the keys, and a record matches when the row
`get` finds holds exactly the JSONB text of that source text (kv_store: the same bytes);
the values' text never comes back. A record that does not match there is fetched and
compared the slow way, decoded as serde_json decodes it and expecting JSONB's number forms
(`sources.json_numbers`), which decides and names the difference. Records reported
unreachable are skipped (they were allowed).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from destinations.target_schema import act_as_tenant
from sources import json_numbers, key_routing
from sources.components import COMPONENTS, KV_STORE, Component
from sources.key_routing import Reachability
from sources.sqlite_reader import SourceDB
from validation import canonical
from validation.compare import sampled

APP_ROLE = "llmspell_app"
MAX_REPORTED = 20
_CHUNK = 2000
_VALUE_COLUMN = {
    "agent_states": "state_data",
    "workflow_states": "state_data",
    "sessions": "session_data",
    "kv_store": "value",
}


@dataclass
class Readback:
    """One component's read-back result."""

    component: str
    compared: int = 0
    matched: int = 0
    skipped_unreachable: int = 0
    mismatch_count: int = 0
    mismatches: list[str] = field(default_factory=list)
    role: str = APP_ROLE

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def pg_lookup(key: str) -> tuple[str, str, str] | None:
    """(table, key column, value) the PostgreSQL backend's get(key) reads; None when it
    refuses the key (its parse error)."""
    if key.startswith("agent:"):
        parts = key.split(":")
        return ("agent_states", "agent_id", parts[2]) if len(parts) == 3 else None
    if key.startswith("custom:workflow_"):
        parts = key.split(":")
        if len(parts) != 3 or not parts[1].startswith("workflow_"):
            return None
        return ("workflow_states", "workflow_id", parts[1][len("workflow_") :])
    if key_routing.is_primary_session_key(key):
        return ("sessions", "session_id", str(uuid.UUID(key[len("session:") :])))
    return ("kv_store", "key", key)


def _source_rows(
    db: SourceDB, comp: Component, tenants: list[str] | None
) -> Iterator[tuple[str, tuple, object]]:
    cols = key_routing.key_columns(comp)
    value = _VALUE_COLUMN[comp.pg_table]
    where, args = db._where(tenants)
    cur = db.conn.execute(
        f"SELECT tenant_id, {', '.join(cols)}, {value} FROM {comp.sqlite_table}{where} "
        f"ORDER BY tenant_id, {comp.key_column}",
        args,
    )
    for row in cur:
        yield row[0], tuple(row[1:-1]), row[-1]


class Replayer:
    """Reads keys the way llmspell's PostgreSQL backend does, on one connection."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        self.role = APP_ROLE
        try:
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(APP_ROLE)))
        except psycopg.Error:  # not allowed to become llmspell_app: read as ourselves
            self.role = conn.execute("SELECT current_user").fetchone()[0]
            conn.rollback()
            self.role = str(self.role)

    def get_many(self, tenant: str, keys: list[str]) -> dict[str, object]:
        """`get(key)` for each key under `tenant`: the raw value (JSON as text, kv bytes)."""
        by_table: dict[tuple[str, str], dict[str, str]] = {}
        for key in keys:
            found = pg_lookup(key)
            if found:
                table, column, ident = found
                by_table.setdefault((table, column), {})[ident] = key
        out: dict[str, object] = {}
        with self.conn.transaction():
            if self.role == APP_ROLE:
                self.conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(APP_ROLE)))
            act_as_tenant(self.conn, tenant)
            for (table, column), idents in by_table.items():
                value = _VALUE_COLUMN[table]
                cast = "" if table == "kv_store" else "::text"
                rows = self.conn.execute(
                    sql.SQL(
                        "SELECT {col}::text, {val}" + cast + " FROM llmspell.{table} "
                        "WHERE tenant_id = %s AND {col}::text = ANY(%s)"
                    ).format(
                        col=sql.Identifier(column),
                        val=sql.Identifier(value),
                        table=sql.Identifier(table),
                    ),
                    (tenant, list(idents)),
                ).fetchall()
                for ident, val in rows:
                    out[idents[ident]] = val
        return out

    def matching(self, tenant: str, items: list[tuple[str, object]]) -> set[int]:
        """Positions in `items` (key, SQLite value) whose `get(key)` under `tenant` returns
        exactly the source value as JSONB stores it (kv_store: the same bytes), decided by
        PostgreSQL. Anything not returned needs the slow comparison."""
        by_table: dict[tuple[str, str], tuple[list[int], list[str], list]] = {}
        for at, (key, value) in enumerate(items):
            found = pg_lookup(key)
            if found:
                table, column, ident = found
                places, idents, values = by_table.setdefault((table, column), ([], [], []))
                places.append(at)
                idents.append(ident)
                values.append(_as_bytes(value) if table == "kv_store" else value)
        same: set[int] = set()
        try:
            with self.conn.transaction():
                if self.role == APP_ROLE:
                    self.conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(APP_ROLE)))
                act_as_tenant(self.conn, tenant)
                for (table, column), (places, idents, values) in by_table.items():
                    rows = self.conn.execute(
                        _match_query(table, column), (idents, values, tenant)
                    ).fetchall()
                    same.update(places[n - 1] for (n,) in rows)
        except (psycopg.DataError, UnicodeError):  # PostgreSQL cannot parse one: the slow way
            return set()
        return same


def _key_type(table: str, column: str) -> str:
    comp = next(c for c in COMPONENTS.values() if c.pg_table == table)
    return comp.column(column).pg_type


def _match_query(table: str, column: str) -> sql.Composed:
    """Positions (1-based) whose row, found as `get` finds it, holds the source value."""
    value = sql.Identifier(_VALUE_COLUMN[table])
    if table == "kv_store":
        src_type, same = sql.SQL("bytea"), sql.SQL("t.{} = u.src").format(value)
    else:
        src_type = sql.SQL("text")
        same = sql.SQL("t.{}::text = u.src::jsonb::text").format(value)
    # LATERAL ... LIMIT 1: one index lookup per key, as `get` does (a join would let the
    # planner scan and sort the tenant's whole table for every chunk). Arrays go in binary
    # (%b): psycopg's text form escapes each element in Python, 1000x slower.
    return sql.SQL(
        "SELECT u.n FROM unnest(%b::text[], %b::{src_type}[]) WITH ORDINALITY AS u(ident, src, n) "
        "CROSS JOIN LATERAL (SELECT {value} FROM llmspell.{table} t WHERE t.tenant_id = %s "
        "AND t.{col} = u.ident::{key_type} LIMIT 1) t WHERE {same}"
    ).format(
        src_type=src_type,
        value=value,
        table=sql.Identifier(table),
        col=sql.Identifier(column),
        key_type=sql.SQL(_key_type(table, column)),
        same=same,
    )


def _as_bytes(value) -> bytes | None:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value


def _compare(comp: Component, source, target) -> str | None:
    if comp.name == KV_STORE.name:
        src = _as_bytes(source)
        tgt = bytes(target) if target is not None else None
        if src == tgt:
            return None
        return f"value: {len(src or b'')} bytes on SQLite, {len(tgt or b'')} bytes on PostgreSQL"
    try:
        expected = json_numbers.llmspell_value(source, through_jsonb=True)
    except ValueError as exc:
        return f"SQLite value does not decode: {exc}"
    return canonical.difference(expected, json_numbers.llmspell_value(target))


def readback(
    db: SourceDB,
    conn: psycopg.Connection,
    comp: Component,
    reach: Reachability,
    percent: float,
    tenants: list[str] | None,
) -> Readback:
    """Replay `get` for the sampled keys of one component and compare with SQLite."""
    replayer = Replayer(conn)
    result = Readback(comp.name, role=replayer.role)
    skip = {(x.tenant_id, x.key) for x in reach.unreachable}
    pending: dict[str, list[tuple[str, str, object]]] = {}

    def flush(tenant: str) -> None:
        items = pending.pop(tenant, [])
        if not items:
            return
        same = replayer.matching(tenant, [(answer, value) for _, answer, value in items])
        result.compared += len(items)
        result.matched += len(same)
        items = [item for at, item in enumerate(items) if at not in same]
        if not items:
            return
        got = replayer.get_many(tenant, [answer for _, answer, _ in items])
        for key, answer, value in items:
            if answer not in got:
                problem = f"get({answer!r}) finds nothing"
            else:
                problem = _compare(comp, value, got[answer])
            if problem is None:
                result.matched += 1
                continue
            result.mismatch_count += 1
            if len(result.mismatches) < MAX_REPORTED:
                shown = key if key == answer else f"{key} (read as {answer})"
                result.mismatches.append(f"{comp.name} tenant={tenant} key={shown}: {problem}")

    for tenant, values, value in _source_rows(db, comp, tenants):
        key = key_routing.sqlite_key(comp, values)
        route = key_routing.route_of(comp, values, reach.layout)
        if (tenant, key) in skip or route.status == key_routing.UNREACHABLE:
            result.skipped_unreachable += 1
            continue
        if not sampled(tenant, key, percent):
            continue
        pending.setdefault(tenant, []).append((key, route.answers_to, value))
        if len(pending[tenant]) >= _CHUNK:
            flush(tenant)
    for tenant in list(pending):
        flush(tenant)
    conn.rollback()
    return result
