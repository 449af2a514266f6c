"""The prints `sync` stores are the project's own (MD5 / SHA-256 of canonical text), not an
engine's internal hash: recomputed here in plain Python from the SQLite rows, they match what
PostgreSQL holds. A baseline recorded before (no print scheme) is refused, never misread."""

from __future__ import annotations

import hashlib
import re
import sqlite3

import pytest

from core.errors import PreflightError
from core.model.components import KV_STORE
from pipelines import api
from tests.helpers import ALL_PRINTS
from validation.source_prints import fingerprint


def _signed(digest: bytes) -> int:
    return int.from_bytes(digest[:8], "big", signed=True)


def _source_print(values: tuple) -> int:
    """sync_baseline's source print, by its definition: MD5 over the columns' texts."""
    texts = []
    for v in values:
        if v is None:
            texts.append("\x01")
        elif isinstance(v, bytes):
            texts.append(v.hex().upper())
        else:
            texts.append(str(v))
    return _signed(hashlib.md5("\x1f".join(texts).encode("utf-8")).digest())


@pytest.fixture
def executed(tmp_path, sample_sqlite, target_db):
    plan = tmp_path / "p.toml"
    api.make_plan("kv_store", output=plan, source=sample_sqlite, target=target_db.dsn)
    assert api.execute(plan).status == "SUCCESS"
    return plan


def test_stored_prints_are_the_projects_own(executed, sample_sqlite, target_db):
    cols = KV_STORE.column_names
    src = sqlite3.connect(sample_sqlite)
    rows = src.execute(f"SELECT {', '.join(cols)} FROM kv_store").fetchall()
    src.close()
    with target_db.connect() as conn:
        stored = {
            (t, k): (s, g)
            for t, k, s, g in conn.execute(
                f"SELECT tenant_id, nkey, source_fp, target_fp FROM {ALL_PRINTS} "
                "WHERE component = 'kv_store'"
            )
        }
    assert len(stored) == len(rows) == 60
    t_at, k_at = cols.index("tenant_id"), cols.index("key")
    for row in rows:
        source_fp, target_fp = stored[(row[t_at], row[k_at])]
        assert source_fp == _source_print(row), row[k_at]
        # the target print: validation's SHA-256 of the canonical text, from the source values
        texts = [c.source_text(v) for c, v in zip(KV_STORE.columns, row)]
        assert target_fp == _signed(fingerprint(texts)), row[k_at]
    with target_db.connect() as conn:
        (scheme,) = conn.execute(
            "SELECT DISTINCT print_scheme FROM llmspell_migrate.runs"
        ).fetchone()
    assert scheme


def test_a_baseline_from_before_is_refused_not_misread(executed, sample_sqlite, target_db):
    with target_db.connect() as conn:  # the bookkeeping as the previous version left it
        conn.execute("ALTER TABLE llmspell_migrate.runs DROP COLUMN print_scheme")
    with sqlite3.connect(sample_sqlite) as src:
        src.execute("UPDATE kv_store SET metadata = '{\"x\": 1}' WHERE rowid = 1")
    before = target_db.snapshot()
    with pytest.raises(PreflightError) as err:
        api.sync(executed, dry_run=True)
    assert "earlier llmspell-migrate" in err.value.message
    with pytest.raises(PreflightError) as err:
        api.sync(executed)
    assert "earlier llmspell-migrate" in err.value.message and "execute" in err.value.hint
    assert target_db.snapshot() == before
    with target_db.connect() as conn:  # the column is back; the old run is marked as such
        assert conn.execute("SELECT print_scheme FROM llmspell_migrate.runs").fetchall() == [
            (None,)
        ]


def test_sync_after_this_version_executes_still_works(executed, sample_sqlite, target_db):
    with sqlite3.connect(sample_sqlite) as src:
        src.execute("UPDATE kv_store SET metadata = '{\"x\": 1}' WHERE rowid = 1")
    done = api.sync(executed)
    assert done.status == "SUCCESS" and done.changes["kv_store"]["updated"] == 1
    assert api.sync(executed).status == "NO_CHANGES"


def _baseline(target_db, run_id=None):
    with target_db.connect() as conn:
        where = "" if run_id is None else " WHERE run_id = %s"
        return sorted(
            conn.execute(
                f"SELECT component, tenant_id, nkey, source_fp, target_fp FROM {ALL_PRINTS}"
                + where,
                () if run_id is None else (run_id,),
            ).fetchall()
        )


@pytest.mark.parametrize("full", [True, False], ids=["full", "sampled"])
def test_execute_baseline_is_compact_and_takes_validations_target_prints(
    tmp_path, sample_sqlite, target_db, monkeypatch, full
):
    """The baseline's target prints are the ones validation's comparison fetched (the
    server prints no row for it; comparing a sample, the comparison still fetches every
    row's print), stored a row per batch of keys, and equal to what the server computes
    for the same rows."""
    from destinations import connection, sync_ledger
    from pipelines.shared.plan import load as load_plan
    from pipelines.stages import sync_baseline
    from sources.key_routing import classify_db, mappers
    from sources.sqlite_reader import SourceDB

    server_printed: list[str] = []
    write_prints = sync_ledger.write_prints

    def spy(conn, run_id, comp, *args, **kw):
        server_printed.append(comp.name)
        return write_prints(conn, run_id, comp, *args, **kw)

    monkeypatch.setattr(sync_baseline.sync_ledger, "write_prints", spy)
    plan_path = tmp_path / "p.toml"
    names = "agent_state,workflow_state,sessions,kv_store"
    api.make_plan(names, output=plan_path, source=sample_sqlite, target=target_db.dsn)
    if full:
        text = plan_path.read_text()  # full comparison: validation prints every stored row
        plan_path.write_text(
            re.sub(r"checksum_sample_percent: \S+", "checksum_sample_percent: 100", text)
        )
    done = api.execute(plan_path)
    run_id = done.run_id
    modes = {c.component: c.mode for c in done.validation.components}
    assert (modes["agent_state"] == "sample") is not full, modes
    assert server_printed == []  # every component's target prints came from validation
    shared = _baseline(target_db, run_id)
    with target_db.connect() as conn:
        rows, records, keys = conn.execute(
            "SELECT count(*), sum(cardinality(nkeys)), "
            "(SELECT sum(cardinality(natural_keys)) FROM llmspell_migrate.written_keys) "
            "FROM llmspell_migrate.print_batches WHERE run_id = %s",
            (run_id,),
        ).fetchone()
        (per_key,) = conn.execute("SELECT count(*) FROM llmspell_migrate.record_prints").fetchone()
        tenants = conn.execute(
            "SELECT count(DISTINCT (component, tenant_id)) FROM llmspell_migrate.written_keys"
        ).fetchone()[0]
    assert records == keys == len(shared) > 0 and per_key == 0
    assert rows == tenants  # small components: one batch per component and tenant
    # the same baseline, taken the other way: the server prints the rows (as for a sample)
    with target_db.connect() as conn:
        conn.execute("DELETE FROM llmspell_migrate.print_batches WHERE run_id = %s", (run_id,))
    plan = load_plan(plan_path)
    comps = [cp.component for cp in plan.components]
    with SourceDB(sample_sqlite) as db:
        reach = classify_db(db, comps, None, plan.key_layout)
        routes = mappers(comps, plan.key_layout, {n: r.keep_verbatim for n, r in reach.items()})
        recorder = sync_baseline.BaselineRecorder(
            str(db.read_path), connection.resolve(target_db.dsn), True, comps, None, routes, run_id
        )
        assert recorder.commit() == len(shared)
    assert sorted(server_printed) == sorted(c.name for c in comps)
    assert _baseline(target_db, run_id) == shared


def test_sync_reads_a_baseline_stored_before_print_batches(executed, sample_sqlite, target_db):
    """A bookkeeping schema from before `print_batches` (every baseline a row per key in
    `record_prints`) still serves sync, dry-run included; the next sync adds the table."""
    with target_db.connect() as conn:
        conn.execute(
            "INSERT INTO llmspell_migrate.record_prints SELECT b.run_id, b.component, "
            "b.tenant_id, u.* FROM llmspell_migrate.print_batches b, unnest(b.nkeys, "
            "b.llmspell_keys, b.source_fps, b.target_fps) u"
        )
        conn.execute("DROP TABLE llmspell_migrate.print_batches")
    with sqlite3.connect(sample_sqlite) as src:
        src.execute("UPDATE kv_store SET metadata = '{\"x\": 2}' WHERE rowid = 2")
    found = api.sync(executed, dry_run=True)
    assert found.changes["kv_store"]["updated"] == 1, found.changes
    done = api.sync(executed)
    assert done.status == "SUCCESS" and done.changes["kv_store"]["updated"] == 1
    assert api.sync(executed).status == "NO_CHANGES"
