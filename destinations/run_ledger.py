"""Which run wrote which rows: the bookkeeping that makes rollback and resume exact.

`llmspell_migrate.runs` holds one row per execute (its plan fingerprint, status, backup
folder); `llmspell_migrate.written_keys` the natural keys of every row a run inserted (one
row per batch and tenant, keys in an array, so the ledger costs little on the write path). Rollback
deletes exactly those rows, so rows that were in the target before the run stay untouched,
and a run interrupted by a crash is found again by its plan's fingerprint and resumed.
A session-level advisory lock keeps two runs off the same target at once.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import psycopg
from psycopg import sql

from core.errors import LockBusy, RollbackRefused
from core.model.components import ARTIFACT_CONTENT, Component
from destinations.artifact_writer import unlink_recorded
from destinations.target_schema import BOOKKEEPING_SCHEMA, act_as_bookkeeper, act_as_tenant

_BOOK = sql.Identifier(BOOKKEEPING_SCHEMA)
LOCK_KEY = int.from_bytes(hashlib.sha256(b"llmspell-migrate").digest()[:4], "big") & 0x7FFFFFFF

RUNNING, COMPLETED, ROLLED_BACK, FAILED = "running", "completed", "rolled_back", "failed"


@dataclass
class RunRecord:
    run_id: str
    status: str
    backup_path: str | None
    components: list[str]
    started_at: str


# A run of a fleet (`pipelines.fleet`) names its installation here: it then shares the
# target with the fleet's other installations (a shared lock on LOCK_KEY) and excludes only
# another run of the same installation (an exclusive lock on the scope's key). A run without a
# scope holds LOCK_KEY exclusively, as always: it excludes every run, fleet runs included.
ENV_LOCK_SCOPE = "LLMSPELL_MIGRATE_LOCK_SCOPE"
SCOPE_CLASS = LOCK_KEY  # the two-key form's first key, for scoped locks


def lock_scope() -> str | None:
    return os.environ.get(ENV_LOCK_SCOPE) or None


def _scope_key(scope: str) -> int:
    return int.from_bytes(hashlib.sha256(scope.encode()).digest()[:4], "big") & 0x7FFFFFFF


def acquire_lock(conn: psycopg.Connection) -> None:
    """Take the target-wide migration lock for this connection's session, or refuse (a
    fleet run: the shared target lock and its installation's own, see ENV_LOCK_SCOPE)."""
    scope = lock_scope()
    if scope is None:
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]
    else:
        got = conn.execute("SELECT pg_try_advisory_lock_shared(%s)", (LOCK_KEY,)).fetchone()[0]
        if got:
            got = conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (SCOPE_CLASS, _scope_key(scope))
            ).fetchone()[0]
            if not got:
                conn.execute("SELECT pg_advisory_unlock_shared(%s)", (LOCK_KEY,))
    conn.commit()
    if not got:
        holder = conn.execute(
            "SELECT a.pid, a.application_name, a.backend_start FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
            "AND l.granted AND ((l.classid = 0 AND l.objid = %s::bigint::oid) OR "
            "(l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid)) "
            "AND a.pid <> pg_backend_pid() LIMIT 1",
            (LOCK_KEY, SCOPE_CLASS, _scope_key(scope) if scope else 0),
        ).fetchone()
        conn.commit()
        # a role without pg_read_all_stats sees no start time of another user's backend
        since = f", since {holder[2]:%Y-%m-%d %H:%M:%S}" if holder and holder[2] else ""
        who = f" (PostgreSQL backend pid {holder[0]}{since})" if holder else ""
        what = f" for installation {scope!r}" if scope else ""
        raise LockBusy(
            f"Another migration is running against this target{what}{who}",
            "Wait for it to finish (or stop it); runs against one target never interleave.",
        )


def release_lock(conn: psycopg.Connection) -> None:
    scope = lock_scope()
    if scope is None:
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    else:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", (SCOPE_CLASS, _scope_key(scope)))
        conn.execute("SELECT pg_advisory_unlock_shared(%s)", (LOCK_KEY,))
    conn.commit()


def _one_run(conn: psycopg.Connection, where: str, args: tuple) -> RunRecord | None:
    act_as_bookkeeper(conn)
    row = conn.execute(
        sql.SQL(
            "SELECT run_id, status, backup_path, components, started_at::text FROM {}.runs "
            f"WHERE {where} ORDER BY started_at DESC LIMIT 1"
        ).format(_BOOK),
        args,
    ).fetchone()
    conn.commit()
    return RunRecord(*row) if row else None


def find_unfinished(conn: psycopg.Connection, fingerprint: str) -> RunRecord | None:
    """The latest run of this plan that neither completed nor was rolled back."""
    return _one_run(conn, "plan_fingerprint = %s AND status = %s", (fingerprint, RUNNING))


def get_run(conn: psycopg.Connection, run_id: str) -> RunRecord | None:
    """The run `run_id`; None when the target has no such run (or no run ledger at all)."""
    (ledger,) = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f"{BOOKKEEPING_SCHEMA}.runs",)
    ).fetchone()
    if not ledger:
        conn.commit()
        return None
    return _one_run(conn, "run_id = %s", (run_id,))


# How this version fingerprints what a run wrote (`record_prints`; `runs.print_scheme`):
# source records by MD5 of their canonical text (`pipelines.stages.sync_baseline`), target rows by
# SHA-256 of theirs (`destinations.row_text`). A run without it (NULL) was recorded by an
# earlier version with DuckDB's `hash()` and PostgreSQL's `hashtextextended`, which neither
# engine promises across versions: its prints are never compared with these.
PRINT_SCHEME = "md5-sha256-canonical-1"


def _has_print_scheme(conn: psycopg.Connection) -> bool:
    """Whether `runs` has its print_scheme column (a bookkeeping schema from before has not:
    execute and sync add it, a dry-run does not)."""
    return (
        conn.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = 'runs' AND column_name = 'print_scheme'",
            (BOOKKEEPING_SCHEMA,),
        ).fetchone()
        is not None
    )


def print_scheme(conn: psycopg.Connection, run_id: str) -> str | None:
    """How `run_id`'s prints were taken (None: before PRINT_SCHEME existed)."""
    if not _has_print_scheme(conn):
        return None
    row = conn.execute(
        sql.SQL("SELECT print_scheme FROM {}.runs WHERE run_id = %s").format(_BOOK), (run_id,)
    ).fetchone()
    return row[0] if row else None


def runs_printed_otherwise(conn: psycopg.Connection, fingerprints: list[str]) -> list[str]:
    """Completed runs of these plan fingerprints whose prints are not PRINT_SCHEME's."""
    scheme = sql.SQL("print_scheme" if _has_print_scheme(conn) else "NULL::text")
    rows = conn.execute(
        sql.SQL(
            "SELECT run_id FROM {}.runs WHERE plan_fingerprint = ANY(%s) AND status = %s "
            "AND {} IS DISTINCT FROM %s ORDER BY started_at"
        ).format(_BOOK, scheme),
        (fingerprints, COMPLETED, PRINT_SCHEME),
    ).fetchall()
    return [r[0] for r in rows]


def latest_run(conn: psycopg.Connection, fingerprint: str) -> RunRecord | None:
    """The latest run of this plan fingerprint, whatever became of it."""
    return _one_run(conn, "plan_fingerprint = %s", (fingerprint,))


def start_run(
    conn: psycopg.Connection,
    run_id: str,
    fingerprint: str,
    components: list[str],
    source_path: str,
    backup_path: str | None,
    tenants: list[str],
) -> None:
    """Record a run; `tenants` are those it may write, the ones rollback visits under RLS."""
    act_as_bookkeeper(conn)
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.runs (run_id, plan_fingerprint, status, components, source_path, "
            "backup_path, tenants, print_scheme) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        ).format(_BOOK),
        (run_id, fingerprint, RUNNING, components, source_path, backup_path, tenants, PRINT_SCHEME),
    )
    conn.commit()


def _tenants(conn: psycopg.Connection, run_id: str, bypass_rls: bool) -> list[str]:
    """The tenants a run wrote to. A role under RLS sees no ledger row until it sets a tenant,
    so it takes them from the run's record; a role that bypasses RLS asks the ledger."""
    if bypass_rls:
        query = "SELECT DISTINCT tenant_id FROM {}.written_keys WHERE run_id = %s"
    else:
        act_as_bookkeeper(conn)
        query = "SELECT unnest(tenants) FROM {}.runs WHERE run_id = %s"
    return [r[0] for r in conn.execute(sql.SQL(query).format(_BOOK), (run_id,)).fetchall()]


def run_tenants(conn: psycopg.Connection, run_id: str) -> list[str]:
    """The tenants a run was recorded as writing (its `runs.tenants`)."""
    return _tenants(conn, run_id, False)


def ledger_tenants(
    conn: psycopg.Connection, run_id: str, candidates: list[str], bypass_rls: bool
) -> set[str]:
    """The tenants the run's key ledger holds rows of: every one bypassing RLS; under RLS,
    those of `candidates` (a role under RLS cannot list the others)."""
    if bypass_rls:
        return set(_tenants(conn, run_id, True))
    found: set[str] = set()
    query = sql.SQL("SELECT 1 FROM {}.written_keys WHERE run_id = %s LIMIT 1").format(_BOOK)
    with conn.transaction():
        for tenant in candidates:
            act_as_tenant(conn, tenant)
            if conn.execute(query, (run_id,)).fetchone():
                found.add(tenant)
    return found


def _left_in_ledger(conn: psycopg.Connection, run_id: str, tenants: list[str] | None) -> list[str]:
    """`component tenant=T: N ledger row(s)` for each ledger entry of the run still there
    (inside the caller's transaction): every tenant's with `tenants` None (bypassing RLS)."""
    query = sql.SQL(
        "SELECT component, tenant_id, count(*) FROM {}.written_keys WHERE run_id = %s "
        "GROUP BY 1, 2 ORDER BY 1, 2"
    ).format(_BOOK)
    rows = []
    for tenant in [None] if tenants is None else tenants:
        if tenant is not None:
            act_as_tenant(conn, tenant)
        rows += conn.execute(query, (run_id,)).fetchall()
    return [f"{comp} tenant={tenant}: {n} ledger row(s)" for comp, tenant, n in rows]


def completed_run(conn: psycopg.Connection, fingerprint: str) -> RunRecord | None:
    """The latest completed run of this plan fingerprint."""
    return _one_run(conn, "plan_fingerprint = %s AND status = %s", (fingerprint, COMPLETED))


def ledger_keys(
    conn: psycopg.Connection,
    run_id: str,
    comp: Component,
    bypass_rls: bool,
    tenants: list[str] | None = None,
) -> set[tuple[str, str]]:
    """(tenant, natural key) of every row the run inserted into `comp`'s table. Under RLS
    the ledger is read for `tenants` (default: the run's record)."""
    query = sql.SQL(
        "SELECT tenant_id, unnest(natural_keys) FROM {}.written_keys WHERE run_id = %s "
        "AND component = %s"
    ).format(_BOOK)
    keys: set[tuple[str, str]] = set()
    with conn.transaction():
        visit = _tenants(conn, run_id, False) if tenants is None else tenants
        for tenant in [None] if bypass_rls else visit:
            if tenant is not None:
                act_as_tenant(conn, tenant)
            keys.update(conn.execute(query, (run_id, comp.name)).fetchall())
    return keys


def set_status(conn: psycopg.Connection, run_id: str, status: str) -> None:
    act_as_bookkeeper(conn)
    conn.execute(
        sql.SQL("UPDATE {}.runs SET status = %s, finished_at = now() WHERE run_id = %s").format(
            _BOOK
        ),
        (status, run_id),
    )
    conn.commit()


def delete_written_sql(comp: Component) -> sql.Composed:
    """Delete one tenant's rows the run inserted into `comp`'s table (parameters run, comp,
    tenant). The keys come as one array (`= ANY`), not a join: under RLS only a leakproof
    condition reaches the (tenant_id, key) index (`Column.match_type`), and a join against
    the ledger's arrays leaves the planner guessing their size (it guesses 10, and a
    freshly loaded table has no statistics), which can rescan the tenant per key."""
    return sql.SQL(
        "DELETE FROM llmspell.{table} WHERE tenant_id = %(tenant)s AND {key} = ANY(ARRAY("
        "SELECT unnest(natural_keys)::{key_type} FROM {book}.written_keys WHERE run_id = "
        "%(run)s AND component = %(comp)s AND tenant_id = %(tenant)s))"
    ).format(
        table=sql.Identifier(comp.pg_table),
        book=_BOOK,
        key=sql.Identifier(comp.key_column),
        key_type=sql.SQL(comp.column(comp.key_column).match_type),
    )


def delete_written(
    conn: psycopg.Connection,
    run_id: str,
    comps: list[Component],
    bypass_rls: bool,
    tenants: list[str] | None = None,
    check: list[str] | None = None,
) -> dict[str, int]:
    """Delete every row the run inserted, in one transaction; returns rows deleted per component.

    Latest-loaded first, so rows are gone before what they refer to (artifacts before their
    content and sessions); then the large objects the run created are unlinked. Bypassing
    RLS the ledger says which tenants to visit; under RLS `tenants` does (default: the run's
    record). If any ledger row of the run is left afterwards (of any tenant bypassing RLS,
    else of `check` and the visited tenants), nothing is deleted: RollbackRefused names
    them, and the run must not be marked rolled back."""
    tables: list[Component] = []
    for comp in comps:
        if comp.own_copy and comp.name == "artifacts":
            tables.append(ARTIFACT_CONTENT)  # the artifacts' content, deleted after them
        tables.append(comp)
    deleted: dict[str, int] = {}
    drop_ledger = sql.SQL(
        "DELETE FROM {}.written_keys WHERE run_id = %(run)s AND component = %(comp)s "
        "AND tenant_id = %(tenant)s"
    ).format(_BOOK)
    with conn.transaction():
        if bypass_rls or tenants is None:
            tenants = _tenants(conn, run_id, bypass_rls)
        for comp in reversed(tables):
            n = 0
            for tenant in tenants:
                if not bypass_rls:
                    act_as_tenant(conn, tenant)
                args = {"run": run_id, "comp": comp.name, "tenant": tenant}
                n += conn.execute(delete_written_sql(comp), args).rowcount
                conn.execute(drop_ledger, args)  # this tenant's ledger rows
            deleted[comp.name] = n
        if any(c is ARTIFACT_CONTENT for c in tables):
            deleted["large_objects"] = unlink_recorded(
                conn, run_id, [None] if bypass_rls else tenants
            )
        left = _left_in_ledger(
            conn, run_id, None if bypass_rls else sorted(set(tenants) | set(check or ()))
        )
        if left:
            raise RollbackRefused(
                f"Rollback refused: run {run_id}'s ledger still holds rows its record does not "
                f"lead to ({len(left)} component/tenant pair(s)); nothing was deleted",
                "The run's record (llmspell_migrate.runs: components, tenants) no longer "
                "matches its ledger: compare it with the backup's rollback-metadata.toml.",
                details=left[:20],
            )
    return deleted
