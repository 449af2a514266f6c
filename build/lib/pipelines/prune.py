"""`prune --keep N`: delete old backups and dlt load packages, keeping the N newest of each.

Backups (`backups/migration-<timestamp>/`) and dlt's load packages accumulate one per run.
A backup is what `rollback --backup` compares against before deleting rows; once pruned, a
run can still be undone with `rollback --run-id` (its ledger lives in the target). Only
complete backups (with their rollback metadata) are counted and deleted; anything else in
the folder is left alone.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UsageError
from pipelines import copy_stage
from pipelines.backup import METADATA


@dataclass
class PruneResult:
    backups_deleted: list[str] = field(default_factory=list)
    packages_deleted: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def prune(keep: int, backups: str | Path = "backups") -> PruneResult:
    if keep < 0:
        raise UsageError(f"--keep {keep} is negative", "Pass how many to keep: 0 or more.")
    root = Path(backups)
    found = sorted(
        (p for p in root.glob("migration-*") if p.is_dir() and (p / METADATA).is_file()),
        key=lambda p: p.name,
    )
    result = PruneResult()
    for folder in found[: max(0, len(found) - keep)]:
        shutil.rmtree(folder)
        result.backups_deleted.append(str(folder))
    result.packages_deleted = copy_stage.prune_packages(keep)
    return result
