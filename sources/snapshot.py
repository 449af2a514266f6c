"""Private, consistent snapshots of llmspell's SQLite files, and one snapshot of several.

Every reader works on a snapshot, never on the user's file: SQLite readers create
`-wal`/`-shm` files, and llmspell may be writing while we read.

- A database llmspell has open (a `-wal` or `-shm` beside it) is copied as files, main file
  first, then its WAL, without opening them with SQLite (a reader writes read marks into
  llmspell's `-shm`). The copy is kept only when the WAL's header (checkpoint sequence and
  salts) is the same before and after: while the WAL is not restarted, every page a
  checkpoint wrote into the main file during the copy is also in the WAL copied after it,
  so replaying that WAL gives the database as of one commit. A restart between the two
  reads (seen as "database disk image is malformed" on a plain copy) means another try;
  after several, SQLite's online backup API takes the copy under one read transaction.
  The snapshot's WAL is then folded into it, so the snapshot is one self-contained file.
- A closed database is copied as a file, with its size and change time compared before and
  after: when llmspell opened it and wrote meanwhile, the copy is taken again through the
  backup API. (A hard link would be cheaper, but a link shares the file llmspell may write
  to mid-run.)
- A database in rollback-journal mode that is being written (a `-journal` comes and goes,
  or the file changes during the copy) is read through SQLite's backup API, under a shared
  lock (rollback mode has no `-shm`: nothing of the user's is written). A hot journal (a
  writer died mid-transaction: journal and file hold still) is copied with the database
  and replayed into the private copy, so the snapshot holds only committed data.

An installation may keep its records in more than one file (the main database and RAG's
vectors database): `merge` adds the tables of further snapshots into the first, so every
stage of a run reads one snapshot. A table holding records in two files is merged only when
no key occurs in both; otherwise the run is refused naming both files and the keys.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from core.errors import SourceError

COPY_TRIES = 3
LIVE_TRIES = 8
WAL_HEADER = 32  # magic, version, page size, checkpoint sequence, salts, checksums


@dataclass
class Snapshot:
    """What taking a snapshot found about the original file."""

    path: Path  # the private copy
    live: bool = False  # llmspell had the database open (-wal/-shm beside it)
    hot_journal: bool = False  # an unfinished transaction was rolled back in the copy


def _private(path: Path) -> None:
    os.chmod(path, 0o600)


def _ro_uri(path: Path) -> str:
    return f"file:{quote(str(path))}?mode=ro"


def backup_copy(src: Path, dst: Path) -> None:
    """The database as of one commit, through SQLite's online backup API (all pages in one
    step, under one read transaction)."""
    for leftover in (dst, Path(f"{dst}-wal"), Path(f"{dst}-shm"), Path(f"{dst}-journal")):
        leftover.unlink(missing_ok=True)
    source = sqlite3.connect(_ro_uri(src), uri=True)
    try:
        target = sqlite3.connect(dst)
        try:
            source.backup(target)
            # The copy is ours alone: no WAL, so one library's -shm never meets another's.
            target.execute("PRAGMA journal_mode=DELETE")
        finally:
            target.close()
    finally:
        source.close()
    _private(dst)


def _stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _replay_hot_journal(snap: Path, original: Path) -> None:
    """Open the private copy read-write once so SQLite rolls its hot journal back."""
    try:
        conn = sqlite3.connect(snap)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            ok = conn.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        ok = str(exc)
    if ok != "ok":
        raise SourceError(
            f"{original} has an unfinished transaction (a hot {original.name}-journal) that "
            f"could not be rolled back in a private copy: {ok}",
            "Open the database once with llmspell or the sqlite3 shell (it rolls the journal "
            "back), then re-run; the source was not modified.",
        )


def _is_live(path: Path) -> bool:
    return Path(f"{path}-wal").exists() or Path(f"{path}-shm").exists()


def _wal_header(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(WAL_HEADER)
    except FileNotFoundError:
        return None


def _copy_with_wal(original: Path, snap: Path) -> bool:
    """Main file, then WAL, as files; True when the copy is of one commit: the WAL was not
    restarted meanwhile (or, with no WAL, the main file did not change)."""
    wal, snap_wal = Path(f"{original}-wal"), Path(f"{snap}-wal")
    before = _wal_header(wal)
    if before is None:
        return _stamped_copy(original, snap)
    shutil.copyfile(original, snap)
    _private(snap)
    try:
        shutil.copyfile(wal, snap_wal)
    except FileNotFoundError:  # checkpointed and removed meanwhile
        return False
    _private(snap_wal)
    return before == _wal_header(wal) == _wal_header(snap_wal)


def _stamped_copy(original: Path, snap: Path) -> bool:
    """The file as it is, when no WAL or journal was there and its size and change time held
    still: nobody wrote it during the copy."""
    journal, wal = Path(f"{original}-journal"), Path(f"{original}-wal")
    before = _stamp(original)
    if journal.exists():
        return False
    shutil.copyfile(original, snap)
    _private(snap)
    return not (wal.exists() or journal.exists()) and _stamp(original) == before


def _fold_wal(snap: Path) -> None:
    """Replay the snapshot's WAL into it and leave one file (nobody else has it open)."""
    conn = sqlite3.connect(snap)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        conn.execute("PRAGMA journal_mode=DELETE").fetchone()
    finally:
        conn.close()
    for side in ("-wal", "-shm"):
        Path(f"{snap}{side}").unlink(missing_ok=True)


def _replay_copy(original: Path, snap: Path) -> Snapshot | None:
    """A rollback journal that holds still beside a file that holds still: a writer died
    mid-transaction (a hot journal), and the main file may hold its uncommitted pages.
    With the journal beside the copy, SQLite rolls the copy back to the committed state;
    the source is untouched. None when either file moved (a writer is at work)."""
    journal = Path(f"{original}-journal")
    try:
        before = (_stamp(original), _stamp(journal))
        shutil.copyfile(original, snap)
        shutil.copyfile(journal, Path(f"{snap}-journal"))
        if (_stamp(original), _stamp(journal)) != before:
            return None
    except FileNotFoundError:  # the journal went: its transaction ended
        Path(f"{snap}-journal").unlink(missing_ok=True)
        return None
    _private(snap)
    _replay_hot_journal(snap, original)
    return Snapshot(snap, hot_journal=True)


def _has_journal(original: Path) -> bool:
    journal = Path(f"{original}-journal")
    try:
        return journal.stat().st_size > 0 and not _is_live(original)
    except FileNotFoundError:
        return False


def take(original: Path, snap: Path) -> Snapshot:
    """A consistent private copy of `original` at `snap` (see the module docstring)."""
    for _ in range(COPY_TRIES if not _is_live(original) else 0):
        if _stamped_copy(original, snap):
            return Snapshot(snap)
    if _has_journal(original) and (replayed := _replay_copy(original, snap)):
        return replayed
    try:
        # Open in llmspell (or written all along): file copies first, SQLite's reader last.
        for _ in range(LIVE_TRIES if _is_live(original) else 0):
            if _copy_with_wal(original, snap):
                _fold_wal(snap)
                return Snapshot(snap, live=True)
        backup_copy(original, snap)
    except sqlite3.DatabaseError as exc:
        raise SourceError(
            f"Could not take a consistent snapshot of {original} while it is in use: {exc}",
            "Re-run; if it persists, stop llmspell for the migration (the source was not "
            "modified).",
        ) from None
    return Snapshot(snap, live=True)


# -- several files, one snapshot ---------------------------------------------------------
def _tables(conn: sqlite3.Connection, schema: str) -> dict[str, str]:
    rows = conn.execute(
        f"SELECT name, sql FROM {schema}.sqlite_master WHERE type = 'table' "
        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
    ).fetchall()
    return {name: sql for name, sql in rows}


def _columns(conn: sqlite3.Connection, schema: str, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f'PRAGMA {schema}.table_info("{table}")')]


def _has_rows(conn: sqlite3.Connection, schema: str, table: str) -> bool:
    return conn.execute(f'SELECT EXISTS (SELECT 1 FROM {schema}."{table}")').fetchone()[0] == 1


def merge(
    target: Path,
    others: list[tuple[Path, Path]],
    keys: dict[str, tuple[str, ...]],
    linked: dict[str, str],
    first: Path,
) -> dict[str, list[Path]]:
    """Add the records of each `(original, snapshot)` in `others` into the snapshot `target`
    (the snapshot of `first`).

    `keys`: table -> the columns naming a record (tenant and key): records of one table from
    two files are merged only when no key is in both. `linked`: a table whose rows are
    joined to another's by rowid (`vec_embeddings_<dim>` -> `vector_metadata`): their rowids
    move together. Tables no component reads are left out. Returns, per merged table, the
    files holding its records."""
    conn = sqlite3.connect(target)
    holders: dict[str, list[Path]] = {}
    try:
        for original, snap in others:
            conn.execute("ATTACH DATABASE ? AS other", (_ro_uri(snap),))
            try:
                _merge_one(conn, original, first, keys, linked, holders)
                conn.commit()
            finally:
                conn.rollback()
                conn.execute("DETACH DATABASE other")
    finally:
        conn.close()
    return holders


def _merge_one(
    conn: sqlite3.Connection,
    original: Path,
    first: Path,
    keys: dict[str, tuple[str, ...]],
    linked: dict[str, str],
    holders: dict[str, list[Path]],
) -> None:
    theirs = _tables(conn, "other")
    ours = _tables(conn, "main")
    offsets: dict[str, int] = {}  # parent table -> rowid offset its new rows got
    parents = [t for t in theirs if t in keys and t not in linked]
    children = [t for t in theirs if t in linked]
    for table in parents + children:
        if not _has_rows(conn, "other", table):
            continue
        if table not in ours:
            conn.execute(theirs[table])
            ours[table] = theirs[table]
        elif table not in holders and _has_rows(conn, "main", table):
            holders[table] = [first]
        held = holders.setdefault(table, [])
        if table in keys and held:
            _refuse_collisions(conn, table, keys[table], held, original)
        mine, other_cols = _columns(conn, "main", table), _columns(conn, "other", table)
        missing = [c for c in other_cols if c not in mine]
        if missing:
            raise SourceError(
                f"{original} and {first} hold table {table} with different columns "
                f"({', '.join(missing)} only in {original})",
                "Both files must come from the same llmspell version: open each with it once "
                "(it migrates its schema), then re-run.",
            )
        moved = [c for c in other_cols if c != "rowid"]
        cols = ", ".join(f'"{c}"' for c in moved)
        parent = linked.get(table, table)
        try:
            if table in linked or table in linked.values():
                # Joined by rowid: the parent's new rows and their children's move together.
                if parent not in offsets:
                    family = [parent, *(c for c, p in linked.items() if p == parent)]
                    offsets[parent] = _top_rowid(conn, [t for t in family if t in ours])
                conn.execute(
                    f'INSERT INTO main."{table}" (rowid, {cols}) '
                    f'SELECT rowid + ?, {cols} FROM other."{table}"',
                    (offsets[parent],),
                )
            else:
                conn.execute(
                    f'INSERT INTO main."{table}" ({cols}) SELECT {cols} FROM other."{table}"'
                )
        except sqlite3.IntegrityError as exc:
            raise SourceError(
                f"{original} and {first} both hold {table} records that cannot be kept side "
                f"by side: {exc}",
                "Keep one copy of those records, or plan each file on its own.",
            ) from None
        held.append(original)


def _top_rowid(conn: sqlite3.Connection, tables: list[str]) -> int:
    tops = [conn.execute(f'SELECT coalesce(max(rowid), 0) FROM main."{t}"').fetchone()[0]
            for t in tables]  # fmt: skip
    return max(tops, default=0)


def _refuse_collisions(
    conn: sqlite3.Connection, table: str, key: tuple[str, ...], held_by: list[Path], original: Path
) -> None:
    cols = ", ".join(f'"{c}"' for c in key)
    clash = conn.execute(
        f'SELECT {cols} FROM main."{table}" INTERSECT SELECT {cols} FROM other."{table}" LIMIT 6'
    ).fetchall()
    if not clash:
        return
    shown = ", ".join("/".join(_show(v) for v in row) for row in clash[:5])
    more = " and more" if len(clash) > 5 else ""
    files = " and ".join(str(f) for f in dict.fromkeys([*held_by, original]))
    raise SourceError(
        f"{files} both hold {table} records under the same key ({'/'.join(key)}): {shown}{more}",
        "Keep one copy of those records (or plan each file on its own with a single "
        "--source); the tool will not choose between them.",
    )


def _show(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    return repr(value) if isinstance(value, str) and not value.isprintable() else str(value)
