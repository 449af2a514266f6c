"""llmspell's memory stores (Phase 2) as migrated components.

- `episodic_memory`: `vector_metadata` joined (on rowid, within its dimension) with the
  `vec_embeddings_<dim>` table of its dimension -> `vector_embeddings_<dim>`, one part per
  dimension (384/768/1536/3072). The SQLite vector backend creates an embedding table only
  when a vector of that dimension is first stored, so a missing one reads as empty.
- `semantic_memory`: `entities` and `relationships`, bi-temporal; SQLite's open end
  9999999999 becomes PostgreSQL's 'infinity' (`kinds.EPOCH_OPEN`).
- `procedural_memory`: `procedural_patterns`.

Facts: upstream rs-llmspell `llmspell-storage/migrations/{sqlite,postgres}/V3,V4,V5,V15` and
`src/backends/{sqlite,postgres}/{vector,graph,procedural}.rs`.
"""

from __future__ import annotations

from core.model.components import TENANT, Component
from core.model.kinds import (
    EPOCH,
    EPOCH_OPEN,
    HEXID,
    INT,
    JSON,
    SCOPE,
    TEXT,
    UUID,
    VECTOR,
    Column,
)

DIMENSIONS = (384, 768, 1536, 3072)


def vector_part(dim: int) -> Component:
    table = f"vec_embeddings_{dim}"
    return Component(
        name=f"episodic_memory_{dim}",
        sqlite_table="vector_metadata",
        pg_table=f"vector_embeddings_{dim}",
        key_column="id",
        key_sql="id",
        columns=(
            Column("id", UUID),
            TENANT,
            Column("scope", SCOPE, max_length=255),
            Column("embedding", VECTOR, dimension=dim),
            Column("metadata", JSON),
            Column("created_at", EPOCH),
            Column("updated_at", EPOCH),
        ),
        source_sql=(
            "SELECT m.id, m.tenant_id, m.scope, e.embedding, m.metadata, m.created_at, "
            f"m.updated_at FROM {{p}}vector_metadata m LEFT JOIN {{p}}{table} e "
            f"ON e.rowid = m.rowid WHERE m.dimension = {dim}"
        ),
        optional_tables=((table, "SELECT NULL AS rowid, NULL AS embedding LIMIT 0"),),
        conflict=("id",),
        group="episodic_memory",
    )


_BITEMPORAL = (
    Column("valid_time_start", EPOCH),
    Column("valid_time_end", EPOCH_OPEN),
    Column("transaction_time_start", EPOCH),
    Column("transaction_time_end", EPOCH_OPEN),
    Column("created_at", EPOCH),
)

ENTITIES = Component(
    name="semantic_memory_entities",
    sqlite_table="entities",
    pg_table="entities",
    key_column="entity_id",
    key_sql="entity_id",
    columns=(
        Column("entity_id", UUID),
        TENANT,
        Column("entity_type", TEXT, max_length=255),
        Column("name", TEXT, max_length=500),
        Column("properties", JSON),
        *_BITEMPORAL,
    ),
    conflict=("entity_id", "transaction_time_start"),  # V15's primary key
    group="semantic_memory",
)

RELATIONSHIPS = Component(
    name="semantic_memory_relationships",
    sqlite_table="relationships",
    pg_table="relationships",
    key_column="relationship_id",
    key_sql="relationship_id",
    columns=(
        Column("relationship_id", UUID),
        TENANT,
        Column("from_entity", UUID),
        Column("to_entity", UUID),
        Column("relationship_type", TEXT, max_length=255),
        Column("properties", JSON),
        *_BITEMPORAL,
    ),
    conflict=("relationship_id", "transaction_time_start"),
    group="semantic_memory",
)

PROCEDURAL = Component(
    name="procedural_memory",
    sqlite_table="procedural_patterns",
    pg_table="procedural_patterns",
    key_column="pattern_id",
    key_sql="pattern_id",
    columns=(
        Column("pattern_id", HEXID),
        TENANT,
        Column("scope", TEXT, max_length=500),
        Column("key", TEXT, max_length=500),
        Column("value", TEXT),
        Column("frequency", INT, minimum=1),
        Column("first_seen", EPOCH),
        Column("last_seen", EPOCH),
        Column("created_at", EPOCH),
        Column("updated_at", EPOCH),
    ),
    conflict=("pattern_id",),
)

VECTOR_PARTS = tuple(vector_part(d) for d in DIMENSIONS)
