"""The commands the docs tell users to type, run as typed, so they cannot rot.

README's quick start is read from README.md itself (the bash block under "## Quick start"),
and each command line is run through subprocess with this venv's Python, against a generated
sample database and the test PostgreSQL (given as LLMSPELL_MIGRATE_TARGET). The scheduled-run
contract in docs/scheduling.md (`--json` on stdout, progress on stderr, exit codes 0/3) and
the dlt CLI commands of README are checked the same way.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg

from destinations.run_ledger import LOCK_KEY
from tests.helpers import cli, cli_env

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDE_SOURCE = "~/.local/share/llmspell/llmspell.db"


def quick_start_commands() -> list[str]:
    """The command lines of README's quick-start block, continuation lines joined."""
    return block_commands(README, "## Quick start")


def block_commands(doc: Path, heading: str) -> list[str]:
    """The command lines of the first bash block under `heading`, continuation lines joined."""
    text = doc.read_text(encoding="utf-8")
    section = text.split(heading, 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, f"{doc.name} has no bash block under {heading!r}"
    joined = block.group(1).replace("\\\n", " ")
    return [
        line.strip()
        for line in joined.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def _env(target_dsn: str) -> dict[str, str]:
    # the test's own LLMSPELL_MIGRATE_HOME; the project importable, as if typed in its folder
    return cli_env(LLMSPELL_MIGRATE_TARGET=target_dsn)


def run_line(line: str, cwd: Path, env: dict[str, str], source: Path):
    """Run one documented command line: `.venv/bin/python` is this interpreter, the guide's
    default source path is the sample database."""
    argv = shlex.split(line)
    if argv[0] == ".venv/bin/python":
        argv[0] = sys.executable
    elif argv[0] == "cat":
        argv[0] = shutil.which("cat") or "cat"
    argv = [str(source) if a == GUIDE_SOURCE else a for a in argv]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_readme_quick_start(tmp_path, sample_sqlite, target_db):
    """As a new user types it: no --source, the tool finds llmspell's default database."""
    lines = quick_start_commands()
    assert len(lines) == 4, lines
    assert lines[0].startswith(".venv/bin/python -m pipelines.migrate plan ")
    assert "--source" not in lines[0]
    home = tmp_path / "home"
    default = home / ".llmspell" / "data" / "llmspell.db"
    default.parent.mkdir(parents=True)
    shutil.copyfile(sample_sqlite, default)
    env = {**_env(target_db.dsn), "HOME": str(home)}
    env.pop("XDG_CONFIG_HOME", None)
    outputs = []
    for line in lines:
        proc = run_line(line, tmp_path, env, sample_sqlite)
        assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"
        outputs.append(proc.stdout)
    plan_out, cat_out, dry_out, exec_out = outputs
    assert 'Migration plan generated: "migration.toml"' in plan_out
    assert f"Source file: {default}" in plan_out
    assert "agent_state: 120 records" in plan_out
    assert "found_by: " in cat_out and "name: sessions" in cat_out
    assert "[DRY-RUN] Pre-flight validation passed" in dry_out
    assert "Status: SUCCESS" in exec_out
    assert target_db.count("agent_states") == 120
    assert target_db.count("workflow_states") == 40
    assert target_db.count("sessions") == 50
    assert target_db.count("kv_store") == 60  # --components all: every store holding records


def _plan(tmp_path, sample_sqlite, env) -> Path:
    plan = tmp_path / "migration.toml"
    proc = cli(tmp_path, "plan", "--source", sample_sqlite, "--components",
               "agent_state,sessions", "--output", plan, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return plan


def _scheduled_run(tmp_path, plan, env) -> subprocess.CompletedProcess:
    """The line docs/scheduling.md puts in cron/systemd: JSON report on stdout."""
    return cli(tmp_path, "execute", "--plan", plan, "--json", env=env)


def test_scheduled_run_json_report_and_exit_codes(tmp_path, sample_sqlite, target_db):
    env = _env(target_db.dsn)
    plan = _plan(tmp_path, sample_sqlite, env)

    # Another run holds the target's advisory lock: exit 3, nothing written, JSON says why.
    with psycopg.connect(target_db.dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        busy = _scheduled_run(tmp_path, plan, env)
    assert busy.returncode == 3, busy.stderr
    report = json.loads(busy.stdout)
    assert report["status"] == "FAILED"
    assert report["error"]["error"] == "LockBusy"
    assert target_db.count("agent_states") == 0

    ok = _scheduled_run(tmp_path, plan, env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = json.loads(ok.stdout)  # stdout is the report alone; progress went to stderr
    assert report["status"] == "SUCCESS"
    assert report["validation"]["passed"] is True
    assert report["source_records"] == report["target_records"] == 170
    assert "Migration starting..." in ok.stderr
    assert target_db.count("agent_states") == 120

    # The next scheduled run finds everything migrated: still exit 0, nothing new written.
    again = _scheduled_run(tmp_path, plan, env)
    assert again.returncode == 0, again.stdout + again.stderr
    report = json.loads(again.stdout)
    assert sum(report["written"].values()) == 0
    assert target_db.count("agent_states") == 120


def test_readme_dlt_cli_commands(tmp_path, sample_sqlite, target_db):
    env = _env(target_db.dsn)
    plan = _plan(tmp_path, sample_sqlite, env)
    assert _scheduled_run(tmp_path, plan, env).returncode == 0
    dlt_cli = Path(sys.executable).with_name("dlt")
    pipelines_dir = Path(os.environ["LLMSPELL_MIGRATE_HOME"]) / "dlt"
    for command in ("info", "trace", "load-package"):
        proc = subprocess.run(
            [str(dlt_cli), "pipeline", "--pipelines-dir", str(pipelines_dir)]
            + ["llmspell_migrate", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        assert "Found pipeline llmspell_migrate" in out, out
        assert "not registered" not in out, out


def test_cutover_procedure(tmp_path, sample_sqlite, target_db):
    """docs/cutover.md as typed, with llmspell writing to the source between the steps."""
    lines = block_commands(ROOT / "docs" / "cutover.md", "## The procedure")
    assert [shlex.split(line)[3] for line in lines] == [
        "plan",
        "execute",
        "sync",
        "sync",
        "sync",
        "verify",
    ]
    env = _env(target_db.dsn)
    agent = "SELECT agent_id FROM agent_states ORDER BY rowid LIMIT 1"
    writes = {  # what llmspell writes before each step (by the step's index)
        2: f"UPDATE agent_states SET state_data = '{{\"v\": 2}}' WHERE agent_id = ({agent})",
        4: "DELETE FROM sessions WHERE rowid = (SELECT max(rowid) FROM sessions)",
    }
    outputs = []
    for i, line in enumerate(lines):
        if i in writes:
            with sqlite3.connect(sample_sqlite) as conn:
                conn.execute(writes[i])
        proc = run_line(line, tmp_path, env, sample_sqlite)
        assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"
        outputs.append(proc.stdout)
    assert "agent_state: 0 inserted, 1 updated, 0 deleted" in outputs[2]  # the dry run
    assert "[DRY-RUN]" in outputs[2]
    assert "agent_state: 0 inserted, 1 updated, 0 deleted" in outputs[3]
    assert "sessions: 0 inserted, 0 updated, 1 deleted" in outputs[4]
    assert "Verification: PASSED" in outputs[5]
    assert target_db.count("sessions") == 49
