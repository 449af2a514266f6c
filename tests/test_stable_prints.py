"""The prints `sync` stores are the project's own (MD5 / SHA-256 of canonical text), not an
engine's internal hash: recomputed here in plain Python from the SQLite rows, they match what
PostgreSQL holds. A baseline recorded before (no print scheme) is refused, never misread."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from core.errors import PreflightError
from core.model.components import KV_STORE
from pipelines import api
from validation.compare import fingerprint


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
                "SELECT tenant_id, nkey, source_fp, target_fp FROM llmspell_migrate.record_prints "
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
