"""Many installations into one PostgreSQL: the fleet manifest and its three commands.

    target: {connection: postgresql://host/db}   # or leave it out: embedded, as everywhere
    components: all                              # or a list / comma-separated names
    validation: {checksum_sample_percent: 100}
    installations:
      - name: team-a                             # unique, [a-z0-9-]
        source: /srv/team-a/.llmspell/data/llmspell.db   # or a list; or config: <llmspell.toml>
        tenant_map: {system: team-a-system, default: team-a}
      - name: team-b
        source: /srv/team-b/llmspell.db
        tenant_prefix: "team-b-"                 # every tenant gets the prefix

Each installation is its own all-or-nothing run of the ordinary tool (`execute --plan`, in a
process of its own, with its own working home `<output-dir>/<name>/home`, so dlt's
per-folder lock never makes two installations wait for each other; its plan is
`<output-dir>/<name>/plan.yaml` and its backups `<output-dir>/<name>/backups`). A fleet run
holds the target's migration lock shared, and its installation's own lock exclusively
(`destinations.run_ledger.ENV_LOCK_SCOPE`): installations run side by side (`--parallel N`),
while a plain `execute` against the same target still excludes them all.

Before anything is written the whole manifest is checked (unknown keys, names, duplicate
names or source files, tenant_map with tenant_prefix, target tenants llmspell could not
use: exit 2), then every installation is planned, then the fleet's pre-flight refuses two
installations whose records land under the same target tenant and key (or the same global
key). An installation whose source is missing or corrupt fails alone. `fleet status`
answers from the target's run records (`llmspell_migrate.runs`) and the plans.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.errors import EXIT_BUSY, EXIT_FAILED, EXIT_OK, EXIT_USAGE, MigrateError, PlanError
from core.model import registry
from destinations import connection, embedded_server, run_ledger, target_schema
from destinations.connection import redact_text
from pipelines.shared import plan as plan_mod
from pipelines.shared.plan import PlanLoader
from sources import installation as installation_mod
from sources.sqlite_reader import SourceDB
from sources.tenant_map import check_map, prefixed, tenant_problem

NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62})$")
_TOP = {"target", "components", "validation", "installations"}
_TARGET = {"connection"}
_VALIDATION = {"checksum_sample_percent", "full_comparison_threshold"}
_ENTRY = {"name", "source", "config", "tenant_map", "tenant_prefix"}
ENV_FLEET = "LLMSPELL_MIGRATE_FLEET"  # the manifest Dagster partitions by

NOT_STARTED, MIGRATED, FAILED, INTERRUPTED, PLANNED = (
    "not started",
    "migrated",
    "failed",
    "interrupted",
    "planned",
)
_TRANSIENT = re.compile(
    r"connection|server closed|terminating|could not connect|timeout|timed out|unreachable|"
    r"no route|reset by peer|broken pipe|another migration is running",
    re.I,
)

Emit = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# -- the manifest ---------------------------------------------------------------------------
@dataclass
class Entry:
    name: str
    source: list[str] | None = None
    config: str | None = None
    tenant_map: dict[str, str] = field(default_factory=dict)
    tenant_prefix: str | None = None


@dataclass
class Manifest:
    path: Path
    entries: list[Entry]
    target: str | None = None  # a DSN without password; None: the embedded server
    components: str = registry.ALL
    validation: dict[str, Any] = field(default_factory=dict)

    def entry(self, name: str) -> Entry:
        for e in self.entries:
            if e.name == name:
                return e
        raise PlanError(
            f"{self.path}: no installation named {name!r}",
            "Installations in the manifest: " + ", ".join(e.name for e in self.entries),
        )

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]


def _bad(where: str, problem: str, fix: str) -> PlanError:
    return PlanError(f"{where}: {problem}", fix)


def _keys(where: str, data: Any, allowed: set[str], label: str) -> dict:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise _bad(where, f"'{label}' must be a mapping", f"Write {label}: with keys.")
    for key in data:
        if key not in allowed:
            raise _bad(
                where,
                f"unknown key '{label}.{key}'" if label else f"unknown key '{key}'",
                f"Remove it; valid keys here: {', '.join(sorted(allowed))}.",
            )
    return data


def load_manifest(path: str | Path) -> Manifest:
    """Read and check a fleet manifest fully (exit 2 on any problem, nothing written)."""
    path = Path(path)
    where = str(path)
    try:
        loader = PlanLoader(path.read_text(encoding="utf-8"))
        loader.name = where
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except FileNotFoundError:
        raise PlanError(
            f"Fleet manifest not found: {path}", "Point --manifest at fleet.yaml."
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark else ""
        raise PlanError(f"{where}: not valid YAML{at}", "Fix the manifest's syntax.") from None
    if not isinstance(data, dict):
        raise _bad(where, "not a fleet manifest (expected a mapping)", "See docs/fleet.md.")
    _keys(where, data, _TOP, "")
    target = _keys(where, data.get("target"), _TARGET, "target")
    dsn = target.get("connection")
    if dsn is not None:
        if not isinstance(dsn, str) or not dsn:
            raise _bad(where, "'target.connection' must be a DSN", "Quote the DSN.")
        if connection.has_password(dsn):
            raise _bad(
                where,
                "target.connection holds a password",
                "Remove it; put it in LLMSPELL_MIGRATE_PASSWORD or .dlt/secrets.toml.",
            )
        connection.checked_dsn(dsn, f"{where}: target.connection")
    comps = data.get("components", registry.ALL)
    if isinstance(comps, list):
        comps = ",".join(str(c) for c in comps)
    if not isinstance(comps, str) or not comps.strip():
        raise _bad(where, "'components' must be `all` or a list", "Write components: all.")
    try:
        registry.parse_list(comps)
    except MigrateError as exc:
        raise _bad(where, f"'components': {exc.message}", exc.hint) from None
    validation = _keys(where, data.get("validation"), _VALIDATION, "validation")
    pct = validation.get("checksum_sample_percent", 10)
    if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 <= pct <= 100:
        raise _bad(where, "'validation.checksum_sample_percent' is outside 0-100", "Fix it.")
    thr = validation.get("full_comparison_threshold", 100)
    if isinstance(thr, bool) or not isinstance(thr, int) or thr < 0:
        raise _bad(where, "'validation.full_comparison_threshold' must be >= 0", "Fix it.")
    raw = data.get("installations")
    if not isinstance(raw, list) or not raw:
        raise _bad(where, "'installations' must be a non-empty list", "List each installation.")
    entries: list[Entry] = []
    for i, item in enumerate(raw):
        label = f"installations[{i}]"
        item = _keys(where, item, _ENTRY, label)
        name = item.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise _bad(
                where,
                f"'{label}.name' is {name!r}: names are 1-63 of [a-z0-9-], starting with a "
                "letter or digit",
                "Name each installation like team-a.",
            )
        label = f"installation {name!r}"
        if name in [e.name for e in entries]:
            raise _bad(where, f"{label} is listed twice", "Give each installation its own name.")
        source, config = item.get("source"), item.get("config")
        if (source is None) == (config is None):
            raise _bad(where, f"{label}: give exactly one of source and config", "Fix it.")
        if isinstance(source, str):
            source = [source]
        if source is not None and (
            not isinstance(source, list) or not all(isinstance(s, str) and s for s in source)
        ):
            raise _bad(where, f"{label}: 'source' must be a path or a list", "Quote paths.")
        if config is not None and not isinstance(config, str):
            raise _bad(where, f"{label}: 'config' must be a path", "Quote the path.")
        if "tenant_map" in item and "tenant_prefix" in item:
            raise _bad(
                where,
                f"{label}: tenant_map and tenant_prefix together",
                "Use one: tenant_map names each tenant's target, tenant_prefix prefixes all.",
            )
        tmap = check_map(item.get("tenant_map"), f"{where}: {label}: tenant_map")
        prefix = item.get("tenant_prefix")
        if prefix is not None and (not isinstance(prefix, str) or not prefix):
            raise _bad(where, f"{label}: tenant_prefix must be a non-empty string", "Quote it.")
        if prefix is not None and (problem := tenant_problem(prefix + "x")):
            raise _bad(where, f"{label}: tenant_prefix {prefix!r}: {problem}", "Fix the prefix.")
        base = path.parent
        entries.append(
            Entry(
                name,
                [str(base / Path(s).expanduser()) for s in source] if source else None,
                str(base / Path(config).expanduser()) if config else None,
                tmap,
                prefix,
            )
        )
    manifest = Manifest(path, entries, dsn, comps, dict(validation))
    _refuse_shared_files(manifest)
    return manifest


def entry_paths(entry: Entry) -> list[Path]:
    """The files an installation's run reads (its config's, or its sources)."""
    if entry.source:
        return [Path(p).resolve() for p in entry.source]
    return [p.resolve() for p in installation_mod.discover(entry.config).paths]


def _refuse_shared_files(manifest: Manifest) -> None:
    seen: dict[Any, str] = {}
    for e in manifest.entries:
        try:
            paths = entry_paths(e)
        except MigrateError:
            continue  # a missing source fails its installation alone, later
        for p in paths:
            ident: Any = str(p)
            with contextlib.suppress(OSError):
                st = p.stat()
                ident = (st.st_dev, st.st_ino)
            if ident in seen and seen[ident] != e.name:
                raise PlanError(
                    f"{manifest.path}: installations {seen[ident]!r} and {e.name!r} both read {p}",
                    "Each installation is one llmspell installation: name each file once.",
                )
            seen[ident] = e.name


# -- where each installation keeps its state --------------------------------------------------
def default_output_dir(manifest: Manifest) -> Path:
    return manifest.path.parent / f"{manifest.path.stem}.fleet"


@dataclass
class Layout:
    root: Path

    def dir(self, name: str) -> Path:
        return self.root / name

    def plan(self, name: str) -> Path:
        return self.dir(name) / "plan.yaml"

    def home(self, name: str) -> Path:
        return self.dir(name) / "home"

    def backups(self, name: str) -> Path:
        return self.dir(name) / "backups"

    def last(self, name: str) -> Path:
        return self.dir(name) / "last-run.json"

    def log(self, name: str) -> Path:
        return self.dir(name) / "execute.log"

    def synced(self, name: str) -> Path:
        return self.dir(name) / "last-sync.json"

    def entry(self, name: str) -> Path:
        return self.dir(name) / "entry.json"


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str, ensure_ascii=False), encoding="utf-8")
    os.chmod(tmp, 0o600)
    tmp.replace(path)


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# -- results ----------------------------------------------------------------------------------
@dataclass
class Outcome:
    """One installation in a fleet command."""

    name: str
    source: str | None = None
    status: str = NOT_STARTED
    plan: str | None = None
    tenants: list[dict] = field(default_factory=list)  # {source, target, records}
    records: dict[str, int] = field(default_factory=dict)  # per component
    run_id: str | None = None
    backup_path: str | None = None
    duration: float | None = None
    validation: str | None = None  # PASSED / FAILED / None
    error: str | None = None
    exit_code: int | None = None
    when: str | None = None
    in_sync_since: str | None = None
    skipped: bool = False
    transient: bool = False
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, [], {})} | {
            "name": self.name,
            "status": self.status,
        }


@dataclass
class FleetResult:
    command: str
    manifest: str
    target: str
    outcomes: list[Outcome]
    duration: float = 0.0
    parallel: int = 1
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        good = {PLANNED} if self.command == "plan" else {MIGRATED}
        if self.dry_run:
            good = {PLANNED, MIGRATED}
        return all(o.status in good for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        if self.ok:
            return EXIT_OK
        codes = {o.exit_code for o in self.outcomes if o.status not in (MIGRATED, PLANNED)}
        return EXIT_USAGE if codes == {EXIT_USAGE} and self.command == "plan" else EXIT_FAILED

    def to_dict(self) -> dict:
        return {
            "command": f"fleet {self.command}",
            "manifest": self.manifest,
            "target": self.target,
            "status": "SUCCESS" if self.ok else "FAILED",
            "dry_run": self.dry_run,
            "parallel": self.parallel,
            "duration": round(self.duration, 3),
            "installations": [o.to_dict() for o in self.outcomes],
        }


# -- the fleet --------------------------------------------------------------------------------
class Fleet:
    def __init__(
        self,
        manifest: Manifest | str | Path,
        output_dir: str | Path | None = None,
        emit: Emit = _quiet,
    ):
        self.manifest = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
        self.layout = Layout(Path(output_dir or default_output_dir(self.manifest)).resolve())
        self.emit = emit
        # The embedded server of the invoking process is every installation's target.
        self.pgdata = (
            None
            if self.manifest.target or connection.configured_dsn(None, None)
            else (str(embedded_server.data_dir_from_env()))
        )

    @property
    def target_env(self) -> dict[str, str]:
        return {"LLMSPELL_MIGRATE_PGDATA": self.pgdata} if self.pgdata else {}

    def where(self) -> str:
        if self.manifest.target:
            return connection.redact(self.manifest.target)
        if self.pgdata:
            return f"embedded PostgreSQL in {self.pgdata}"
        return connection.redact(connection.configured_dsn(None, None) or "")

    def _target(self) -> connection.Target:
        with _env(self.target_env):
            target = connection.resolve(self.manifest.target, None)
            if target.embedded:
                with connection.connect(target, autocommit=True) as conn:
                    target_schema.ensure_schema(conn)
        return target

    # -- plan -------------------------------------------------------------------------------
    def tenant_map(self, entry: Entry, paths: list[Path]) -> dict[str, str]:
        if entry.tenant_prefix is None:
            return dict(entry.tenant_map)
        held: set[str] = set()
        with SourceDB([str(p) for p in paths]) as db:
            for comp in registry.COMPONENTS.values():
                if db.has(comp):
                    held.update(db.counts_by_tenant(comp))
        return check_map(
            prefixed(sorted(held), entry.tenant_prefix),
            f"{self.manifest.path}: installation {entry.name!r}: tenant_prefix",
        )

    def plan_one(self, entry: Entry) -> Outcome:
        """Write `<output-dir>/<name>/plan.yaml`; a source that cannot be planned fails this
        installation only."""
        from pipelines import api

        out = Outcome(entry.name, plan=str(self.layout.plan(entry.name)))
        try:
            paths = entry_paths(entry)
            out.source = str(paths[0])
            tmap = self.tenant_map(entry, paths)
            _private_dir(self.layout.dir(entry.name))
            with _env(self.target_env):
                result = api.make_plan(
                    self.manifest.components,
                    output=self.layout.plan(entry.name),
                    source=[str(p) for p in paths],
                    target=self.manifest.target,
                    tenant_map=tmap,
                    backup_path=self.layout.backups(entry.name),
                    force=True,
                )
            plan = plan_mod.load(self.layout.plan(entry.name))
            v = self.manifest.validation
            plan.checksum_sample_percent = v.get("checksum_sample_percent", 10)
            plan.full_comparison_threshold = v.get("full_comparison_threshold", 100)
            plan.save(self.layout.plan(entry.name))
            _write_json(
                self.layout.entry(entry.name),
                {"entry": self._entry_hash(entry), "tenants": result_tenants(result)},
            )
            out.status = PLANNED
            out.tenants = result_tenants(result)
            out.records = {c["name"]: c["estimated_count"] for c in result.plan["components"]}
            out.warnings = list(result.warnings)
        except MigrateError as exc:
            out.status, out.exit_code = FAILED, exc.exit_code
            out.error = redact_text(exc.message)
            with contextlib.suppress(OSError):
                _private_dir(self.layout.dir(entry.name))
                _write_json(self.layout.last(entry.name), {"finished_at": _now(), **out.to_dict()})
        return out

    def _entry_hash(self, entry: Entry) -> str:
        """What a plan was made from: the entry, the fleet's components, validation, target."""
        ident = {
            "entry": entry.__dict__,
            "components": self.manifest.components,
            "validation": self.manifest.validation,
            "target": self.where(),
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    def reviewed_plan(self, entry: Entry) -> Outcome | None:
        """The installation's plan as `fleet plan` wrote it (and a reviewer may have edited),
        when it is still the plan of the manifest's entry; None: plan it again."""
        try:
            made = json.loads(self.layout.entry(entry.name).read_text(encoding="utf-8"))
            plan = plan_mod.load(self.layout.plan(entry.name))
        except (OSError, ValueError, MigrateError):
            return None
        if made.get("entry") != self._entry_hash(entry):
            return None
        return Outcome(
            entry.name,
            plan.source_path,
            PLANNED,
            str(self.layout.plan(entry.name)),
            made.get("tenants") or [],
            {c.name: c.estimated_count for c in plan.components},
        )

    def plan(self, only: list[str] | None = None) -> FleetResult:
        started = time.perf_counter()
        outcomes = [self.plan_one(e) for e in self.manifest.entries if not only or e.name in only]
        self.refuse_overlaps(outcomes)
        return FleetResult(
            "plan", str(self.manifest.path), self.where(), outcomes, time.perf_counter() - started
        )

    def refuse_overlaps(self, outcomes: list[Outcome]) -> None:
        """Fleet pre-flight: two installations must never put records under the same target
        tenant and key (or the same key of a table whose key is global)."""
        owner: dict[tuple, str] = {}
        for o in outcomes:
            if o.status != PLANNED:
                continue
            try:
                found = self._keys(o.name)
            except MigrateError:
                continue  # a source gone since its plan: its own run fails on it
            for ident, (comp, tenant, key) in found.items():
                other = owner.setdefault(ident, o.name)
                if other != o.name:
                    shown = f"tenant {tenant!r}, " if tenant is not None else ""
                    raise PlanError(
                        f"Fleet pre-flight: installations {other!r} and {o.name!r} "
                        f"both put a {comp} record under {shown}key {key!r}",
                        "Map their tenants onto different target tenants (tenant_map "
                        "or tenant_prefix); nothing was written.",
                    )

    def _keys(self, name: str) -> dict[tuple, tuple]:
        """Where each record of the installation lands: (table, target tenant or None for a
        global key, key) -> (component, tenant, key)."""
        plan = plan_mod.load(self.layout.plan(name))
        out: dict[tuple, tuple] = {}
        with SourceDB(plan.source_paths, tenant_map=plan.tenant_map) as db:
            for cp in plan.components:
                comp = cp.component
                global_key = bool(comp.conflict) and "tenant_id" not in comp.conflict
                expr = (
                    " || '/' || ".join(f"CAST({k} AS TEXT)" for k in comp.conflict)
                    if global_key
                    else comp.key_sql
                )
                sql = f"SELECT tenant_id, {expr} FROM {comp.source_from('', db.tables)}"
                for tenant, key in db.conn.execute(sql):
                    t = None if global_key else tenant
                    out[(comp.pg_table, t, key)] = (comp.name, t, key)
        return out

    # -- execute ----------------------------------------------------------------------------
    def worker_env(self, name: str) -> dict[str, str]:
        """The environment of one installation's `execute` process: its own working home,
        the target, its own lock scope."""
        env = dict(os.environ)
        env.update(self.target_env)
        env["LLMSPELL_MIGRATE_HOME"] = str(_private_dir(self.layout.home(name)))
        env[run_ledger.ENV_LOCK_SCOPE] = f"fleet:{name}"
        root = str(Path(__file__).resolve().parents[2])  # the folder holding pipelines/
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        return env

    def run_installation(self, name: str, dry_run: bool = False, verb: str = "execute") -> Outcome:
        """One installation's run of the ordinary tool in a process of its own (its own
        working home and lock scope); its JSON report becomes the outcome."""
        out = Outcome(name, plan=str(self.layout.plan(name)))
        cmd = [sys.executable, "-m", "pipelines.migrate", verb, "--plan", out.plan, "--json"]
        if dry_run:
            cmd.append("--dry-run")
        if verb == "execute":
            cmd += ["--progress", "none"]
        started = time.perf_counter()
        with open(self.layout.log(name), "a", encoding="utf-8") as log:
            os.chmod(self.layout.log(name), 0o600)
            log.write(
                f"--- {dt.datetime.now():%Y-%m-%d %H:%M:%S} {verb}"
                f"{' --dry-run' if dry_run else ''}\n"
            )
            log.flush()
            proc = subprocess.run(
                cmd, env=self.worker_env(name), stdout=subprocess.PIPE, stderr=log, text=True
            )
        out.duration = time.perf_counter() - started
        out.exit_code = proc.returncode
        try:
            doc = json.loads(proc.stdout)
        except ValueError:
            doc = {
                "error": {
                    "message": redact_text(proc.stdout.strip()[-500:])
                    or f"exited {proc.returncode} (see {self.layout.log(name)})"
                }
            }
        self._fill(out, doc, dry_run, verb)
        if verb == "sync" and out.exit_code == 0:  # a sync finding nothing records no run
            _write_json(self.layout.synced(name), {"synced_at": _now(), "run_id": out.run_id})
        if verb == "execute" and not dry_run:
            _write_json(
                self.layout.last(name), {"finished_at": _now(), **out.to_dict(), "report": doc}
            )
        return out

    def _fill(self, out: Outcome, doc: dict, dry_run: bool, verb: str) -> None:
        out.run_id = doc.get("run_id")
        out.backup_path = doc.get("backup_path")
        out.source = doc.get("source") or out.source
        val = doc.get("validation") or {}
        if isinstance(val, dict) and "passed" in val:
            out.validation = "PASSED" if val["passed"] else "FAILED"
        comps = val.get("components") if isinstance(val, dict) else None
        if comps:
            out.records = {c["component"]: c.get("source_count", 0) for c in comps}
        else:
            written = doc.get("written") or {}
            present = doc.get("already_present") or {}
            out.records = {c: written.get(c, 0) + present.get(c, 0) for c in {**written, **present}}
        if out.exit_code == 0:
            out.status = PLANNED if dry_run else MIGRATED
        else:
            err = doc.get("error") or {}
            out.status = FAILED
            out.error = redact_text(str(err.get("message") or "failed"))
            out.transient = out.exit_code == EXIT_BUSY or (
                err.get("error")
                not in (
                    "ValidationFailed",
                    "PreflightError",
                    "PlanError",
                    "SourceError",
                    "UsageError",
                )
                and bool(_TRANSIENT.search(out.error))
            )

    def execute(
        self, parallel: int = 1, dry_run: bool = False, only: list[str] | None = None
    ) -> FleetResult:
        """Plan what is not migrated yet, run the fleet's pre-flight, then run each
        installation (at most `parallel` at once); installations already migrated are
        skipped, an interrupted one is resumed by its own run."""
        if not 1 <= parallel <= 32:
            raise PlanError(f"--parallel {parallel} is outside 1-32", "Pick 1 to 32.")
        started = time.perf_counter()
        target = self._target()
        with connection.connect(target) as conn:
            if target_schema.missing_bookkeeping(conn) and not dry_run:
                with conn.transaction():  # once, before installations race to create it
                    target_schema.ensure_bookkeeping(conn)
            done = self._migrated(conn)
        entries = [e for e in self.manifest.entries if not only or e.name in only]
        outcomes: dict[str, Outcome] = {}
        planned: list[Outcome] = []
        for e in entries:
            if e.name in done and self.layout.plan(e.name).exists():
                o = self._status_of(e.name, done[e.name], None)
                o.skipped = True
                outcomes[e.name] = o
                planned.append(Outcome(e.name, status=PLANNED))  # its keys are in the target
                continue
            o = self.reviewed_plan(e) or self.plan_one(e)
            outcomes[e.name] = o
            planned.append(o)
        for e in self.manifest.entries:  # --only: still checked against the others' plans
            if e not in entries and self.layout.plan(e.name).exists():
                planned.append(Outcome(e.name, status=PLANNED))
        self.refuse_overlaps(planned)
        todo = [n for n, o in outcomes.items() if o.status == PLANNED]
        self.emit(f"Fleet: {len(todo)} installation(s) to run, {parallel} at a time")

        def one(name: str) -> Outcome:
            self.emit(f"[{name}] {'dry-run' if dry_run else 'execute'} starting")
            o = self.run_installation(name, dry_run)
            o.tenants = outcomes[name].tenants
            o.source = outcomes[name].source
            self.emit(f"[{name}] {o.status}" + (f": {o.error}" if o.error else ""))
            return o

        with ThreadPoolExecutor(max_workers=parallel) as pool:
            for o in pool.map(one, todo):
                outcomes[o.name] = o
        return FleetResult(
            "execute",
            str(self.manifest.path),
            self.where(),
            [outcomes[e.name] for e in entries],
            time.perf_counter() - started,
            parallel,
            dry_run,
        )

    # -- sync -------------------------------------------------------------------------------
    def sync(self, only: list[str] | None = None) -> FleetResult:
        """`sync` every migrated installation (one at a time; each its own all-or-nothing)."""
        started = time.perf_counter()
        target = self._target()
        with connection.connect(target) as conn:
            done = self._migrated(conn)
        outcomes = []
        for e in self.manifest.entries:
            if only and e.name not in only:
                continue
            if e.name not in done:
                outcomes.append(Outcome(e.name, status=NOT_STARTED, error="not migrated yet"))
                continue
            o = self.run_installation(e.name, verb="sync")
            outcomes.append(o)
        return FleetResult(
            "sync", str(self.manifest.path), self.where(), outcomes, time.perf_counter() - started
        )

    # -- status -----------------------------------------------------------------------------
    def _fingerprint(self, name: str) -> str | None:
        path = self.layout.plan(name)
        if not path.exists():
            return None
        return plan_mod.load(path).fingerprint()

    def _migrated(self, conn) -> dict[str, run_ledger.RunRecord]:
        if target_schema.missing_bookkeeping(conn):
            return {}
        out = {}
        for e in self.manifest.entries:
            fp = self._fingerprint(e.name)
            if fp and (run := run_ledger.completed_run(conn, fp)):
                out[e.name] = run
        return out

    def _status_of(self, name: str, completed, conn) -> Outcome:
        out = Outcome(name, plan=str(self.layout.plan(name)))
        last: dict = {}
        if self.layout.last(name).exists():
            with contextlib.suppress(ValueError, OSError):
                last = json.loads(self.layout.last(name).read_text(encoding="utf-8"))
        if self.layout.plan(name).exists():
            plan = plan_mod.load(self.layout.plan(name))
            out.source = plan.source_path
            out.records = {c.name: c.estimated_count for c in plan.components}
            with contextlib.suppress(OSError, ValueError):
                made = json.loads(self.layout.entry(name).read_text(encoding="utf-8"))
                out.tenants = made.get("tenants") or []
        if completed is not None:
            out.status, out.run_id = MIGRATED, completed.run_id
            out.backup_path = completed.backup_path
            out.when = str(completed.started_at)[:19]
            if last.get("run_id") == completed.run_id and last.get("records"):
                out.records = last["records"]
            if conn is not None and (fp := self._fingerprint(name)):
                synced = run_ledger.completed_run(conn, f"sync:{fp}")
                if synced:
                    out.in_sync_since = str(synced.started_at)[:19]
            with contextlib.suppress(OSError, ValueError):
                doc = json.loads(self.layout.synced(name).read_text(encoding="utf-8"))
                out.in_sync_since = doc["synced_at"]
            return out
        if conn is not None and (fp := self._fingerprint(name)):
            latest = run_ledger.latest_run(conn, fp)
            if latest and latest.status == run_ledger.RUNNING:
                out.status, out.run_id = INTERRUPTED, latest.run_id
                out.error = "interrupted: the next fleet execute resumes it"
                return out
        if last.get("status") == FAILED:
            out.status, out.error = FAILED, last.get("error")
            out.when = last.get("finished_at")
            return out
        out.status = NOT_STARTED
        return out

    def status(self) -> FleetResult:
        target = self._target()
        with connection.connect(target) as conn:
            done = self._migrated(conn)
            outcomes = [
                self._status_of(e.name, done.get(e.name), conn) for e in self.manifest.entries
            ]
        return FleetResult("status", str(self.manifest.path), self.where(), outcomes)


def result_tenants(result) -> list[dict]:
    return [
        {"source": s, "target": d, "records": sum(r.values())} for s, d, r in result.tenant_rows()
    ]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
