"""Sample data for llmspell's memory stores, written as llmspell's SQLite backend writes it.

Vectors: the embedding goes into `vec_embeddings_<dim>` first (serde_json's f32 text, or raw
little-endian f32, which llmspell also reads), then its `vector_metadata` row under the same
rowid. Rowids are taken from `vector_metadata` so two dimensions never collide (upstream's
own writer would fail on such a collision). Scopes are the SQLite namespaces (`__global__`,
`user:x`, `tenant:x`, ...). The graph: current versions (open-ended: 9999999999), versions
superseded in transaction time, facts whose validity ended; relationships between entities
of the same tenant. Patterns: 32-hex ids, frequencies, seconds.
"""

from __future__ import annotations

import json
import random
import sqlite3
import uuid
from dataclasses import dataclass, field

import numpy as np

from core.model.memory_values import OPEN_END

BASE = 1_735_689_600  # 2025-01-01T00:00:00Z
DAY = 86_400
SCOPES = ("__global__", "user:alice", "user:bob", "session:{sid}", "agent:researcher",
          "tenant:{tenant}", "custom:notes", "workflow:ingest")  # fmt: skip
ENTITY_TYPES = ("person", "concept", "project", "event", "place")
NAMES = ("Alice", "Bob", "Zürich office", "東京 launch", "Pricing v2", "Onboarding", "Chloé")
REL_TYPES = ("knows", "part_of", "works_on", "located_in", "caused_by")
PATTERN_KEYS = ("tool", "next_step", "model", "format")
PATTERN_VALUES = ("web_search", "summarize", "ollama/llama3.2", "markdown", "json", "retry")


@dataclass
class MemorySpec:
    vectors: dict[int, int] = field(default_factory=lambda: {384: 12, 768: 8})
    entities: int = 10
    relationships: int = 12
    patterns: int = 10
    tenants: tuple[str, ...] = ("default", "tenant-acme")
    seed: int = 7

    @property
    def total(self) -> int:
        return sum(self.vectors.values()) + self.entities + self.relationships + self.patterns


def f32_json(vec: np.ndarray) -> bytes:
    """serde_json::to_vec(&Vec<f32>): shortest f32 digits, compact."""
    return ("[" + ",".join(str(v) for v in vec) + "]").encode()


def random_vector(rng: np.random.Generator, dim: int) -> np.ndarray:
    v = rng.standard_normal(dim).astype(np.float32)
    return (v / np.float32(np.linalg.norm(v))).astype(np.float32)


def insert_vector(
    conn: sqlite3.Connection,
    dim: int,
    vid: str,
    tenant: str,
    scope: str,
    blob: bytes,
    metadata: str = "{}",
    created: int = BASE,
) -> int:
    """One vector the way the SQLite vector backend stores it; returns its rowid."""
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS vec_embeddings_{dim} (rowid INTEGER PRIMARY KEY, "
        "embedding BLOB)"
    )
    rowid = conn.execute("SELECT coalesce(max(rowid), 0) + 1 FROM vector_metadata").fetchone()[0]
    conn.execute(
        f"INSERT INTO vec_embeddings_{dim} (rowid, embedding) VALUES (?, ?)", (rowid, blob)
    )
    conn.execute(
        "INSERT INTO vector_metadata (rowid, id, tenant_id, scope, dimension, metadata, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (rowid, vid, tenant, scope, dim, metadata, created, created + 60),
    )
    return rowid


def add_memory(conn: sqlite3.Connection, spec: MemorySpec) -> dict[str, int]:
    """Write the memory stores' sample rows into an llmspell SQLite file (schema present)."""
    rnd = random.Random(spec.seed)
    nrng = np.random.default_rng(spec.seed)

    def uid() -> str:
        return str(uuid.UUID(int=rnd.getrandbits(128), version=4))

    with conn:
        for dim, count in spec.vectors.items():
            for i in range(count):
                tenant = spec.tenants[i % len(spec.tenants)]
                scope = rnd.choice(SCOPES).format(sid=uid(), tenant=tenant)
                vec = random_vector(nrng, dim)
                blob = vec.astype("<f4").tobytes() if i % 5 == 4 else f32_json(vec)
                meta = json.dumps({"source": "chat", "turn": i, "text": rnd.choice(NAMES)})
                insert_vector(conn, dim, uid(), tenant, scope, blob, meta, BASE + i * 3600)
        ids: dict[str, list[str]] = {t: [] for t in spec.tenants}
        for i in range(spec.entities):
            tenant = spec.tenants[i % len(spec.tenants)]
            eid = uid()
            start = BASE + i * DAY
            kind = i % 4  # 0,1: current; 2: superseded in transaction time; 3: validity ended
            valid_end = start + 30 * DAY if kind == 3 else OPEN_END
            tx_end = start + 2 * DAY if kind == 2 else OPEN_END
            props = {"weight": round(rnd.random(), 4), "tags": ["memo", "测试"][: 1 + i % 2]}
            conn.execute(
                "INSERT INTO entities VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (eid, tenant, rnd.choice(ENTITY_TYPES), rnd.choice(NAMES), json.dumps(props),
                 start, valid_end, start + 60, tx_end, start + 60),
            )  # fmt: skip
            ids[tenant].append(eid)
        for i in range(spec.relationships):
            tenant = spec.tenants[i % len(spec.tenants)]
            if len(ids[tenant]) < 2:
                continue
            a, b = rnd.sample(ids[tenant], 2)
            start = BASE + (i + 3) * DAY
            tx_end = start + DAY if i % 5 == 2 else OPEN_END
            valid_end = start + 10 * DAY if i % 5 == 3 else OPEN_END
            conn.execute(
                "INSERT INTO relationships VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (uid(), tenant, a, b, rnd.choice(REL_TYPES),
                 json.dumps({"confidence": 0.5 + i / 100}),
                 start, valid_end, start + 60, tx_end, start + 60),
            )  # fmt: skip
        seen = set()
        for i in range(spec.patterns):
            tenant = spec.tenants[i % len(spec.tenants)]
            row = (tenant, f"agent:a{i % 3}", rnd.choice(PATTERN_KEYS), rnd.choice(PATTERN_VALUES))
            if row in seen:
                continue
            seen.add(row)
            first = BASE + i * 600
            conn.execute(
                "INSERT INTO procedural_patterns VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (uuid.UUID(int=rnd.getrandbits(128)).hex, *row, 1 + i % 6, first, first + 900,
                 first, first + 900),
            )  # fmt: skip
    return {
        t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("vector_metadata", "entities", "relationships", "procedural_patterns")
    }
