"""Pre-flight: everything that can refuse a run is checked before the first write.

Source readable and an llmspell database; every planned component present; current counts
against the plan's estimates; target reachable with the llmspell schema; free disk for the
backup; every source record storable in PostgreSQL (listed by key otherwise); and rows
already in the target under the same tenant and key: identical ones count as already
migrated, different ones stop the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from core.errors import PreflightError
from core.model.checks import check_text
from core.model.components import Component
from destinations.target_schema import act_as_tenant
from pipelines.shared.plan import Plan
from pipelines.shared.progress import PREFLIGHT, Counter, Listener, quiet
from pipelines.stages import source_scan
from sources import key_routing, record_print
from sources.key_routing import Reachability
from sources.memory_checks import cross_record_problems
from sources.record_checks import BadRecord, printable
from sources.sqlite_reader import SourceDB
from validation import duck
from validation.source_prints import effective_percent

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
    key_layout: str = key_routing.LLMSPELL
    reachability: dict[str, Reachability] = field(default_factory=dict)
    number_changes: dict[str, int] = field(default_factory=dict)  # per component
    number_examples: list[str] = field(default_factory=list)
    # the source side of validation, per component: its prints' Arrow files, per tenant
    # (`scan_source`)
    source_prints: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    # the components whose prints files carry the sync baseline's print of every record
    record_prints: set[str] = field(default_factory=set)

    @property
    def keep_verbatim(self) -> dict[str, set[tuple[str, str]]]:
        return {name: r.keep_verbatim for name, r in self.reachability.items()}

    @property
    def source_records(self) -> int:
        return sum(c.source_count for c in self.components)

    @property
    def tenants(self) -> list[str]:
        """Every tenant the run may write (its record's and its backup's `tenants`)."""
        return sorted({t for c in self.components for t in c.per_tenant})

    def component(self, name: str) -> ComponentCheck:
        return next(c for c in self.components if c.name == name)

    def to_dict(self) -> dict:
        return {
            "components": [c.to_dict() for c in self.components],
            "warnings": self.warnings,
            "left_behind": self.left_behind,
            "key_layout": self.key_layout,
            "reachability": {n: r.to_dict() for n, r in self.reachability.items()},
            "number_changes": self.number_changes,
            "number_examples": self.number_examples,
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


def classify_source(
    db: SourceDB, comps: list[Component], tenants: list[str] | None, layout: str
) -> dict[str, Reachability]:
    """Where llmspell's PostgreSQL backend will find each record (reads key columns only)."""
    return key_routing.classify_db(db, comps, tenants, layout)


def reachability_lines(reach: dict[str, Reachability], limit: int = MAX_LISTED) -> list[str]:
    """Warnings: per component, the records llmspell reads only under another key."""
    lines = []
    for name, r in reach.items():
        if r.elsewhere:
            lines.append(
                f"{name}: {len(r.elsewhere)} record(s) are read by llmspell's PostgreSQL "
                "backend only under a different key (old key -> key it answers to):"
            )
            lines += [
                f"  {printable(x.tenant_id)} {printable(x.key)} -> {printable(x.answers_to)}"
                for x in r.elsewhere[:limit]
            ]
            if len(r.elsewhere) > limit:
                lines.append(
                    f"  ... and {len(r.elsewhere) - limit} more (all in the backup's key-map.json)"
                )
    return lines


def check_reachability(report: PreflightReport, allow: bool) -> None:
    """Records no PostgreSQL key reaches stop the run before anything is written, unless
    the user allows them (then they are copied with their SQLite columns and listed)."""
    listed = [x for r in report.reachability.values() for x in r.unreachable]
    report.warnings += reachability_lines(report.reachability)
    if not listed:
        return
    details = [
        f"{x.component} {printable(x.tenant_id)} {printable(x.key)}: {x.reason}" for x in listed
    ]
    if allow:
        report.warnings.append(
            f"{len(listed)} record(s) copied with their SQLite columns although llmspell's "
            "PostgreSQL backend will not find them (--allow-unreachable):"
        )
        report.warnings += [f"  {d}" for d in details[:MAX_LISTED]]
        return
    raise PreflightError(
        f"{len(listed)} record(s) would be unreachable for llmspell after the migration: its "
        "PostgreSQL backend maps these keys to rows differently from its SQLite backend",
        "Re-save or rename them with llmspell (a session saved in kv_store is found again "
        "once llmspell saves it on PostgreSQL), leave their component or tenant out of the "
        "plan, or pass --allow-unreachable to copy them unchanged (llmspell will not find "
        "them on PostgreSQL); nothing was written.",
        details=details[:MAX_LISTED]
        + ([f"... and {len(details) - MAX_LISTED} more"] if len(details) > MAX_LISTED else []),
    )


def scan_source(
    db: SourceDB,
    plan: Plan,
    existing: dict[str, set[tuple[str, str]]],
    report: PreflightReport,
    progress: Listener = quiet,
    prints_dir: str | None = None,
    warn: Callable[[str], None] = lambda line: None,
) -> dict[str, set[tuple[str, str]]]:
    """One pass over every record, as the key layout writes it (`pipelines.stages.source_scan`,
    on both cores): check it is storable, count the numbers JSONB rewrites, and find the
    records whose (tenant, key) already exists in the target, into `report`. With
    `prints_dir` the same pass writes the source side of validation, each record's print from
    the canonical texts its checks computed (one parse of each document), into Arrow files
    per component (`report.source_prints`). `progress` hears each batch checked."""
    keep = report.keep_verbatim
    totals = {c.name: c.source_count for c in report.components}
    components = [
        source_scan.ComponentSpec(
            cp.name,
            cp.batch_size,
            effective_percent(
                plan.checksum_sample_percent, plan.full_comparison_threshold, totals[cp.name]
            )
            if prints_dir is not None
            else None,
        )
        for cp in plan.components
    ]
    spec = source_scan.ScanSpec(
        str(db.read_path),
        components,
        plan.tenants,
        plan.key_layout,
        {name: v for name, v in keep.items() if v},
        {name: v for name, v in existing.items() if v},
        prints_dir,
        column_types(db, [cp.component for cp in plan.components]) if prints_dir else {},
    )
    results = source_scan.scan(
        db,
        spec,
        lambda name: Counter(progress, PREFLIGHT, name, totals[name]),
        report.source_records >= source_scan.PARALLEL_MIN,
        warn,
    )
    bad: list[BadRecord] = []
    bad_total = 0
    for cp in plan.components:
        part = results[cp.name]
        problems = cross_record_problems(db, cp.component, plan.tenants)
        found = part.bad + problems
        bad_total += part.bad_total + len(problems)
        bad.extend(found[: max(0, MAX_LISTED - len(bad))])
        if part.number_changes:
            report.number_changes[cp.name] = part.number_changes
        room = MAX_LISTED - len(report.number_examples)
        report.number_examples += part.number_examples[: max(0, room)]
        if part.prints is not None:
            report.source_prints[cp.name] = part.prints
            if part.record_prints:
                report.record_prints.add(cp.name)
    if bad_total:
        raise PreflightError(
            f"{bad_total} source record(s) cannot be stored in PostgreSQL",
            "Fix or remove these records in llmspell (this tool never modifies the source), "
            "then re-run; nothing was written.",
            details=[str(b) for b in bad]
            + ([f"... and {bad_total - len(bad)} more"] if bad_total > len(bad) else []),
        )
    return {name: part.found for name, part in results.items()}


def column_types(db: SourceDB, comps: list[Component]) -> dict[str, list[str]]:
    """DuckDB's types of each component's columns (how `sync` prints them)."""
    con = duck.connect(db.read_path)
    try:
        tables = duck.source_tables(con)
        return {
            c.name: record_print.duck_types(con, c, c.source_from("src.", tables))
            for c in comps
            if db.has(c)
        }
    finally:
        con.close()


def number_change_lines(report: PreflightReport) -> list[str]:
    total = sum(report.number_changes.values())
    if not total:
        return []
    per = ", ".join(f"{n}: {c}" for n, c in report.number_changes.items())
    return [
        f"{total} JSON number(s) change form in PostgreSQL's JSONB ({per}): llmspell decodes "
        "them as integers instead of floats (a whole number in exponent form) or as 0 "
        "(-0) after the migration; values are otherwise equal:"
    ] + [f"  {e}" for e in report.number_examples]


def per_tenant_query(
    conn: psycopg.Connection, query: sql.Composable, tenants: list[str], bypass_rls: bool
) -> list[tuple]:
    """Run `query` (taking the tenant list as its one parameter) over `tenants`: at once for
    a role that bypasses RLS, else once per tenant with the tenant setting in force.
    A tenant id PostgreSQL cannot hold (a NUL, bytes that are not UTF-8) is in no target row
    and cannot even be sent: it is left out here, and its records are listed as unstorable
    by `scan_source`."""
    tenants = [t for t in tenants if check_text(t, None) is None]
    rows: list[tuple] = []
    with conn.transaction():
        if bypass_rls:
            rows += conn.execute(query, (tenants,)).fetchall()
        else:
            for tenant in tenants:
                act_as_tenant(conn, tenant)
                rows += conn.execute(query, ([tenant],)).fetchall()
    return rows


def existing_target_keys(
    conn: psycopg.Connection, comp: Component, tenants: list[str], bypass_rls: bool
) -> set[tuple[str, str]]:
    """Natural keys already in the target for these tenants."""
    query = sql.SQL("SELECT tenant_id, {}::text FROM llmspell.{} WHERE tenant_id = ANY(%s)").format(
        sql.Identifier(comp.key_column), sql.Identifier(comp.pg_table)
    )
    return set(per_tenant_query(conn, query, tenants, bypass_rls))


def count_target_keys(
    conn: psycopg.Connection, comp: Component, tenants: list[str], bypass_rls: bool
) -> int:
    """How many rows the target holds for these tenants."""
    query = sql.SQL("SELECT count(*) FROM llmspell.{} WHERE tenant_id = ANY(%s)").format(
        sql.Identifier(comp.pg_table)
    )
    return sum(n for (n,) in per_tenant_query(conn, query, tenants, bypass_rls))
