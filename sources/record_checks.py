"""Find source records PostgreSQL cannot store, before anything is written.

Each problem names the component, tenant, key and column, so the operator can fix the record
in llmspell. What PostgreSQL refuses: invalid JSON (NaN and Infinity included), the NUL
character (`\\u0000` in JSON text, or raw in any text), lone UTF-16 surrogates, invalid UTF-8,
ids that are not UUIDs, values longer than their VARCHAR, out-of-range integers and
timestamps, and NULL in a NOT NULL column.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sources import json_numbers
from sources.components import (
    BIGINT,
    BLOB,
    BOOL,
    EPOCH,
    EPOCH_OPEN,
    HEXID,
    INT,
    JSON,
    SCOPE,
    TEXT,
    TEXT_ARRAY,
    UUID,
    VECTOR,
    Component,
)
from sources.memory_values import pg_scope, vector_problem

_SURROGATE = re.compile("[\ud800-\udfff]")
_UUID = re.compile(r"^\{?[0-9a-fA-F]{4}(?:-?[0-9a-fA-F]{4}){7}\}?$")
# JSON escapes PostgreSQL may refuse (\u0000, or a surrogate that might be lone): look closer.
_REFUSED_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
# to_timestamp() accepts roughly 4713 BC .. 294276 AD; keep well inside it.
_EPOCH_RANGE = (-210_866_803_200, 9_224_318_016_000)


def storable_uuid(text) -> bool:
    """True when PostgreSQL's UUID type accepts `text`."""
    return isinstance(text, str) and _UUID.match(text) is not None


def printable(text: str) -> str:
    """`text` as it can be shown on a terminal or in a log: unchanged when it is printable
    UTF-8, else escaped as Python does (`ten\\x00ant`, `ten\\udcffant` for a byte that is not
    UTF-8), so a NUL or an undecodable byte read from the source is never printed raw."""
    if text.isprintable():
        try:
            text.encode("utf-8")
            return text
        except UnicodeEncodeError:
            pass
    return repr(text)[1:-1]


@dataclass(frozen=True)
class BadRecord:
    component: str
    tenant_id: str
    key: str
    column: str
    problem: str

    def __str__(self) -> str:
        return (
            f"{self.component} {printable(self.tenant_id)} {self.key!r}: {self.column} "
            f"{self.problem}"
        )

    def to_dict(self) -> dict:
        return {
            "component": self.component,
            "tenant_id": self.tenant_id,
            "key": self.key,
            "column": self.column,
            "problem": self.problem,
        }


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


# The decoder flags number tokens that llmspell may decode differently after JSONB, or not
# at all (an exponent, -0, 309+ digits): only those documents get a closer look
# (`json_numbers.scan`), so the check costs nothing for documents without them. The numbers'
# values are not needed here: they are decoded as 0.
_FLAG = threading.local()


def _int_token(token: str) -> int:
    if len(token) > 308 or token == "-0":
        _FLAG.hit = True
    return 0


def _float_token(token: str) -> float:
    if "e" in token or "E" in token or (token[0] == "-" and float(token) == 0):
        _FLAG.hit = True
    return 0.0


_STRICT = json.JSONDecoder(  # NaN/Infinity are not JSON
    parse_constant=_reject_constant, parse_int=_int_token, parse_float=_float_token
)


def _decode(text: str):
    """(parsed, whether a number needs a closer look)."""
    _FLAG.hit = False
    parsed = _STRICT.decode(text)
    return parsed, _FLAG.hit


def _bad_strings(value) -> str | None:
    """Find strings PostgreSQL refuses (NUL, lone surrogates) in parsed JSON."""
    # Fast: re-serialize in C; a lone surrogate cannot be encoded, and NUL comes out as an
    # escape. Only when that escape shows up does the slower walk decide.
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone UTF-16 surrogate, which PostgreSQL refuses"
    if "\\u0000" not in text:
        return None
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if "\x00" in v:
                return "contains \\u0000, which PostgreSQL JSONB cannot store"
            if _SURROGATE.search(v):
                return "contains a lone UTF-16 surrogate, which PostgreSQL refuses"
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return None


def check_json(text) -> str | None:
    if not isinstance(text, str):
        return f"is {type(text).__name__}, not JSON text"
    if _SURROGATE.search(text):
        return "is not valid UTF-8"
    try:
        parsed, numbers = _decode(text)
    except (ValueError, RecursionError) as exc:
        return f"is not valid JSON ({str(exc).split(':')[0]})"
    lowered = text.lower()
    if "\\u0000" in lowered or "\\ud" in lowered:
        problem = _bad_strings(parsed)
        if problem:
            return problem
    return undecodable_number(text) if numbers else None


def undecodable_number(text: str) -> str | None:
    """A number llmspell's decoder (serde_json, f64) refuses after JSONB, by JSON path."""
    for found in json_numbers.scan(text):
        if found.after_jsonb is None:
            shown = found.written if len(found.written) <= 24 else found.written[:21] + "..."
            return (
                f"has the number {shown} at {found.path}, outside the range llmspell can "
                "decode (f64): PostgreSQL would store it, llmspell could not read the record"
            )
    return None


def check_text(text, max_length: int | None) -> str | None:
    if not isinstance(text, str):
        return f"is {type(text).__name__}, not text"
    if "\x00" in text:
        return "contains a NUL character, which PostgreSQL text cannot store"
    if _SURROGATE.search(text):
        return "is not valid UTF-8"
    if max_length is not None and len(text) > max_length:
        return f"is {len(text)} characters, over VARCHAR({max_length})"
    return None


def check_text_array(text) -> str | None:
    """A JSON array of strings, as TEXT[] holds it."""
    problem = check_json(text)
    if problem:
        return problem
    value = json.loads(text)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return "is not a JSON array of strings (PostgreSQL column is TEXT[])"
    return None


def _column_check(col) -> Callable[[object], str | None]:
    kind = col.kind
    if kind == JSON:
        return check_json
    if kind == TEXT_ARRAY:
        return check_text_array
    if kind == BOOL:

        def bool_check(v):
            return None if v in (0, 1) and not isinstance(v, bool) else f"is {v!r}, not 0 or 1"

        return bool_check
    if kind == BIGINT:

        def bigint_check(v):
            if isinstance(v, bool) or not isinstance(v, int):
                return f"is {v!r}, not an integer"
            return None if _INT64[0] <= v <= _INT64[1] else f"is {v}, outside BIGINT"

        return bigint_check
    if kind == TEXT:

        def text_check(v):
            problem = check_text(v, col.max_length)
            if problem is None and col.allowed and v not in col.allowed:
                return f"is {v!r}, not one of {', '.join(col.allowed)}"
            return problem

        return text_check
    if kind in (HEXID, UUID):
        pattern = _HEX32 if kind == HEXID else _UUID
        what = "a 32-hex-character id" if kind == HEXID else "a UUID"

        def id_check(v):
            if not isinstance(v, str) or not pattern.match(v):
                return f"is {v!r}, not {what} (PostgreSQL column is UUID)"
            return None

        return id_check
    if kind == INT:
        lo = max(_INT32[0], col.minimum) if col.minimum is not None else _INT32[0]

        def int_check(v):
            if isinstance(v, bool) or not isinstance(v, int):
                return f"is {v!r}, not an integer"
            if not lo <= v <= _INT32[1]:
                return f"is {v}, outside {lo}..{_INT32[1]}"
            return None

        return int_check
    if kind == SCOPE:

        def scope_check(v):
            problem = check_text(v, None)
            if problem is None:
                problem = check_text(pg_scope(v), col.max_length)
                if problem:
                    problem = f"as llmspell's PostgreSQL scope {pg_scope(v)!r} {problem}"
            return problem

        return scope_check
    if kind == VECTOR:

        def vector_check(v):
            if not isinstance(v, (bytes, str)):
                return f"is {type(v).__name__}, not an embedding BLOB"
            return vector_problem(v, col.dimension)

        return vector_check
    if kind in (EPOCH, EPOCH_OPEN):

        def epoch_check(v):
            if isinstance(v, bool) or not isinstance(v, int):
                return f"is {v!r}, not integer epoch seconds"
            if not _EPOCH_RANGE[0] <= v <= _EPOCH_RANGE[1]:
                return f"is {v}, outside PostgreSQL's timestamp range"
            return None

        return epoch_check
    if kind == BLOB:

        def blob_check(v):
            if isinstance(v, bytes):
                return None
            if isinstance(v, str):
                return "is not valid UTF-8 text in a BLOB column" if _SURROGATE.search(v) else None
            return f"is {type(v).__name__}, not a BLOB"

        return blob_check
    raise ValueError(f"unknown column kind {kind}")


class RecordChecker:
    """Checks rows shaped (llmspell_key, *component columns), as the reader yields them."""

    def __init__(self, comp: Component):
        self.comp = comp
        self.tenant_index = 1 + comp.column_names.index("tenant_id")
        self._checks = [
            (i + 1, col.name, col.nullable, _column_check(col))
            for i, col in enumerate(comp.columns)
        ]
        self._null_problem = {
            col.name: f"is missing: no vector with this rowid in vec_embeddings_{col.dimension}"
            for col in comp.columns
            if col.kind == VECTOR
        }

    def check(self, row: tuple) -> list[BadRecord]:
        return self._check_columns(row, self._checks)

    def check_rows(self, rows: list[tuple]) -> list[BadRecord]:
        """Check a batch. Each column is first checked as a whole with C-speed operations;
        only a column that fails that is checked record by record, to name the records.
        Afterwards `number_texts` holds the ids of the JSON texts whose numbers JSONB may
        change for llmspell (see `json_numbers.scan`)."""
        self.number_texts: set[int] = set()
        if not rows:
            return []
        columns = list(zip(*rows))
        suspect = [
            entry
            for entry, col in zip(self._checks, self.comp.columns)
            if not _column_ok(col, columns[entry[0]], self.number_texts)
        ]
        if not suspect:
            return []
        out: list[BadRecord] = []
        for row in rows:
            out.extend(self._check_columns(row, suspect))
        return out

    def _check_columns(self, row: tuple, checks) -> list[BadRecord]:
        bad = []
        for index, name, nullable, check in checks:
            value = row[index]
            if value is None:
                problem = (
                    None
                    if nullable
                    else self._null_problem.get(
                        name, "is NULL, but the PostgreSQL column is NOT NULL"
                    )
                )
            else:
                problem = check(value)
            if problem:
                bad.append(
                    BadRecord(
                        self.comp.name, str(row[self.tenant_index]), str(row[0]), name, problem
                    )
                )
        return bad


def _column_ok(col, values: tuple, number_texts: set[int] | None = None) -> bool:
    """True when every value of the column is certainly storable (the fast path); JSON texts
    with numbers worth a closer look are added to `number_texts` (by id)."""
    types = set(map(type, values))
    if type(None) in types:
        if not col.nullable:
            return False
        values = tuple(v for v in values if v is not None)
        types.discard(type(None))
        if not values:
            return True
    if col.kind == VECTOR:
        return False  # every vector is decoded and measured on its own
    if col.kind == SCOPE and types == {str}:
        values = tuple(map(pg_scope, values))
    if col.kind in (TEXT, SCOPE, JSON, HEXID, UUID):
        if types != {str}:
            return False
        joined = "\x1f".join(values)
        if "\x00" in joined:
            return False
        try:
            joined.encode("utf-8")  # fails on a surrogate: invalid UTF-8 or a lone surrogate
        except UnicodeEncodeError:
            return False
        if col.kind in (TEXT, SCOPE):
            if col.max_length is not None and max(map(len, values)) > col.max_length:
                return False
            return not (col.allowed and not set(values) <= set(col.allowed))
        if col.kind in (HEXID, UUID):
            pattern = _HEX32 if col.kind == HEXID else _UUID
            return all(map(pattern.match, values))
        # JSON: each document must parse (strictly); escapes PostgreSQL refuses need a look
        look_closer = _REFUSED_ESCAPE.search(joined) is not None
        try:
            for text in values:
                parsed, numbers = _decode(text)
                if look_closer and _REFUSED_ESCAPE.search(text) and _bad_strings(parsed):
                    return False
                if numbers:
                    if undecodable_number(text):
                        return False
                    if number_texts is not None:
                        number_texts.add(id(text))
        except (ValueError, RecursionError):
            return False
        return True
    if col.kind == BOOL:
        return types == {int} and set(values) <= {0, 1}
    if col.kind == BIGINT:
        return types == {int}  # SQLite integers are 64-bit
    if col.kind == TEXT_ARRAY:
        return all(check_text_array(v) is None for v in values)
    if col.kind in (INT, EPOCH, EPOCH_OPEN):
        if types != {int}:  # bool is its own type, so True/False land here too
            return False
        lo, hi = _INT32 if col.kind == INT else _EPOCH_RANGE
        if col.kind == INT and col.minimum is not None:
            lo = max(lo, col.minimum)
        return lo <= min(values) and max(values) <= hi
    if col.kind == BLOB:
        return types == {bytes}
    return False
