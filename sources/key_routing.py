"""How llmspell finds a record: its SQLite backend's key, and the row its PostgreSQL backend
reads for that key. The one description of that routing, used by pre-flight (reachability
report), the write path (re-keying), validation (expected rows, read-back) and rollback.

Facts (llmspell-storage `backends/sqlite/agent_state.rs`, `backends/postgres/backend.rs`):
- agent_states: SQLite stores key `agent:<rest>` as agent_id `<rest>` (colons kept) and lists
  it back as `agent:<agent_id>`. PostgreSQL accepts only `agent:<type>:<id>` and reads
  `WHERE agent_id = <id>`, ignoring the type part.
- workflow_states: key `custom:workflow_<id>:state`; PostgreSQL refuses an id with `:`.
- sessions: key `session:<id>`; PostgreSQL reads the sessions table only for a UUID it can
  parse (hyphenated, 32-hex or braced) with no further `:`.
- kv_store: PostgreSQL sends `agent:`, `custom:workflow_` and `session:<uuid>` keys to those
  tables before kv_store, so such a kv_store row is unreachable (or shadowed) there.

Layouts: `llmspell` (default) writes each record into the row PostgreSQL's backend looks up
for its SQLite key (only agent_id/agent_type of `agent:X:Y` change); `verbatim` keeps every
SQLite column. Records no PostgreSQL key reaches, or that collide or no longer fit once
re-keyed, keep their SQLite columns (and stop the run unless it allows them).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.model.checks import storable_uuid
from core.model.components import AGENT_STATE, KV_STORE, SESSIONS, WORKFLOW_STATE, Component
from core.tenant_sql import tenant_in

if TYPE_CHECKING:
    from sources.sqlite_reader import SourceDB

LLMSPELL = "llmspell"
VERBATIM = "verbatim"
LAYOUTS = (LLMSPELL, VERBATIM)

SAME = "same"  # PostgreSQL's get(key) returns the record under its SQLite key
ANSWERS_ELSEWHERE = "answers_elsewhere"  # only under another key (reported, run goes on)
UNREACHABLE = "unreachable"  # under no key (run stops unless allowed)

_AGENT_TYPE_MAX = AGENT_STATE.column("agent_type").max_length
# The uuid crate's parse_str: hyphenated, simple (32 hex), braced; `urn:uuid:` has a colon.
_HEX = "[0-9a-fA-F]"
_CRATE_UUID = re.compile(
    rf"^(?:{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}|{_HEX}{{32}}"
    rf"|\{{{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}\}})$"
)


@dataclass(frozen=True)
class Route:
    """Where one SQLite record is found on PostgreSQL."""

    status: str
    answers_to: str | None = None  # the key PostgreSQL returns it under (None: no key)
    reason: str = ""
    agent: tuple[str, str] | None = None  # llmspell layout: (agent_id, agent_type) to write


def agent_route(agent_id: str, agent_type: str, layout: str) -> Route:
    """An agent_states row as SQLite wrote it (key `agent:<agent_id>`)."""
    key = f"agent:{agent_id}"
    parts = agent_id.split(":")
    if len(parts) == 1:
        shown = agent_type if agent_type and ":" not in agent_type else "unknown"
        return Route(
            ANSWERS_ELSEWHERE,
            f"agent:{shown}:{agent_id}",
            "llmspell's PostgreSQL backend only takes agent keys of the form "
            "agent:<type>:<id>; it reads this record under any type, and lists it as "
            f"agent:{shown}:{agent_id}",
        )
    if len(parts) > 2:
        return Route(
            UNREACHABLE,
            reason=f"{key} has {len(parts) + 1} ':'-separated parts; llmspell's PostgreSQL "
            "backend only reads agent:<type>:<id>, so no key reaches this record",
        )
    kind, ident = parts
    if layout == VERBATIM:
        return Route(
            UNREACHABLE,
            reason=f"with --key-layout verbatim the row keeps agent_id '{agent_id}', but "
            f"llmspell's PostgreSQL backend reads {key} as agent_id '{ident}'",
        )
    if len(kind) > _AGENT_TYPE_MAX:
        return Route(
            UNREACHABLE,
            reason=f"re-keyed, its agent_type would be {len(kind)} characters, over "
            f"VARCHAR({_AGENT_TYPE_MAX}) in PostgreSQL (llmspell could not have saved it there)",
        )
    return Route(SAME, key, agent=(ident, kind))


def workflow_route(workflow_id: str) -> Route:
    key = f"custom:workflow_{workflow_id}:state"
    if ":" in workflow_id:
        return Route(
            UNREACHABLE,
            reason="the workflow id contains ':'; llmspell's PostgreSQL backend splits "
            "custom:workflow_<id>:state at every ':' and refuses such a key, so no key "
            "reaches this workflow",
        )
    return Route(SAME, key)


def is_primary_session_key(key: str) -> bool:
    """PostgreSQL's own test: `session:<uuid>` with no further colon goes to sessions."""
    if not key.startswith("session:"):
        return False
    rest = key[len("session:") :]
    return ":" not in rest and _CRATE_UUID.match(rest) is not None


def session_route(session_id: str) -> Route:
    key = f"session:{session_id}"
    if is_primary_session_key(key) or not storable_uuid(session_id):
        # an id PostgreSQL's UUID column refuses is the record checks' error, not ours
        return Route(SAME, key)
    return Route(
        UNREACHABLE,
        reason=f"llmspell's PostgreSQL backend reads {key} from the sessions table only when "
        "the id is a UUID in hyphenated, 32-hex or braced form; it looks this key up in "
        "kv_store instead",
    )


def kv_route(key: str) -> Route:
    """A kv_store row: reachable unless PostgreSQL routes its key to another table."""
    table = prefix = None
    if key.startswith("agent:"):
        table, prefix = "agent_states", "agent:..."
    elif key.startswith("custom:workflow_"):
        table, prefix = "workflow_states", "custom:workflow_..."
    elif is_primary_session_key(key):
        table = "sessions"
    if table is None:
        return Route(SAME, key)
    why = (
        "llmspell's session manager saved this session in kv_store on SQLite, but its "
        "PostgreSQL backend reads every session:<uuid> key from the sessions table"
        if table == "sessions"
        else f"llmspell's PostgreSQL backend reads every {prefix} key from {table}"
    )
    return Route(
        UNREACHABLE,
        reason=f"{why}, never from kv_store: on PostgreSQL this record would be unreachable "
        f"or replaced by the {table} row with the same key",
    )


# -- one component's records ----------------------------------------------------------------
# The column holding what llmspell's PostgreSQL `get` returns, per table.
VALUE_COLUMN = {
    "agent_states": "state_data",
    "workflow_states": "state_data",
    "sessions": "session_data",
    "kv_store": "value",
}

# The key column llmspell's PostgreSQL `get` looks each table up by.
GET_COLUMN = {
    "agent_states": "agent_id",
    "workflow_states": "workflow_id",
    "sessions": "session_id",
    "kv_store": "key",
}


def pg_lookup(key: str) -> tuple[str, str, str] | None:
    """(table, key column, value) the PostgreSQL backend's get(key) reads; None when it
    refuses the key (its parse error)."""
    if key.startswith("agent:"):
        parts = key.split(":")
        return ("agent_states", GET_COLUMN["agent_states"], parts[2]) if len(parts) == 3 else None
    if key.startswith("custom:workflow_"):
        parts = key.split(":")
        if len(parts) != 3 or not parts[1].startswith("workflow_"):
            return None
        return ("workflow_states", GET_COLUMN["workflow_states"], parts[1][len("workflow_") :])
    if is_primary_session_key(key):
        return ("sessions", GET_COLUMN["sessions"], str(uuid.UUID(key[len("session:") :])))
    return ("kv_store", GET_COLUMN["kv_store"], key)


@dataclass(frozen=True)
class Listed:
    """One record in the reachability report."""

    component: str
    tenant_id: str
    key: str
    status: str
    answers_to: str | None
    reason: str

    def __str__(self) -> str:
        if self.status == ANSWERS_ELSEWHERE:
            return f"{self.component} {self.tenant_id} {self.key!r} answers to {self.answers_to!r}"
        return f"{self.component} {self.tenant_id} {self.key!r}: {self.reason}"

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Reachability:
    """The reachability of one component's records under one layout."""

    component: str
    layout: str
    records: int = 0
    elsewhere: list[Listed] = field(default_factory=list)
    unreachable: list[Listed] = field(default_factory=list)
    # (tenant, SQLite key) written with SQLite's columns although the layout re-keys them
    keep_verbatim: set[tuple[str, str]] = field(default_factory=set)

    def to_dict(self) -> dict:
        return {
            "component": self.component,
            "layout": self.layout,
            "records": self.records,
            "answers_elsewhere": [x.to_dict() for x in self.elsewhere],
            "unreachable": [x.to_dict() for x in self.unreachable],
        }


# The components llmspell reads through storage keys (the only ones key routing concerns).
ROUTED = frozenset((AGENT_STATE.name, WORKFLOW_STATE.name, SESSIONS.name, KV_STORE.name))


def key_columns(comp: Component) -> list[str]:
    """The columns that decide a record's key (what `classify` reads)."""
    return {
        AGENT_STATE.name: ["agent_id", "agent_type"],
        WORKFLOW_STATE.name: ["workflow_id"],
        SESSIONS.name: ["session_id"],
        KV_STORE.name: ["key"],
    }[comp.name]


def route_of(comp: Component, values: tuple, layout: str) -> Route:
    """The route of a record given its `key_columns` values."""
    if comp is AGENT_STATE or comp.name == AGENT_STATE.name:
        return agent_route(values[0], values[1], layout)
    if comp.name == WORKFLOW_STATE.name:
        return workflow_route(values[0])
    if comp.name == SESSIONS.name:
        return session_route(values[0])
    return kv_route(values[0])


def sqlite_key(comp: Component, values: tuple) -> str:
    """The key llmspell's SQLite backend lists the record under."""
    return {
        AGENT_STATE.name: lambda: f"agent:{values[0]}",
        WORKFLOW_STATE.name: lambda: f"custom:workflow_{values[0]}:state",
        SESSIONS.name: lambda: f"session:{values[0]}",
        KV_STORE.name: lambda: values[0],
    }[comp.name]()


def classify(comp: Component, rows: Iterator[tuple[str, tuple]], layout: str) -> Reachability:
    """Classify every record from `(tenant, key_columns values)` pairs; in the llmspell layout
    agent records whose re-keyed row would be the same PostgreSQL row are collisions."""
    out = Reachability(comp.name, layout)
    targets: dict[tuple[str, str], list[str]] = {}  # (tenant, written agent_id) -> keys
    for tenant, values in rows:
        out.records += 1
        r = route_of(comp, values, layout)
        key = sqlite_key(comp, values)
        if r.status == ANSWERS_ELSEWHERE:
            out.elsewhere.append(Listed(comp.name, tenant, key, r.status, r.answers_to, r.reason))
        elif r.status == UNREACHABLE:
            out.unreachable.append(Listed(comp.name, tenant, key, r.status, None, r.reason))
        if comp.name == AGENT_STATE.name and layout == LLMSPELL and r.status != UNREACHABLE:
            written = r.agent[0] if r.agent else values[0]
            targets.setdefault((tenant, written), []).append(key)
    for (tenant, written), keys in targets.items():
        if len(keys) < 2:
            continue
        others = ", ".join(sorted(keys))
        for key in keys:
            out.keep_verbatim.add((tenant, key))
            out.unreachable.append(
                Listed(
                    comp.name,
                    tenant,
                    key,
                    UNREACHABLE,
                    None,
                    f"collides: llmspell's PostgreSQL backend reads {others} all as agent_id "
                    f"'{written}' (it ignores the type part), so only one of them can exist",
                )
            )
    if out.keep_verbatim:
        out.elsewhere = [x for x in out.elsewhere if (x.tenant_id, x.key) not in out.keep_verbatim]
    out.unreachable.sort(key=lambda x: (x.tenant_id, x.key))
    return out


class KeyMapper:
    """Turns a source row `(sqlite_key, *component columns)` into the row to write, under a
    layout: the one place re-keying happens (write path, validation and rollback use it)."""

    def __init__(
        self, comp: Component, layout: str, keep_verbatim: set[tuple[str, str]] | None = None
    ):
        self.comp = comp
        self.active = comp.name == AGENT_STATE.name and layout == LLMSPELL
        self.layout = layout
        self.keep = keep_verbatim or set()
        names = comp.column_names
        self.tenant_at = 1 + names.index("tenant_id")
        if self.active:
            self.id_at = 1 + names.index("agent_id")
            self.type_at = 1 + names.index("agent_type")

    def row(self, row: tuple) -> tuple:
        if not self.active:
            return row
        agent_id = row[self.id_at]
        raw = isinstance(agent_id, bytes)  # the copy reads TEXT as UTF-8 bytes
        text = agent_id.decode("utf-8", "surrogateescape") if raw else agent_id
        if not isinstance(text, str) or text.count(":") != 1:
            return row
        kind, ident = text.split(":")
        if len(kind) > _AGENT_TYPE_MAX:
            return row
        if self.keep:
            tenant = row[self.tenant_at]
            if isinstance(tenant, bytes):
                tenant = tenant.decode("utf-8", "surrogateescape")
            if (tenant, f"agent:{text}") in self.keep:
                return row
        new = list(row)
        if raw:
            new[self.id_at] = ident.encode("utf-8", "surrogateescape")
            new[self.type_at] = kind.encode("utf-8", "surrogateescape")
        else:
            new[self.id_at], new[self.type_at] = ident, kind
        return tuple(new)

    def rows(self, rows: list[tuple]) -> list[tuple]:
        return [self.row(r) for r in rows] if self.active else rows


def check_layout(layout: str | None) -> str:
    from core.errors import UsageError

    if layout is None:
        return LLMSPELL
    if layout not in LAYOUTS:
        raise UsageError(
            f"unknown key layout '{layout}'",
            "Use --key-layout llmspell (rows where llmspell's PostgreSQL backend looks them "
            "up, the default) or --key-layout verbatim (every SQLite column unchanged).",
        )
    return layout


def mappers(
    comps: list[Component], layout: str, keep: dict[str, set[tuple[str, str]]] | None = None
) -> dict[str, KeyMapper]:
    """One mapper per component that re-keys anything under `layout`."""
    out = {c.name: KeyMapper(c, layout, (keep or {}).get(c.name)) for c in comps}
    return {name: m for name, m in out.items() if m.active}


# -- which records can be anything but SAME, asked of SQLite ------------------------------
# Almost every record answers under its own key. SQLite picks the few that may not (a
# superset: every test here is looser than its route's), so `classify` routes those rows in
# Python and never holds a whole component. Byte lengths bound Python's character counts.
_HEX_GLOB = "[0-9a-fA-F]"
_HYPHENATED_GLOB = "-".join(_HEX_GLOB * n for n in (8, 4, 4, 4, 12))


def _one_colon(col: str) -> str:
    return f"(instr({col}, ':') > 0 AND instr(substr({col}, instr({col}, ':') + 1), ':') = 0)"


def _may_differ_sql(comp: Component, layout: str) -> str:
    """An SQL condition true for every record whose route may not be SAME."""
    if comp.name == AGENT_STATE.name:
        if layout == VERBATIM:  # no agent row is read under its SQLite key: all of them
            return "1 = 1"
        return (
            f"NOT (typeof(agent_id) = 'text' AND {_one_colon('agent_id')} "
            f"AND instr(CAST(agent_id AS BLOB), X'3A') - 1 <= {_AGENT_TYPE_MAX})"
        )
    if comp.name == WORKFLOW_STATE.name:
        return "NOT (typeof(workflow_id) = 'text' AND instr(workflow_id, ':') = 0)"
    if comp.name == SESSIONS.name:
        return f"NOT (typeof(session_id) = 'text' AND session_id GLOB '{_HYPHENATED_GLOB}')"
    return (
        "NOT (typeof(key) = 'text' AND NOT (key GLOB 'agent:*' "
        "OR key GLOB 'custom:workflow_*' "
        "OR (key GLOB 'session:*' AND instr(substr(key, 9), ':') = 0)))"
    )


def candidates_sql(comp: Component, layout: str, where: str) -> str:
    """The records `classify` must see to classify the whole component: every one that may
    not be SAME, and in the llmspell layout every agent record sharing its tenant and
    written agent_id with another (a possible collision, its whole group); in key order."""
    cols = ", ".join(key_columns(comp))
    table = comp.sqlite_table
    order = f"ORDER BY tenant_id, {comp.key_column}"
    if not (comp.name == AGENT_STATE.name and layout == LLMSPELL):
        return (
            f"SELECT tenant_id, {cols} FROM {table}{where}{' AND' if where else ' WHERE'} "
            f"{_may_differ_sql(comp, layout)} {order}"
        )
    written = (
        f"CASE WHEN typeof(agent_id) = 'text' AND {_one_colon('agent_id')} "
        "THEN substr(agent_id, instr(agent_id, ':') + 1) ELSE agent_id END"
    )
    return (
        f"WITH k AS (SELECT tenant_id, {cols}, {written} AS written FROM {table}{where}), "
        "shared AS (SELECT tenant_id, written FROM k GROUP BY 1, 2 HAVING count(*) > 1) "
        f"SELECT tenant_id, {cols} FROM k WHERE {_may_differ_sql(comp, layout)} "
        f"OR (tenant_id, written) IN (SELECT tenant_id, written FROM shared) {order}"
    )


def classify_db(
    db: SourceDB, comps: list[Component], tenants: list[str] | None, layout: str
) -> dict[str, Reachability]:
    """`classify` every planned component of a source database: SQLite picks the records
    that may not answer under their own key (`candidates_sql`), Python routes those."""
    out = {}
    for comp in comps:
        if comp.name not in ROUTED:  # memory stores: llmspell reads them by id, not by key
            continue
        db.require(comp)
        where, args = tenant_in(tenants)
        cur = db.conn.execute(candidates_sql(comp, layout, where), args)
        reach = classify(comp, ((r[0], tuple(r[1:])) for r in cur), layout)
        query = f"SELECT count(*) FROM {comp.sqlite_table}{where}"
        reach.records = db.conn.execute(query, args).fetchone()[0]
        out[comp.name] = reach
    return out
