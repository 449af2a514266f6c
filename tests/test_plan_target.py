"""A plan remembers the target it was made for (target.identity: host, port, database, or
the embedded server's data folder; never a user or password), and execute, verify and sync
refuse (exit 2, nothing written, no server started) when the target resolves elsewhere now:
another folder without the .dlt/secrets.toml the plan was made with, or a changed one."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.helpers import SMALL, cli, sample_file


def secrets(folder: Path, dsn: str) -> None:
    (folder / ".dlt").mkdir(parents=True, exist_ok=True)
    (folder / ".dlt" / "secrets.toml").write_text(f'[llmspell_migrate.target]\ndsn = "{dsn}"\n')


def test_plan_made_for_secrets_target_is_refused_elsewhere(tmp_path, target_db, other_target_db):
    made, elsewhere = tmp_path / "made", tmp_path / "elsewhere"
    made.mkdir()
    elsewhere.mkdir()
    src = tmp_path / "llmspell.db"
    sample_file(src, SMALL)
    secrets(made, target_db.dsn)
    plan = tmp_path / "plan.yaml"
    done = cli(made, "plan", "--components", "agent_state", "--source", str(src), "-o", str(plan))
    assert done.returncode == 0, done.stdout + done.stderr
    doc = yaml.safe_load(plan.read_text())
    assert "connection" not in doc["target"]  # the DSN came from secrets.toml
    identity = doc["target"]["identity"]
    assert identity["database"] == target_db.name and "user" not in identity
    assert "password" not in plan.read_text()

    ok = cli(made, "execute", "--plan", str(plan), "--dry-run")
    assert ok.returncode == 0, ok.stdout + ok.stderr

    # From a folder without the secrets: it would have started an embedded server.
    for argv in (
        ["execute", "--plan", str(plan), "--dry-run"],
        ["execute", "--plan", str(plan)],
        ["verify", "--plan", str(plan)],
        ["sync", "--plan", str(plan), "--dry-run"],
    ):
        refused = cli(elsewhere, *argv)
        assert refused.returncode == 2, (argv, refused.stdout + refused.stderr)
        assert f"was made for database {target_db.name}" in refused.stderr
        assert "embedded PostgreSQL" in refused.stderr and "--target" in refused.stderr
        assert "Ready for actual migration" not in refused.stdout
    home = tmp_path / ".llmspell-migrate"  # LLMSPELL_MIGRATE_HOME (conftest)
    assert not (home / "postgres").exists()  # no server was started

    # secrets.toml now names another database: refused as well
    secrets(made, other_target_db.dsn)
    refused = cli(made, "execute", "--plan", str(plan), "--dry-run")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"now resolves to database {other_target_db.name}" in refused.stderr

    # naming the target explicitly is the override
    chosen = cli(elsewhere, "execute", "--plan", str(plan), "--dry-run", "--target", target_db.dsn)
    assert chosen.returncode == 0, chosen.stdout + chosen.stderr
    assert other_target_db.count("agent_states") == 0 and target_db.count("agent_states") == 0


def test_plan_without_identity_still_works_and_a_bad_one_is_refused(tmp_path, target_db):
    src = tmp_path / "llmspell.db"
    sample_file(src, SMALL)
    plan = tmp_path / "plan.yaml"
    done = cli(tmp_path, "plan", "--components", "agent_state", "--source", str(src),
               "--target", target_db.dsn, "-o", str(plan))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    doc = yaml.safe_load(plan.read_text())
    del doc["target"]["identity"]  # a plan written before the field existed
    plan.write_text(yaml.safe_dump(doc, sort_keys=False))
    ok = cli(tmp_path, "execute", "--plan", str(plan), "--dry-run")
    assert ok.returncode == 0, ok.stdout + ok.stderr

    doc["target"]["identity"] = {"hostname": "db"}
    plan.write_text(yaml.safe_dump(doc, sort_keys=False))
    bad = cli(tmp_path, "execute", "--plan", str(plan), "--dry-run")
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert "target.identity" in bad.stderr
