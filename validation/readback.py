"""Read-back: replay llmspell's PostgreSQL backend `get(key)` for migrated keys and compare
with what its SQLite backend returns, as llmspell decodes it.

For every sampled record (all of them under full comparison) the key PostgreSQL answers to
(`sources.key_routing`) is routed the way the PostgreSQL backend routes it (agent_states by
the third key part, workflow_states by the id, sessions by UUID, else kv_store), and read as
`llmspell_app` with `app.current_tenant_id` set (row-level security applies, as for
llmspell), filtered by tenant as llmspell does. The values are compared by print first:
the keys go to the server, which hashes the value of each row `get` finds and sends back
8 bytes a row, and a record matches when that equals the print of its source value (its
JSONB text, kv_store: its bytes; `validation.source_prints.GetPrinter`, computed with the
source fingerprints); no value's text travels either way. A record that does not match
is read from both sides and compared the slow way, decoded as serde_json decodes it and
expecting JSONB's number forms (`core.model.json_numbers`), which decides and names the
difference. Records reported unreachable are skipped (they were allowed).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from core import interrupts
from core.model import canonical, json_numbers
from core.model.components import KV_STORE, Component
from core.model.registry import COMPONENTS
from core.tenant_sql import tenant_in
from destinations.row_text import target_fingerprint_expr
from destinations.target_schema import act_as_tenant
from sources import key_routing
from sources.key_routing import GET_COLUMN, VALUE_COLUMN, Reachability, pg_lookup
from sources.sqlite_reader import SourceDB
from validation.source_prints import (
    GET_FIELDS,
    GET_LAYOUT,
    SOURCE_PRINTS,
    PrintsInMemory,
    get_printer,
    sampled,
)

APP_ROLE = "llmspell_app"
MAX_REPORTED = 20
_CHUNK = 10_000
# the source prints' columns read-back uses (`source_gets` reads them from SQLite)
_GETS = pa.schema(
    SOURCE_PRINTS.field(n) for n in ("tenant_id", "llmspell_key", "picked", *GET_FIELDS)
)


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
    decoded: int = 0  # records PostgreSQL did not match, compared the slow way
    # records whose value the comparison matched in the row `get` reads: only found, as
    # llmspell finds it, not printed again
    by_comparison: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _source_rows(
    db: SourceDB, comp: Component, tenants: list[str] | None
) -> Iterator[tuple[str, tuple, object]]:
    cols = key_routing.key_columns(comp)
    value = VALUE_COLUMN[comp.pg_table]
    where, args = tenant_in(tenants)
    cur = db.conn.execute(
        f"SELECT tenant_id, {', '.join(cols)}, {value} FROM {comp.sqlite_table}{where}", args
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

    @contextmanager
    def as_llmspell(self, tenant: str) -> Iterator[None]:
        """A transaction reading as llmspell does: its role, the tenant set (RLS applies)."""
        with self.conn.transaction():
            if self.role == APP_ROLE:
                self.conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(APP_ROLE)))
            act_as_tenant(self.conn, tenant)
            yield

    def get_many(self, tenant: str, keys: list[str]) -> dict[str, object]:
        """`get(key)` for each key under `tenant`: the raw value (JSON as text, kv bytes)."""
        by_table: dict[tuple[str, str], dict[str, str]] = {}
        for key in keys:
            found = pg_lookup(key)
            if found:
                table, column, ident = found
                by_table.setdefault((table, column), {})[ident] = key
        out: dict[str, object] = {}
        with self.as_llmspell(tenant):
            for (table, column), idents in by_table.items():
                value = VALUE_COLUMN[table]
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

    def present(self, tenant: str, table: str, idents: list[str]) -> list[int]:
        """Positions (0-based) in `idents` whose row in `table` `get` finds under `tenant`
        (looked up by key, as llmspell reads; nothing printed)."""
        found = self._lookup(tenant, table, idents, False)
        return [i for i, ident in enumerate(idents) if ident in found]

    def matching(self, tenant: str, table: str, idents: list[str], prints: list) -> list[int]:
        """Positions (0-based) in `idents` whose row in `table`, found as `get` finds it
        under `tenant`, holds a value with the given print (printed by PostgreSQL; only the
        8-byte prints come back)."""
        found = self._lookup(tenant, table, idents, True)
        return [i for i, (ident, fp) in enumerate(zip(idents, prints)) if found.get(ident) == fp]

    def _lookup(self, tenant: str, table: str, idents: list[str], printed: bool) -> dict:
        """The rows of `idents` `get` finds under `tenant`: key -> the value's print (or
        None when not `printed`); empty when PostgreSQL cannot take a key (the slow way
        decides those)."""
        try:
            with self.as_llmspell(tenant):
                query = _lookup_query(table, printed)
                rows = self.conn.execute(query, (tenant, idents)).fetchall()
        except (psycopg.DataError, UnicodeError):
            return {}
        return {row[0]: (bytes(row[1]) if printed else None) for row in rows}


def _component_of(table: str) -> Component:
    return next(c for c in COMPONENTS.values() if c.pg_table == table)


def _lookup_query(table: str, printed: bool) -> sql.Composed:
    """The rows of a list of keys, as `get` reads them, with their value's print if
    `printed` (`destinations.row_text.target_fingerprint_expr` of the value column).

    One `= ANY(array)` condition, not a LATERAL lookup per key: whatever plan the
    statistics of a table loaded a moment ago suggest, the worst is one scan of the tenant's
    rows per statement. (With a lookup per key, a plan made from an autoanalyze of the
    half-loaded table read the tenant's rows for each key: one statement of 10,000 keys ran
    for minutes at 1,000,000 records, where the index answers in 30 ms.) The keys are cast
    on the array's side, so the column's index stays usable under row-level security;
    arrays go in binary (%b): psycopg's text form escapes each element in Python."""
    comp = _component_of(table)
    column = GET_COLUMN[table]
    value = (
        sql.SQL(", ") + target_fingerprint_expr([comp.column(VALUE_COLUMN[table])])
        if printed
        else sql.SQL("")
    )
    return sql.SQL(
        "SELECT t.{col}::text{value} FROM llmspell.{table} t WHERE t.tenant_id = %s "
        "AND t.{col} = ANY(%b::text[]::{key_type}[])"
    ).format(
        col=sql.Identifier(column),
        value=value,
        table=sql.Identifier(table),
        key_type=sql.SQL(comp.column(column).pg_type),
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


def source_gets(
    db: SourceDB, comp: Component, layout: str, percent: float, tenants: list[str] | None
) -> pa.Table:
    """The read-back columns of `validation.source_prints.SourcePrints`,
    read straight from SQLite (for callers without the source fingerprints at hand)."""
    gets = get_printer(comp, layout)
    assert gets is not None, comp.name
    where, args = tenant_in(tenants)
    names = comp.column_names
    cur = db.conn.execute(
        f"SELECT {comp.key_sql}, {', '.join(names)} FROM {comp.sqlite_table}{where}", args
    )
    out: list[list] = [[] for _ in _GETS]
    tenant_at = names.index("tenant_id")
    for lkey, *values in cur:
        tenant = values[tenant_at]
        pick = sampled(tenant, lkey, percent)
        text = gets.value_column.source_text(values[gets.value_at]) if pick else None
        for column, item in zip(out, (tenant, lkey, pick, *gets.record(lkey, values, text))):
            column.append(item)
    return pa.table([pa.array(c, f.type) for c, f in zip(out, _GETS)], schema=_GETS)


def readback(
    db: SourceDB,
    conn: psycopg.Connection,
    comp: Component,
    reach: Reachability,
    percent: float,
    tenants: list[str] | None,
    prints: pa.Table | None = None,
    proven: pa.Array | None = None,
) -> Readback:
    """Replay `get` for the sampled keys of one component and compare with SQLite.
    `prints` are the component's source fingerprints if computed ahead with read-back's
    columns for this key layout; otherwise they are read from `db` here. `proven` (per row
    of `prints`, `validation.stage.proven_by_comparison`): records whose value validation's
    comparison already matched in the very row `get` reads; for those PostgreSQL is only
    asked whether `get` finds the row (as llmspell, under RLS), no value printed again."""
    if prints is None or not has_gets(prints, reach):
        prints = source_gets(db, comp, reach.layout, percent, tenants)
        proven = None
    if proven is None:
        proven = pa.array([False] * prints.num_rows, pa.bool_())
    by_tenant = PrintsInMemory(prints.append_column("proven", proven))
    parts = (by_tenant.of(tenant) for tenant in by_tenant.tenants())
    return readback_tenants(db, conn, comp, reach, tenants, parts)


def has_gets(prints: pa.Table, reach: Reachability) -> bool:
    """Whether `prints` carry read-back's columns, routed by `reach`'s key layout."""
    return (prints.schema.metadata or {}).get(GET_LAYOUT) == reach.layout.encode()


def readback_tenants(
    db: SourceDB,
    conn: psycopg.Connection,
    comp: Component,
    reach: Reachability,
    tenants: list[str] | None,
    parts: Iterable[pa.Table],
) -> Readback:
    """`readback` from one tenant's prints at a time (each with read-back's columns and
    `proven`), as validation hands them over: memory holds a tenant, not the component."""
    replayer = Replayer(conn)
    result = Readback(comp.name, role=replayer.role)
    skip = {(x.tenant_id, x.key) for x in reach.unreachable}
    undecided: dict[str, dict[str, str]] = {}  # tenant -> SQLite key -> key `get` reads
    for part in parts:
        if not part.num_rows:
            continue
        tenant = part.column("tenant_id")[0].as_py()
        mine = _wanted(part, skip, result)
        lkeys = mine.column("llmspell_key").to_pylist()
        tables = mine.column("get_table").to_pylist()
        idents = mine.column("get_ident").to_pylist()
        fps = mine.column("value_fp").to_pylist()
        known = mine.column("proven").to_pylist()
        same: set[int] = set()
        for table in {t for t in tables if t is not None}:
            for by_comparison in (True, False):
                at = [i for i, t in enumerate(tables) if t == table and known[i] == by_comparison]
                for start in range(0, len(at), _CHUNK):
                    interrupts.check()  # a worker thread: Ctrl-C reaches it only this way
                    chunk = at[start : start + _CHUNK]
                    keys = [idents[i] for i in chunk]
                    if by_comparison:
                        found = replayer.present(tenant, table, keys)
                        result.by_comparison += len(found)
                    else:
                        found = replayer.matching(tenant, table, keys, [fps[i] for i in chunk])
                    same.update(chunk[n] for n in found)
        result.compared += len(lkeys)
        result.matched += len(same)
        if len(same) < len(lkeys):  # the key `get` reads, for the records left undecided
            answers = mine.column("answers_to").to_pylist()
            undecided.setdefault(tenant, {}).update(
                (lkeys[i], answers[i] or lkeys[i]) for i in range(len(lkeys)) if i not in same
            )
    if undecided:
        _decide(db, comp, tenants, replayer, undecided, result)
    conn.rollback()
    return result


def _wanted(prints: pa.Table, skip: set[tuple[str, str]], result: Readback) -> pa.Table:
    """The sampled records of `prints` read-back replays; counts the unreachable ones it
    skips (`skip`: reported unreachable, a collision say, though their key routes)."""
    lost = pc.fill_null(prints.column("unreachable"), False)
    if skip:
        pairs = zip(
            prints.column("tenant_id").to_pylist(), prints.column("llmspell_key").to_pylist()
        )
        lost = pc.or_(lost, pa.array([p in skip for p in pairs], pa.bool_()))
    result.skipped_unreachable += pc.sum(lost).as_py() or 0
    return prints.filter(pc.and_(pc.invert(lost), prints.column("picked")))


def _decide(
    db: SourceDB,
    comp: Component,
    tenants: list[str] | None,
    replayer: Replayer,
    undecided: dict[str, dict[str, str]],
    result: Readback,
) -> None:
    """The records PostgreSQL did not match: both values read and compared as llmspell
    decodes them, which decides and names each difference (one pass over SQLite)."""
    values: dict[tuple[str, str], object] = {}
    for tenant, key_values, value in _source_rows(db, comp, tenants):
        key = key_routing.sqlite_key(comp, key_values)
        if key in undecided.get(tenant, ()):
            values[(tenant, key)] = value
    for tenant, left in undecided.items():
        got = replayer.get_many(tenant, list(set(left.values())))
        for key, answer in left.items():
            result.decoded += 1
            if answer not in got:
                problem = f"get({answer!r}) finds nothing"
            else:
                problem = _compare(comp, values.get((tenant, key)), got[answer])
            if problem is None:
                result.matched += 1
                continue
            result.mismatch_count += 1
            if len(result.mismatches) < MAX_REPORTED:
                shown = key if key == answer else f"{key} (read as {answer})"
                result.mismatches.append(f"{comp.name} tenant={tenant} key={shown}: {problem}")
