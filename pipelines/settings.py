"""Where llmspell-migrate keeps its own state, and process-wide settings applied at import.

Everything lives under one folder, `.llmspell-migrate/` in the working directory unless
LLMSPELL_MIGRATE_HOME says otherwise: the embedded PostgreSQL's data and dlt's pipeline
working folder (so `dlt pipeline --pipelines-dir .llmspell-migrate/dlt llmspell_migrate info`
finds the last run).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import tempfile
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


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) readable by its owner only, whatever the umask:
    everything we keep under it holds llmspell's records in clear."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def make_private(root: Path) -> None:
    """Folders 0700 and files 0600 under `root` (files other tools wrote: DuckDB, dlt).
    Hard links are skipped: a snapshot linked to the source shares its inode, and the
    source's mode is not ours to change."""
    if not root.exists():
        return
    os.chmod(root, 0o700)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o700)
        for name in files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            if st.st_nlink == 1 and not os.path.islink(path):
                os.chmod(path, 0o600)


def home() -> Path:
    return Path(os.environ.get("LLMSPELL_MIGRATE_HOME", ".llmspell-migrate")).resolve()


def pipelines_dir() -> Path:
    return home() / "dlt"


def default_backup_root() -> Path:
    return Path("backups").resolve()


_SCRATCH = re.compile(r"^llmspell-migrate-[a-z]+-(\d+)-")


def scratch_dir(kind: str) -> Path:
    """A private temporary folder named after this process, so a later run can tell it
    from a live one and remove it if a crash (kill -9) left it behind."""
    sweep_stale_scratch()
    return Path(tempfile.mkdtemp(prefix=f"llmspell-migrate-{kind}-{os.getpid()}-"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_scratch() -> list[Path]:
    """Remove our temporary folders whose process is gone; returns what was removed."""
    removed = []
    root = Path(tempfile.gettempdir())
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        m = _SCRATCH.match(entry.name)
        if not m or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_uid != os.geteuid():
                continue
        except OSError:
            continue
        if not _alive(int(m.group(1))):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


SCRIPT = "llmspell-migrate"


def cli_command() -> str:
    """How to run this tool again from a shell without an activated venv: the
    `llmspell-migrate` script beside this interpreter when it is installed, else this
    interpreter with `-m pipelines.migrate`; relative to the working folder when inside it."""
    interpreter = Path(sys.executable)
    script = interpreter.with_name(SCRIPT)
    if script.is_file() and os.access(script, os.X_OK):
        return shlex.quote(_shown(script))
    return f"{shlex.quote(_shown(interpreter))} -m pipelines.migrate"


def _shown(path: Path) -> str:
    """`path` as a user would type it: relative (./...) inside the working folder."""
    try:
        rel = path.absolute().relative_to(Path.cwd())
    except ValueError:
        return str(path.absolute())
    return str(rel) if rel.parts[0].startswith(".") else f"./{rel}"
