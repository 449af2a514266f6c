"""`llmspell-migrate`, the console script, is `python -m pipelines.migrate`; the commands the
tool prints run as shown from a shell whose venv is not activated."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from core import settings
from pipelines import migrate

REPO = Path(__file__).resolve().parents[1]


def bare_env() -> dict[str, str]:
    """A shell without an activated venv (PYTHONPATH only to import this checkout)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = "/usr/bin:/bin"
    env["PYTHONPATH"] = str(REPO)
    return env


def test_console_script_is_the_module_entry_point():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = scripts["llmspell-migrate"].partition(":")
    assert (module, attr) == ("pipelines.migrate", "main")
    assert getattr(migrate, attr) is migrate.main


def test_installed_script_is_preferred(tmp_path, monkeypatch):
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").touch()
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    assert settings.cli_command() == "./venv/bin/python -m pipelines.migrate"
    script = bin_dir / "llmspell-migrate"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert settings.cli_command() == "./venv/bin/llmspell-migrate"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert settings.cli_command() == str(script)


def test_printed_next_steps_run_without_an_activated_venv(tmp_path, sample_sqlite, target_db):
    env = bare_env()
    plan = subprocess.run(
        [sys.executable, "-m", "pipelines.migrate", "plan", "--components", "kv_store"]
        + ["--source", str(sample_sqlite), "--target", target_db.dsn, "--output", "p.toml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert plan.returncode == 0, plan.stderr
    dry_run = next(ln for ln in plan.stdout.splitlines() if "2. Dry-run:" in ln)
    command = dry_run.split("Dry-run:", 1)[1].strip()
    proc = subprocess.run(
        ["/bin/sh", "-c", command],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, command + proc.stdout + proc.stderr
    assert "[DRY-RUN] Pre-flight validation passed" in proc.stdout
