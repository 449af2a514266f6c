"""JSON numbers as llmspell decodes them (serde_json), before and after PostgreSQL's JSONB.

serde_json decodes a number without `.`/`e` that fits i64/u64 as an integer (`-0` is the
float -0.0), anything else as an f64, and refuses a number outside the f64 range. JSONB
keeps numbers exactly but prints them without exponent and without `-0`: `1e16` comes back
as `10000000000000000` (an integer for serde, a float before), `-0` as `0`. A number outside
the f64 range (`1e400`) is stored by JSONB and then cannot be decoded by llmspell at all.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from core.model.canonical import pg_number

_U64_MAX = 2**64 - 1
_I64_MIN = -(2**63)


class _Num(str):
    """A number token, kept as written."""


def serde_number(token: str) -> tuple[str, int | float]:
    """('int', n) or ('float', x) as serde_json decodes `token`; ('error', 0) if it refuses."""
    if "." not in token and "e" not in token and "E" not in token:
        n = int(token)
        if token.startswith("-"):
            if n == 0:
                return ("float", -0.0)
            if n >= _I64_MIN:
                return ("int", n)
        elif n <= _U64_MAX:
            return ("int", n)
    x = float(token)
    return ("error", 0) if math.isinf(x) else ("float", x)


def _tokens(text: str):
    return json.loads(text, parse_float=_Num, parse_int=_Num)


def _walk(value, path: str = "$"):
    stack = [(path, value)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, _Num):
            yield where, v
        elif isinstance(v, dict):
            stack.extend((f"{where}.{k}", x) for k, x in reversed(v.items()))
        elif isinstance(v, list):
            stack.extend((f"{where}[{i}]", x) for i, x in reversed(list(enumerate(v))))


@dataclass(frozen=True)
class NumberFinding:
    path: str
    written: str
    after_jsonb: str | None  # None: llmspell cannot decode the number at all


def scan(text: str) -> list[NumberFinding]:
    """Numbers in a JSON document that llmspell cannot decode, or decodes differently after
    JSONB (valid JSON assumed; anything else is the record checks' business)."""
    if not isinstance(text, str):
        return []
    try:
        tree = _tokens(text)
    except (ValueError, RecursionError):
        return []
    out = []
    for path, token in _walk(tree):
        before = serde_number(token)
        if before[0] == "error":
            out.append(NumberFinding(path, str(token), None))
            continue
        stored = pg_number(token)
        after = serde_number(stored)
        if before[0] != after[0] or (before[0] == "int" and before[1] != after[1]):
            out.append(NumberFinding(path, str(token), stored))
    return out


# -- values as llmspell sees them, for read-back comparison -------------------------------
def llmspell_value(text: str | bytes, through_jsonb: bool = False):
    """The document as serde_json decodes it: numbers as ('int'|'float', value); with
    `through_jsonb`, as it decodes after JSONB rewrote the number forms."""

    def number(token: str):
        return serde_number(pg_number(token) if through_jsonb else token)

    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    return json.loads(text, parse_float=number, parse_int=number)
