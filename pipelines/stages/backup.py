"""Every backup a run takes, written by one `BackupWriter`: a folder that says what the run
changes and how to undo it.

An execute's backup (`kind` "migration"), as the llmspell guide shows it:

    backups/migration-<YYYYMMDD-HHMMSS>/
        plan.toml                 the plan, YAML as the guide writes it
        source/<component>.jsonl  every source record: tenant, key and every column
                                  (JSON text exactly as stored, BLOBs as base64)
        key-map.json              the records llmspell's PostgreSQL backend reads under
                                  another key: per tenant, old key -> new key (and the
                                  records it cannot read at all, with the reason)
        rollback-metadata.toml    which run wrote what, and the command that undoes it

A sync's backup (`kind` "sync") holds the rows it replaces or deletes, as PostgreSQL held
them before (its pre-images), beside the same plan and metadata:

    backups/sync-<YYYYMMDD-HHMMSS>-<run>/
        plan.toml, rollback-metadata.toml (kind = "sync")
        preimages/<component>.jsonl  tenant and the row as PostgreSQL's to_jsonb shows it

Either is written into a hidden `.partial-*` folder and renamed into place only when complete,
so a half-written backup is never taken for a complete one. No password is ever written.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shlex
import shutil
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

import duckdb

from core import interrupts
from core.errors import PreflightError
from core.files import make_private, private_dir
from core.model.components import Component
from core.settings import cli_command
from core.tenant_sql import tenant_in
from pipelines.shared.plan import Plan
from pipelines.stages.artifact_backup import FOLDER, export_content
from sources.sqlite_reader import SourceDB
from validation import duck

METADATA = "rollback-metadata.toml"
KEY_MAP = "key-map.json"


def backup_root(plan: Plan) -> Path:
    if plan.backup_path:
        path = Path(plan.backup_path).expanduser()
        # A plan that names a finished backup folder means "put new backups beside it".
        return path.parent if (path / METADATA).exists() else path
    return Path("backups")


def estimate_bytes(source_file: Path) -> int:
    """The guide's rule of thumb: twice the source data."""
    size = source_file.stat().st_size
    wal = Path(f"{source_file}-wal")
    return 2 * (size + (wal.stat().st_size if wal.exists() else 0))


def check_location(root: Path, needed: int) -> None:
    """Pre-flight for the backup folder, without creating anything (dry-run writes
    nothing): the nearest existing folder on its path must be a writable folder on a
    writable filesystem with room for `needed` bytes."""
    fix = "Set rollback.backup_path in the plan to a folder you can write, on a disk with room."
    probe = root.expanduser().absolute()
    while not probe.exists() and not probe.is_symlink():
        probe = probe.parent
    if not probe.is_dir():
        raise PreflightError(
            f"backup location {root} cannot be created: {probe} is not a folder", fix
        )
    try:
        read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only or not os.access(probe, os.W_OK | os.X_OK):
        why = "is on a read-only filesystem" if read_only else "is not writable"
        raise PreflightError(f"backup location {root}: {probe} {why}", fix)
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise PreflightError(
            f"not enough disk space for the backup in {root}: {free // 2**20} MiB free, "
            f"about {needed // 2**20} MiB needed",
            "Free space, or set rollback.backup_path in the plan to a larger disk.",
        )


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def write_toml(path: Path, sections: dict[str, dict]) -> None:
    lines = []
    for name, values in sections.items():
        if name:
            lines.append(f"\n[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    path.write_text("\n".join(lines).lstrip() + "\n", encoding="utf-8")


def read_metadata(folder: Path) -> dict:
    path = folder / METADATA
    if not path.exists():
        raise PreflightError(
            f"{folder} is not a complete migration backup (no {METADATA})",
            "Pass the backups/migration-<timestamp> folder that execute printed.",
        )
    return tomllib.loads(path.read_text(encoding="utf-8"))


def backup_tenants(folder: Path, meta: dict) -> list[str] | None:
    """The tenants a backup's run may have written: its metadata's `tenants`; for a
    migration backup written before that field, the tenants of its records; None when the
    backup cannot tell (a sync backup of an older version)."""
    if "tenants" in meta:
        return sorted(meta["tenants"])
    if meta.get("kind") == "sync":
        return None
    found: set[str] = set()
    for path in sorted((folder / "source").glob("*.jsonl")):
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                if line.strip():
                    found.add(json.loads(line)["tenant_id"])
    return sorted(found)


MIGRATION = "migration"
SYNC = "sync"
_RECORDS = {MIGRATION: ("source", "records"), SYNC: ("preimages", "preimages")}


class BackupWriter:
    """Streams records into a partial backup; `commit` makes it a real one. `kind`: an
    execute's (the source records) or a sync's (the target rows it replaces)."""

    def __init__(self, root: Path, run_id: str, started: dt.datetime, kind: str = MIGRATION):
        self.root = root
        self.kind = kind
        self.folder, self._section = _RECORDS[kind]
        self.name = f"{kind}-{started:%Y%m%d-%H%M%S}" + (f"-{run_id[-6:]}" if kind == SYNC else "")
        try:
            if not root.exists():
                private_dir(root)  # ours: private; a folder the user made stays as it is
            final = root / self.name
            n = 1
            while final.exists():
                n += 1
                final = root / f"{self.name}-{n}"
            self.final = final
            self.partial = root / f".partial-{final.name}"
            shutil.rmtree(self.partial, ignore_errors=True)
            private_dir(self.partial)
            private_dir(self.partial / self.folder)
        except OSError as exc:
            raise PreflightError(
                f"cannot create the backup folder in {root}: {exc.strerror}",
                "Set rollback.backup_path in the plan to a folder you can write.",
            ) from None
        self.run_id = run_id
        self.counts: dict[str, int] = {}
        self._files: dict[str, IO[str]] = {}

    def begin(self, comp: Component) -> None:
        self._files[comp.name] = open(  # noqa: SIM115 - closed in end()/abort()
            self.partial / "source" / f"{comp.name}.jsonl",
            "w",
            encoding="utf-8",
            errors="surrogateescape",
        )
        self.counts[comp.name] = 0
        self._blob_index = [i for i, c in enumerate(comp.columns) if c.kind.binary]

    def add_rows(self, comp: Component, rows: list[tuple]) -> None:
        out = self._files[comp.name]
        names = comp.column_names
        tenant_at = names.index("tenant_id")
        lines = []
        for row in rows:
            values = list(row[1:])
            for i in self._blob_index:
                v = values[i]
                if v is not None:
                    raw = v.encode("utf-8", "surrogateescape") if isinstance(v, str) else v
                    values[i] = {"base64": base64.b64encode(raw).decode("ascii")}
            lines.append(
                json.dumps(
                    {
                        "tenant_id": values[tenant_at],
                        "key": row[0],
                        "row": dict(zip(names, values)),
                    },
                    ensure_ascii=False,
                )
            )
        out.write("\n".join(lines) + "\n" if lines else "")
        self.counts[comp.name] += len(rows)

    def export(
        self,
        read_path: Path,
        comps: list[Component],
        tenants: list[str] | None,
        on_component: Callable[[str, int], None] | None = None,
    ) -> None:
        """Write every component's records. DuckDB's JSON writer does it without the GIL, so
        it runs on the second core while pre-flight checks the same records in Python; a
        component DuckDB cannot read (e.g. mixed types in one column) is streamed by Python.
        `on_component` hears each component written, with its record count."""
        con = duck.connect(read_path)
        try:
            with interrupts.cancelling(con.interrupt):
                for comp in comps:
                    interrupts.check()  # in pre-flight's worker thread: Ctrl-C reaches it so
                    try:
                        self.counts[comp.name] = self._duckdb_export(con, comp, tenants)
                    except duckdb.Error:
                        interrupts.check()  # interrupted, not unreadable
                        self._python_export(read_path, comp, tenants)
                    if comp.name == "artifacts":  # their content: one file per blob
                        source = self.partial / "source"
                        self.counts[FOLDER] = export_content(source, read_path, tenants)
                    if on_component is not None:
                        on_component(comp.name, self.counts[comp.name])
        finally:
            con.close()

    def _duckdb_export(self, con, comp: Component, tenants: list[str] | None) -> int:
        fields = []
        for c in comp.columns:
            col = f'"{c.name}"'
            if c.kind.binary:  # exact bytes: vectors as llmspell stored them
                b64 = f"struct_pack(base64 := to_base64({col}))"
                col = f"CASE WHEN {col} IS NULL THEN NULL ELSE {b64} END"
            fields.append(f'"{c.name}" := {col}')
        where, params = tenant_in(tenants)
        path = self.partial / "source" / f"{comp.name}.jsonl"
        query = (
            f'COPY (SELECT tenant_id, {comp.key_sql} AS "key", struct_pack({", ".join(fields)}) '
            f'AS "row" FROM {comp.source_from("src.", duck.source_tables(con))}{where}) '
            f"TO '{path}' (FORMAT json)"
        )
        count = con.execute(query, params).fetchone()[0]
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        return int(count)

    def _python_export(self, read_path: Path, comp: Component, tenants: list[str] | None) -> None:
        with SourceDB(read_path, snapshot=False) as db:
            self.begin(comp)
            for rows in db.iter_batches(comp, 5000, tenants):
                interrupts.check()
                self.add_rows(comp, rows)
            self.end(comp)

    def write_lines(self, name: str, records: Iterable[dict]) -> int:
        """`records` as `<folder>/<name>.jsonl`, one JSON document a line; returns how many."""
        n = 0
        path = self.partial / self.folder / f"{name}.jsonl"
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as out:
            for record in records:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                n += 1
            out.flush()
            os.fsync(out.fileno())
        self.counts[name] = n
        return n

    def end(self, comp: Component) -> None:
        f = self._files.pop(comp.name)
        f.flush()
        os.fsync(f.fileno())
        f.close()

    def write_key_map(self, reach: dict) -> None:
        """The key map an application can use: per component and tenant, each SQLite key
        llmspell's PostgreSQL backend answers to under another key; plus the unreachable."""
        doc: dict = {"key_layout": None, "components": {}}
        for name, r in reach.items():
            doc["key_layout"] = r.layout
            mapped: dict[str, dict[str, str]] = {}
            for x in r.elsewhere:
                mapped.setdefault(x.tenant_id, {})[x.key] = x.answers_to
            doc["components"][name] = {
                "key_map": mapped,
                "unreachable": [
                    {"tenant_id": x.tenant_id, "key": x.key, "reason": x.reason}
                    for x in r.unreachable
                ],
            }
        path = self.partial / KEY_MAP
        path.write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
        os.chmod(path, 0o600)

    def commit(
        self, plan: Plan, target_display: str, source_paths: list[str], tenants: list[str]
    ) -> Path:
        """Write plan and metadata, then atomically rename the folder into place. `tenants`:
        those the run may write (what rollback visits, checked against the run's ledger)."""
        (self.partial / "plan.toml").write_text(plan.to_yaml(), encoding="utf-8")
        write_toml(
            self.partial / METADATA,
            {
                "": {
                    "run_id": self.run_id,
                    "kind": SYNC if self.kind == SYNC else None,  # execute's: no kind
                    "created_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "complete": True,
                    "source": source_paths[0],
                    "sources": list(source_paths),
                    "target": target_display,
                    "components": list(self.counts),
                    "tenants": list(tenants),
                    "key_layout": plan.key_layout,
                    "undo": f"{cli_command()} rollback --backup "
                    f"{shlex.quote(str(self.final.resolve()))}",
                },
                self._section: dict(self.counts),
            },
        )
        make_private(self.partial)
        os.replace(self.partial, self.final)
        return self.final

    def abort(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        shutil.rmtree(self.partial, ignore_errors=True)
