"""The source side of the comparison: each record's key, whether it is sampled, and its print.

A record's print is the first 8 bytes of SHA-256 over the canonical text of each column, what
PostgreSQL computes from the stored row (`destinations.row_text.target_fingerprint_expr`).
`SourcePrints` builds the prints of one batch of source rows from their columns' canonical
texts: pre-flight passes the texts its record checks produced from the same parse of each
document (`RecordChecker.check_rows(rows, picked)`), so an `execute` parses each document
once; `verify` and `sync` compute them with `Column.source_text`. `PrintsFile` writes the
batches to an Arrow file as they come, so memory follows the batch, not the component.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from core.model.components import Component, natural_key_of
from destinations.row_text import FP_BYTES, SEPARATOR
from sources.key_routing import (
    ROUTED,
    UNREACHABLE,
    VALUE_COLUMN,
    KeyMapper,
    key_columns,
    pg_lookup,
    route_of,
)

SOURCE_PRINTS = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("nkey", pa.string()),
        ("llmspell_key", pa.string()),
        ("picked", pa.bool_()),
        ("fp", pa.binary()),
        # what llmspell's PostgreSQL `get` must return (GetPrinter; null without a layout)
        ("unreachable", pa.bool_()),  # under no key: read-back skips it
        ("answers_to", pa.string()),  # the key `get` finds it under, if not its SQLite key
        ("get_table", pa.string()),  # the row `get(answers_to)` reads (null: key refused)
        ("get_ident", pa.string()),
        ("value_fp", pa.binary()),  # `fingerprint` of the value `get` must return
        # the sync baseline's print of the record (`sources.record_print`; null: not taken)
        ("record_fp", pa.int64()),
    ]
)
GET_FIELDS = ("unreachable", "answers_to", "get_table", "get_ident", "value_fp")
GET_LAYOUT = b"get_layout"  # schema metadata: the key layout the get columns were routed by
SAMPLE_BUCKETS = 10_000


def sampled(tenant: str, llmspell_key: str, percent: float) -> bool:
    """Deterministic sample by record key: both sides, and every run, pick the same records."""
    if percent >= 100:
        return True
    h = xxhash.xxh3_64_intdigest(f"{tenant}\x1f{llmspell_key}".encode("utf-8", "surrogatepass"))
    return h % SAMPLE_BUCKETS < percent * (SAMPLE_BUCKETS / 100)


def effective_percent(percent: float, full_threshold: int, records: int) -> float:
    """100 when a component of `records` is below the full-comparison threshold, else
    `percent`: what the comparison uses, so prints computed ahead pick the same records."""
    return 100.0 if percent >= 100 or records < full_threshold else float(percent)


def fingerprint(values: Iterable[str]) -> bytes:
    """What `target_fingerprint_expr` computes inside PostgreSQL, from the source's values."""
    text = SEPARATOR.join(values).encode("utf-8", "surrogatepass")
    return hashlib.sha256(text).digest()[:FP_BYTES]


class GetPrinter:
    """Where llmspell's PostgreSQL `get` finds each source record and the print of the value
    it must return there, computed with the record's print from the same canonical texts,
    so read-back sends PostgreSQL keys and 8-byte prints, never the documents."""

    def __init__(self, comp: Component, layout: str):
        names = comp.column_names
        self.comp = comp
        self.layout = layout
        self.key_at = [names.index(c) for c in key_columns(comp)]
        self.value_at = names.index(VALUE_COLUMN[comp.pg_table])
        self.value_column = comp.columns[self.value_at]

    def record(self, lkey: str, values: tuple, value_text: str | None) -> tuple:
        """The `GET_FIELDS` of one record from its SQLite column values; `value_text` is the
        canonical text of its value (None: not sampled, no print)."""
        r = route_of(self.comp, tuple(values[i] for i in self.key_at), self.layout)
        if r.status == UNREACHABLE:
            return True, None, None, None, None
        found = pg_lookup(r.answers_to)
        return (
            False,
            None if r.answers_to == lkey else r.answers_to,
            found[0] if found else None,
            found[2] if found else None,
            None if value_text is None else fingerprint([value_text]),
        )


def get_printer(comp: Component, layout: str | None) -> GetPrinter | None:
    return GetPrinter(comp, layout) if layout and comp.name in ROUTED else None


class SourcePrints:
    """Builds `SOURCE_PRINTS` batches for one component from source rows shaped
    `(llmspell_key, *component columns)`: `raw` as SQLite holds them (read-back routes on
    those), `rows` as the key layout writes them (`KeyMapper`)."""

    def __init__(
        self,
        comp: Component,
        percent: float,
        mapper: KeyMapper | None = None,
        layout: str | None = None,
    ):
        self.comp = comp
        self.percent = percent
        self.mapper = mapper
        self.gets = get_printer(comp, layout)
        names = comp.column_names
        self.tenant_at = 1 + names.index("tenant_id")
        self.natural_key = natural_key_of(comp)
        self.schema = SOURCE_PRINTS
        if self.gets is not None:
            self.schema = SOURCE_PRINTS.with_metadata({GET_LAYOUT: self.gets.layout.encode()})

    def mapped(self, raw: list[tuple]) -> list[tuple]:
        return raw if self.mapper is None else self.mapper.rows(raw)

    def picked(self, rows: list[tuple]) -> list[bool]:
        """Which records the comparison fingerprints (all of them at 100%)."""
        if self.percent >= 100:
            return [True] * len(rows)
        at, pct = self.tenant_at, self.percent
        return [sampled(row[at], row[0], pct) for row in rows]

    def texts(self, rows: list[tuple], picked: list[bool]) -> list[list[str | None]]:
        """Each column's canonical texts of the picked rows (None for the rest)."""
        columns = list(zip(*rows)) if rows else [() for _ in range(len(self.comp.columns) + 1)]
        return [
            [col.source_text(v) if p else None for v, p in zip(columns[i + 1], picked)]
            for i, col in enumerate(self.comp.columns)
        ]

    def batch(
        self,
        raw: list[tuple],
        rows: list[tuple],
        picked: list[bool],
        texts: list[list[str | None]],
        record_fps: list[int] | None = None,
    ) -> pa.RecordBatch:
        """The prints of one batch; `texts` per column, aligned with `rows`; `record_fps`,
        the baseline's prints of the rows, if taken."""
        n = len(rows)
        at = self.tenant_at
        by_row = list(zip(*texts)) if texts and n else [()] * n
        fps = [fingerprint(t) if p else None for t, p in zip(by_row, picked)]
        arrays = [
            pa.array([row[at] for row in rows], pa.string()),
            pa.array([self.natural_key(row) for row in rows], pa.string()),
            pa.array([row[0] for row in rows], pa.string()),
            pa.array(picked, pa.bool_()),
            pa.array(fps, pa.binary()),
        ]
        gets = self.gets
        if gets is None:
            arrays += [pa.nulls(n, SOURCE_PRINTS.field(name).type) for name in GET_FIELDS]
        else:  # routed on the SQLite columns, before any re-keying
            value_texts = texts[gets.value_at] if texts else [None] * n
            records = [gets.record(r[0], r[1:], text) for r, text in zip(raw, value_texts)]
            columns = list(zip(*records)) if records else [()] * len(GET_FIELDS)
            arrays += [
                pa.array(list(c), SOURCE_PRINTS.field(name).type)
                for c, name in zip(columns, GET_FIELDS)
            ]
        fps_type = SOURCE_PRINTS.field("record_fp").type
        arrays.append(
            pa.nulls(n, fps_type) if record_fps is None else pa.array(record_fps, fps_type)
        )
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def of(self, raw: list[tuple], only: set[tuple[str, str]] | None = None) -> pa.RecordBatch:
        """The prints of raw source rows, canonical texts computed here (`only`: keep just
        these (tenant, natural key) records)."""
        rows = self.mapped(raw)
        if only is not None:
            kept = [
                i
                for i, row in enumerate(rows)
                if (row[self.tenant_at], self.natural_key(row)) in only
            ]
            raw, rows = [raw[i] for i in kept], [rows[i] for i in kept]
        picked = self.picked(rows)
        return self.batch(raw, rows, picked, self.texts(rows, picked))


class PrintsFile:
    """Source prints in an Arrow file, written batch by batch (owner-only: they are prints
    of private records)."""

    def __init__(self, path: str, schema: pa.Schema):
        self.path = path
        self._sink = pa.OSFile(path, "wb")
        os.chmod(path, 0o600)
        self._writer = pa.ipc.new_file(self._sink, schema)

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)

    def close(self) -> None:
        self._writer.close()
        self._sink.close()


class TenantPrintsWriter:
    """One process's prints of one component, one file per tenant, so validation reads a
    tenant's prints and nothing else (memory follows the tenant, not the component). The
    scan reads in tenant order, so each tenant's file is written in one go; a tenant seen
    again later gets a second file (`files` lists both)."""

    def __init__(self, folder: str, stem: str, schema: pa.Schema):
        self.folder, self.stem, self.schema = folder, stem, schema
        self.files: dict[str, list[str]] = {}
        self._open: tuple[str, PrintsFile] | None = None
        self._written = 0  # files opened so far (each file's number)

    def write(self, batch: pa.RecordBatch) -> None:
        tenants = batch.column(0).to_pylist()
        start = 0
        for i in range(1, len(tenants) + 1):  # each run of one tenant goes to its file
            if i == len(tenants) or tenants[i] != tenants[start]:
                self._file_for(tenants[start]).write(batch.slice(start, i - start))
                start = i

    def _file_for(self, tenant: str) -> PrintsFile:
        if self._open is not None and self._open[0] == tenant:
            return self._open[1]
        self.close()
        path = os.path.join(self.folder, f"{self.stem}.{self._written}.arrow")
        self._written += 1
        sink = PrintsFile(path, self.schema)
        self.files.setdefault(tenant, []).append(path)
        self._open = (tenant, sink)
        return sink

    def close(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None


def read_prints(paths: list[str]) -> pa.Table:
    """Prints from their files, memory-mapped (the pages are the files', and go with the
    table)."""
    tables = [pa.ipc.open_file(pa.memory_map(path)).read_all() for path in paths]
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def merge_files(*parts: dict[str, list[str]]) -> dict[str, list[str]]:
    """Per tenant, the files of several processes' `TenantPrintsWriter`s."""
    out: dict[str, list[str]] = {}
    for files in parts:
        for tenant, paths in files.items():
            out.setdefault(tenant, []).extend(paths)
    return out


class TenantPrints(ABC):
    """A component's source prints as validation reads them: a tenant at a time."""

    @abstractmethod
    def tenants(self) -> list[str]:
        """The tenants with prints, in the order validation compares them."""

    @abstractmethod
    def of(self, tenant: str) -> pa.Table:
        """One tenant's prints (`SOURCE_PRINTS`)."""


class PrintsOnDisk(TenantPrints):
    """Pre-flight's prints files (`TenantPrintsWriter`): only the tenant asked for is read."""

    def __init__(self, files: dict[str, list[str]]):
        self.files = files

    def tenants(self) -> list[str]:
        return sorted(self.files)

    def of(self, tenant: str) -> pa.Table:
        return read_prints(self.files[tenant])


class PrintsInMemory(TenantPrints):
    """Prints computed here, as one table (`verify`, `sync`, pre-flight's conflict check)."""

    def __init__(self, table: pa.Table):
        self.table = table

    def tenants(self) -> list[str]:
        return sorted(pc.unique(self.table.column("tenant_id")).to_pylist())

    def of(self, tenant: str) -> pa.Table:
        return self.table.filter(pc.equal(self.table.column("tenant_id"), tenant))
