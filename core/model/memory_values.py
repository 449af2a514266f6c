"""Values of llmspell's memory stores as SQLite holds them and as PostgreSQL must.

Vectors: the SQLite vector backend stores `serde_json::to_vec(&Vec<f32>)` (JSON text in a
BLOB) and also reads raw little-endian f32. llmspell parses the JSON through f64 to f32 (serde),
so the exact vector is `float32(float64(token))`; that is what validation compares, bit for bit,
with PostgreSQL's stored `vector`. Scopes: SQLite stores its own namespace form (`__global__`,
`tenant:x` unprefixed); PostgreSQL's vector backend binds `StateScope`'s Display (`global`,
`custom:tenant:x`), so that form is stored or scoped search would not see the rows.
"""

from __future__ import annotations

import json
import re

import numpy as np

OPEN_END = 9_999_999_999
_SCOPE_PREFIXES = ("user:", "session:", "agent:", "tool:", "workflow:", "hook:", "custom:")
_JSONISH = re.compile(rb"[\s\[\],.0-9eE+\-a-zA-Z\"]*\Z")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number")


_STRICT = json.JSONDecoder(parse_constant=_reject_constant)


def pg_scope(namespace: str) -> str:
    """SQLite namespace -> StateScope Display (what PostgreSQL's scoped search binds)."""
    if namespace == "__global__":
        return "global"
    if namespace.startswith(_SCOPE_PREFIXES):
        return namespace
    return f"custom:{namespace}"  # tenant:x and anything else are StateScope::Custom


# The same mapping inside PostgreSQL, for the INSERT ... SELECT.
PG_SCOPE_SQL = (
    "CASE WHEN {c} = '__global__' THEN 'global' "
    "WHEN {c} ~ '^(user|session|agent|tool|workflow|hook|custom):' THEN {c} "
    "ELSE 'custom:' || {c} END"
)


def _raw(value) -> bytes:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)


def decode_vector(value) -> np.ndarray:
    """The f32 vector in an embedding BLOB; ValueError says why there is none.

    JSON text when it starts with `[` (as llmspell's reader decides) and holds only characters
    JSON number lists are made of; raw little-endian f32 otherwise: raw f32 bytes can start
    with 0x5B (`[`) too, and they are still the vector. Broken JSON is refused, never read as
    f32."""
    raw = _raw(value)
    if raw.lstrip()[:1] == b"[" and _JSONISH.match(raw):
        return _json_vector(raw)
    if len(raw) % 4:
        raise ValueError(f"is {len(raw)} bytes, not a whole number of f32 values")
    vec = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(vec)):
        raise ValueError("holds NaN or Infinity, which pgvector refuses")
    return vec


def _json_vector(raw: bytes) -> np.ndarray:
    try:
        items = _STRICT.decode(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"is not a JSON number list ({str(exc).split(':')[0]})") from None
    if not isinstance(items, list) or not all(type(v) in (int, float) for v in items):
        raise ValueError("holds a non-number (serde_json writes NaN and Infinity as null)")
    with np.errstate(over="ignore"):
        vec = np.array(items, dtype=np.float64).astype(np.float32)
    if not np.all(np.isfinite(vec)):
        raise ValueError("holds a value outside float32's range")
    return vec


def vector_problem(value, dimension: int) -> str | None:
    try:
        vec = decode_vector(value)
    except ValueError as exc:
        return str(exc)
    if vec.size != dimension:
        return f"has {vec.size} values, but its dimension is {dimension}"
    return None


def vector_text(value) -> str:
    """pgvector's text input for the vector. JSON text goes as it is (whitespace dropped):
    pgvector reads each number with strtof, which for the shortest f32 digits serde_json
    writes gives the f32 llmspell reads (through f64); validation compares every vector's
    bits with `float32(float64(token))`, so a number where the two could differ is caught,
    never kept. Raw f32 is printed so that strtof gives back the same bits."""
    raw = _raw(value)
    if raw.lstrip()[:1] == b"[" and _JSONISH.match(raw):
        return raw.translate(None, b" \t\r\n").decode("ascii")
    vec = decode_vector(raw)
    return "[" + ",".join(map(repr, vec.astype(np.float64).tolist())) + "]"


def vector_hex(value) -> str:
    """Canonical form: the f32 values big-endian, as PostgreSQL's vector_send gives them."""
    return decode_vector(value).astype(">f4").tobytes().hex()
