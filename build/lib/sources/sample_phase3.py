"""Sample event log, hook history and artifacts, written the way llmspell's SQLite backend
writes them (V10, V11 and V13 tables; see ../shared/notes/llmspell-stores.md).

- events: the serialized event as payload, whole-second timestamps spread over several past
  months, a per-tenant sequence (MAX+1), UUID event and correlation ids.
- hooks: the context as size-prepended LZ4 bytes (what lz4_flex's `compress_prepend_size`
  gives), tags as a JSON array or NULL, booleans as 0/1.
- artifacts: content addressed by the SHA-256 of the original bytes, some shared by two
  artifacts (SQLite counts one reference per artifact), some flagged compressed, and one of
  1 MiB or more when asked (PostgreSQL keeps that as a large object).
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import uuid

from sources.sqlite_schema import PHASE3_SQL as SCHEMA_SQL  # noqa: F401  (re-exported)

DAY = 86_400
MONTH = 30 * DAY
MIB = 1 << 20


def lz4_prepend_size(data: bytes) -> bytes:
    """A valid LZ4 block holding `data` as one literal run, behind its 4-byte little-endian
    size (lz4_flex's size-prepended format): decompressible by llmspell, built without an
    lz4 library (byte-exactness is what the migration must keep, not the ratio)."""
    n = len(data)
    token = min(n, 15) << 4
    out = bytearray(n.to_bytes(4, "little"))
    out.append(token)
    if n >= 15:
        rest = n - 15
        while rest >= 255:
            out.append(255)
            rest -= 255
        out.append(rest)
    out += data
    return bytes(out)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _iso(ts: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def events(rng: random.Random, tenants: list[str], count: int, end: int) -> list[tuple]:
    """Events over the five months before `end`, per-tenant sequences from 0."""
    rows = []
    seq = dict.fromkeys(tenants, -1)
    stamps = sorted(end - rng.randrange(5 * MONTH) for _ in range(count))
    for ts in stamps:
        tenant = rng.choice(tenants)
        seq[tenant] += 1
        event_id, corr = _uuid(rng), _uuid(rng)
        etype = rng.choice(("agent.state_changed", "workflow.step", "tool.invoked", "hook.fired"))
        language = rng.choice(("lua", "javascript", "rust"))
        payload = {
            "id": event_id,
            "event_type": etype,
            "data": {"step": rng.randrange(100), "note": rng.choice(("ok", "é ✓", "🚀", ""))},
            "language": language,
            "timestamp": _iso(ts),
            "sequence": seq[tenant],
            "metadata": {"correlation_id": corr, "ratio": rng.randrange(9) / 10},
        }
        rows.append((tenant, event_id, etype, corr, ts, seq[tenant], language, json.dumps(payload)))
    return rows


def hooks(rng: random.Random, tenants: list[str], count: int, end: int) -> list[tuple]:
    rows = []
    for i in range(count):
        tenant = rng.choice(tenants)
        context = json.dumps({"hook": i, "input": "x" * rng.randrange(40), "emoji": "🪝"}).encode()
        ts = end - rng.randrange(3 * MONTH)
        tags = rng.choice((None, "[]", json.dumps(["audit", "é"]), json.dumps(["retry"])))
        rows.append(
            (
                _uuid(rng),
                tenant,
                f"hook-{rng.randrange(8)}",
                rng.choice(("pre_tool", "post_tool", "agent_start")),
                _uuid(rng),
                lz4_prepend_size(context),
                json.dumps({"result": rng.choice(("continue", "modified")), "score": 1.50}),
                ts,
                rng.randrange(0, 5000),
                rng.choice(("agent", "tool", "workflow")),
                f"component-{rng.randrange(20)}",
                rng.randrange(2),
                tags,
                rng.randrange(0, 3),
                len(context),
                rng.randrange(2),
                json.dumps({"triggering_component": "agent", "n": i}),
                ts,
            )
        )
    return rows


def artifacts(
    rng: random.Random, sessions: list[tuple[str, str]], count: int, end: int, large: bool
) -> tuple[list[tuple], list[tuple]]:
    """(artifact_content rows, artifacts rows); every artifact in one of `sessions`."""
    contents: dict[tuple[str, str], list] = {}
    arts = []
    next_seq: dict[tuple[str, str], int] = {}
    for i in range(count):
        tenant, session = rng.choice(sessions)
        shared = [k for k in contents if k[0] == tenant]
        if shared and rng.random() < 0.25:  # the same bytes stored again: one content row
            key = rng.choice(shared)
        else:
            size = MIB + 4096 if (large and i == 0) else rng.randrange(1, 4096)
            original = rng.randbytes(size)
            digest = hashlib.sha256(original).hexdigest()
            compressed = size < MIB and rng.random() < 0.3
            data = lz4_prepend_size(original) if compressed else original
            created = end - rng.randrange(2 * MONTH)
            key = (tenant, digest)
            contents[key] = [
                tenant,
                digest,
                data,
                len(data),
                int(compressed),
                size if compressed else None,
                0,
                created,
                created + 60,
            ]
        contents[key][6] += 1  # reference_count: one per artifact, as SQLite's writer keeps it
        seq = next_seq.get((tenant, session), 0)
        next_seq[(tenant, session)] = seq + 1
        created = contents[key][7] + rng.randrange(3600)
        arts.append(
            (
                tenant,
                f"{session}:{seq}:{key[1]}",
                session,
                seq,
                key[1],
                json.dumps({"type": "tool_result", "created_by": "agent-1", "n": i}),
                f"artifact-{i}.bin",
                rng.choice(("tool_result", "user_input", "agent_output")),
                "application/octet-stream",
                contents[key][5] or contents[key][3],
                created,
                rng.choice((None, "agent-1")),
                1,
                None,
                rng.choice((None, json.dumps(["report", "v1"]))),
                created,
                created,
            )
        )
    return [tuple(c) for c in contents.values()], arts


def add(
    conn: sqlite3.Connection,
    seed: int,
    tenants: list[str],
    *,
    events_count: int,
    hooks_count: int,
    artifacts_count: int,
    large_artifact: bool,
    end: int,
) -> None:
    """Write the three stores' sample rows into `conn` (the tables exist already)."""
    rng = random.Random(seed * 7919 + 13)
    with conn:
        conn.executemany(
            "INSERT INTO event_log (tenant_id, event_id, event_type, correlation_id, timestamp, "
            "sequence, language, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            events(rng, tenants, events_count, end),
        )
        conn.executemany(
            "INSERT INTO hook_history (execution_id, tenant_id, hook_id, hook_type, "
            "correlation_id, hook_context, result_data, timestamp, duration_ms, "
            "triggering_component, component_id, modified_operation, tags, retention_priority, "
            "context_size, contains_sensitive_data, metadata, created_at) "
            f"VALUES ({', '.join('?' * 18)})",
            hooks(rng, tenants, hooks_count, end),
        )
        sessions = conn.execute(
            "SELECT tenant_id, session_id FROM sessions ORDER BY tenant_id, session_id"
        ).fetchall()
        if artifacts_count and sessions:
            content, arts = artifacts(rng, sessions, artifacts_count, end, large_artifact)
            conn.executemany(
                "INSERT INTO artifact_content (tenant_id, content_hash, data, size_bytes, "
                "is_compressed, original_size_bytes, reference_count, created_at, "
                "last_accessed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                content,
            )
            conn.executemany(
                "INSERT INTO artifacts (tenant_id, artifact_id, session_id, sequence, "
                "content_hash, metadata, name, artifact_type, mime_type, size_bytes, created_at, "
                "created_by, version, parent_artifact_id, tags, stored_at, updated_at) "
                f"VALUES ({', '.join('?' * 17)})",
                arts,
            )
