"""Whether PostgreSQL can store a source value, per column kind (see `core.model.kinds`).

What PostgreSQL refuses: invalid JSON (NaN and Infinity included), the NUL character
(`\\u0000` in JSON text, or raw in any text), lone UTF-16 surrogates, invalid UTF-8, ids that
are not UUIDs, values longer than their VARCHAR, out-of-range integers and timestamps. Each
kind has two checks: `value` (one value: the problem, or None) and `batch` (every value of a
column, at C speed where it can: True when each is certainly storable; a column that fails it
is checked value by value, to name the records). NULL is the caller's (`Column.nullable`).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable

from core.model import json_numbers
from core.model.canonical import jsonb_encode, mark_number, ordered_object
from core.model.memory_values import pg_scope, vector_problem

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


def _canonical_int(token: str) -> int:
    if len(token) > 308 or token == "-0":
        _FLAG.hit = True
        return 0  # refused, or printed as 0 either way
    return int(token)


def _canonical_float(token: str) -> str:
    _float_token(token)
    return mark_number(token)


# The strict decoder's checks and JSONB's canonical form in one parse (`checked_json_texts`).
_CANONICAL = json.JSONDecoder(
    parse_constant=_reject_constant,
    parse_int=_canonical_int,
    parse_float=_canonical_float,
    object_pairs_hook=ordered_object,
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


# -- per kind: `<kind>_value(col)` gives the check of one value, `<kind>_batch(col, values,
# number_texts)` the fast check of a column's non-NULL values ------------------------------
ValueCheck = Callable[[object], "str | None"]


def _texts_clean(values: tuple) -> str | None:
    """The values joined, when all are str without NUL or surrogates; else None."""
    if set(map(type, values)) != {str}:
        return None
    joined = "\x1f".join(values)
    if "\x00" in joined:
        return None
    try:
        joined.encode("utf-8")  # fails on a surrogate: invalid UTF-8 or a lone surrogate
    except UnicodeEncodeError:
        return None
    return joined


def text_value(col) -> ValueCheck:
    def check(v):
        problem = check_text(v, col.max_length)
        if problem is None and col.allowed and v not in col.allowed:
            return f"is {v!r}, not one of {', '.join(col.allowed)}"
        return problem

    return check


def text_batch(col, values: tuple, number_texts: set | None = None) -> bool:
    if _texts_clean(values) is None:
        return False
    if col.max_length is not None and max(map(len, values)) > col.max_length:
        return False
    return not (col.allowed and not set(values) <= set(col.allowed))


def scope_value(col) -> ValueCheck:
    def check(v):
        problem = check_text(v, None)
        if problem is None:
            problem = check_text(pg_scope(v), col.max_length)
            if problem:
                problem = f"as llmspell's PostgreSQL scope {pg_scope(v)!r} {problem}"
        return problem

    return check


def scope_batch(col, values: tuple, number_texts: set | None = None) -> bool:
    if set(map(type, values)) != {str}:
        return False
    return text_batch(col, tuple(map(pg_scope, values)))


def json_value(col) -> ValueCheck:
    return check_json


def json_batch(col, values: tuple, number_texts: set | None = None) -> bool:
    """Each document must parse (strictly); escapes PostgreSQL refuses need a look. JSON
    texts with numbers worth a closer look are added to `number_texts` (by id)."""
    return checked_json_texts(col, values, number_texts, [False] * len(values)) is not None


def checked_json_texts(
    col, values: tuple, number_texts: set | None, picked: list[bool]
) -> list[str | None] | None:
    """Pre-flight's fast check of a JSON column and, for the picked values, their canonical
    text (`jsonb_text`), from one parse of each document; None when a value may not be
    storable (the caller then checks value by value). NULLs are the caller's: `values`
    holds none."""
    joined = _texts_clean(values)
    if joined is None:
        return None
    look_closer = _REFUSED_ESCAPE.search(joined) is not None
    texts: list[str | None] = []
    try:
        for text, pick in zip(values, picked):
            _FLAG.hit = False
            if pick:
                texts.append(jsonb_encode(_CANONICAL.decode(text)))
            else:
                _STRICT.decode(text)
                texts.append(None)
            numbers = _FLAG.hit
            if look_closer and _REFUSED_ESCAPE.search(text) and check_json(text):
                return None
            if numbers:
                if undecodable_number(text):
                    return None
                if number_texts is not None:
                    number_texts.add(id(text))
    except (ValueError, RecursionError):
        return None
    return texts


def _id_checks(pattern: re.Pattern, what: str):
    def value(col) -> ValueCheck:
        def check(v):
            if not isinstance(v, str) or not pattern.match(v):
                return f"is {v!r}, not {what} (PostgreSQL column is UUID)"
            return None

        return check

    def batch(col, values: tuple, number_texts: set | None = None) -> bool:
        return _texts_clean(values) is not None and all(map(pattern.match, values))

    return value, batch


hexid_value, hexid_batch = _id_checks(_HEX32, "a 32-hex-character id")
uuid_value, uuid_batch = _id_checks(_UUID, "a UUID")


def _int_range(col) -> tuple[int, int]:
    lo = max(_INT32[0], col.minimum) if col.minimum is not None else _INT32[0]
    return lo, _INT32[1]


def int_value(col) -> ValueCheck:
    lo, hi = _int_range(col)

    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            return f"is {v!r}, not an integer"
        if not lo <= v <= hi:
            return f"is {v}, outside {lo}..{hi}"
        return None

    return check


def int_batch(col, values: tuple, number_texts: set | None = None) -> bool:
    lo, hi = _int_range(col)  # bool is its own type, so True/False fail the type test
    return set(map(type, values)) == {int} and lo <= min(values) and max(values) <= hi


def bigint_value(col) -> ValueCheck:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            return f"is {v!r}, not an integer"
        return None if _INT64[0] <= v <= _INT64[1] else f"is {v}, outside BIGINT"

    return check


def bigint_batch(col, values: tuple, number_texts: set | None = None) -> bool:
    return set(map(type, values)) == {int}  # SQLite integers are 64-bit


def epoch_value(col) -> ValueCheck:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            return f"is {v!r}, not integer epoch seconds"
        if not _EPOCH_RANGE[0] <= v <= _EPOCH_RANGE[1]:
            return f"is {v}, outside PostgreSQL's timestamp range"
        return None

    return check


def epoch_batch(col, values: tuple, number_texts: set | None = None) -> bool:
    lo, hi = _EPOCH_RANGE
    return set(map(type, values)) == {int} and lo <= min(values) and max(values) <= hi


def bool_value(col) -> ValueCheck:
    def check(v):
        return None if v in (0, 1) and not isinstance(v, bool) else f"is {v!r}, not 0 or 1"

    return check


def bool_batch(col, values: tuple, number_texts: set | None = None) -> bool:
    return set(map(type, values)) == {int} and set(values) <= {0, 1}


def blob_value(col) -> ValueCheck:
    def check(v):
        if isinstance(v, bytes):
            return None
        if isinstance(v, str):
            return "is not valid UTF-8 text in a BLOB column" if _SURROGATE.search(v) else None
        return f"is {type(v).__name__}, not a BLOB"

    return check


def blob_batch(col, values: tuple, number_texts: set | None = None) -> bool:
    return set(map(type, values)) == {bytes}


def vector_value(col) -> ValueCheck:
    def check(v):
        if not isinstance(v, (bytes, str)):
            return f"is {type(v).__name__}, not an embedding BLOB"
        return vector_problem(v, col.dimension)

    return check


def vector_batch(col, values: tuple, number_texts: set | None = None) -> bool:
    return False  # every vector is decoded and measured on its own


def vector_missing(col) -> str:
    return f"is missing: no vector with this rowid in vec_embeddings_{col.dimension}"


def text_array_value(col) -> ValueCheck:
    return check_text_array


def text_array_batch(col, values: tuple, number_texts: set | None = None) -> bool:
    return all(check_text_array(v) is None for v in values)
