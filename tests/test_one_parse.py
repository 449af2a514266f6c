"""Pre-flight's one parse of each JSON document: the checks and the canonical text the
source prints are built from come out of the same decode, and agree with the two separate
functions (`check_json`, `jsonb_text`) they replace on the execute path. Pure logic, no
server."""

from __future__ import annotations

import pytest

from core.model import registry
from core.model.canonical import jsonb_text
from core.model.checks import check_json
from core.model.kinds import JSON, Column
from sources.record_checks import RecordChecker
from validation.source_prints import SourcePrints

DOCUMENTS = [
    '{"b": 1, "a": 2, "aa": [1, 2.50, -0, -0.0, 1e2, 1E-2]}',
    '{"dup": 1, "dup": 2, "é": "ü", "z": {"y": {"x": null}}}',
    '[true, false, null, "\\u00e9\\n\\"", 12345678901234567890123]',
    '"just a string"',
    "3.14",
    '{"huge": 1' + "0" * 320 + "}",  # past f64: refused
    '{"n": NaN}',  # not JSON
    '{"nul": "a\\u0000b"}',  # JSONB cannot store NUL
    '{"lone": "\\ud800"}',  # a lone surrogate
    '{"pair": "\\ud83d\\ude80", "text": "\\\\u0000 is only text"}',  # fine, looks suspicious
    '{"unclosed": [1, 2}',
    '{"exp": 1.5e300, "neg": -1e-5, "int": -0}',
]


@pytest.mark.parametrize("doc", DOCUMENTS)
def test_one_value_agrees_with_the_separate_checks(doc):
    col = Column("state_data", JSON)
    texts = col.checked_texts((doc,), set(), [True])
    if check_json(doc) is None:
        assert texts == [jsonb_text(doc)]
    else:
        assert texts is None


def test_a_column_is_checked_as_a_whole_and_unpicked_values_get_no_text():
    col = Column("state_data", JSON, nullable=True)
    good = [d for d in DOCUMENTS if check_json(d) is None]
    values = (*good, None)
    picked = [i % 2 == 0 for i in range(len(values))]
    texts = col.checked_texts(values, set(), picked)
    expected = [
        (col.source_text(v) if v is None else jsonb_text(v)) if p else None
        for v, p in zip(values, picked)
    ]
    assert texts == expected
    assert col.checked_texts((*good, DOCUMENTS[6]), set(), [True] * (len(good) + 1)) is None
    assert Column("state_data", JSON).checked_texts((None,), set(), [True]) is None


def test_record_checks_give_the_texts_source_prints_would_compute():
    """RecordChecker's texts (one parse) build the same prints as `SourcePrints` computing
    every column's canonical text itself (the verify and sync path)."""
    comp = registry.get("agent_state")
    names = comp.column_names
    good = [d for d in DOCUMENTS if check_json(d) is None and d.startswith("{")]
    rows = []
    for i, doc in enumerate(good):
        values = {
            "tenant_id": "t1",
            "agent_id": f"kind:agent-{i}",
            "agent_type": "kind",
            "state_data": doc,
        }
        columns = tuple(values.get(n, _filler(comp.column(n))) for n in names)
        rows.append((f"agent:kind:agent-{i}", *columns))
    checker = RecordChecker(comp)
    prints = SourcePrints(comp, 100.0)
    picked = prints.picked(rows)
    assert checker.check_rows(rows, picked) == []
    one_parse = prints.batch(rows, rows, picked, checker.texts)
    assert one_parse.equals(prints.of(rows))
    assert one_parse.column("fp").null_count == 0


def test_a_bad_record_leaves_no_texts():
    comp = registry.get("agent_state")
    names = comp.column_names
    columns = tuple("{bad" if n == "state_data" else _filler(comp.column(n)) for n in names)
    checker = RecordChecker(comp)
    problems = checker.check_rows([("agent:x", *columns)], [True])
    assert [p.column for p in problems] == ["state_data"]
    assert checker.texts is None


def _filler(col: Column):
    """A storable value of the column's kind."""
    return {
        "text": "x",
        "json": "{}",
        "epoch": 1_700_000_000,
        "epoch_open": 1_700_000_000,
        "int": 1,
        "bigint": 1,
        "bool": 1,
        "hexid": "0" * 32,
        "uuid": "12345678-1234-1234-1234-123456789012",
        "scope": "global",
        "text_array": "[]",
        "blob": b"x",
    }[col.kind.name]
