"""The batch writer inside a caller's transaction, as `sync` uses it (every batch in one
transaction): each batch is written once. Its TEMP stage is emptied only by a commit, so
before the fix the second batch inserted the first again, and a sync writing more than
one batch (2,000 records) of a component always failed on a duplicate key."""

from __future__ import annotations

import pyarrow as pa
import pytest

from core.model.registry import COMPONENTS
from destinations.postgres_writer import LlmspellWriter
from destinations.sync_ledger import write_prints
from sources.llmspell_source import rows_to_arrow
from sources.sqlite_reader import SourceDB
from tests.helpers import ALL_PRINTS


@pytest.mark.parametrize("app", [False, True], ids=["superuser", "llmspell_app"])
def test_batches_in_one_transaction_are_each_written_once(sample_sqlite, target_db, app):
    comp = COMPONENTS["kv_store"]
    with SourceDB(sample_sqlite, raw_text=True) as db:
        batches = [rows_to_arrow(comp, rows) for rows in db.iter_batches(comp, 7)][:3]
    total = sum(b.num_rows for b in batches)
    assert len(batches) == 3 and total == 21
    with target_db.connect(app=app) as conn:
        writer = LlmspellWriter(conn, "20260101-000000-writer", skip_existing=False)
        writer.statements(comp)
        with conn.transaction():
            written = sum(writer.write_batch(comp, batch) for batch in batches)
    assert written == total
    assert target_db.count("kv_store") == total


def test_prints_streamed_in_batches_are_all_recorded(sample_sqlite, target_db):
    """The sync baseline streams its prints a batch at a time: every batch is recorded, not
    only the last one."""
    comp = COMPONENTS["kv_store"]
    with SourceDB(sample_sqlite) as db:
        rows = [r for rows in db.iter_batches(comp, 7) for r in rows][:21]
    at = comp.column_names.index
    keys = [(r[at("tenant_id")], r[at("key")]) for r in rows]
    batches = (
        pa.table(
            {
                "tenant_id": [t for t, _ in keys[i : i + 7]],
                "nkey": [k for _, k in keys[i : i + 7]],
                "llmspell_key": [k for _, k in keys[i : i + 7]],
                "source_fp": pa.array(range(i, i + 7), pa.int64()),
            }
        )
        for i in range(0, 21, 7)
    )
    run_id = "20260101-000000-prints"
    with target_db.connect() as conn:
        with conn.transaction():
            written = write_prints(conn, run_id, comp, batches, bypass=True)
        recorded = conn.execute(
            "SELECT tenant_id, nkey FROM llmspell_migrate.record_prints WHERE run_id = %s",
            (run_id,),
        ).fetchall()
    assert written == 21
    assert sorted(recorded) == sorted(keys)


@pytest.mark.parametrize("app", [False, True], ids=["superuser", "llmspell_app"])
def test_execute_baseline_written_again_replaces_the_first(sample_sqlite, target_db, app):
    """An execute resumed after a crash between committing its baseline and completing
    writes the baseline again: the second write replaces the first (no duplicate key), for
    every tenant (under RLS each tenant's earlier prints are cleared on its own)."""
    comp = COMPONENTS["kv_store"]
    with SourceDB(sample_sqlite, raw_text=True) as db:
        rows = next(db.iter_batches(comp, 1000))
    run_id = "20260101-000000-baseline"
    with target_db.connect(app=app) as conn:
        writer = LlmspellWriter(conn, run_id, skip_existing=False)
        writer.write_batch(comp, rows_to_arrow(comp, rows))
    at = 1 + comp.column_names.index("tenant_id"), 1 + comp.column_names.index("key")
    keys = [(r[at[0]].decode(), r[at[1]].decode()) for r in rows]
    assert len({t for t, _ in keys}) > 1
    prints = pa.table(
        {
            "tenant_id": [t for t, _ in keys],
            "nkey": [k for _, k in keys],
            "llmspell_key": [k for _, k in keys],
            "source_fp": pa.array(range(len(keys)), pa.int64()),
        }
    )
    with target_db.connect(app=app) as conn:
        for _ in range(2):
            with conn.transaction():
                written = write_prints(conn, run_id, comp, prints, not app, ledger_only=True)
            assert written == len(keys)
    with target_db.connect() as conn:
        recorded = conn.execute(
            f"SELECT tenant_id, nkey FROM {ALL_PRINTS} WHERE run_id = %s",
            (run_id,),
        ).fetchall()
    assert sorted(recorded) == sorted(keys)


@pytest.mark.parametrize("app", [False, True], ids=["superuser", "llmspell_app"])
def test_compact_baseline_splits_tenants_into_key_ordered_batches(
    sample_sqlite, target_db, app, monkeypatch
):
    """An execute's baseline is a row per tenant and batch of keys (PRINT_BATCH of them, in
    key order), written either way (the server printing the rows, or the prints given):
    both give the same baseline, which `baseline` reads back whole."""
    from destinations import run_ledger, sync_ledger

    monkeypatch.setattr(sync_ledger, "PRINT_BATCH", 7)
    comp = COMPONENTS["kv_store"]
    with SourceDB(sample_sqlite, raw_text=True) as db:
        rows = next(db.iter_batches(comp, 1000))
    run_id = "20260101-000000-compact"
    with target_db.connect(app=app) as conn:
        writer = LlmspellWriter(conn, run_id, skip_existing=False)
        writer.write_batch(comp, rows_to_arrow(comp, rows))
    at = 1 + comp.column_names.index("tenant_id"), 1 + comp.column_names.index("key")
    keys = [(r[at[0]].decode(), r[at[1]].decode()) for r in rows]
    tenants = sorted({t for t, _ in keys})
    prints = pa.table(
        {
            "tenant_id": [t for t, _ in keys],
            "nkey": [k for _, k in keys],
            "llmspell_key": [k for _, k in keys],
            "source_fp": pa.array(range(len(keys)), pa.int64()),
        }
    )
    batch_rows = (
        "SELECT tenant_id, batch, nkeys FROM llmspell_migrate.print_batches "
        "WHERE run_id = %s ORDER BY 1, 2"
    )
    seen = []
    with target_db.connect() as conn:  # the run completed: its prints are the baseline
        run_ledger.start_run(conn, run_id, "fp-compact", [comp.name], "src", None, tenants)
        conn.execute(
            "UPDATE llmspell_migrate.runs SET status = %s WHERE run_id = %s",
            (run_ledger.COMPLETED, run_id),
        )
    for given in (False, True):
        with target_db.connect(app=app) as conn:
            with conn.transaction():
                if given:  # the target prints as validation hands them over
                    base = seen[0][1]
                    written = sync_ledger.write_print_batches(conn, run_id, comp, base, not app)
                else:
                    written = sync_ledger.write_prints(
                        conn, run_id, comp, prints, not app, ledger_only=True
                    )
            assert written == len(keys)
            baseline = sync_ledger.baseline(conn, comp, tenants, None, not app)
        with target_db.connect() as conn:
            stored = conn.execute(batch_rows, (run_id,)).fetchall()
        for tenant in tenants:
            mine = [k for t, _, ks in stored if t == tenant for k in ks]
            assert mine == sorted(k for t, k in keys if t == tenant)
            assert [b for t, b, _ in stored if t == tenant] == list(range(-(-len(mine) // 7)))
        assert all(1 <= len(ks) <= 7 for _, _, ks in stored) and len(stored) > len(tenants)
        seen.append((stored, baseline.sort_by([("tenant_id", "ascending"), ("nkey", "ascending")])))
    assert seen[0][0] == seen[1][0]
    assert seen[0][1].equals(seen[1][1]) and seen[0][1].num_rows == len(keys)
