"""Dagster: the fleet asset materialized for two partitions in process, against a real
PostgreSQL (skipped when dagster is not installed: `pip install -e '.[dagster]'`)."""

from __future__ import annotations

import importlib

import pytest

dg = pytest.importorskip("dagster")

from tests.test_fleet import MAPS, as_llmspell, manifest, three  # noqa: E402


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
    from pipelines.fleet import Outcome

    monkeypatch.setenv(
        "LLMSPELL_MIGRATE_FLEET",
        str(
            manifest(
                tmp_path, target_db.dsn, {"team-a": {"source": str(three(tmp_path)["team-a"])}}
            )
        ),
    )
    from pipelines import dagster_defs

    defs_mod = importlib.reload(dagster_defs)
    calls = []

    class FakeFleet:  # only the outcome is stood in for; the asset's decision is what is tested
        def __init__(self, transient):
            self.transient = transient

        def execute(self, parallel, only):
            calls.append(only)
            o = Outcome(only[0], status="failed", error="validation: 1 record differs")
            o.transient = self.transient

            class R:
                outcomes = [o]

            return R()

    monkeypatch.setattr(defs_mod, "fleet", lambda: FakeFleet(False))
    result = dg.materialize(
        [defs_mod.llmspell_installation], partition_key="team-a", raise_on_error=False
    )
    assert not result.success and len(calls) == 1
