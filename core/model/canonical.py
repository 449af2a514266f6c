"""Canonical forms that make a source record and its migrated row comparable byte for byte.

JSON: PostgreSQL stores JSONB and prints it in one canonical text form (object keys ordered by
length then bytes, last duplicate wins, `", "` and `": "` separators, escapes decoded to
UTF-8, numbers as exact decimals that keep their scale: `1e2` -> `100`, `1.50` stays `1.50`).
`jsonb_text` reproduces that form from the SQLite text in Python, exactly (numbers go through
`Decimal`, never a binary float), so the target's `state_data::text` can be hashed as it
comes. Any mismatch is re-checked by `json_difference`, a structural comparison with the same
number rules, before it is reported, so a divergence of the emulation can never fail a
migration by itself.
"""

from __future__ import annotations

import json
import operator
import re
import uuid
from decimal import Decimal, InvalidOperation

_MARK = "\x00"  # PostgreSQL cannot store NUL in JSON strings, so it cannot collide with data
_MARKED_NUMBER = re.compile(r'"\\u0000([^"]*)"')
_NUMBER_TEXT = operator.itemgetter(1)  # a marked number's text: a C call, not a template


def pg_number(text: str) -> str:
    """A JSON number as PostgreSQL's numeric prints it (exact, scale kept, no exponent)."""
    if "e" in text or "E" in text:
        try:
            d = Decimal(text)
        except InvalidOperation:
            return text
        out = format(d, "f")
        return out[1:] if d.is_zero() and out.startswith("-") else out
    # Without an exponent numeric prints the digits as written, but it has no negative zero.
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text


def mark_number(text: str) -> str:
    """A JSON float token, kept as its exact text (marked) until `jsonb_encode` prints it."""
    return _MARK + pg_number(text)


def _jsonb_key(item: tuple[str, object]) -> tuple[int, str]:
    # JSONB orders keys by UTF-8 length, then bytes; UTF-8 byte order is code point order.
    key = item[0]
    return (len(key) if key.isascii() else len(key.encode("utf-8", "surrogatepass")), key)


def ordered_object(pairs: list[tuple[str, object]]) -> dict:
    """A decoded JSON object as JSONB holds it: last duplicate wins, keys in JSONB order."""
    if len(pairs) < 2:
        return dict(pairs)
    return dict(sorted(dict(pairs).items(), key=_jsonb_key))


# Integers need no hook: Python prints them exactly as PostgreSQL does (`-0` parses to 0).
_JSONB_DECODER = json.JSONDecoder(object_pairs_hook=ordered_object, parse_float=mark_number)
_JSONB_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": "))


def jsonb_text(raw: str) -> str:
    """The text PostgreSQL prints for `raw::jsonb`."""
    return jsonb_encode(_JSONB_DECODER.decode(raw))


def jsonb_encode(value) -> str:
    """The text PostgreSQL prints for a document decoded with `ordered_object` and
    `mark_number` (pre-flight's checks decode each document once this way, see
    `checks.checked_json_texts`)."""
    if isinstance(value, str) and value.startswith(_MARK):
        return value[1:]
    out = _JSONB_ENCODER.encode(value)
    return _MARKED_NUMBER.sub(_NUMBER_TEXT, out) if "\\u0000" in out else out


def _tree(raw: str):
    """Parsed JSON with numbers as tagged exact strings, so 1.0 != 1 and True != 1."""
    return json.loads(
        raw, parse_float=lambda t: ("num", pg_number(t)), parse_int=lambda t: ("num", pg_number(t))
    )


def json_difference(source: str, target: str) -> str | None:
    """Where two JSON texts differ in content (a path and both values), or None if equal."""
    try:
        a, b = _tree(source), _tree(target)
    except ValueError as exc:
        return f"$: not comparable JSON ({exc})"
    return difference(a, b)


def difference(expected, actual, path: str = "$") -> str | None:
    """The first path where two decoded documents differ, with both values."""
    stack = [(path, expected, actual)]
    while stack:
        where, a, b = stack.pop()
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(a.keys() | b.keys()):
                if k not in b:
                    return f"{where}.{k}: missing on PostgreSQL"
                if k not in a:
                    return f"{where}.{k}: not in the SQLite value"
                stack.append((f"{where}.{k}", a[k], b[k]))
        elif isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                return f"{where}: {len(a)} items on SQLite, {len(b)} on PostgreSQL"
            stack.extend((f"{where}[{i}]", x, y) for i, (x, y) in enumerate(zip(a, b)))
        elif type(a) is not type(b) or a != b:
            return f"{where}: {_show(a)} on SQLite, {_show(b)} on PostgreSQL"
    return None


def _show(v) -> str:
    """A value for a one-line message: decoded numbers with their kind, canonical number text
    as is, anything else as short JSON."""
    if isinstance(v, tuple) and len(v) == 2 and v[0] in ("int", "float"):
        return f"{v[1]!r} ({v[0]})"
    if isinstance(v, tuple) and len(v) == 2 and v[0] == "num":
        return v[1] if len(v[1]) <= 40 else v[1][:37] + "..."
    text = json.dumps(v, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def canonical_uuid(text: str) -> str:
    return str(uuid.UUID(text.strip("{}")))


def uuid_key(raw) -> str:
    """A UUID key in PostgreSQL's text form; a value that is no UUID gets a form no stored
    key can have, so it never matches."""
    try:
        return canonical_uuid(raw)
    except (ValueError, AttributeError, TypeError):
        return f"\x02{raw}"
