"""Where llmspell-migrate keeps its own state, and process-wide settings applied at import.

Everything lives under one folder, `.llmspell-migrate/` in the working directory unless
LLMSPELL_MIGRATE_HOME says otherwise: the embedded PostgreSQL's data and dlt's pipeline
working folder (so `dlt pipeline --pipelines-dir .llmspell-migrate/dlt llmspell_migrate info`
finds the last run).
"""

from __future__ import annotations

import os
from pathlib import Path

# dlt telemetry stays off even when the tool runs outside the project folder (cron, notebooks),
# where .dlt/config.toml is not found.
os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")

PIPELINE_NAME = "llmspell_migrate"
DATASET_NAME = "llmspell"


def home() -> Path:
    return Path(os.environ.get("LLMSPELL_MIGRATE_HOME", ".llmspell-migrate")).resolve()


def pipelines_dir() -> Path:
    return home() / "dlt"


def default_backup_root() -> Path:
    return Path("backups").resolve()
