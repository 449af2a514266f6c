"""The SQLite side of llmspell's memory stores (their components: `core.model.memory`): what a
plan says about HNSW index files, and how rollback writes a vector part back in SQLite's layout.
"""

from __future__ import annotations

from core.model.components import Component
from core.model.memory import VECTOR_PARTS

# pgvector's HNSW takes at most 2000 dimensions: upstream V3 indexes only these, with these
# parameters (m, ef_construction).
HNSW_PARAMS = {384: (16, 64), 768: (16, 128), 1536: (24, 256)}

# Said in every plan that moves vectors: the SQLite vector backend's HNSW index files are built
# from the vectors (and rebuilt from them when missing), so they are not data to copy.
HNSW_NOTE = (
    "episodic_memory: llmspell's HNSW index files kept beside the SQLite database are derived "
    "from the vectors and are not copied; PostgreSQL gets pgvector HNSW indexes on "
    "vector_embeddings_384/768/1536 (3072 dimensions exceed HNSW's 2000, as upstream)"
)


def restore_vectors(conn, comp: Component, rows: list[dict]) -> None:
    """Write backup rows of a vector part back in the SQLite vector backend's layout
    (metadata row, then its embedding under the same rowid), for rollback's comparison."""
    dim = comp.vector_column.dimension
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS vec_embeddings_{dim} "
        "(rowid INTEGER PRIMARY KEY, embedding BLOB)"
    )
    for row in rows:
        cur = conn.execute(
            "INSERT INTO vector_metadata (id, tenant_id, scope, dimension, metadata, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (row["id"], row["tenant_id"], row["scope"], dim, row["metadata"], row["created_at"],
             row["updated_at"]),
        )  # fmt: skip
        conn.execute(
            f"INSERT INTO vec_embeddings_{dim} (rowid, embedding) VALUES (?, ?)",
            (cur.lastrowid, row["embedding"]),
        )


RESTORERS = {part.name: restore_vectors for part in VECTOR_PARTS}
