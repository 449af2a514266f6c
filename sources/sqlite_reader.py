"""Read an llmspell installation's SQLite files without ever modifying them.

Every reader (ours and DuckDB's sqlite scanner) works on a private, consistent snapshot
(`sources.snapshot`); an installation of several files (main database, RAG vectors) is read
as one snapshot holding every file's records.

DuckDB's sqlite scanner opens the snapshot under a name of its own (`duckdb_name`): it
carries its own copy of SQLite, and two SQLite libraries in one process must never share a
`-shm` file.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from core.errors import PreflightError, SourceError
from core.files import is_scratch, scratch_dir
from core.model.components import Component
from core.model.registry import COMPONENTS, LATER_TABLES
from core.tenant_sql import tenant_in
from sources import snapshot
from sources import tenant_map as tenant_mod

DEFAULT_PATH = Path("~/.local/share/llmspell/llmspell.db")


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


def merge_keys() -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """What names a record of each table a component reads (for merging two files), and
    which tables are joined to another by rowid (a vector dimension's embeddings)."""
    keys: dict[str, tuple[str, ...]] = {}
    linked: dict[str, str] = {}
    for comp in COMPONENTS.values():
        keys.setdefault(comp.sqlite_table, comp.conflict or ("tenant_id", comp.key_column))
        for table, _ in comp.optional_tables:
            linked[table] = comp.sqlite_table
    return keys, linked


def _one_file(path: Path) -> Path:
    if not path.exists():
        raise SourceError(
            f"SQLite database not found: {path}",
            "Pass --source PATH (or set source.path in the plan), or --config with llmspell's "
            "config file; `plan` without either finds the installation itself.",
        )
    if not path.is_file():
        raise SourceError(f"Not a file: {path}", "Point --source at the llmspell .db file.")
    return path


def _same_file_twice(paths: list[Path]) -> tuple[Path, Path] | None:
    seen: dict[tuple[int, int], Path] = {}
    for p in paths:
        st = p.stat()
        if (st.st_dev, st.st_ino) in seen:
            return seen[(st.st_dev, st.st_ino)], p
        seen[(st.st_dev, st.st_ino)] = p
    return None


def _require_llmspell(original: Path, snap: Path) -> None:
    """Each further file must be one llmspell wrote, named by its own path when it is not."""
    conn = sqlite3.connect(f"file:{snap}?mode=ro", uri=True)
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise SourceError(
            f"{original} is not a readable SQLite database: {exc}",
            "Point --source at an llmspell .db file (not its -wal file or a backup archive).",
        ) from None
    finally:
        conn.close()
    if not names & {c.sqlite_table for c in COMPONENTS.values()}:
        raise SourceError(
            f"{original} is not an llmspell database (it has none of llmspell's tables)",
            "Leave it out of the plan, or point --source at a file llmspell writes.",
        )


class SourceDB:
    """A read-only view of an llmspell installation's SQLite file(s), as one database."""

    def __init__(
        self,
        path: str | Path | Sequence[str | Path],
        *,
        snapshot: bool = True,
        raw_text: bool = False,
        tenant_map: dict[str, str] | None = None,
    ):
        """Open `path` (one file, or every file of an installation: the first is the main
        database) through a private snapshot; `snapshot=False` is only for a path that
        already is one (the engine shares its snapshot with the dlt source and validation).

        `tenant_map` (source tenant -> target tenant) is applied to the private snapshot
        right after it is taken (`sources.tenant_map`): every reader of it sees the target
        tenants; the user's file is never touched."""
        given = [path] if isinstance(path, (str, Path)) else list(path)
        self.paths = [_one_file(Path(p).expanduser()) for p in given]
        if not self.paths:
            raise SourceError("No source file given", "Pass --source PATH.")
        twice = _same_file_twice(self.paths)
        if twice:
            raise SourceError(
                f"{twice[0]} and {twice[1]} are the same file", "Name each source file once."
            )
        self.path = self.paths[0]
        if len(self.paths) > 1 and not snapshot:
            raise SourceError(
                "Several source files can only be read through a snapshot",
                "Open them with SourceDB([...]) (snapshot=True).",
            )
        self._snapshot_dir: str | None = None
        self.hot_journal = False  # a rollback journal was replayed in the snapshot
        self.live = False  # llmspell had a database open (a -wal/-shm file was present)
        # merged table -> the files holding its records (several files only)
        self.origins: dict[str, list[Path]] = {}
        self._take_snapshot = snapshot
        self._raw_text = raw_text  # TEXT as UTF-8 bytes: 1 byte a character, not a Python str
        self.tenant_map = tenant_mod.check_map(tenant_map)
        if self.tenant_map and not snapshot:
            raise SourceError(
                "A tenant map is applied to a private snapshot only",
                "Open the source with SourceDB(path, tenant_map=...) (snapshot=True).",
            )
        self.moved: dict[str, dict[str, int]] = {}  # table -> source tenant -> rows remapped
        self.conn = self._open()
        self.tables = self._tables()
        if not self.tables & {c.sqlite_table for c in COMPONENTS.values()}:
            self.close()
            raise SourceError(
                f"{self.path} is not an llmspell database (it has none of the tables "
                + ", ".join(dict.fromkeys(c.sqlite_table for c in COMPONENTS.values()))
                + ")",
                "Point --source at the SQLite file llmspell writes (by default "
                "~/.llmspell/data/llmspell.db).",
            )

    # -- opening -------------------------------------------------------------------------
    def _make_snapshot(self) -> Path:
        self._snapshot_dir = str(scratch_dir("src"))
        taken = [
            snapshot.take(p, Path(self._snapshot_dir) / f"source-{i}.db")
            for i, p in enumerate(self.paths)
        ]
        self.live = any(t.live for t in taken)
        self.hot_journal = any(t.hot_journal for t in taken)
        snap = Path(self._snapshot_dir) / "source.db"
        taken[0].path.rename(snap)
        if len(taken) > 1:
            for original, t in zip(self.paths[1:], taken[1:]):
                _require_llmspell(original, t.path)
            keys, linked = merge_keys()
            self.origins = snapshot.merge(
                snap, [(p, t.path) for p, t in zip(self.paths[1:], taken[1:])], keys, linked,
                self.path,
            )  # fmt: skip
            for t in taken[1:]:
                t.path.unlink(missing_ok=True)
        if self.tenant_map:
            keys, _ = merge_keys()
            self.moved = tenant_mod.apply(snap, self.tenant_map, keys, str(self.path))
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

    def counts_by_tenant(self, comp: Component, tenants: list[str] | None = None) -> dict[str, int]:
        self.require(comp)
        where, args = tenant_in(tenants)
        rows = self.conn.execute(
            f"SELECT tenant_id, count(*) FROM {comp.source_from('', self.tables)}{where} "
            "GROUP BY tenant_id ORDER BY tenant_id",
            args,
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    def count(self, comp: Component, tenants: list[str] | None = None) -> int:
        return sum(self.counts_by_tenant(comp, tenants).values())

    def select_sql(
        self,
        comp: Component,
        tenants: list[str] | None = None,
        only: str | None = None,
        share: tuple[int, int] | None = None,
    ) -> tuple[str, list]:
        """Rows as (llmspell_key, *component columns) in natural-key order. `only` names a
        table of (t, k) pairs: then just the records whose tenant and SQLite key it holds.
        `share` (k, n): only the k-th of n disjoint shares of the records, by their key (its
        length and last character: deterministic, whatever order SQLite reads in)."""
        where, args = tenant_in(tenants)
        if share is not None:
            k, n = share
            key = comp.key_sql
            cond = (
                f"(coalesce(length({key}), 0) + coalesce(unicode(substr({key}, -1)), 0))"
                f" % {int(n)} = {int(k)}"
            )
            where = f"{where} AND {cond}" if where else f" WHERE {cond}"
        cols = ", ".join(comp.column_names)
        rows = (
            f"SELECT {comp.key_sql} AS llmspell_key, {cols} "
            f"FROM {comp.source_from('', self.tables)}{where}"
        )
        if only is None:
            return f"{rows} ORDER BY tenant_id, {comp.key_column}", args
        return (
            f"SELECT * FROM ({rows}) AS r WHERE (r.tenant_id, r.llmspell_key) IN "
            f"(SELECT t, k FROM {only}) ORDER BY r.tenant_id, r.{comp.key_column}",
            args,
        )

    def iter_batches(
        self,
        comp: Component,
        batch_size: int,
        tenants: list[str] | None = None,
        share: tuple[int, int] | None = None,
    ) -> Iterator[list[tuple]]:
        """Yield lists of at most `batch_size` rows: memory is bounded by the batch.
        `share`: one of several disjoint shares of the records (`select_sql`)."""
        self.require(comp)
        query, args = self.select_sql(comp, tenants, share=share)
        cur = self.conn.execute(query, args)
        try:
            while True:
                rows = cur.fetchmany(batch_size)
                if not rows:
                    return
                yield rows
        finally:
            cur.close()
