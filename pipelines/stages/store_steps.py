"""Steps only some stores need, at the fixed points where the generic engine calls them.

- Pre-flight (`refuse_collisions`): a key PostgreSQL holds unique across tenants (hook
  execution ids) while SQLite kept it unique per tenant is refused by id when two tenants
  share it, in the source or between source and target.
- Before the first write (`prepare_target`): the event log's month partitions for every
  month the source's events fall in, made by the schema's own
  `llmspell.create_event_log_partition` (SECURITY DEFINER, so `llmspell_app` may call it).
  A partition is DDL, not a row: rollback leaves the (then empty) partitions in place.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
from psycopg import sql

from core.errors import MigrationFailed, PreflightError
from core.model.canonical import uuid_key
from core.model.components import ARTIFACTS, EVENTS, SESSIONS, Component
from core.tenant_sql import tenant_in
from destinations import artifact_writer, connection
from destinations.postgres_writer import LlmspellWriter
from pipelines.shared.plan import Plan
from pipelines.stages import preflight
from sources.llmspell_source import rows_to_arrow
from sources.sqlite_reader import SourceDB

MAX_LISTED = 20
MAX_ARTIFACT_BYTES = 104_857_600  # llmspell's CHECK (size_bytes <= 104857600), both backends
_CHUNK = 5_000


def _source_keys(db: SourceDB, comp: Component, tenants: list[str] | None) -> Iterator[list]:
    where, args = tenant_in(tenants)
    query = f"SELECT tenant_id, {comp.key_column} FROM {comp.sqlite_table}{where}"
    cur = db.conn.execute(query, args)
    while rows := cur.fetchmany(_CHUNK):
        yield [(t, uuid_key(k)) for t, k in rows]


def collisions(
    db: SourceDB, conn: psycopg.Connection, comp: Component, tenants: list[str] | None, bypass: bool
) -> list[str]:
    """One line per key of `comp` held by two tenants (source and source, or source and
    target). The target's other tenants are visible only to a role that bypasses RLS; for
    `llmspell_app` a collision there fails the INSERT (and the run rolls back)."""
    owners: dict[str, str] = {}
    found: list[str] = []
    for rows in _source_keys(db, comp, None):  # every tenant: a collision may be outside --tenant
        for tenant, key in rows:
            other = owners.setdefault(key, tenant)
            if other != tenant:
                found.append(
                    f"{comp.name} {comp.key_column} {key}: held by tenants {other!r} "
                    f"and {tenant!r} in the source"
                )
    if not bypass:
        return found
    query = sql.SQL(
        "SELECT {k}::text, tenant_id FROM llmspell.{t} WHERE {k} = ANY(%s::uuid[])"
    ).format(k=sql.Identifier(comp.key_column), t=sql.Identifier(comp.pg_table))
    for rows in _source_keys(db, comp, tenants):
        mine = dict((k, t) for t, k in rows)
        for key, tenant in conn.execute(query, (list(mine),)).fetchall():
            if tenant != mine[key]:
                found.append(
                    f"{comp.name} {comp.key_column} {key}: tenant {mine[key]!r} in the "
                    f"source, already held by tenant {tenant!r} in the target"
                )
    conn.commit()
    return found


def refuse_collisions(db: SourceDB, conn: psycopg.Connection, plan: Plan, bypass: bool) -> None:
    found: list[str] = []
    for cp in plan.components:
        if cp.component.global_key:
            found += collisions(db, conn, cp.component, plan.tenants, bypass)
    if found:
        raise PreflightError(
            f"{len(found)} id(s) are unique per tenant in SQLite but would collide in "
            "PostgreSQL, where they are unique across tenants",
            "Remove or re-key those records in llmspell (or leave their tenant out with "
            "--tenant); nothing was written.",
            details=found[:MAX_LISTED],
        )


def event_months(db: SourceDB, tenants: list[str] | None) -> list[str]:
    """The first day (UTC, `YYYY-MM-01`) of every month the source's events fall in."""
    where, args = tenant_in(tenants)
    rows = db.conn.execute(
        "SELECT DISTINCT strftime('%Y-%m-01', timestamp, 'unixepoch') FROM event_log"
        f"{where} ORDER BY 1",
        args,
    ).fetchall()
    return [r[0] for r in rows if r[0]]


def ensure_event_partitions(conn: psycopg.Connection, months: list[str]) -> list[str]:
    """Create the missing month partitions (UTC months, named as llmspell names them);
    returns the names of those created."""
    created = []
    with conn.transaction():
        conn.execute("SET LOCAL TIME ZONE 'UTC'")  # partition names and bounds in UTC
        for month in months:
            (result,) = conn.execute(
                "SELECT llmspell.create_event_log_partition(%s::timestamptz, "
                "%s::timestamptz + interval '1 month')",
                (month, month),
            ).fetchone()
            if result.startswith("CREATED"):
                created.append(result.split()[-1])
    return created


def prepare_target(conn: psycopg.Connection, db: SourceDB, plan: Plan) -> list[str]:
    """Target objects the planned stores need before their rows arrive; returns what to say."""
    messages = []
    if any(cp.name == EVENTS.name for cp in plan.components):
        made = ensure_event_partitions(conn, event_months(db, plan.tenants))
        if made:
            messages.append(f"Created event log partitions: {', '.join(made)}")
    return messages


# -- artifacts --------------------------------------------------------------------------------
def _target_pairs(conn, query: sql.Composable, tenants: list[str], bypass: bool) -> set:
    return {(t, str(k)) for t, k in preflight.per_tenant_query(conn, query, tenants, bypass)}


def dangling_artifacts(
    db: SourceDB, conn: psycopg.Connection, plan: Plan, bypass: bool
) -> list[str]:
    """Artifacts whose content or session neither the source nor the target holds (a session
    only in the source counts as held only when this plan migrates sessions), and content
    over llmspell's 100 MiB limit: one line each, by id."""
    where, args = tenant_in(plan.tenants)
    tenants = sorted(db.counts_by_tenant(ARTIFACTS, plan.tenants))
    if not tenants:
        return []
    content_q = sql.SQL(
        "SELECT tenant_id, content_hash FROM llmspell.artifact_content WHERE tenant_id = ANY(%s)"
    )
    sessions_q = sql.SQL(
        "SELECT tenant_id, session_id::text FROM llmspell.sessions WHERE tenant_id = ANY(%s)"
    )
    contents = _target_pairs(conn, content_q, tenants, bypass)
    sessions = _target_pairs(conn, sessions_q, tenants, bypass)
    contents |= set(
        db.conn.execute(
            f"SELECT tenant_id, content_hash FROM artifact_content{where}", args
        ).fetchall()
    )
    migrating_sessions = any(cp.name == SESSIONS.name for cp in plan.components)
    in_source_sessions = set()
    if SESSIONS.sqlite_table in db.tables:
        for t, s in db.conn.execute(f"SELECT tenant_id, session_id FROM sessions{where}", args):
            in_source_sessions.add((t, uuid_key(s)))
    found = []
    for tenant, artifact_id, session, digest in db.conn.execute(
        f"SELECT tenant_id, artifact_id, session_id, content_hash FROM artifacts{where} "
        "ORDER BY tenant_id, artifact_id",
        args,
    ):
        if (tenant, digest) not in contents:
            found.append(
                f"artifacts {tenant} {artifact_id!r}: content {digest} is in neither "
                "the source nor the target"
            )
        key = (tenant, uuid_key(session))
        if key not in sessions:
            if key in in_source_sessions and not migrating_sessions:
                found.append(
                    f"artifacts {tenant} {artifact_id!r}: session {session} is not in "
                    "the target and this plan does not migrate sessions"
                )
            elif key not in in_source_sessions:
                found.append(
                    f"artifacts {tenant} {artifact_id!r}: session {session} is in "
                    "neither the source nor the target"
                )
    for tenant, digest, length in db.conn.execute(
        f"SELECT tenant_id, content_hash, length(data) FROM artifact_content{where}", args
    ):
        if length > MAX_ARTIFACT_BYTES:
            found.append(
                f"artifact_content {tenant} {digest}: {length:,} bytes, over llmspell's "
                f"{MAX_ARTIFACT_BYTES:,}-byte limit (PostgreSQL CHECK max_artifact_size)"
            )
    conn.commit()
    return found


def refuse_dangling(db: SourceDB, conn: psycopg.Connection, plan: Plan, bypass: bool) -> None:
    if not any(cp.name == ARTIFACTS.name for cp in plan.components):
        return
    found = dangling_artifacts(db, conn, plan, bypass)
    if found:
        raise PreflightError(
            f"{len(found)} artifact record(s) cannot be stored: their foreign keys or size "
            "would fail in PostgreSQL",
            "Add the missing sessions to the plan (or the target), or remove those artifacts "
            "in llmspell; nothing was written.",
            details=found[:MAX_LISTED],
        )


def copy_own(
    target,
    db: SourceDB,
    plan: Plan,
    run_id: str,
    skip_existing: bool,
    emit,
) -> dict[str, int]:
    """Copy the components the dlt copy leaves out (artifacts), after it, so the sessions
    they refer to are in place: content first (bytea or streamed large objects), then the
    artifact rows through the same writer as every other component. Returns rows written."""
    written: dict[str, int] = {}
    for cp in plan.components:
        if cp.name != ARTIFACTS.name:
            continue
        tenants = sorted(db.counts_by_tenant(ARTIFACTS, plan.tenants))
        emit("")
        emit(f"Migrating component: {cp.name} (after the others: content, then artifact rows)")
        try:
            with connection.connect(target) as conn:
                content = artifact_writer.copy_content(
                    conn, db.conn, run_id, tenants, cp.batch_size
                )
                emit(
                    f"Content: {content.inserted} rows ({content.bytes:,} bytes), "
                    f"{len(content.large_objects)} as large objects"
                )
                writer = LlmspellWriter(conn, run_id, skip_existing)
                for rows in db.iter_batches(ARTIFACTS, cp.batch_size, plan.tenants):
                    writer.write_batch(ARTIFACTS, rows_to_arrow(ARTIFACTS, rows))
                written[cp.name] = writer.inserted.get(ARTIFACTS.name, 0)
                emit(f"Artifacts: {written[cp.name]} rows")
        except psycopg.Error as exc:
            text = str(exc).strip().splitlines()
            raise MigrationFailed(
                f"Migration execution failed in {cp.name}: {type(exc).__name__}"
                + (f": {text[0]}" if text else ""),
                "Everything this run wrote was rolled back; fix the cause and re-run the plan.",
            ) from exc
    return written
