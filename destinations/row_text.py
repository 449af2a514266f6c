"""The canonical text of a stored llmspell row, as PostgreSQL expressions, and its print.

Each column's text is one the project defines, independent of the session (timestamps as
exact epoch seconds, not in the session's TimeZone; vectors as their f32 bits; BLOBs as hex;
JSON as jsonb's documented text form), and a row's print is the first 8 bytes of SHA-256 over
those texts (NULL as chr(1), chr(31) between columns). Validation compares it with the same
print computed in Python from the source (`validation.compare.fingerprint`); `sync` stores it
as the target side of its baseline (`row_print`): unlike `hashtextextended`, it means the
same on every PostgreSQL version.
"""

from __future__ import annotations

from psycopg import sql

from core.model.components import Component

FP_BYTES = 8  # of SHA-256: a wrong row passes with odds 2**-64
SEPARATOR = "\x1f"


def target_expr(col, alias: str | None = None) -> sql.Composable:
    """PostgreSQL expression giving the column's canonical text (of table `alias`)."""
    return col.target_text(sql.Identifier(alias, col.name) if alias else sql.Identifier(col.name))


def target_fingerprint_expr(columns, alias: str | None = None) -> sql.Composable:
    """PostgreSQL expression: `fingerprint` of a stored row's canonical texts (NULL as the
    NULL marker), computed by the server so the row's text never leaves it."""
    parts = sql.SQL(", ").join(
        sql.SQL("coalesce({}, chr(1))").format(target_expr(c, alias)) for c in columns
    )
    return sql.SQL("substr(sha256(convert_to(concat_ws(chr(31), {}), 'UTF8')), 1, {})").format(
        parts, sql.Literal(FP_BYTES)
    )


def row_print(comp: Component, alias: str = "t") -> sql.Composed:
    """`target_fingerprint_expr` of the whole row `alias` as a BIGINT (its 8 bytes, big-endian,
    as a signed value): the target print `sync` stores."""
    return sql.SQL("('x' || encode({}, 'hex'))::bit(64)::bigint").format(
        target_fingerprint_expr(comp.columns, alias)
    )
