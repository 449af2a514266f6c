"""Column kinds: what a SQLite value is and what it becomes in PostgreSQL, each said once.

A kind carries every side's view of its values: the Arrow type the dlt source yields, the
staging column's type and how a value goes into COPY's CSV, the cast the INSERT ... SELECT
applies, the PostgreSQL type the schema check expects, the canonical text validation compares
(from the SQLite value in Python, from the stored value inside PostgreSQL) and the pre-flight
checks. A `Column` is a kind with the column's own bounds (length, minimum, allowed values,
dimension). Adding a kind is one entry here; no side branches on kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
from psycopg import sql

from core.model import checks
from core.model.canonical import canonical_uuid, json_difference, jsonb_text
from core.model.memory_values import OPEN_END, PG_SCOPE_SQL, pg_scope, vector_hex, vector_text

NULL_TEXT = "\x01"  # the canonical text of NULL (PostgreSQL's side prints chr(1))
UNSTORABLE = "\x02"  # prefixes the text of a value no stored value can equal


@dataclass(frozen=True, eq=False)
class ColumnKind:
    name: str
    # PostgreSQL: the column's type (of the column: a VARCHAR's length, a vector's dimension)
    pg_type: Callable[[Column], str]
    cast: str  # SQL turning the staged value `{c}` into the column's type
    target_text: str  # SQL giving the canonical text of the stored value `{c}`
    # the SQLite side: the canonical text of a (non-NULL) value, as `target_text` prints it
    source_text: Callable[[object], str]
    value_check: Callable[[Column], checks.ValueCheck]  # pre-flight: one value's problem
    batch_check: Callable[..., bool]  # pre-flight: (col, values, number_texts) all storable
    arrow: pa.DataType = pa.string()  # what the dlt source yields
    stage: str = "TEXT"  # the staging column COPY fills
    copy_text: Callable[[object], str] | None = None  # the value in COPY's CSV (else as is)
    cast_keeps_null: bool = True  # False: `cast` turns NULL into a value (an empty array)
    empty_text: str | None = None  # canonical text of that value
    null_problem: Callable[[Column], str] | None = None  # why NULL is missing, if not plain
    is_uuid: bool = False  # stored as UUID: keys compare in canonical UUID form
    difference: Callable[[str, str], str | None] | None = None  # structural, for JSON
    extension: str | None = None  # the PostgreSQL extension the type needs
    # pre-flight's batch check that also gives the picked values' `source_text` from the
    # same parse: (col, values, number_texts, picked) -> texts, or None if not all storable
    checked_texts: Callable[..., list[str | None] | None] | None = None

    @property
    def binary(self) -> bool:
        """SQLite holds bytes: they travel, and are backed up, byte for byte."""
        return self.arrow == pa.binary()

    def __repr__(self) -> str:
        return f"<kind {self.name}>"


def _fixed(pg_type: str) -> Callable[[Column], str]:
    return lambda col: pg_type


def _varchar(col: Column) -> str:
    return f"VARCHAR({col.max_length})" if col.max_length else "TEXT"


def _epoch_text(value) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _blob_hex(value) -> str:
    return (value.encode("utf-8") if isinstance(value, str) else bytes(value)).hex()


_EPOCH_TARGET = "trim_scale(extract(epoch FROM {c}))::text"

TEXT = ColumnKind(  # TEXT -> VARCHAR(n)/TEXT
    "text", _varchar, "{c}", "{c}::text", str, checks.text_value, checks.text_batch
)
JSON = ColumnKind(  # TEXT holding JSON -> JSONB
    "json", _fixed("JSONB"), "{c}::jsonb", "{c}::text", jsonb_text,
    checks.json_value, checks.json_batch, difference=json_difference,
    checked_texts=checks.checked_json_texts,
)  # fmt: skip
EPOCH = ColumnKind(  # INTEGER unix seconds -> TIMESTAMPTZ
    "epoch", _fixed("TIMESTAMPTZ"), "to_timestamp({c})", _EPOCH_TARGET, _epoch_text,
    checks.epoch_value, checks.epoch_batch, arrow=pa.int64(), stage="BIGINT",
)  # fmt: skip
EPOCH_OPEN = ColumnKind(  # INTEGER unix seconds, 9999999999 = open end -> 'infinity'
    "epoch_open", _fixed("TIMESTAMPTZ"),
    f"CASE WHEN {{c}} = {OPEN_END} THEN 'infinity'::timestamptz ELSE to_timestamp({{c}}) END",
    # 'infinity' is the open end on both sides
    f"CASE WHEN isfinite({{c}}) THEN {_EPOCH_TARGET} ELSE {{c}}::text END",
    lambda v: "infinity" if v == OPEN_END else _epoch_text(v),
    checks.epoch_value, checks.epoch_batch, arrow=pa.int64(), stage="BIGINT",
)  # fmt: skip
HEXID = ColumnKind(  # TEXT 32 hex chars -> UUID
    "hexid", _fixed("UUID"), "{c}::uuid", "{c}::text", canonical_uuid,
    checks.hexid_value, checks.hexid_batch, is_uuid=True,
)  # fmt: skip
UUID = ColumnKind(  # TEXT uuid (session id) -> UUID
    "uuid", _fixed("UUID"), "{c}::uuid", "{c}::text", canonical_uuid,
    checks.uuid_value, checks.uuid_batch, is_uuid=True,
)  # fmt: skip
INT = ColumnKind(  # INTEGER -> INTEGER
    "int", _fixed("INTEGER"), "{c}::integer", "{c}::text", str,
    checks.int_value, checks.int_batch, arrow=pa.int64(), stage="BIGINT",
)  # fmt: skip
BIGINT = ColumnKind(  # INTEGER -> BIGINT
    "bigint", _fixed("BIGINT"), "{c}::bigint", "{c}::text", str,
    checks.bigint_value, checks.bigint_batch, arrow=pa.int64(), stage="BIGINT",
)  # fmt: skip
BOOL = ColumnKind(  # INTEGER 0/1 -> BOOLEAN
    "bool", _fixed("BOOLEAN"), "({c} <> 0)", "{c}::text",
    lambda v: "true" if int(v) else "false",
    checks.bool_value, checks.bool_batch, arrow=pa.int64(), stage="BIGINT",
)  # fmt: skip
BLOB = ColumnKind(  # BLOB -> BYTEA (COPY takes PostgreSQL's hex form)
    "blob", _fixed("BYTEA"), "{c}", "encode({c}, 'hex')", _blob_hex,
    checks.blob_value, checks.blob_batch, arrow=pa.binary(), stage="BYTEA",
    copy_text=lambda v: "\\x" + v.hex(),
)  # fmt: skip
VECTOR = ColumnKind(  # BLOB: JSON text of an f32 list, or raw little-endian f32 -> vector(n)
    "vector", lambda col: f"VECTOR({col.dimension})", "{c}::vector",
    # the f32 values, big-endian, after vector_send's 4-byte header
    "encode(substr(vector_send({c}), 5), 'hex')", vector_hex,
    checks.vector_value, checks.vector_batch, arrow=pa.binary(), copy_text=vector_text,
    null_problem=checks.vector_missing, extension="vector",
)  # fmt: skip
SCOPE = ColumnKind(  # llmspell's SQLite scope namespace -> StateScope's display form
    "scope", _varchar, PG_SCOPE_SQL, "{c}::text", pg_scope,
    checks.scope_value, checks.scope_batch,
)  # fmt: skip
TEXT_ARRAY = ColumnKind(  # TEXT holding a JSON array of strings -> TEXT[]
    "text_array", _fixed("TEXT[]"),
    # ARRAY() of no elements is '{}': that is what a NULL becomes unless NULL is kept.
    "ARRAY(SELECT jsonb_array_elements_text({c}::jsonb))", "to_jsonb({c})::text", jsonb_text,
    checks.text_array_value, checks.text_array_batch, cast_keeps_null=False, empty_text="[]",
)  # fmt: skip

KINDS = (TEXT, JSON, EPOCH, EPOCH_OPEN, HEXID, UUID, INT, BIGINT, BOOL, BLOB, VECTOR, SCOPE,
         TEXT_ARRAY)  # fmt: skip

# information_schema's udt_name of each PostgreSQL type a kind gives (without its length)
_UDT = {
    "VARCHAR": "varchar", "TEXT": "text", "JSONB": "jsonb", "TIMESTAMPTZ": "timestamptz",
    "UUID": "uuid", "INTEGER": "int4", "BIGINT": "int8", "BOOLEAN": "bool", "BYTEA": "bytea",
    "VECTOR": "vector", "TEXT[]": "_text",
}  # fmt: skip


@dataclass(frozen=True)
class Column:
    name: str
    kind: ColumnKind
    nullable: bool = False
    max_length: int | None = None
    minimum: int | None = None  # for INT columns: CHECK (col >= minimum)
    allowed: tuple[str, ...] | None = None  # for status columns: CHECK (col IN ...)
    dimension: int | None = None  # for VECTOR columns: vector(dimension)
    # NULL is stored as the kind's empty value (TEXT_ARRAY: '{}'; llmspell's reader needs one)
    empty_when_null: bool = False

    @property
    def pg_type(self) -> str:
        return self.kind.pg_type(self)

    @property
    def udt(self) -> str:
        """information_schema's udt_name for the column, as the schema check reads it."""
        return _UDT[self.pg_type.split("(")[0]]

    @property
    def match_type(self) -> str:
        """The type to compare this column with when it joins a key list: its type without a
        length (VARCHAR(n) compares as TEXT). Under row-level security PostgreSQL uses a join
        condition for an index only if it is leakproof; a cast to VARCHAR(n), or from text
        to UUID, applied to a column of the other side is not, and the join falls back to a
        scan of the tenant's rows per key (quadratic; seen as minutes at 200k records)."""
        return "TEXT" if self.pg_type.startswith("VARCHAR") else self.pg_type

    def cast(self, staged: sql.Composable) -> sql.Composable:
        """The SQL converting the staged (raw SQLite) value into the column's type."""
        expr = sql.SQL(self.kind.cast).format(c=staged)
        if self.kind.cast_keeps_null or self.empty_when_null:
            return expr
        return sql.SQL("CASE WHEN {} IS NULL THEN NULL ELSE {} END").format(staged, expr)

    def target_text(self, stored: sql.Composable) -> sql.Composable:
        """The SQL giving the stored value's canonical text (NULL stays NULL)."""
        return sql.SQL(self.kind.target_text).format(c=stored)

    def source_text(self, value) -> str:
        """The canonical text of a SQLite value: what `target_text` gives once it is stored."""
        if value is None:
            return self.kind.empty_text if self.empty_when_null else NULL_TEXT
        try:
            return self.kind.source_text(value)
        except (ValueError, TypeError, AttributeError):
            return f"{UNSTORABLE}{value!r}"  # not storable: can never match a stored value

    def checked_texts(
        self, values: tuple, number_texts: set[int] | None, picked: list[bool]
    ) -> list[str | None] | None:
        """Pre-flight's fast check of a column's values (`batch_check`) with the canonical
        text (`source_text`) of the picked ones, each value parsed once: None when a value
        may not be storable (then check value by value)."""
        if not values:
            return []
        present = [i for i, v in enumerate(values) if v is not None]
        if len(present) < len(values):
            if not self.nullable:
                return None
            kept = tuple(values[i] for i in present)
            texts = self.checked_texts(kept, number_texts, [picked[i] for i in present])
            if texts is None:
                return None
            out: list[str | None] = [self.source_text(None) if p else None for p in picked]
            for i, text in zip(present, texts):
                out[i] = text
            return out
        if self.kind.checked_texts is not None:
            return self.kind.checked_texts(self, values, number_texts, picked)
        if values and not self.kind.batch_check(self, values, number_texts):
            return None
        return [self.source_text(v) if p else None for v, p in zip(values, picked)]

    def copy_text(self, value):
        """The value as COPY's CSV takes it into the staging column."""
        to_text = self.kind.copy_text
        return value if to_text is None or value is None else to_text(value)
