"""Where `plan --output` may write: never over the source database, never over a file that
is not a plan unless the user says --force, and only into a folder that exists."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from core.errors import UsageError

SQLITE_MAGIC = b"SQLite format 3\x00"
SOURCE_SIDECARS = ("", "-wal", "-shm", "-journal")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _looks_like_plan(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 20)
        if head.startswith(SQLITE_MAGIC) or b"\x00" in head:
            return False
        data = yaml.safe_load(head.decode("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "components" in data and "version" in data


def check_plan_output(output: str | Path, source: str | Path, force: bool = False) -> Path:
    """The path to write the plan to, or a UsageError (exit 2) before anything is read."""
    path = Path(output).expanduser()
    src = Path(source).expanduser()
    for suffix in SOURCE_SIDECARS:
        side = Path(f"{src}{suffix}")
        same_name = path.resolve() == side.resolve()
        if same_name or (path.exists() and _same_file(path, side)):
            what = f"source database's {suffix[1:]} file" if suffix else "source database"
            raise UsageError(
                f"--output {output} is the {what} ({src}): writing the plan there would "
                "destroy llmspell's data",
                "Write the plan to a new file, e.g. --output migration.toml.",
            )
    if path.is_dir():
        raise UsageError(
            f"--output {output} is a folder",
            f"Name a file, e.g. --output {path / 'migration.toml'}.",
        )
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(
            f"--output {output}: folder {parent} does not exist",
            f"Create it first (mkdir -p {parent}) or write the plan elsewhere.",
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(
            f"--output {output}: folder {parent} is not writable",
            "Write the plan into a folder you can write to.",
        )
    if path.exists() and not force and not _looks_like_plan(path):
        raise UsageError(
            f"--output {output} exists and is not a migration plan",
            "Choose another file name, or pass --force to replace it.",
        )
    return path
