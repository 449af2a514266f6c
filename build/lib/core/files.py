"""Files that hold llmspell's records in clear: private folders and files whatever the umask,
and temporary folders named after their process so a crashed run's leftovers can be swept."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

_SCRATCH = re.compile(r"^llmspell-migrate-[a-z]+-(\d+)-")


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


def is_scratch(path: Path) -> bool:
    """True for a file directly inside one of our scratch folders."""
    return bool(_SCRATCH.match(path.parent.name)) and path.parent.parent == Path(
        tempfile.gettempdir()
    )


def scratch_dir(kind: str) -> Path:
    """A private temporary folder named after this process, so a later run can tell it
    from a live one and remove it if a crash (kill -9) left it behind."""
    sweep_stale_scratch()
    return Path(tempfile.mkdtemp(prefix=f"llmspell-migrate-{kind}-{os.getpid()}-"))
