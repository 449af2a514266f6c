"""`verify` (re-run the validation stage of a plan on its own) and `validate --backend`
(the guide's source check: counts, JSON that does not parse, agent checksums that do not
match their state, records PostgreSQL could not store)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from psycopg import sql

from core.errors import UsageError
from core.model import registry
from core.model.components import AGENT_STATE, Component
from destinations import connection, target_schema
from destinations.postgres_writer import role_bypasses_rls
from pipelines.shared.plan import Plan
from pipelines.shared.progress import VALIDATION, Listener, StageCounter, quiet
from pipelines.stages.run import MIGRATION, Run, prepare_target, source_paths_for
from sources import installation
from sources.key_routing import classify_db, mappers
from sources.memory_checks import cross_record_problems
from sources.record_checks import RecordChecker, printable
from sources.sqlite_reader import SourceDB
from validation.stage import ValidationReport, Validator

MAX_LISTED = 20


def verify(
    plan: Plan,
    *,
    source: str | list[str] | None = None,
    target: str | None = None,
    full: bool = False,
    progress: Listener = quiet,
) -> ValidationReport:
    """Compare the plan's source and target now: counts, checksums, JSON content, and what
    llmspell's PostgreSQL backend returns for each compared key (rows as the plan's key
    layout writes them, whatever the tool's own run records say). `progress` hears each
    component validated, counted in its source records."""
    comps = [cp.component for cp in plan.components]
    run = Run.open(
        MIGRATION,
        plan,
        source_paths_for(plan, source),
        target,
        lambda _line: None,
        bookkeeping=False,
    )
    try:
        db = run.db
        reach = classify_db(db, comps, plan.tenants, plan.key_layout)
        keep = {n: r.keep_verbatim for n, r in reach.items()}
        counter = StageCounter(
            progress, VALIDATION, {c.name: db.count(c, plan.tenants) for c in comps}
        )
        with Validator(
            str(db.read_path),
            run.target.dsn,
            run.bypass,
            comps,
            plan.tenants,
            mappers(comps, plan.key_layout, keep),
        ) as v:
            report = v.validate(
                comps,
                100 if full else plan.checksum_sample_percent,
                plan.full_comparison_threshold,
                None,
                reach,
                counter.component_done,
            )
    finally:
        run.close()
    counter.finish()
    return report


@dataclass
class BackendComponent:
    name: str
    records: int
    per_tenant: dict[str, int]
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class BackendCheck:
    backend: str
    where: str
    components: list[BackendComponent] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.problem_count == 0 for c in self.components)

    def to_dict(self) -> dict:
        return {
            "backend": self.backend,
            "where": self.where,
            "ok": self.ok,
            "components": [c.to_dict() for c in self.components],
            "notes": self.notes,
        }


def _check_sqlite_component(
    db: SourceDB, comp: Component, tenants: list[str] | None
) -> BackendComponent:
    out = BackendComponent(comp.name, 0, db.counts_by_tenant(comp, tenants))
    out.records = sum(out.per_tenant.values())
    checker = RecordChecker(comp)
    checksum_at = (
        (1 + comp.column_names.index("checksum"), 1 + comp.column_names.index("state_data"))
        if comp is AGENT_STATE
        else None
    )
    tenant_at = 1 + comp.column_names.index("tenant_id")

    def note(text: str) -> None:
        out.problem_count += 1
        if len(out.problems) < MAX_LISTED:
            out.problems.append(text)

    for rows in db.iter_batches(comp, 5000, tenants):
        for row in rows:
            where = f"{printable(str(row[tenant_at]))} {row[0]!r}"
            problems = checker.check(row)
            for p in problems:
                note(f"{where}: {p.column} {p.problem}")
            if checksum_at and isinstance(row[checksum_at[1]], str):
                try:
                    digest = hashlib.sha256(row[checksum_at[1]].encode("utf-8")).hexdigest()
                except UnicodeEncodeError:
                    continue  # already reported as invalid UTF-8
                if digest != row[checksum_at[0]]:
                    note(f"{where}: checksum is not the SHA-256 of state_data")
    for p in cross_record_problems(db, comp, tenants):
        note(f"{p.tenant_id} {p.key!r}: {p.column} {p.problem}")
    return out


def validate_backend(
    backend: str,
    components: str,
    *,
    source: str | list[str] | None = None,
    target: str | None = None,
    tenants: list[str] | None = None,
) -> BackendCheck:
    """Check one backend on its own: on SQLite every record is checked (JSON, storability,
    agent checksums); on PostgreSQL the tables are counted per tenant. `tenants` limits
    either to those tenants, and refuses one the backend does not hold."""
    comps = registry.parse_list(components)
    if backend == "sqlite":
        given = [source] if isinstance(source, str) else list(source or [])
        paths = given or [str(p) for p in installation.discover().paths]
        with SourceDB(paths) as db:
            check = BackendCheck("sqlite", str(db.path))
            for comp in comps:
                db.require(comp)
            db.require_tenants(comps, tenants)
            for comp in comps:
                check.components.append(_check_sqlite_component(db, comp, tenants))
        return check
    if backend == "postgres":
        resolved = connection.resolve(target, None)
        prepare_target(resolved)
        check = BackendCheck("postgres", resolved.where)
        with connection.connect(resolved) as conn:
            target_schema.check_schema(conn, comps)
            if not role_bypasses_rls(conn):
                check.notes.append(
                    "this role is subject to row-level security: counts cover "
                    "only rows visible to it (connect as the schema owner)"
                )
            seen: set[str] = set()
            for comp in comps:
                rows = conn.execute(
                    sql.SQL(
                        "SELECT tenant_id, count(*) FROM llmspell.{} GROUP BY 1 ORDER BY 1"
                    ).format(sql.Identifier(comp.pg_table))
                ).fetchall()
                seen.update(t for t, _ in rows)
                per_tenant = {t: n for t, n in rows if not tenants or t in tenants}
                check.components.append(
                    BackendComponent(comp.name, sum(per_tenant.values()), per_tenant)
                )
            conn.rollback()
            _require_target_tenants(check.where, seen, tenants)
        check.notes.append(
            "PostgreSQL validates JSON and types on write; agent checksums "
            "refer to the original SQLite bytes and are checked on the source."
        )
        return check
    raise UsageError(f"Unknown backend '{backend}'", "Use --backend sqlite or --backend postgres.")


def _require_target_tenants(where: str, present: set[str], tenants: list[str] | None) -> None:
    """A --tenant the target holds no rows for is a typo until proven otherwise."""
    unknown = [t for t in tenants or [] if t not in present]
    if unknown:
        raise UsageError(
            f"unknown tenant(s) {', '.join(map(repr, unknown))}: {where} holds no records for them",
            f"Tenants in the target: {', '.join(sorted(present)) or '(none)'}; fix --tenant.",
        )
