"""The sync baseline's source print computed in Python (pre-flight's pass, `RecordPrinter`)
must be the one DuckDB computes (`sync`'s scan of the source, `print_sql`), byte for byte:
a difference would make `sync` see every record as changed. Real SQLite, real DuckDB."""

from __future__ import annotations

import sqlite3

import pytest

from core.model import registry
from pipelines.stages.sync_baseline import source_print_batches
from sources.memory_sample import MemorySpec
from sources.record_print import RecordPrinter, duck_types
from sources.sample_db import SampleSpec
from sources.sqlite_reader import SourceDB
from tests.helpers import sample_file
from validation import duck

SPEC = SampleSpec(
    agents=30,
    workflows=10,
    sessions=10,
    kv=20,
    tenants=2,
    seed=3,
    memory=MemorySpec(vectors={384: 4}, entities=5, relationships=5, patterns=5),
    events=15,
    hooks=10,
    artifacts=4,
)


def _python_and_duckdb(path):
    """Per component: the records' Python prints and DuckDB's, by (tenant, SQLite key)."""
    out = {}
    with SourceDB(path) as db:
        con = duck.connect(db.read_path)
        try:
            tables = duck.source_tables(con)
            for comp in registry.COMPONENTS.values():
                if not db.has(comp):
                    continue
                types = duck_types(con, comp, comp.source_from("src.", tables))
                printer = RecordPrinter(types)
                rows = [r for batch in db.iter_batches(comp, 7) for r in batch]
                got = printer.prints(rows)
                tenant_at = 1 + comp.column_names.index("tenant_id")
                python = None
                if got is not None:
                    python = {(r[tenant_at], r[0]): fp for r, fp in zip(rows, got)}
                duckdb = {}
                for t in source_print_batches(con, comp, None, None):
                    keys = zip(
                        t.column("tenant_id").to_pylist(), t.column("llmspell_key").to_pylist()
                    )
                    duckdb.update(zip(keys, t.column("source_fp").to_pylist()))
                out[comp.name] = (printer, python, duckdb)
        finally:
            con.close()
    return out


def test_python_prints_every_component_as_duckdb_does(tmp_path):
    path = tmp_path / "llmspell.db"
    sample_file(path, SPEC)
    found = _python_and_duckdb(path)
    assert len(found) >= 10, sorted(found)  # every store the sample writes
    for name, (printer, python, duckdb) in found.items():
        assert printer.usable, name
        assert python == duckdb, name
    assert sum(len(duckdb) for _, _, duckdb in found.values()) > 100


@pytest.mark.parametrize(
    "value",
    ['{"a": "é😀"}', "", "tab\there", "x" * 5000],
)
def test_hostile_text_prints_alike(tmp_path, value):
    path = tmp_path / "llmspell.db"
    sample_file(path, SampleSpec(agents=3, workflows=1, sessions=1, kv=1, tenants=1, seed=1))
    conn = sqlite3.connect(path)
    conn.execute("UPDATE agent_states SET state_data = ?", (value,))
    conn.execute("UPDATE kv_store SET value = ?", (b"\x00\xff" + value.encode(),))
    conn.commit()
    conn.close()
    for name, (_, python, duckdb) in _python_and_duckdb(path).items():
        assert python == duckdb, name


def test_a_value_of_another_type_gets_no_python_print(tmp_path):
    """SQLite keeps text in an INTEGER column as text: Python does not guess how DuckDB
    would write it and gives no prints (the baseline then asks DuckDB)."""
    path = tmp_path / "llmspell.db"
    sample_file(path, SampleSpec(agents=3, workflows=1, sessions=1, kv=1, tenants=1, seed=1))
    conn = sqlite3.connect(path)
    conn.execute("UPDATE agent_states SET updated_at = 'yesterday' WHERE rowid = 2")
    conn.commit()
    conn.close()
    comp = registry.get("agent_state")
    with SourceDB(path) as db:
        rows = [r for batch in db.iter_batches(comp, 7) for r in batch]
    at = 1 + comp.column_names.index("updated_at")
    good = [r for r in rows if isinstance(r[at], int)]
    types = ["BIGINT" if isinstance(v, int) else "VARCHAR" for v in good[0][1:]]
    printer = RecordPrinter(types)
    assert printer.usable and printer.prints(rows) is None
    assert len(printer.prints(good)) == 2
