"""The batch writer inside a caller's transaction, as `sync` uses it (every batch in one
transaction): each batch is written once. Its TEMP stage is emptied only by a commit, so
before the fix the second batch inserted the first again, and a sync writing more than
one batch (2,000 records) of a component always failed on a duplicate key."""

from __future__ import annotations

import pytest

from destinations.postgres_writer import LlmspellWriter
from sources.components import COMPONENTS
from sources.llmspell_source import rows_to_arrow
from sources.sqlite_reader import SourceDB


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
