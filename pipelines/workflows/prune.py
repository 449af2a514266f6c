"""`prune --keep N`: delete old backups and dlt load packages, keeping the N newest of each.

Backups and dlt's load packages accumulate one per run. The tool writes two kinds of backup
into the backup folder: `migration-<timestamp>/` (execute: the source records) and
`sync-<timestamp>-<run>/` (sync: the pre-images of the PostgreSQL rows a sync replaced or
deleted, llmspell's data in clear). Both count as backups here, newest kept, oldest deleted
first, by the time their metadata records. A backup is what `rollback --backup` compares
against (or restores from); once pruned, a run can still be undone with `rollback --run-id`
(its ledger, a sync's pre-images included, lives in the target). Only complete backups (with
their rollback metadata) are counted and deleted; anything else in the folder (a backup
still being written, `.partial-*`, files of your own) is left alone.
"""

from __future__ import annotations

import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UsageError
from pipelines.stages import copy_stage
from pipelines.stages.backup import METADATA

# Folder name prefix -> kind of backup (`execute` writes migration-*, `sync` writes sync-*).
KINDS = {"migration-": "execute", "sync-": "sync"}


@dataclass(frozen=True)
class FoundBackup:
    path: Path
    kind: str  # execute | sync
    run_id: str
    created_at: str  # UTC, as the metadata records it

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "run_id": self.run_id,
            "created_at": self.created_at,
        }


@dataclass
class PruneResult:
    backups_deleted: list[str] = field(default_factory=list)  # paths, oldest first
    # what each deleted backup was (path, kind, run id, created_at), in the same order
    backups: list[dict] = field(default_factory=list)
    backups_kept: int = 0
    packages_deleted: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _kind(folder: Path) -> str | None:
    return next((k for prefix, k in KINDS.items() if folder.name.startswith(prefix)), None)


def find_backups(root: Path) -> list[FoundBackup]:
    """Every complete backup of either kind in `root`, oldest first."""
    found = []
    if not root.is_dir():
        return found
    for folder in root.iterdir():
        kind = _kind(folder)
        meta_path = folder / METADATA
        if kind is None or not folder.is_dir() or not meta_path.is_file():
            continue
        try:
            meta = tomllib.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue  # not ours, or damaged: left alone
        if meta.get("kind", "execute") != kind or not meta.get("complete"):
            continue
        found.append(
            (
                str(meta.get("created_at", "")),
                meta_path.stat().st_mtime_ns,  # one second can hold an execute and a sync
                folder.name,
                FoundBackup(folder, kind, str(meta.get("run_id", "")), str(meta.get("created_at"))),
            )
        )
    return [entry[-1] for entry in sorted(found, key=lambda e: e[:3])]


def prune(keep: int, backups: str | Path = "backups") -> PruneResult:
    if keep < 0:
        raise UsageError(f"--keep {keep} is negative", "Pass how many to keep: 0 or more.")
    found = find_backups(Path(backups))
    doomed = found[: max(0, len(found) - keep)]
    result = PruneResult(backups_kept=len(found) - len(doomed))
    for backup in doomed:
        shutil.rmtree(backup.path)
        result.backups_deleted.append(str(backup.path))
        result.backups.append(backup.to_dict())
    result.packages_deleted = copy_stage.prune_packages(keep)
    return result
