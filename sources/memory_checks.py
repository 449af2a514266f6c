"""Pre-flight checks of the memory stores that look at more than one record (or one column).

Each problem names the record: an id that is a duplicate once read as a UUID (PostgreSQL's
keys are UUIDs: `ABC…` and `abc…` are one id there), a relationship whose endpoint is no
entity of its tenant, a valid or transaction time range that is empty or inverted.
"""

from __future__ import annotations

from collections.abc import Callable

from core.model.canonical import uuid_key
from core.model.components import Component
from core.model.memory_values import OPEN_END
from core.model.registry import COMPONENTS
from core.tenant_sql import tenant_in
from sources.record_checks import BadRecord
from sources.sqlite_reader import SourceDB


def duplicate_ids(db: SourceDB, comp: Component, tenants: list[str] | None) -> list[BadRecord]:
    """Ids that collide per tenant once canonical (PostgreSQL's key is the UUID)."""
    if not comp.column(comp.key_column).kind.is_uuid:
        return []
    where, args = tenant_in(tenants, keyword="AND")
    seen: dict[tuple[str, str], str] = {}
    out = []
    rows = db.conn.execute(
        f"SELECT tenant_id, {comp.key_column} FROM {comp.source_from('', db.tables)} "
        f"WHERE 1{where}",
        args,
    )
    for tenant, key in rows:
        canon = (tenant, uuid_key(key))
        if canon in seen:
            out.append(
                BadRecord(
                    comp.name,
                    tenant,
                    key,
                    comp.key_column,
                    f"is the same UUID as {seen[canon]!r} (duplicate id for this tenant)",
                )
            )
        else:
            seen[canon] = key
    return out


def time_ranges(db: SourceDB, comp: Component, tenants: list[str] | None) -> list[BadRecord]:
    """Empty or inverted valid/transaction time ranges (PostgreSQL's CHECKs refuse them)."""
    where, args = tenant_in(tenants, keyword="AND")
    out = []
    for kind in ("valid_time", "transaction_time"):
        rows = db.conn.execute(
            f"SELECT tenant_id, {comp.key_column}, {kind}_start, {kind}_end "
            f"FROM {comp.sqlite_table} WHERE {kind}_start >= {kind}_end{where}",
            args,
        )
        for tenant, key, start, end in rows:
            shown = "open end" if end == OPEN_END else end
            out.append(
                BadRecord(
                    comp.name,
                    tenant,
                    key,
                    f"{kind}_start",
                    f"is {start}, not before {kind}_end ({shown}): the range is empty or inverted",
                )
            )
    return out


def dangling_endpoints(db: SourceDB, comp: Component, tenants: list[str] | None) -> list[BadRecord]:
    """Relationships whose from/to entity is not an entity of the same tenant."""
    if "entities" not in db.tables:
        return [BadRecord(comp.name, "*", "*", "from_entity", "has no entities table to point at")]
    where, args = tenant_in(tenants, "r.tenant_id", "AND")
    out = []
    for end in ("from_entity", "to_entity"):
        rows = db.conn.execute(
            f"SELECT r.tenant_id, r.relationship_id, r.{end} FROM relationships r "
            f"WHERE NOT EXISTS (SELECT 1 FROM entities e WHERE e.entity_id = r.{end} "
            f"AND e.tenant_id = r.tenant_id){where}",
            args,
        )
        out += [
            BadRecord(comp.name, t, k, end, f"is {v!r}, no entity of tenant {t!r} (dangling)")
            for t, k, v in rows
        ]
    return out


Check = Callable[[SourceDB, Component, list[str] | None], list[BadRecord]]
_CHECKS: dict[str, tuple[Check, ...]] = {
    "semantic_memory_entities": (duplicate_ids, time_ranges),
    "semantic_memory_relationships": (duplicate_ids, time_ranges, dangling_endpoints),
    "procedural_memory": (duplicate_ids,),
    **{name: (duplicate_ids,) for name in COMPONENTS if name.startswith("episodic_memory_")},
}


def cross_record_problems(
    db: SourceDB, comp: Component, tenants: list[str] | None
) -> list[BadRecord]:
    """Every multi-record problem of `comp` in the source, each naming its record."""
    out: list[BadRecord] = []
    for check in _CHECKS.get(comp.name, ()):
        out += check(db, comp, tenants)
    return out
