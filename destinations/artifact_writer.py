"""Write artifact content into PostgreSQL the way llmspell's PostgreSQL backend stores it.

Content of less than 1 MiB goes into `data` (bytea), content of 1 MiB or more into a large
object (`large_object_oid`), as `storage_type` says. Blobs are streamed from the SQLite
snapshot with incremental blob I/O and written with `lo_put` in 1 MiB pieces, so memory never
holds more than a piece of a large blob. Each row is inserted with reference_count 1: the
schema's trigger adds one per artifact row inserted afterwards, which gives PostgreSQL's
convention (1 + artifacts) whatever SQLite counted.

Large objects live outside row-level security (any session of their owner reads them by OID,
whatever tenant it set: `LARGE_OBJECT_NOTE`) and have an owner: each one created here is
handed to `llmspell_app` (so llmspell can read it and unlink it when the last artifact goes),
and recorded in the run's ledger under `LO_LEDGER`, so rollback unlinks exactly those. A large
object is created in the transaction that inserts its row and records it: a failed batch
leaves no orphan.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from core.model.components import ARTIFACT_CONTENT
from destinations.target_schema import APP_ROLE, BOOKKEEPING_SCHEMA, act_as_tenant

LARGE_OBJECT_THRESHOLD = 1 << 20  # llmspell's: bytea below, large object from here
# What every report of a run that migrates artifacts says (README, "Large objects and RLS").
LARGE_OBJECT_NOTE = (
    "Artifact content of 1 MiB or more is stored as PostgreSQL large objects, which have no "
    "row-level security: any session of llmspell_app (their owner), whatever tenant it set, "
    "can read every tenant's large object by its OID (lo_get). llmspell's own PostgreSQL "
    "backend stores them the same way. To contain it: keep lo_compat_privileges off; let no "
    "tenant-supplied SQL run as llmspell_app; revoke EXECUTE on lo_get/lo_open/loread/"
    "lo_export from roles that must not read them; where tenants have their own roles, give "
    "each tenant's large objects to its role (ALTER LARGE OBJECT ... OWNER TO, GRANT SELECT "
    "ON LARGE OBJECT); or keep artifacts below 1 MiB (stored as bytea, under row-level "
    'security). See the README, "Large objects and row-level security".'
)
PIECE = 1 << 20  # bytes streamed at a time
TX_BYTES = 64 << 20  # commit a content batch once it carries this much
LO_LEDGER = "artifact_content.large_objects"
_BOOK = sql.Identifier(BOOKKEEPING_SCHEMA)

COLUMNS = (
    "rowid, tenant_id, content_hash, size_bytes, is_compressed, original_size_bytes, "
    "created_at, length(data)"
)
_INSERT = (
    "INSERT INTO llmspell.artifact_content (tenant_id, content_hash, storage_type, data, "
    "large_object_oid, size_bytes, is_compressed, original_size_bytes, reference_count, "
    "created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 1, to_timestamp(%s)) "
    "ON CONFLICT (tenant_id, content_hash) DO NOTHING RETURNING content_hash"
)


@dataclass
class ContentCopy:
    inserted: int = 0
    large_objects: list[int] = field(default_factory=list)
    bytes: int = 0


def storage_type(length: int) -> str:
    return "bytea" if length < LARGE_OBJECT_THRESHOLD else "large_object"


def stream_blob(src: sqlite3.Connection, table: str, column: str, rowid: int):
    """Yield the blob's bytes in pieces of at most PIECE (never the whole blob)."""
    with src.blobopen(table, column, rowid, readonly=True) as blob:
        while piece := blob.read(PIECE):
            yield piece


def give_to_app(conn: psycopg.Connection, oid: int, app_owns: bool) -> None:
    """Make the large object llmspell_app's: its owner if we may, else readable by it."""
    if app_owns:
        return
    oid_sql = sql.SQL(str(int(oid)))
    role = sql.Identifier(APP_ROLE)
    try:
        with conn.transaction():
            conn.execute(sql.SQL("ALTER LARGE OBJECT {} OWNER TO {}").format(oid_sql, role))
    except psycopg.errors.InsufficientPrivilege:
        conn.execute(sql.SQL("GRANT SELECT ON LARGE OBJECT {} TO {}").format(oid_sql, role))


def write_large_object(conn: psycopg.Connection, pieces) -> int:
    (oid,) = conn.execute("SELECT lo_create(0)").fetchone()
    offset = 0
    for piece in pieces:
        conn.execute("SELECT lo_put(%s, %s, %s)", (oid, offset, piece))
        offset += len(piece)
    return oid


def _record(conn, run_id: str, component: str, tenant: str, keys: list[str]) -> None:
    if keys:
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.written_keys (run_id, component, tenant_id, natural_keys) "
                "VALUES (%s, %s, %s, %s)"
            ).format(_BOOK),
            (run_id, component, tenant, keys),
        )


def copy_content(
    conn: psycopg.Connection,
    src: sqlite3.Connection,
    run_id: str,
    tenants: list[str],
    batch_rows: int,
    on_row: Callable[[int], None] | None = None,
) -> ContentCopy:
    """Copy the content rows of `tenants`, one transaction per batch and tenant (the tenant
    setting in force, so this works as llmspell_app under RLS)."""
    app_owns = conn.execute("SELECT current_user = %s", (APP_ROLE,)).fetchone()[0]
    conn.commit()
    out = ContentCopy()
    for tenant in tenants:
        cur = src.execute(
            f"SELECT {COLUMNS} FROM artifact_content WHERE tenant_id = ? ORDER BY content_hash",
            (tenant,),
        )
        while True:
            rows = cur.fetchmany(batch_rows)
            if not rows:
                break
            start = 0
            while start < len(rows):  # a transaction per TX_BYTES of content at most
                end, carried = start, 0
                while end < len(rows) and (end == start or carried < TX_BYTES):
                    carried += rows[end][7] or 0
                    end += 1
                copy_rows(conn, src, run_id, tenant, rows[start:end], app_owns, out)
                if on_row:
                    on_row(end - start)
                start = end
    return out


def copy_rows(conn, src, run_id: str, tenant: str, rows, app_owns: bool, out) -> None:
    """Insert these content rows (`COLUMNS`, from `src`) and record them in the run's ledger,
    in one transaction (a savepoint inside the caller's): sync copies with it too."""
    hashes: list[str] = []
    oids: list[int] = []
    with conn.transaction():
        act_as_tenant(conn, tenant)
        for rowid, tenant_id, digest, size, compressed, original, created, length in rows:
            kind = storage_type(length)
            data = oid = None
            if kind == "bytea":
                data = src.execute(
                    "SELECT data FROM artifact_content WHERE rowid = ?", (rowid,)
                ).fetchone()[0]
            else:
                present = conn.execute(
                    "SELECT 1 FROM llmspell.artifact_content WHERE tenant_id = %s "
                    "AND content_hash = %s",
                    (tenant_id, digest),
                ).fetchone()
                if present:  # a resumed run: never stream a blob that is there already
                    continue
                oid = write_large_object(conn, stream_blob(src, "artifact_content", "data", rowid))
            inserted = conn.execute(
                _INSERT,
                (tenant_id, digest, kind, data, oid, size, bool(compressed), original, created),
            ).fetchone()
            if inserted is None:
                if oid is not None:
                    conn.execute("SELECT lo_unlink(%s)", (oid,))
                continue
            hashes.append(digest)
            out.bytes += length
            if oid is not None:
                give_to_app(conn, oid, app_owns)
                oids.append(oid)
        _record(conn, run_id, ARTIFACT_CONTENT.name, tenant, hashes)
        _record(conn, run_id, LO_LEDGER, tenant, [str(o) for o in oids])
    out.inserted += len(hashes)
    out.large_objects += oids


def unlink_recorded(conn: psycopg.Connection, run_id: str, tenants: list[str | None]) -> int:
    """Unlink the large objects the run recorded (inside the caller's transaction) and drop
    their ledger rows; returns how many. One already gone is skipped, never an error.
    `tenants`: [None] for a role that bypasses RLS, else the run's tenants (the ledger is
    under RLS, so each tenant's rows are read with its setting in force)."""
    rows = []
    for tenant in tenants:
        if tenant is not None:
            act_as_tenant(conn, tenant)
        rows += conn.execute(
            sql.SQL(
                "SELECT DISTINCT unnest(natural_keys)::oid FROM {}.written_keys "
                "WHERE run_id = %s AND component = %s"
            ).format(_BOOK),
            (run_id, LO_LEDGER),
        ).fetchall()
        conn.execute(
            sql.SQL("DELETE FROM {}.written_keys WHERE run_id = %s AND component = %s").format(
                _BOOK
            ),
            (run_id, LO_LEDGER),
        )
    n = 0
    for (oid,) in rows:
        gone = conn.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM pg_largeobject_metadata WHERE oid = %s)", (oid,)
        ).fetchone()[0]
        if not gone:
            conn.execute("SELECT lo_unlink(%s)", (oid,))
            n += 1
    return n
