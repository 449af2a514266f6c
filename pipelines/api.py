"""The Python API: plan, dry-run, execute, verify and rollback as plain functions.

Each returns a typed result with `to_dict()`; each failure is a typed `MigrateError` carrying
the same message and fix the CLI prints. The CLI (`pipelines.migrate`) is a thin layer on
these, and notebooks and schedulers can call them directly.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from core.errors import UsageError
from destinations import connection, target_schema
from pipelines.shared.plan import ComponentPlan, Plan, default_batch_size, load
from pipelines.shared.plan_output import check_plan_output
from pipelines.shared.progress import Listener, quiet
from pipelines.stages import run as run_mod
from pipelines.workflows import engine
from pipelines.workflows import prune as prune_mod
from pipelines.workflows import rollback as rollback_mod
from pipelines.workflows import sync as sync_mod
from pipelines.workflows import verify as verify_mod

__all__ = [
    "dry_run",
    "execute",
    "init_target",
    "load",
    "make_plan",
    "rollback",
    "sync",
    "validate_backend",
    "verify",
]
from core.model import registry
from pipelines.stages.preflight import reachability_lines
from pipelines.stages.results import ExecuteResult, PlanResult
from sources import installation
from sources.key_routing import check_layout, classify_db
from sources.memory_stores import HNSW_NOTE
from sources.record_checks import printable
from sources.sqlite_reader import SourceDB
from sources.tenant_map import check_map, mapped_list


def planned_components(planned: list[ComponentPlan]) -> list[registry.Component]:
    return [registry.get(c.name) for c in planned]


Emit = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _as_plan(plan: Plan | str | Path) -> Plan:
    return plan if isinstance(plan, Plan) else load(plan)


def make_plan(
    components: list[str] | str = "agent_state,workflow_state,sessions",
    *,
    output: str | Path | None = None,
    source: str | Path | list[str | Path] | None = None,
    config: str | Path | None = None,
    target: str | None = None,
    batch_size: int | None = None,
    tenants: list[str] | None = None,
    from_backend: str = "sqlite",
    to_backend: str = "postgres",
    force: bool = False,
    key_layout: str | None = None,
    tenant_map: dict[str, str] | None = None,
    backup_path: str | Path | None = None,
) -> PlanResult:
    """Count the source per component and tenant, report where llmspell's PostgreSQL backend
    will find each record under `key_layout`, and write a reviewable plan. `output` is
    refused when it is the source database, a folder, or a file that is not a plan (unless
    `force`).

    The source: `source` (one path or several: the main database first), else the files
    llmspell's config names (`config`, or the config llmspell would discover), else
    llmspell's default database, else the migration guide's path.

    `tenant_map` (source tenant -> target tenant; unmapped tenants keep their name) moves
    the installation to other tenants in the target (`target.tenant_map`); `tenants` are
    then still source names. `backup_path` is the plan's `rollback.backup_path`."""
    layout = check_layout(key_layout)
    tmap = check_map(tenant_map, "tenant map")
    source_tenants = list(tenants) if tenants else None
    tenants = mapped_list(source_tenants, tmap) if tmap else source_tenants
    if from_backend != "sqlite":
        raise UsageError(
            "Phase 1: Only 'sqlite' is supported as source backend", "Use --from sqlite."
        )
    if to_backend != "postgres":
        raise UsageError("Only 'postgres' is supported as target backend", "Use --to postgres.")
    names = components if isinstance(components, str) else ",".join(components)
    comps = registry.parse_list(names)
    if batch_size is not None and not 100 <= batch_size <= 100_000:
        raise UsageError(
            f"--batch-size {batch_size} is outside 100-100000",
            "Pick a batch size from 100 to 100000 (default: from the volume).",
        )
    inst, left_out = locate(source, config)
    paths = [str(p.resolve()) for p in inst.paths]
    source_path = paths[0]
    if output:
        for path in paths:
            output = check_plan_output(output, path, force)
    configured = connection.configured_dsn(target, None)
    identity = connection.identity(target, None)  # before the embedded server starts
    per_tenant: dict[str, dict[str, int]] = {}
    planned = []
    per_file = per_file_records(paths, comps, source_tenants) if len(paths) > 1 else {}
    with SourceDB(paths) as raw:
        source_counts = {c.name: raw.counts_by_tenant(c) for c in comps if raw.has(c)}
    held = {t for counts in source_counts.values() for t in counts}
    with SourceDB(paths, tenant_map=tmap) as db:
        if names.strip() == registry.ALL:
            db.require_tenants([c for c in comps if db.has(c)], tenants)
            comps = [c for c in comps if db.has(c) and db.count(c, tenants)]
            if not comps:
                raise UsageError(
                    f"{' + '.join(paths)} holds no records of any component llmspell-migrate moves",
                    "Check --source (and --tenant); there is nothing to plan.",
                )
        for comp in comps:
            db.require(comp)
        db.require_tenants(comps, tenants)
        left_behind = db.left_behind(comps, tenants)
        reach = classify_db(db, comps, tenants, layout)
        for comp in comps:
            counts = db.counts_by_tenant(comp, tenants)
            per_tenant[comp.name] = counts
            total = sum(counts.values())
            planned.append(ComponentPlan(comp.name, total, batch_size or default_batch_size(total)))
    if configured:
        where = connection.redact(configured)
    else:
        resolved = connection.resolve(None, None)
        run_mod.prepare_target(resolved)
        where = resolved.where
    if not per_file:
        per_file = {source_path: {c.name: c.estimated_count for c in planned}}
    plan = Plan(
        components=planned,
        source_path=source_path,
        # One file named by --source is the guide's `source.path`; found or several files
        # are listed with why each is read and what it holds.
        source_files=[]
        if len(paths) == 1 and inst.files[0].why == installation.GIVEN
        else [installation.SourceFile(Path(p), f.role, f.why) for p, f in zip(paths, inst.files)],
        source_records={
            p: {c.name: n for c in planned if (n := per_file.get(p, {}).get(c.name, 0))}
            for p in paths
        },
        source_config=str(inst.config) if inst.config else None,
        target_connection=configured if target else None,
        tenants=tenants,
        key_layout=layout,
        target_identity=identity,
        tenant_map=tmap,
        source_tenants=source_tenants if tmap else None,
        backup_path=str(backup_path) if backup_path else None,
    )
    warnings = left_out + list(left_behind) + reachability_lines(reach)
    warnings += [
        f"tenant map: the source holds no records of tenant {printable(t)} (mapped to "
        f"{printable(d)})"
        for t, d in tmap.items()
        if t not in held
    ]
    unreachable = [x for r in reach.values() for x in r.unreachable]
    if unreachable:
        warnings.append(
            f"{len(unreachable)} record(s) would be unreachable for llmspell on PostgreSQL "
            "(execute stops on them unless --allow-unreachable):"
        )
        warnings += [
            f"  {x.component} {printable(x.tenant_id)} {printable(x.key)}: {x.reason}"
            for x in unreachable[:20]
        ]
    if target and connection.has_password(target):
        warnings.append(
            "The password in --target was not written to the plan; give it with "
            f"{connection.ENV_PASSWORD} or .dlt/secrets.toml when you execute."
        )
    if any(c.group == "episodic_memory" for c in comps):
        warnings.append(HNSW_NOTE)
    for comp_plan in planned:
        if comp_plan.estimated_count == 0:
            warnings.append(f"{comp_plan.name}: no records in the source (nothing to migrate)")
    if output:
        plan.save(output)
    return PlanResult(
        path=str(output) if output else None,
        plan=plan.to_dict(),
        per_tenant=per_tenant,
        target=where,
        warnings=warnings,
        reachability={n: r.to_dict() for n, r in reach.items()},
        tenant_map=tmap,
        source_per_tenant={
            c.name: {
                t: n
                for t, n in source_counts.get(c.name, {}).items()
                if not source_tenants or t in source_tenants
            }
            for c in planned_components(planned)
        }
        if tmap
        else {},
    )


def locate(
    source: str | Path | list[str | Path] | None, config: str | Path | None
) -> tuple[installation.Installation, list[str]]:
    """The files to plan and a warning for each file llmspell's config names that the plan
    leaves out (`--source` given) or that is not on disk yet."""
    given = [source] if isinstance(source, (str, Path)) else list(source or [])
    if not given:
        inst = installation.discover(config)
        return inst, [f"{f.path} ({f.why}) does not exist: nothing of it to migrate"
                      for f in inst.missing]  # fmt: skip
    inst = installation.given(given)
    try:
        named = installation.discover(config)
    except UsageError:
        if config is not None:
            raise
        return inst, []  # no config, no default database: nothing to compare with
    return inst, installation.left_out(named, inst.paths)


def per_file_records(
    paths: list[str], comps: list[registry.Component], tenants: list[str] | None
) -> dict[str, dict[str, int]]:
    """Records per component in each file on its own: the plan says where each comes from."""
    out: dict[str, dict[str, int]] = {}
    for path in paths:
        with SourceDB(path) as one:
            out[path] = {c.name: one.count(c, tenants) for c in comps if one.has(c)}
    return out


def dry_run(
    plan: Plan | str | Path,
    *,
    source: str | list[str] | None = None,
    target: str | None = None,
    tenants: list[str] | None = None,
    emit: Emit = _quiet,
    workers: int | None = None,
    key_layout: str | None = None,
    allow_unreachable: bool = False,
    progress: Listener | None = None,
) -> ExecuteResult:
    """Every pre-flight check; writes nothing anywhere. `workers` (else
    LLMSPELL_MIGRATE_WORKERS) is checked as `execute` checks it, server capacity included.
    `progress` hears the record checks' counts (`pipelines.shared.progress.Event`)."""
    p = _with_layout(_with_tenants(_as_plan(plan), tenants), key_layout)
    return engine.Engine(
        p,
        source=source,
        target=target,
        emit=emit,
        workers=workers,
        allow_unreachable=allow_unreachable,
        progress=progress,
    ).dry_run()


def execute(
    plan: Plan | str | Path,
    *,
    source: str | list[str] | None = None,
    target: str | None = None,
    tenants: list[str] | None = None,
    emit: Emit = _quiet,
    workers: int | None = None,
    keep_packages: bool = False,
    key_layout: str | None = None,
    allow_unreachable: bool = False,
    progress: Listener | None = None,
) -> ExecuteResult:
    """Back up, copy, validate; on any failure roll back and raise (the result is on `.result`).
    `keep_packages` keeps dlt's load packages (a parquet copy of the rows) after the run;
    `key_layout` overrides the plan's; `allow_unreachable` copies records llmspell's
    PostgreSQL backend cannot find with their SQLite columns instead of stopping.
    `progress` hears every stage's counts (`pipelines.shared.progress.Event`: stage, component,
    done, total, rate, ETA); by default the copy's guide lines go to `emit`."""
    p = _with_layout(_with_tenants(_as_plan(plan), tenants), key_layout)
    return engine.Engine(
        p,
        source=source,
        target=target,
        emit=emit,
        workers=workers,
        keep_packages=keep_packages,
        allow_unreachable=allow_unreachable,
        progress=progress,
    ).execute()


def sync(
    plan: Plan | str | Path,
    *,
    source: str | list[str] | None = None,
    target: str | None = None,
    tenants: list[str] | None = None,
    emit: Emit = _quiet,
    dry_run: bool = False,
    allow_unreachable: bool = False,
    prefer_source: bool = False,
) -> sync_mod.SyncResult:
    """After a completed execute of `plan`, bring the target up to date with the source now
    (inserts, updates, deletes); `dry_run` reports the changes and conflicts, writing nothing.
    `tenants` narrows the sync; the plan's execute is still found by its own identity.
    `prefer_source` writes the source's copy of a record changed on both sides."""
    p = _as_plan(plan)
    executed = p.fingerprint()
    p = _with_tenants(p, tenants)
    return sync_mod.Sync(
        p,
        source=source,
        target=target,
        emit=emit,
        allow_unreachable=allow_unreachable,
        executed_fingerprint=executed,
        prefer_source=prefer_source,
    ).run(dry_run)


def prune(keep: int, backups: str | Path = "backups") -> prune_mod.PruneResult:
    """Delete all but the `keep` newest backups and dlt load packages."""
    return prune_mod.prune(keep, backups)


def init_target(
    target: str | None = None, app_password: str | None = None
) -> target_schema.SchemaReport:
    """Create the llmspell schema objects that are missing (idempotent, never alters)."""
    resolved = connection.resolve(target, None)
    with connection.connect(resolved, init=True, autocommit=True) as conn:
        return target_schema.ensure_schema(conn, app_password=app_password)


def _with_layout(plan: Plan, key_layout: str | None) -> Plan:
    if key_layout is not None:
        plan.key_layout = check_layout(key_layout)
    return plan


def _with_tenants(plan: Plan, tenants: list[str] | None) -> Plan:
    plan.select_tenants(tenants)
    return plan


def verify(
    plan: Plan | str | Path,
    *,
    source: str | list[str] | None = None,
    target: str | None = None,
    full: bool = False,
    tenants: list[str] | None = None,
    key_layout: str | None = None,
    progress: Listener | None = None,
):
    """Re-run the validation stage of a plan on its own; returns a ValidationReport.
    `progress` hears each component validated (`pipelines.shared.progress.Event`)."""
    p = _with_layout(_with_tenants(_as_plan(plan), tenants), key_layout)
    return verify_mod.verify(p, source=source, target=target, full=full, progress=progress or quiet)


def validate_backend(
    backend: str,
    components: str = "agent_state,workflow_state,sessions",
    *,
    source: str | list[str] | None = None,
    target: str | None = None,
    tenants: list[str] | None = None,
):
    """The guide's `storage validate`: check one backend on its own; returns a BackendCheck."""
    return verify_mod.validate_backend(
        backend, components, source=source, target=target, tenants=tenants
    )


def rollback(
    *,
    backup: str | Path | None = None,
    run_id: str | None = None,
    target: str | None = None,
    force: bool = False,
):
    """Undo a run: delete exactly the rows it wrote; returns a RollbackResult."""
    return rollback_mod.rollback(backup=backup, run_id=run_id, target=target, force=force)
