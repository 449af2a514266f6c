"""Read an llmspell SQLite database without ever modifying it.

Every reader (ours and DuckDB's sqlite scanner) works on a private snapshot: SQLite readers
create `-wal`/`-shm` files and write read marks into `-shm`, so not even a read-only open
touches the original. A closed database is hard-linked into the snapshot folder when the
filesystem allows (no copy; opened read-only, so the shared file is never written); a
database llmspell has open (a `-wal` or `-shm` beside it) is copied WAL first, because the
WAL may hold committed records the main file does not have yet.

DuckDB's sqlite scanner opens the snapshot under a name of its own (`duckdb_name`): it
carries its own copy of SQLite, and two SQLite libraries in one process must never share a
`-shm` file.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from core.errors import PreflightError, SourceError
from core.files import is_scratch, scratch_dir
from sources.components import COMPONENTS, LATER_TABLES, Component

DEFAULT_PATH = Path("~/.local/share/llmspell/llmspell.db")


def _private_copy(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o600)


def _roll_back_hot_journal(snap: Path, original: Path) -> None:
    """Open the private copy read-write once so SQLite replays its hot journal into it."""
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


def _decode(raw: bytes) -> str:
    # Keep invalid UTF-8 visible (as lone surrogates) so the record can be named, not crash.
    return raw.decode("utf-8", "surrogateescape")


def duckdb_name(read_path: str | Path) -> Path:
    """The name DuckDB's sqlite scanner opens a snapshot by: a second hard link beside it.

    The scanner links its own copy of SQLite. POSIX locks cannot tell two libraries of one
    process apart, so when one of them opens a WAL database the other already has open, it
    takes itself for the first user and truncates the `-shm` index the other has mapped:
    the process dies of SIGBUS (seen in CI, `verify --full` on a source llmspell had open).
    Under a second name each library keeps its own `-shm`; the snapshot's WAL, which nobody
    writes, is linked too so both read the same records. Only for our own snapshots: a link
    beside the user's database would put a file in their folder."""
    snap = Path(read_path)
    if not is_scratch(snap):
        raise SourceError(
            f"DuckDB reads only this tool's private snapshots; {snap} is not a private snapshot",
            "Open the database with validation.duck.source_session(path) (or SourceDB(path) "
            "and its read_path): it takes the snapshot first.",
        )
    view = snap.with_name(f"{snap.stem}-duckdb{snap.suffix}")
    for src, dst in ((Path(f"{snap}-wal"), Path(f"{view}-wal")), (snap, view)):
        if src.exists() and not dst.exists():
            try:
                os.link(src, dst)
            except FileExistsError:  # another thread of this run made it first
                pass
            except OSError:  # a filesystem without hard links
                shutil.copyfile(src, dst)
                os.chmod(dst, 0o600)
    return view


class SourceDB:
    """A read-only view of one llmspell SQLite file."""

    def __init__(self, path: str | Path, *, snapshot: bool = True, raw_text: bool = False):
        """Open `path` through a private snapshot; `snapshot=False` is only for a path that
        already is one (the engine shares its snapshot with the dlt source and validation)."""
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise SourceError(
                f"SQLite database not found: {self.path}",
                "Pass --source PATH (or set source.path in the plan); llmspell's default is "
                f"{DEFAULT_PATH}.",
            )
        if not self.path.is_file():
            raise SourceError(
                f"Not a file: {self.path}", "Point --source at the llmspell .db file."
            )
        self._snapshot_dir: str | None = None
        self.hot_journal = False  # a rollback journal was replayed in the snapshot
        self.live = False  # llmspell had the database open (a -wal/-shm file was present)
        self._take_snapshot = snapshot
        self._raw_text = raw_text  # TEXT as UTF-8 bytes: 1 byte a character, not a Python str
        self.conn = self._open()
        self.tables = self._tables()
        if not self.tables & {c.sqlite_table for c in COMPONENTS.values()}:
            self.close()
            raise SourceError(
                f"{self.path} is not an llmspell database (it has none of the tables "
                + ", ".join(dict.fromkeys(c.sqlite_table for c in COMPONENTS.values()))
                + ")",
                f"Point --source at the SQLite file llmspell writes (default {DEFAULT_PATH}).",
            )

    # -- opening -------------------------------------------------------------------------
    def _make_snapshot(self) -> Path:
        wal = Path(f"{self.path}-wal")
        self._snapshot_dir = str(scratch_dir("src"))
        snap = Path(self._snapshot_dir) / "source.db"
        self.live = wal.exists() or Path(f"{self.path}-shm").exists()
        journal = Path(f"{self.path}-journal")
        self.hot_journal = journal.exists() and journal.stat().st_size > 0
        if self.live or self.hot_journal:
            if wal.exists():
                _private_copy(wal, Path(f"{snap}-wal"))
            if self.hot_journal:
                # A writer died (or is) mid-transaction in rollback-journal mode: the main
                # file may hold uncommitted pages. With the journal beside the copy, SQLite
                # rolls the copy back to the committed state (below); the source is untouched.
                _private_copy(journal, Path(f"{snap}-journal"))
            _private_copy(self.path, snap)
            if self.hot_journal:
                _roll_back_hot_journal(snap, self.path)
            return snap
        try:
            os.link(self.path, snap)
        except OSError:  # another filesystem, or links not allowed
            _private_copy(self.path, snap)
        return snap

    def _open(self) -> sqlite3.Connection:
        try:
            self.read_path = self._make_snapshot() if self._take_snapshot else self.path
            uri = f"file:{self.read_path}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            conn.text_factory = bytes if self._raw_text else _decode
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except SourceError:
            self._drop_snapshot()
            raise
        except sqlite3.DatabaseError as exc:
            self._drop_snapshot()
            raise SourceError(
                f"{self.path} is not a readable SQLite database: {exc}",
                "Point --source at the llmspell .db file (not its -wal file or a backup archive).",
            ) from None
        except OSError as exc:
            self._drop_snapshot()
            raise SourceError(
                f"Cannot read {self.path}: {exc.strerror}", "Check the file's permissions."
            ) from None

    def _tables(self) -> set[str]:
        rows = self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return {r[0].decode() if isinstance(r[0], bytes) else r[0] for r in rows}

    def _drop_snapshot(self) -> None:
        if self._snapshot_dir:
            shutil.rmtree(self._snapshot_dir, ignore_errors=True)
            self._snapshot_dir = None

    def close(self) -> None:
        try:
            self.conn.close()
        finally:
            self._drop_snapshot()

    def __enter__(self) -> SourceDB:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- questions -----------------------------------------------------------------------
    def has(self, comp: Component) -> bool:
        return comp.sqlite_table in self.tables

    def require(self, comp: Component) -> None:
        if not self.has(comp):
            raise PreflightError(
                f"Component '{comp.name}' not found in source",
                f"{self.path} has no {comp.sqlite_table} table: check the component name, or "
                "that this is the llmspell database holding it.",
            )

    def left_behind(self, planned: list[Component], tenants: list[str] | None) -> list[str]:
        """One line per non-empty llmspell table a plan of `planned` does not migrate: a user
        must not cut over believing everything moved."""
        lines = []
        for comp in COMPONENTS.values():
            if comp not in planned and self.has(comp):
                n = self.count(comp, tenants)
                if n:
                    lines.append(f"{comp.name}: {n:,} records not in this plan")
        for store, tables in LATER_TABLES.items():
            for table in tables:
                if table in self.tables:
                    n = self.conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
                    if n:
                        lines.append(
                            f"{store}: {n:,} {table} rows not in this plan (llmspell-migrate "
                            f"does not move {store} yet)"
                        )
        return lines

    def require_tenants(self, comps: list[Component], tenants: list[str] | None) -> None:
        """Refuse tenant ids the source does not hold: a typo would migrate nothing and
        still report success."""
        if not tenants:
            return
        present: set[str] = set()
        for comp in comps:
            if self.has(comp):
                present.update(self.counts_by_tenant(comp))
        unknown = [t for t in tenants if t not in present]
        if unknown:
            names = ", ".join(c.name for c in comps)
            raise SourceError(
                f"unknown tenant(s) {', '.join(map(repr, unknown))}: {self.path} holds no "
                f"{names} records for them",
                f"Tenants in the source: {', '.join(sorted(present)) or '(none)'}; fix "
                "--tenant or the plan's source.tenants.",
            )

    @staticmethod
    def _where(tenants: list[str] | None) -> tuple[str, list[str]]:
        if not tenants:
            return "", []
        return f" WHERE tenant_id IN ({','.join('?' * len(tenants))})", list(tenants)

    def counts_by_tenant(self, comp: Component, tenants: list[str] | None = None) -> dict[str, int]:
        self.require(comp)
        where, args = self._where(tenants)
        rows = self.conn.execute(
            f"SELECT tenant_id, count(*) FROM {comp.source_from('', self.tables)}{where} "
            "GROUP BY tenant_id ORDER BY tenant_id",
            args,
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    def count(self, comp: Component, tenants: list[str] | None = None) -> int:
        return sum(self.counts_by_tenant(comp, tenants).values())

    def select_sql(self, comp: Component, tenants: list[str] | None = None) -> tuple[str, list]:
        """Rows as (llmspell_key, *component columns) in natural-key order."""
        where, args = self._where(tenants)
        cols = ", ".join(comp.column_names)
        return (
            f"SELECT {comp.key_sql} AS llmspell_key, {cols} "
            f"FROM {comp.source_from('', self.tables)}{where} "
            f"ORDER BY tenant_id, {comp.key_column}",
            args,
        )

    def iter_batches(
        self, comp: Component, batch_size: int, tenants: list[str] | None = None
    ) -> Iterator[list[tuple]]:
        """Yield lists of at most `batch_size` rows: memory is bounded by the batch."""
        self.require(comp)
        query, args = self.select_sql(comp, tenants)
        cur = self.conn.execute(query, args)
        try:
            while True:
                rows = cur.fetchmany(batch_size)
                if not rows:
                    return
                yield rows
        finally:
            cur.close()
