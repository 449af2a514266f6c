"""Where llmspell-migrate keeps its own state, and process-wide settings applied at import.

Everything lives under one folder, `.llmspell-migrate/` in the working directory unless
LLMSPELL_MIGRATE_HOME says otherwise: the embedded PostgreSQL's data and dlt's pipeline
working folder (so `dlt pipeline --pipelines-dir .llmspell-migrate/dlt llmspell_migrate info`
finds the last run).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

# dlt telemetry stays off even when the tool runs outside the project folder (cron, notebooks),
# where .dlt/config.toml is not found.
os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
# dlt's own log lines would repeat our errors with a traceback (e.g. a "terminal exception"
# for the batch a Ctrl-C stopped); every failure reaches the user as our one-line error, and
# `dlt pipeline ... trace` keeps dlt's full account.
os.environ.setdefault("RUNTIME__LOG_LEVEL", "CRITICAL")

PIPELINE_NAME = "llmspell_migrate"
DATASET_NAME = "llmspell"


def home() -> Path:
    return Path(os.environ.get("LLMSPELL_MIGRATE_HOME", ".llmspell-migrate")).resolve()


def pipelines_dir() -> Path:
    return home() / "dlt"


def default_backup_root() -> Path:
    return Path("backups").resolve()


SCRIPT = "llmspell-migrate"


def cli_command() -> str:
    """How to run this tool again from a shell without an activated venv: the
    `llmspell-migrate` script beside this interpreter when it is installed, else this
    interpreter with `-m pipelines.migrate`; relative to the working folder when inside it."""
    interpreter = Path(sys.executable)
    script = interpreter.with_name(SCRIPT)
    if script.is_file() and os.access(script, os.X_OK):
        return shlex.quote(shown_path(script))
    return f"{shlex.quote(shown_path(interpreter))} -m pipelines.migrate"


def shown_path(path: Path) -> str:
    """`path` as a user would type it: relative (./...) inside the working folder."""
    try:
        rel = path.absolute().relative_to(Path.cwd())
    except ValueError:
        return str(path.absolute())
    return str(rel) if rel.parts[0].startswith(".") else f"./{rel}"
