"""`prune --keep N` over every kind of backup the tool writes: execute's `migration-*` and
sync's `sync-*` (pre-images of PostgreSQL rows), counted together, oldest first."""

from __future__ import annotations

import json
import sqlite3

from pipelines import api, migrate
from tests.helpers import make_plan


def _delete_one(src, table: str) -> None:
    with sqlite3.connect(src) as conn:  # llmspell deletes a record after the migration
        conn.execute(f"DELETE FROM {table} WHERE rowid = (SELECT min(rowid) FROM {table})")


def test_prune_deletes_execute_and_sync_backups_oldest_first(
    tmp_path, sample_sqlite, target_db, capsys
):
    plan = make_plan(tmp_path, sample_sqlite, target_db.dsn)
    executed = api.execute(plan)
    assert executed.status == "SUCCESS"
    syncs = []
    for table in ("kv_store", "agent_states"):
        _delete_one(sample_sqlite, table)
        done = api.sync(plan)
        assert done.status == "SUCCESS" and done.backup_path, done
        syncs.append(done)
    backups = tmp_path / "backups"
    (backups / "sync-notes").mkdir()  # not a backup (no metadata): never touched
    (backups / ".partial-sync-20990101-000000-abcdef").mkdir()  # one being written
    names = sorted(p.name for p in backups.iterdir() if p.name.startswith(("migration-", "sync-")))
    assert len(names) == 4, names
    capsys.readouterr()

    assert migrate.run(["prune", "--keep", "2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["backups_kept"] == 2
    assert [b["kind"] for b in doc["backups"]] == ["execute"]
    assert doc["backups"][0]["run_id"] == executed.run_id
    assert doc["backups_deleted"] == [doc["backups"][0]["path"]]
    assert not list(backups.glob("migration-*"))

    assert migrate.run(["prune", "--keep", "0"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("Deleted sync backup")]
    assert len(lines) == 2, out  # oldest first, each with its run
    assert syncs[0].run_id in lines[0] and syncs[1].run_id in lines[1]
    assert "Kept 0 backup(s)" in out
    left = sorted(p.name for p in backups.iterdir())
    assert left == [".partial-sync-20990101-000000-abcdef", "sync-notes"]
    # the syncs are still undone from the ledger, newest first, without their backups
    assert api.rollback(run_id=syncs[1].run_id, target=target_db.dsn).status == "rolled_back"
