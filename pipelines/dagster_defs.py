"""Dagster definitions for a fleet migration (`pip install -e '.[dagster]'`).

    LLMSPELL_MIGRATE_FLEET=fleet.yaml dagster dev -m pipelines.dagster_defs
    LLMSPELL_MIGRATE_FLEET=fleet.yaml dagster asset materialize -m pipelines.dagster_defs \\
        --select '*' --partition team-a

- `llmspell_installation`: one asset partitioned by installation (the manifest named by
  LLMSPELL_MIGRATE_FLEET; LLMSPELL_MIGRATE_FLEET_DIR overrides its output folder). Each
  materialization is plan + execute of that installation through the tool's own fleet
  runner (`pipelines.fleet`: its own process, working home and lock scope; the fleet's
  pre-flight against the other installations' plans), with the run's report as metadata:
  records per component, validation result, duration, backup path, run id, tenants.
  An installation already migrated is not run again (its metadata says so).
- Concurrency on the shared target: the asset runs in the pool `llmspell_target`
  (`dagster instance concurrency set llmspell_target 2`, or `concurrency: pools:` in
  dagster.yaml); the tool itself lets installations of one fleet run side by side and keeps
  any plain `execute` against the target apart from all of them.
- Retries only for transient failures (a lost connection, the target busy): the asset asks
  for a retry (`RetryRequested`) then; a validation mismatch or a refused pre-flight is a
  `Failure` with the report, never retried. Each failed attempt was rolled back by the run.
- `llmspell_sync_schedule` runs `sync` for every migrated installation (cron from
  LLMSPELL_MIGRATE_SYNC_CRON, default every 15 minutes); it starts stopped: turn it on for
  the catch-up syncs until cutover, off after.

dagster-dlt's `@dlt_assets` is not used for the copy itself: the tool's dlt pipeline runs
inside its own all-or-nothing run (pre-flight, backup, validation and rollback around
dlt's load), which a bare dlt asset would skip.
"""

import os
from pathlib import Path

try:  # an optional extra: the plain install runs every other command without it
    import dagster as dg
except ImportError as exc:
    raise ImportError(
        "pipelines.dagster_defs needs Dagster, an optional extra of llmspell-migrate. "
        "Install it with: pip install 'llmspell-migrate[dagster]'"
    ) from exc

from pipelines.fleet.runner import ENV_FLEET, MIGRATED, Fleet, load_manifest

POOL = "llmspell_target"
ENV_DIR = "LLMSPELL_MIGRATE_FLEET_DIR"
MAX_RETRIES = 3


def _manifest_path() -> Path | None:
    value = os.environ.get(ENV_FLEET)
    return Path(value) if value else None


def fleet() -> Fleet:
    path = _manifest_path()
    if path is None:
        raise dg.Failure(f"Set {ENV_FLEET} to the fleet manifest (fleet.yaml).")
    return Fleet(path, os.environ.get(ENV_DIR))


def _partition_names() -> list[str]:
    path = _manifest_path()
    return load_manifest(path).names if path else []


installations = dg.StaticPartitionsDefinition(_partition_names())


def _metadata(o) -> dict:
    meta: dict = {
        "status": o.status,
        "records": dg.MetadataValue.json(o.records),
        "records_total": sum(o.records.values()),
        "tenants": dg.MetadataValue.json(o.tenants),
    }
    for key in ("validation", "run_id", "backup_path", "error", "source"):
        if getattr(o, key):
            meta[key] = getattr(o, key)
    if o.duration is not None:
        meta["duration_s"] = round(o.duration, 3)
    if o.skipped:
        meta["skipped"] = "already migrated"
    return meta


@dg.asset(
    partitions_def=installations,
    pool=POOL,
    description="One llmspell installation migrated into the shared PostgreSQL "
    "(plan + execute, all or nothing).",
)
def llmspell_installation(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    name = context.partition_key
    result = fleet().execute(parallel=1, only=[name])
    (o,) = result.outcomes
    meta = _metadata(o)
    if o.status == MIGRATED:
        return dg.MaterializeResult(metadata=meta)
    if o.transient and context.retry_number < MAX_RETRIES:
        context.log.warning(f"{name}: transient failure, retrying: {o.error}")
        raise dg.RetryRequested(
            max_retries=MAX_RETRIES, seconds_to_wait=10 * (1 + context.retry_number)
        )
    raise dg.Failure(f"{name}: {o.status}: {o.error}", metadata=meta, allow_retries=False)


@dg.op(pool=POOL)
def sync_migrated(context: dg.OpExecutionContext) -> None:
    result = fleet().sync()
    for o in result.outcomes:
        context.log.info(f"{o.name}: {o.status}" + (f" ({o.error})" if o.error else ""))
    failed = [o.name for o in result.outcomes if o.status not in (MIGRATED, "not started")]
    if failed:
        raise dg.Failure(f"sync failed for: {', '.join(failed)}")


@dg.job(description="sync every migrated installation with its source (until cutover)")
def llmspell_sync_job():
    sync_migrated()


llmspell_sync_schedule = dg.ScheduleDefinition(
    job=llmspell_sync_job,
    cron_schedule=os.environ.get("LLMSPELL_MIGRATE_SYNC_CRON", "*/15 * * * *"),
    default_status=dg.DefaultScheduleStatus.STOPPED,
)

defs = dg.Definitions(
    assets=[llmspell_installation],
    jobs=[llmspell_sync_job],
    schedules=[llmspell_sync_schedule],
)
