"""Nearest-neighbour check of a migrated vector table: for a few stored vectors per tenant
(picked deterministically), the target's `ORDER BY embedding <=> q LIMIT k` must return the
same ids as brute force over the source's vectors.

The target query is forced to an exact scan (`+ 0` keeps pgvector's HNSW index out): the check
is about where the vectors landed, not the index's recall. Distances are float32 on the target
(pgvector) and float64 here, so an id at a rank whose source distance ties the expected one's
within `TIE` counts as equal.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import duckdb
import numpy as np
import xxhash
from psycopg import sql

from core.model.canonical import uuid_key
from core.model.components import Component
from core.model.memory_values import decode_vector
from validation.compare import Mismatch

QUERIES_PER_TENANT = 3
K = 5
TIE = 1e-5
_MARGIN = 10  # source neighbours kept beyond k, to recognise ties at the k-th place
_BATCH = 2_000


@dataclass
class KnnResult:
    queries: int = 0
    problems: list[Mismatch] = field(default_factory=list)


def _cosine(matrix: np.ndarray, q: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(q)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - (matrix @ q) / norms


def _source_vectors(con, source: str, tenant: str):
    """(ids, float64 matrix) of one tenant's vectors, read in batches."""
    reader = con.execute(
        f"SELECT id, embedding FROM {source} WHERE tenant_id = ? AND embedding IS NOT NULL",
        [tenant],
    ).to_arrow_reader(_BATCH)
    for batch in reader:
        ids = [uuid_key(v) for v in batch.column(0).to_pylist()]
        vecs = [decode_vector(v) for v in batch.column(1).to_pylist()]
        if ids:
            yield ids, np.vstack(vecs).astype(np.float64)


def knn_check(
    con: duckdb.DuckDBPyConnection,
    comp: Component,
    source: str,
    targets: dict[str, str | None],
    tenants: list[str],
) -> KnnResult:
    col = comp.vector_column
    result = KnnResult()
    for tenant in tenants:
        alias = next((a for a, t in targets.items() if t in (tenant, None)), None)
        if alias is None:
            continue
        # the queries: the tenant's vectors with the smallest id hashes (same every run)
        picked: list[tuple[int, str, np.ndarray]] = []
        for ids, matrix in _source_vectors(con, source, tenant):
            for i, vid in enumerate(ids):
                h = xxhash.xxh3_64_intdigest(vid.encode())
                picked.append((h, vid, matrix[i]))
            picked = sorted(picked, key=lambda p: p[0])[:QUERIES_PER_TENANT]
        if not picked:
            continue
        tops: list[list[tuple[float, str]]] = [[] for _ in picked]
        for ids, matrix in _source_vectors(con, source, tenant):
            for n, (_, _, q) in enumerate(picked):
                dist = _cosine(matrix, q)
                tops[n] = heapq.nsmallest(K + _MARGIN, tops[n] + list(zip(dist.tolist(), ids)))
        for (_, qid, q), top in zip(picked, tops):
            literal = "[" + ",".join(map(repr, q.astype(np.float32).astype(float).tolist())) + "]"
            query = sql.SQL(
                "SELECT id::text, embedding <=> {q}::vector AS d FROM llmspell.{table} "
                "WHERE tenant_id = {t} ORDER BY (embedding <=> {q}::vector) + 0, id LIMIT {k}"
            ).format(
                q=sql.Literal(literal),
                table=sql.Identifier(comp.pg_table),
                t=sql.Literal(tenant),
                k=sql.Literal(K),
            )
            got = con.execute(
                "SELECT * FROM postgres_query(?, ?)", [alias, query.as_string(None)]
            ).fetchall()
            result.queries += 1
            want_ids = [i for _, i in top[:K]]
            got_ids = [r[0] for r in got]
            if got_ids == want_ids:
                continue
            # another id at a rank is fine only if, on the source, it is as near as the one
            # expected there (a tie); distances come from the source's vectors, so a vector
            # that landed under another id never passes
            source_dist = {i: d for d, i in top}
            if len(got_ids) == len(want_ids) and all(
                g == w or (g in source_dist and abs(source_dist[g] - source_dist[w]) <= TIE)
                for g, w in zip(got_ids, want_ids)
            ):
                continue
            result.problems.append(
                Mismatch(
                    comp.name,
                    tenant,
                    qid,
                    f"{col.name} {K} nearest neighbours",
                    ",".join(want_ids),
                    ",".join(got_ids),
                )
            )
    return result
