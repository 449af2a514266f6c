"""Dagster: the fleet asset materialized for two partitions in process, against a real
PostgreSQL (skipped when dagster is not installed: `pip install -e '.[dagster]'`)."""

from __future__ import annotations

import importlib

import pytest

dg = pytest.importorskip("dagster")

from tests.helpers import FLEET_MAPS as MAPS  # noqa: E402
from tests.helpers import as_llmspell  # noqa: E402
from tests.helpers import fleet_manifest as manifest  # noqa: E402
from tests.helpers import three_installations as three  # noqa: E402


def test_two_partitions_materialize_in_process(tmp_path, target_db, monkeypatch):
    srcs = three(tmp_path)
    m = manifest(
        tmp_path, target_db.dsn, {n: {"source": str(p), **MAPS[n]} for n, p in srcs.items()}
    )
    monkeypatch.setenv("LLMSPELL_MIGRATE_FLEET", str(m))
    from pipelines import dagster_defs

    defs_mod = importlib.reload(dagster_defs)  # partitions come from the manifest
    assert defs_mod.installations.get_partition_keys() == ["team-a", "team-b", "team-c"]
    assert defs_mod.defs.get_job_def("llmspell_sync_job") is not None
    instance = dg.DagsterInstance.ephemeral()
    for name in ("team-a", "team-b"):
        result = dg.materialize(
            [defs_mod.llmspell_installation], partition_key=name, instance=instance
        )
        assert result.success
        (mat,) = result.asset_materializations_for_node("llmspell_installation")
        meta = {k: v.value for k, v in mat.metadata.items()}
        assert meta["status"] == "migrated" and meta["validation"] == "PASSED"
        assert meta["records"]["agent_state"] == 4 and meta["duration_s"] > 0
        assert meta["backup_path"].startswith(str(tmp_path))
        assert "password" not in str(meta)
    rows = as_llmspell(target_db, "team-b-default", "SELECT count(*) FROM llmspell.agent_states")
    assert rows == [(2,)]
    assert as_llmspell(target_db, "team-c", "SELECT count(*) FROM llmspell.agent_states") == [(0,)]
    # materialized again: already migrated, nothing run
    again = dg.materialize(
        [defs_mod.llmspell_installation], partition_key="team-a", instance=instance
    )
    (mat,) = again.asset_materializations_for_node("llmspell_installation")
    assert mat.metadata["skipped"].value == "already migrated"
    # the sync job runs in process too
    assert defs_mod.llmspell_sync_job.execute_in_process(instance=instance).success


def test_a_validation_failure_is_not_retried(tmp_path, target_db, monkeypatch):
    """A real mismatch (a target that alters one value on insert) fails the materialization
    once: one run, rolled back, no retry."""
    m = manifest(tmp_path, target_db.dsn, {"team-a": {"source": str(three(tmp_path)["team-a"])}})
    monkeypatch.setenv("LLMSPELL_MIGRATE_FLEET", str(m))
    with target_db.connect(autocommit=True) as conn:
        conn.execute("""
            CREATE FUNCTION llmspell.test_tamper() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN NEW.agent_type := NEW.agent_type || '!'; RETURN NEW; END $$;
            CREATE TRIGGER test_tamper BEFORE INSERT ON llmspell.agent_states
                FOR EACH ROW EXECUTE FUNCTION llmspell.test_tamper();""")
    from pipelines import dagster_defs

    defs_mod = importlib.reload(dagster_defs)
    result = dg.materialize(
        [defs_mod.llmspell_installation], partition_key="team-a", raise_on_error=False,
        instance=dg.DagsterInstance.ephemeral(),
    )  # fmt: skip
    assert not result.success
    with target_db.connect() as conn:
        runs = conn.execute("SELECT status FROM llmspell_migrate.runs").fetchall()
        assert runs == [("rolled_back",)]  # one attempt, undone: no retry
        assert conn.execute("SELECT count(*) FROM llmspell.agent_states").fetchone()[0] == 0
