"""Nothing left behind silently: `plan` and the final report name every non-empty llmspell
table a plan does not migrate; `--components all` plans every component holding data."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines import migrate
from sources.sample_db import SampleSpec
from tests.conftest import sample_file

SPEC = SampleSpec(agents=8, workflows=3, sessions=3, kv=4, tenants=2, seed=2, hooks=3)


@pytest.fixture
def src(tmp_path) -> Path:
    path = tmp_path / "llmspell.db"
    sample_file(path, SPEC)  # event_log and artifacts exist, empty: not worth a warning
    return path


def test_plan_and_report_name_what_is_left_behind(tmp_path, src, target_db, capsys):
    plan = tmp_path / "p.toml"
    argv = ["plan", "--components", "agent_state", "--source", str(src), "-o", str(plan)]
    assert migrate.run([*argv, "--target", target_db.dsn]) == 0
    out = capsys.readouterr().out
    assert "WARNING: kv_store: 4 records not in this plan" in out
    assert "WARNING: hooks: 3 records not in this plan" in out
    assert "events" not in out
    assert migrate.run(["execute", "--plan", str(plan)]) == 0
    out = capsys.readouterr().out
    report = out[out.index("Migration Report") :]
    assert "Not migrated (not in this plan):" in report
    assert "kv_store: 4 records not in this plan" in report
    assert "All data migrated successfully!" not in report


def test_components_all_plans_every_component_with_data(tmp_path, src, target_db, capsys):
    plan = tmp_path / "p.toml"
    argv = ["plan", "--components", "all", "--source", str(src), "-o", str(plan)]
    assert migrate.run([*argv, "--target", target_db.dsn]) == 0
    out = capsys.readouterr().out
    names = [c["name"] for c in yaml.safe_load(plan.read_text())["components"]]
    assert names == ["agent_state", "workflow_state", "sessions", "kv_store", "hooks"]
    assert "not in this plan" not in out


def test_api_keys_explains_there_is_nothing_in_sqlite(tmp_path, src, capsys):
    code = migrate.run(
        ["plan", "--components", "api_keys", "--source", str(src), "-o", str(tmp_path / "p")]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "keeps no API keys in SQLite" in err
    assert "not supported" not in err.lower()
