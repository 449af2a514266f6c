"""Validate artifact content: every content row's bytes, storage and PostgreSQL's conventions.

The bytes are compared as SHA-256 digests computed piece by piece on both sides (SQLite's blob
read incrementally, a large object read with `lo_get(oid, offset, n)`), so a 100 MiB artifact
never sits in memory. Besides the bytes: storage_type must follow the size (bytea below
1 MiB, large object from 1 MiB), reference_count must be 1 + the artifacts referring to the
content (PostgreSQL's convention, which its triggers keep), a large object must be readable
by `llmspell_app`, and the kept columns (sizes, compression flag, creation time) must match.
last_accessed_at is not compared: the schema's triggers set it when artifacts arrive.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time

import psycopg

from core.tenant_sql import tenant_in
from destinations.artifact_writer import PIECE, storage_type, stream_blob
from destinations.target_schema import APP_ROLE, act_as_tenant
from validation.compare import MAX_REPORTED, ComponentResult, Mismatch
from validation.source_prints import sampled

NAME = "artifact_content"
FIELDS = (
    "storage_type",
    "size_bytes",
    "is_compressed",
    "original_size_bytes",
    "created_at",
    "reference_count",
    "llmspell_app_can_read",
    "sha256",
)

_SOURCE = (
    "SELECT c.rowid, c.tenant_id, c.content_hash, length(c.data), c.size_bytes, "
    "c.is_compressed, c.original_size_bytes, c.created_at, (SELECT count(*) FROM artifacts a "
    "WHERE a.tenant_id = c.tenant_id AND a.content_hash = c.content_hash) "
    "FROM artifact_content c WHERE c.tenant_id = ? ORDER BY c.content_hash"
)
_TARGET = (
    "SELECT content_hash, storage_type, size_bytes, is_compressed, original_size_bytes, "
    "extract(epoch FROM created_at)::bigint, reference_count, "
    "CASE WHEN data IS NOT NULL THEN encode(sha256(data), 'hex') END, large_object_oid, "
    "large_object_oid IS NULL OR EXISTS (SELECT 1 FROM pg_largeobject_metadata m "
    "  WHERE m.oid = large_object_oid AND (m.lomowner = (SELECT oid FROM pg_roles WHERE "
    "  rolname = %s) OR array_to_string(m.lomacl, ',') ~ ('(^|,)' || %s || '=[a-zA-Z]*r'))) "
    "FROM llmspell.artifact_content WHERE tenant_id = %s"
)


def source_digest(src: sqlite3.Connection, rowid: int) -> str:
    """SHA-256 of one artifact's bytes in SQLite, streamed (never the whole blob at once)."""
    h = hashlib.sha256()
    for piece in stream_blob(src, "artifact_content", "data", rowid):
        h.update(piece)
    return h.hexdigest()


def lo_digest(conn: psycopg.Connection, oid: int) -> str:
    """SHA-256 of one large object's bytes in PostgreSQL, read a piece at a time."""
    h = hashlib.sha256()
    offset = 0
    while True:
        (piece,) = conn.execute("SELECT lo_get(%s, %s, %s)", (oid, offset, PIECE)).fetchone()
        if not piece:
            return h.hexdigest()
        h.update(piece)
        offset += len(piece)


def compare(
    src: sqlite3.Connection,
    conn: psycopg.Connection,
    tenants: list[str],
    percent: float,
    threshold: int,
) -> ComponentResult:
    """Compare the content rows of `tenants`; bytes of every row in full mode, of a
    deterministic sample (by tenant and hash) otherwise."""
    started = time.perf_counter()
    where, args = tenant_in(tenants)
    total = (
        src.execute(f"SELECT count(*) FROM artifact_content{where}", args).fetchone()[0]
        if tenants
        else 0
    )
    pct = 100.0 if percent >= 100 or total < threshold else float(percent)
    result = ComponentResult(
        NAME, mode="full" if pct >= 100 else "sample", sample_percent=pct, records=False
    )
    for tenant in tenants:
        with conn.transaction():
            act_as_tenant(conn, tenant)
            target = {r[0]: r[1:] for r in conn.execute(_TARGET, (APP_ROLE, APP_ROLE, tenant))}
            rows = src.execute(_SOURCE, (tenant,)).fetchall()
            seen = 0
            for rowid, _, digest, length, size, compressed, original, created, refs in rows:
                got = target.get(digest)
                if got is None:
                    result.missing_count += 1
                    if len(result.missing) < MAX_REPORTED:
                        result.missing.append(f"{tenant}/{digest}")
                    continue
                seen += 1
                kind, t_size, t_comp, t_orig, t_created, t_refs, t_hex, oid, readable = got
                want = [storage_type(length), size, bool(compressed), original, created, 1 + refs]
                have = [kind, t_size, t_comp, t_orig, t_created, t_refs]
                if oid is not None:
                    want.append(True)
                    have.append(readable)
                if sampled(tenant, digest, pct):
                    result.compared += 1
                    want.append(source_digest(src, rowid))
                    have.append(t_hex if oid is None else lo_digest(conn, oid))
                bad = [
                    Mismatch(NAME, tenant, digest, name, str(w), str(h))
                    for name, w, h in zip(_fields(oid), want, have)
                    if w != h
                ]
                if bad:
                    result.mismatch_count += 1
                    result.mismatches += bad[: MAX_REPORTED - len(result.mismatches)]
            result.per_tenant[tenant] = {"source": len(rows), "target": seen}
            result.source_count += len(rows)
            result.target_count += seen
    result.matched = result.compared - result.mismatch_count
    result.seconds = time.perf_counter() - started
    return result


def _fields(oid) -> tuple[str, ...]:
    return FIELDS if oid is not None else FIELDS[:6] + FIELDS[7:]
