"""The dlt source: one resource per llmspell component, yielding keyed records as Arrow tables.

Arrow is dlt's fast path: extract writes each table to parquet, normalize only links the
file, and the destination receives the same columns and types back in batches. Every table
carries `llmspell_key` (the key llmspell's SQLite backend lists: `agent:<id>`, `session:<uuid>`,
...) next to the component's columns, with SQLite's values unchanged (JSON as text, epoch
seconds as integers, BLOBs as bytes) except the key columns a key layout re-keys (see
`sources.key_routing`); types are converted only inside PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import dlt
import pyarrow as pa

from core.model.components import Component
from core.model.registry import COMPONENTS
from sources.key_routing import KeyMapper
from sources.sqlite_reader import SourceDB

KEY_COLUMN = "llmspell_key"


def arrow_schema(comp: Component) -> pa.Schema:
    fields = [pa.field(KEY_COLUMN, pa.string(), nullable=False)]
    fields += [pa.field(c.name, c.kind.arrow, nullable=c.nullable) for c in comp.columns]
    return pa.schema(fields)


def rows_to_arrow(comp: Component, rows: list[tuple]) -> pa.Table:
    """Rows shaped (llmspell_key, *columns) as one Arrow table with the component's schema."""
    schema = arrow_schema(comp)
    columns = list(zip(*rows)) if rows else [[] for _ in schema]
    arrays = []
    for field, values in zip(schema, columns):
        if field.type == pa.binary():
            values = [v.encode("utf-8") if isinstance(v, str) else v for v in values]
        elif field.type == pa.string() and any(isinstance(v, bytes) for v in values[:1]):
            # TEXT read as raw UTF-8 (see SourceDB raw_text): Arrow validates it as it casts.
            arrays.append(pa.array(values, type=pa.binary()).cast(pa.string()))
            continue
        arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def read_component(
    path: str | Path,
    comp: Component,
    batch_size: int,
    tenants: list[str] | None = None,
    on_batch: Callable[[int], None] | None = None,
    snapshot: bool = True,
    mapper: KeyMapper | None = None,
) -> Iterator[pa.Table]:
    """Yield the component's records in natural-key order, one Arrow table per batch, each
    row as `mapper` (the key layout) says it is written."""
    with SourceDB(path, snapshot=snapshot, raw_text=True) as db:
        for rows in db.iter_batches(comp, batch_size, tenants):
            if on_batch:
                on_batch(len(rows))
            yield rows_to_arrow(comp, mapper.rows(rows) if mapper else rows)


@dlt.source(name="llmspell_sqlite", max_table_nesting=0)
def llmspell_sqlite(
    path: str = dlt.config.value,
    components: list[str] | None = None,
    batch_size: int = 1000,
    tenants: list[str] | None = None,
    snapshot: bool = True,
    mappers: dict[str, KeyMapper] | None = None,
):
    """All (or the named) components of one llmspell SQLite database.

    `snapshot=False` only when `path` already is a private snapshot (the engine's);
    `mappers` re-key rows per component (default: every SQLite column unchanged)."""
    names = list(COMPONENTS) if components is None else components
    for name in names:
        comp = COMPONENTS[name]
        mapper = (mappers or {}).get(name)
        yield dlt.resource(
            read_component(path, comp, batch_size, tenants, snapshot=snapshot, mapper=mapper),
            name=comp.name,
            write_disposition="append",
        )
