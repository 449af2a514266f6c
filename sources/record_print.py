"""A source record's print for the sync baseline: what `sync` diffs against to find changes.

The print is the first 8 bytes of the MD5 of the record's stored SQLite values as a text this
project defines: TEXT as is, integers in decimal, BLOBs as upper-case hex, floats with 17
significant digits (exact for a double), NULL as chr(1), chr(31) between columns. MD5 is
RFC 1321 everywhere, so the print is stable across versions of DuckDB and Python (an
engine's internal hash is not). It is computed two ways that must agree byte for byte:
in DuckDB (`print_sql`, how `sync` prints the whole source, vectorised) and in Python
(`RecordPrinter`, how pre-flight's one pass prints each record it reads anyway, so an
execute's baseline needs no second scan of the source). DuckDB types the columns; a column
of another type (no llmspell table has floats), or a value Python holds in another type
(SQLite lets a column hold any), is one `RecordPrinter` does not print, and the caller falls
back to DuckDB for that component.
"""

from __future__ import annotations

import hashlib

import duckdb

from core.model.components import Component

NULL = "\x01"
SEPARATOR = "\x1f"
_INTEGERS = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UBIGINT", "UINTEGER"}
_FLOATS = {"DOUBLE", "FLOAT", "REAL"}


def duck_types(con: duckdb.DuckDBPyConnection, comp: Component, source: str) -> list[str]:
    """DuckDB's types of `comp`'s columns in `source` (a relation of the attached SQLite)."""
    types = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    return [types.get(c, "VARCHAR") for c in comp.column_names]


def _column_sql(name: str, duck_type: str) -> str:
    q = '"' + name.replace('"', '""') + '"'
    if duck_type == "VARCHAR":
        return q
    if duck_type == "BLOB":
        return f"hex({q})"
    if duck_type in _FLOATS:
        return f"printf('%.17g', {q})"
    return f"CAST({q} AS VARCHAR)"


def print_sql(comp: Component, types: list[str]) -> str:
    """DuckDB expression: a record's print, as a UBIGINT."""
    parts = ", ".join(
        f"coalesce({_column_sql(c, t)}, chr(1))" for c, t in zip(comp.column_names, types)
    )
    return f"('0x' || md5(concat_ws(chr(31), {parts}))[:16])::UBIGINT"


def _text_of(duck_type: str):
    """How Python writes a value of a column DuckDB types `duck_type` (None: it does not)."""
    if duck_type == "VARCHAR":
        return str, lambda v: v
    if duck_type == "BLOB":
        return bytes, lambda v: v.hex().upper()
    if duck_type in _INTEGERS:
        return int, str
    return None


class RecordPrinter:
    """`print_sql` in Python, for rows `(llmspell_key, *component columns)` as SQLite holds
    them; the prints are signed 64-bit (the UBIGINT's bits, as the baseline stores them)."""

    def __init__(self, types: list[str]):
        forms = [_text_of(t) for t in types]
        self.usable = all(f is not None for f in forms)
        self.forms = forms

    def prints(self, rows: list[tuple]) -> list[int] | None:
        """The rows' prints, or None when a value is not of its column's type."""
        if not self.usable:
            return None
        out = []
        forms = self.forms
        for row in rows:
            texts = []
            for (kind, text), value in zip(forms, row[1:]):
                if value is None:
                    texts.append(NULL)
                elif type(value) is kind:
                    texts.append(text(value))
                else:
                    return None
            text = SEPARATOR.join(texts).encode("utf-8", "surrogatepass")
            digest = hashlib.md5(text, usedforsecurity=False)
            out.append(int.from_bytes(digest.digest()[:8], "big", signed=True))
        return out
