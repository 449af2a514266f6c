"""Pre-flight: everything that can refuse a run is checked before the first write.

Source readable and an llmspell database; every planned component present; current counts
against the plan's estimates; target reachable with the llmspell schema; free disk for the
backup; every source record storable in PostgreSQL (listed by key otherwise); and rows
already in the target under the same tenant and key: identical ones count as already
migrated, different ones stop the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from destinations.target_schema import TENANT_SETTING
from pipelines.errors import PreflightError
from pipelines.plan import Plan
from sources.components import UUID, Component
from sources.record_checks import BadRecord, RecordChecker
from sources.sqlite_reader import SourceDB
from validation.canonical import uuid_key

MAX_LISTED = 20


@dataclass
class ComponentCheck:
    name: str
    batch_size: int
    source_count: int
    estimated_count: int
    per_tenant: dict[str, int]
    already_present: int = 0

    @property
    def changed(self) -> bool:
        return self.source_count != self.estimated_count

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class PreflightReport:
    components: list[ComponentCheck] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    bad_records: list[BadRecord] = field(default_factory=list)
    left_behind: list[str] = field(default_factory=list)  # non-empty tables not planned

    @property
    def source_records(self) -> int:
        return sum(c.source_count for c in self.components)

    def component(self, name: str) -> ComponentCheck:
        return next(c for c in self.components if c.name == name)

    def to_dict(self) -> dict:
        return {
            "components": [c.to_dict() for c in self.components],
            "warnings": self.warnings,
            "left_behind": self.left_behind,
        }


def count_source(db: SourceDB, plan: Plan) -> PreflightReport:
    report = PreflightReport()
    for cp in plan.components:
        comp = cp.component
        per_tenant = db.counts_by_tenant(comp, plan.tenants)
        check = ComponentCheck(
            cp.name, cp.batch_size, sum(per_tenant.values()), cp.estimated_count, per_tenant
        )
        if check.changed:
            report.warnings.append(
                f"{cp.name}: source now holds {check.source_count} records, the plan estimated "
                f"{cp.estimated_count} (the source changed since the plan was made)"
            )
        report.components.append(check)
    report.left_behind = db.left_behind([cp.component for cp in plan.components], plan.tenants)
    report.warnings += report.left_behind
    if db.hot_journal:
        report.warnings.append(
            f"{db.path} has a hot rollback journal (a writer stopped mid-transaction): its "
            "uncommitted changes were rolled back in a private copy and are not migrated"
        )
    if db.live:
        report.warnings.append(
            f"{db.path} is open in llmspell (WAL present): reading a consistent snapshot; "
            "records written after it are not migrated"
        )
    return report


def natural_key_of(comp: Component):
    """A function giving a reader row's natural key, in the target's text form (sessions'
    UUIDs canonical), with the column position looked up once, not per record."""
    at = 1 + comp.column_names.index(comp.key_column)
    if comp.column(comp.key_column).kind == UUID:
        return lambda row: uuid_key(row[at])
    return lambda row: row[at]


def scan_source(
    db: SourceDB, plan: Plan, existing: dict[str, set[tuple[str, str]]]
) -> dict[str, set[tuple[str, str]]]:
    """One pass over every record: check it is storable, and find the records whose
    (tenant, key) already exists in the target. Memory stays bounded by the batch."""
    overlaps: dict[str, set[tuple[str, str]]] = {}
    bad: list[BadRecord] = []
    bad_total = 0
    for cp in plan.components:
        comp = cp.component
        checker = RecordChecker(comp)
        tenant_at = 1 + comp.column_names.index("tenant_id")
        in_target = existing.get(comp.name) or set()
        key_of = natural_key_of(comp)
        found: set[tuple[str, str]] = set()
        for rows in db.iter_batches(comp, cp.batch_size, plan.tenants):
            problems = checker.check_rows(rows)
            if problems:
                bad_total += len(problems)
                bad.extend(problems[: max(0, MAX_LISTED - len(bad))])
            if in_target:
                for row in rows:
                    key = (row[tenant_at], key_of(row))
                    if key in in_target:
                        found.add(key)
        overlaps[comp.name] = found
    if bad_total:
        raise PreflightError(
            f"{bad_total} source record(s) cannot be stored in PostgreSQL",
            "Fix or remove these records in llmspell (this tool never modifies the source), "
            "then re-run; nothing was written.",
            details=[str(b) for b in bad]
            + ([f"... and {bad_total - len(bad)} more"] if bad_total > len(bad) else []),
        )
    return overlaps


def _per_tenant_query(
    conn: psycopg.Connection, query: sql.Composable, tenants: list[str], bypass_rls: bool
) -> list[tuple]:
    """Run `query` (taking the tenant list as its one parameter) over `tenants`: at once for
    a role that bypasses RLS, else once per tenant with the tenant setting in force."""
    rows: list[tuple] = []
    with conn.transaction():
        if bypass_rls:
            rows += conn.execute(query, (tenants,)).fetchall()
        else:
            for tenant in tenants:
                conn.execute("SELECT set_config(%s, %s, true)", (TENANT_SETTING, tenant))
                rows += conn.execute(query, ([tenant],)).fetchall()
    return rows


def existing_target_keys(
    conn: psycopg.Connection, comp: Component, tenants: list[str], bypass_rls: bool
) -> set[tuple[str, str]]:
    """Natural keys already in the target for these tenants."""
    query = sql.SQL("SELECT tenant_id, {}::text FROM llmspell.{} WHERE tenant_id = ANY(%s)").format(
        sql.Identifier(comp.key_column), sql.Identifier(comp.pg_table)
    )
    return set(_per_tenant_query(conn, query, tenants, bypass_rls))


def count_target_keys(
    conn: psycopg.Connection, comp: Component, tenants: list[str], bypass_rls: bool
) -> int:
    """How many rows the target holds for these tenants."""
    query = sql.SQL("SELECT count(*) FROM llmspell.{} WHERE tenant_id = ANY(%s)").format(
        sql.Identifier(comp.pg_table)
    )
    return sum(n for (n,) in _per_tenant_query(conn, query, tenants, bypass_rls))
