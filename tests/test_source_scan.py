"""Pre-flight's pass over the source on two processes (`pipelines.stages.source_scan`): the halves
together are the whole source, an execute validates from prints written by both, bad
records found by either are all refused, and a child that fails is replaced by this
process scanning its half."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pyarrow as pa
import pytest

from core.errors import PreflightError
from core.model import registry
from pipelines import api
from pipelines.stages import source_scan
from sources.sample_db import SampleSpec
from sources.sqlite_reader import SourceDB
from tests.helpers import make_plan, sample_file
from validation.source_prints import read_prints

SPEC = SampleSpec(agents=40, workflows=20, sessions=12, kv=30, tenants=3, seed=5)


@pytest.fixture
def src(tmp_path) -> Path:
    path = tmp_path / "src" / "llmspell.db"
    sample_file(path, SPEC)
    return path


@pytest.fixture
def two_processes(monkeypatch):
    monkeypatch.setattr(source_scan, "PARALLEL_MIN", 0)


def test_execute_validates_from_both_halves(tmp_path, src, target_db, two_processes):
    plan = make_plan(tmp_path, src, target_db.dsn)
    result = api.execute(plan)
    assert result.status == "SUCCESS", result
    assert result.validation.passed
    prints = result.preflight.source_prints  # a file per process and tenant
    assert sorted(prints) == sorted(c.name for c in result.preflight.components)
    # they carry the sync baseline's source prints: the baseline scanned no source, and
    # a sync right after finds those prints unchanged (DuckDB prints the source alike)
    assert result.preflight.record_prints == set(prints)
    assert api.sync(plan).status == "NO_CHANGES"
    for name, files in prints.items():
        assert sorted(files) == sorted(result.preflight.component(name).per_tenant), name
        written = [Path(p).name for paths in files.values() for p in paths]
        for part in (0, 1):  # both processes wrote some, each tenant's in its own file
            assert any(n.startswith(f"{name}.{part}.") for n in written), files
        assert all(len(paths) <= 2 for paths in files.values()), files
    for c in result.validation.components:
        assert c.mode == "full" and c.compared == c.source_count, c


def test_bad_records_in_either_half_are_all_refused(tmp_path, src, target_db, two_processes):
    conn = sqlite3.connect(src)
    ids = [r[0] for r in conn.execute("SELECT agent_id FROM agent_states ORDER BY rowid")]
    conn.executemany(
        "UPDATE agent_states SET state_data = '{\"a\": NaN}' WHERE agent_id = ?",
        [(a,) for a in ids[:12]],
    )
    conn.commit()
    conn.close()
    plan = make_plan(tmp_path, src, target_db.dsn)
    with pytest.raises(PreflightError) as caught:
        api.execute(plan)
    assert "failed: 12 source record(s) cannot be stored" in caught.value.message
    listed = [d for d in caught.value.details if "state_data is not valid JSON" in d]
    assert len(listed) == 12, caught.value.details
    with SourceDB(src) as db:  # the bad records lie in both shares: each process found some
        comp = registry.get("agent_state")
        at = 1 + comp.column_names.index("agent_id")
        second = {r[at] for rows in db.iter_batches(comp, 50, None, (1, 2)) for r in rows}
    assert 0 < len(second & set(ids[:12])) < 12
    assert target_db.count("agent_states") == 0


def test_a_failing_child_is_replaced_by_this_process(tmp_path, src):
    """The child cannot open its source (a path that is no file): this process scans the
    child's half too, says so, and the result is the one-process scan's."""
    prints_one, prints_two = tmp_path / "one", tmp_path / "two"
    prints_one.mkdir(), prints_two.mkdir()
    warnings: list[str] = []
    with SourceDB(src) as db:
        comps = [
            source_scan.ComponentSpec(name, 7, 100.0)
            for name in ("agent_state", "workflow_state", "sessions", "kv_store")
        ]

        def spec(read_path, where):
            return source_scan.ScanSpec(read_path, comps, None, "llmspell", {}, {}, str(where))

        alone = source_scan.scan(db, spec(str(db.read_path), prints_one), _Quiet, False, print)
        broken = spec(str(tmp_path / "no-such-snapshot.db"), prints_two)
        _Quiet.counted = {}
        both = source_scan.scan(db, broken, _Quiet, True, warnings.append)
    assert len(warnings) == 1 and "the second pre-flight process stopped" in warnings[0]
    assert "no-such-snapshot.db" in warnings[0], warnings
    for name, one in alone.items():
        two = both[name]
        assert _Quiet.counted[name] == two.records, name  # progress counted each record once
        assert (two.records, two.bad_total) == (one.records, 0)
        assert sorted(two.prints) == sorted(one.prints)  # the same tenants, a file each
        for tenant, paths in two.prints.items():
            assert len(paths) <= 2 and len(one.prints[tenant]) == 1
            assert _sorted(read_prints(paths)).equals(_sorted(read_prints(one.prints[tenant])))


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([("tenant_id", "ascending"), ("nkey", "ascending")])


class _Quiet:
    """A progress counter that only adds up what it hears, per component."""

    counted: dict[str, int] = {}

    def __init__(self, name: str):
        self.name = name

    def advance(self, n: int) -> None:
        _Quiet.counted[self.name] = _Quiet.counted.get(self.name, 0) + n

    def finish(self) -> None:
        pass


def test_the_two_shares_are_disjoint_and_hold_every_record(src):
    """SQLite deals the records out by their key; an empty key is in a share too."""
    conn = sqlite3.connect(src)
    conn.execute("UPDATE kv_store SET key = '' WHERE rowid = (SELECT min(rowid) FROM kv_store)")
    conn.commit()
    conn.close()
    with SourceDB(src) as db:
        for name in ("agent_state", "sessions", "kv_store"):
            comp = registry.get(name)
            every = [row for rows in db.iter_batches(comp, 7) for row in rows]
            shares = [
                [row for rows in db.iter_batches(comp, 7, None, (k, 2)) for row in rows]
                for k in (0, 1)
            ]
            assert sorted(shares[0] + shares[1]) == sorted(every), name
            assert shares[0] and shares[1], name
            assert not set(shares[0]) & set(shares[1]), name
