"""What `sync` does to artifacts besides replacing their rows: content, large objects and the
artifacts a session carries.

- **Content** the written artifacts need and PostgreSQL lacks is copied with execute's own
  writer (`artifact_writer.copy_rows`: bytea below 1 MiB, a large object from 1 MiB, both in
  the run's ledger so rollback removes them), inside the sync's one transaction.
- **Content no longer referenced** (its last artifact deleted or moved to other content, and
  the source holds it no more) is deleted, its row kept as a pre-image. A large object it
  refers to is copied first, server-side, into a large object of the sync's own (its
  pre-image, recorded under `LO_PREIMAGES`), then unlinked; `restore_large_objects` puts it
  back under its own OID. A large object this role may not unlink (or copy) stops the sync
  before anything is written.
- **Sessions** sync replaces are deleted and inserted again, and their foreign key cascades
  to their artifacts: `carry_out` keeps the images of those artifacts in a TEMP table and
  `carry_back` inserts them again, unchanged (their insert trigger gives the content back
  the reference it lost with the cascade). Rollback does the same around the sessions it puts
  back.
"""

from __future__ import annotations

import sqlite3

import psycopg
from psycopg import sql

from core.model.components import ARTIFACT_CONTENT, ARTIFACTS
from destinations import artifact_writer, sync_ledger
from destinations.target_schema import BOOKKEEPING_SCHEMA, act_as_tenant

LO_PREIMAGES = "artifact_content.large_object_preimages"
CARRIED = "llmspell_migrate_carried_artifacts"
_BOOK = sql.Identifier(BOOKKEEPING_SCHEMA)


# -- content --------------------------------------------------------------------------------
def referenced_content(conn, tenant: str, artifact_ids: list[str]) -> set[str]:
    """Content hashes the target's artifacts with these ids refer to (tenant in force)."""
    return {
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT content_hash FROM llmspell.artifacts WHERE tenant_id = %s "
            "AND artifact_id = ANY(%s)",
            (tenant, artifact_ids),
        )
    }


def copy_missing_content(
    conn: psycopg.Connection,
    src: sqlite3.Connection,
    run_id: str,
    tenant: str,
    hashes: list[str],
    out: artifact_writer.ContentCopy,
) -> None:
    """Copy the source's content rows with these hashes that the target lacks, as execute
    copies them (inside the caller's transaction: each batch is a savepoint)."""
    if not hashes:
        return
    have = {
        r[0]
        for r in conn.execute(
            "SELECT content_hash FROM llmspell.artifact_content WHERE tenant_id = %s "
            "AND content_hash = ANY(%s)",
            (tenant, hashes),
        )
    }
    wanted = sorted(set(hashes) - have)
    if not wanted:
        return
    app_owns = conn.execute("SELECT current_user = %s", (artifact_writer.APP_ROLE,)).fetchone()[0]
    marks = ", ".join("?" * len(wanted))
    rows = src.execute(
        f"SELECT {artifact_writer.COLUMNS} FROM artifact_content WHERE tenant_id = ? "
        f"AND content_hash IN ({marks}) ORDER BY content_hash",
        (tenant, *wanted),
    ).fetchall()
    artifact_writer.copy_rows(conn, src, run_id, tenant, rows, app_owns, out)


def drop_unreferenced(
    conn: psycopg.Connection,
    src: sqlite3.Connection,
    run_id: str,
    tenant: str,
    hashes: set[str],
) -> tuple[int, int]:
    """Delete the content rows with these hashes that no artifact refers to any more and the
    source no longer holds: each row's pre-image kept, each large object copied to a pre-image
    of the sync's own, then unlinked. Returns (rows deleted, large objects unlinked)."""
    if not hashes:
        return 0, 0
    in_source = {
        r[0]
        for r in src.execute(
            "SELECT content_hash FROM artifact_content WHERE tenant_id = ? AND content_hash "
            f"IN ({', '.join('?' * len(hashes))})",
            (tenant, *sorted(hashes)),
        )
    }
    stale = conn.execute(
        "SELECT c.content_hash, c.large_object_oid FROM llmspell.artifact_content c "
        "WHERE c.tenant_id = %s AND c.content_hash = ANY(%s) AND NOT EXISTS (SELECT 1 FROM "
        "llmspell.artifacts a WHERE a.tenant_id = c.tenant_id AND a.content_hash = "
        "c.content_hash)",
        (tenant, sorted(hashes - in_source)),
    ).fetchall()
    if not stale:
        return 0, 0
    oids = [int(oid) for _, oid in stale if oid is not None]
    for oid in oids:
        _check_may_unlink(conn, oid)
        copy = _copy_large_object(conn, oid)
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.preimages (run_id, component, tenant_id, nkey, row_image) "
                "VALUES (%s, %s, %s, %s, %s)"
            ).format(_BOOK),
            (run_id, LO_PREIMAGES, tenant, str(oid), psycopg.types.json.Jsonb({"copy": copy})),
        )
    n = sync_ledger.replace_out(conn, run_id, ARTIFACT_CONTENT, tenant, [h for h, _ in stale])
    for oid in oids:
        conn.execute("SELECT lo_unlink(%s)", (oid,))
    return n, len(oids)


def _check_may_unlink(conn: psycopg.Connection, oid: int) -> None:
    ok = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_largeobject_metadata m WHERE m.oid = %s AND "
        "(pg_has_role(current_user, m.lomowner, 'USAGE') OR (SELECT rolsuper FROM pg_roles "
        "WHERE rolname = current_user)))",
        (oid,),
    ).fetchone()[0]
    if not ok:
        from core.errors import PreflightError

        raise PreflightError(
            f"large object {oid} (artifact content the sync would delete) is not this role's "
            "to unlink, so its pre-image could not be put back by rollback",
            "Sync as the large object's owner (or a superuser); nothing was written.",
        )


def _copy_large_object(conn: psycopg.Connection, oid: int, into: int = 0) -> int:
    """A copy of large object `oid`, made in the server piece by piece; returns its OID."""
    (new,) = conn.execute("SELECT lo_create(%s)", (into,)).fetchone()
    offset = 0
    while True:
        (n,) = conn.execute(
            "SELECT length(lo_get(%s, %s, %s))", (oid, offset, artifact_writer.PIECE)
        ).fetchone()
        if not n:
            return new
        conn.execute(
            "SELECT lo_put(%s, %s, lo_get(%s, %s, %s))",
            (new, offset, oid, offset, artifact_writer.PIECE),
        )
        offset += n


def restore_large_objects(conn: psycopg.Connection, run_id: str, tenants: list[str | None]) -> int:
    """Put back every large object the sync unlinked, under its own OID (from its pre-image
    copy, which is then unlinked), readable by llmspell_app again; returns how many. Inside the
    caller's transaction; `tenants`: [None] bypassing RLS, else the run's tenants."""
    query = sql.SQL(
        "SELECT nkey, row_image FROM {}.preimages WHERE run_id = %s AND component = %s"
    ).format(_BOOK)
    rows = []
    for tenant in tenants:
        if tenant is not None:
            act_as_tenant(conn, tenant)
        rows += conn.execute(query, (run_id, LO_PREIMAGES)).fetchall()
    app_owns = conn.execute("SELECT current_user = %s", (artifact_writer.APP_ROLE,)).fetchone()[0]
    n = 0
    for nkey, image in rows:
        oid, copy = int(nkey), int(image["copy"])
        exists = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_largeobject_metadata WHERE oid = %s)", (oid,)
        ).fetchone()[0]
        copy_there = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_largeobject_metadata WHERE oid = %s)", (copy,)
        ).fetchone()[0]
        if exists or not copy_there:
            continue
        _copy_large_object(conn, copy, into=oid)
        artifact_writer.give_to_app(conn, oid, app_owns)
        conn.execute("SELECT lo_unlink(%s)", (copy,))
        n += 1
    return n


def unlink_preimage_copies(conn: psycopg.Connection, run_id: str, tenants: list[str | None]) -> int:
    """Unlink the pre-image copies of the large objects run `run_id` deleted (when its
    pre-images are no longer needed)."""
    query = sql.SQL(
        "SELECT row_image FROM {}.preimages WHERE run_id = %s AND component = %s"
    ).format(_BOOK)
    n = 0
    for tenant in tenants:
        if tenant is not None:
            act_as_tenant(conn, tenant)
        for (image,) in conn.execute(query, (run_id, LO_PREIMAGES)).fetchall():
            copy = int(image["copy"])
            if conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_largeobject_metadata WHERE oid = %s)", (copy,)
            ).fetchone()[0]:
                conn.execute("SELECT lo_unlink(%s)", (copy,))
                n += 1
    return n


# -- the artifacts of replaced sessions -------------------------------------------------------
def carry_out(
    conn: psycopg.Connection, tenant: str, sessions: list[str], leave: list[str] | None = None
) -> int:
    """Keep the images of the artifacts of these sessions (tenant in force), but those with
    ids in `leave`, in a TEMP table until `carry_back`; returns how many."""
    conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {CARRIED} (tenant_id TEXT, image JSONB) "
        "ON COMMIT DELETE ROWS"
    )
    return conn.execute(
        f"INSERT INTO {CARRIED} SELECT tenant_id, to_jsonb(a) FROM llmspell.artifacts a "
        "WHERE tenant_id = %s AND session_id = ANY(%s::uuid[]) AND NOT artifact_id = ANY(%s)",
        (tenant, sessions, leave or []),
    ).rowcount


def carry_back(conn: psycopg.Connection, tenant: str) -> int:
    """Insert again the carried artifacts of `tenant` that are gone (tenant in force)."""
    exists = conn.execute("SELECT to_regclass(%s)", (f"pg_temp.{CARRIED}",)).fetchone()[0]
    if exists is None:
        return 0
    n = conn.execute(
        sql.SQL(
            "INSERT INTO llmspell.{t} SELECT (jsonb_populate_record(NULL::llmspell.{t}, image)).* "
            "FROM {c} WHERE tenant_id = %s ON CONFLICT DO NOTHING"
        ).format(t=sql.Identifier(ARTIFACTS.pg_table), c=sql.Identifier(CARRIED)),
        (tenant,),
    ).rowcount
    conn.execute(f"DELETE FROM {CARRIED} WHERE tenant_id = %s", (tenant,))
    return n


def written_artifacts(conn, run_id: str, tenant: str) -> list[str]:
    """The artifact ids run `run_id` inserted for `tenant`."""
    return [
        r[0]
        for r in conn.execute(
            sql.SQL(
                "SELECT unnest(natural_keys) FROM {}.written_keys WHERE run_id = %s "
                "AND component = %s AND tenant_id = %s"
            ).format(_BOOK),
            (run_id, ARTIFACTS.name, tenant),
        )
    ]


def preimaged_keys(conn, run_id: str, component: str, tenant: str) -> list[str]:
    """Keys of `component` whose pre-images run `run_id` saved for `tenant`."""
    return [
        r[0]
        for r in conn.execute(
            sql.SQL(
                "SELECT nkey FROM {}.preimages WHERE run_id = %s AND component = %s "
                "AND tenant_id = %s"
            ).format(_BOOK),
            (run_id, component, tenant),
        )
    ]


def restore_sync(
    conn: psycopg.Connection,
    run_id: str,
    comps: list,
    bypass: bool,
    tenants: list[str] | None = None,
) -> dict[str, int]:
    """Undo a sync in one transaction (`sync_ledger.restore`) with what artifacts need around
    it: content pre-images put back before the artifacts that refer to them, the artifacts of
    sessions it puts back carried across, the large objects it unlinked put back."""
    from core.model.components import SESSIONS
    from destinations import run_ledger

    if tenants is None:
        tenants = run_ledger.run_tenants(conn, run_id)
    names = [c.name for c in comps]
    order = list(comps)
    if ARTIFACTS.name in names and ARTIFACT_CONTENT.name not in names:
        order.insert(names.index(ARTIFACTS.name), ARTIFACT_CONTENT)
    with conn.transaction():
        carried = []
        if SESSIONS.name in names:
            for tenant in tenants:
                act_as_tenant(conn, tenant)
                keys = preimaged_keys(conn, run_id, SESSIONS.name, tenant)
                if keys and conn.execute("SELECT to_regclass('llmspell.artifacts')").fetchone()[0]:
                    carry_out(conn, tenant, keys, written_artifacts(conn, run_id, tenant))
                    carried.append(tenant)
        done = sync_ledger.restore(conn, run_id, order, bypass, tenants)
        for tenant in carried:
            act_as_tenant(conn, tenant)
            carry_back(conn, tenant)
        if ARTIFACTS.name in names:
            n = restore_large_objects(conn, run_id, [None] if bypass else tenants)
            if n:
                done["large_objects_restored"] = n
    return done
