"""The migration plan: a reviewable YAML file, written by `plan`, checked fully when read.

Plan files are YAML whatever their extension (the llmspell guide names them `*.toml`). Reading
one refuses unknown keys, wrong types, out-of-range values, unknown components and unsupported
backends, each with a one-line error naming the key and the fix (exit code 2).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.errors import PlanError, UsageError
from core.model import registry
from core.settings import cli_command
from destinations.connection import IDENTITY_KEYS, has_password, redact
from sources.installation import SourceFile
from sources.key_routing import LAYOUTS, LLMSPELL
from sources.memory_stores import HNSW_NOTE
from sources.tenant_map import check_map, mapped_list

PLAN_VERSION = "1.0"
BATCH_MIN, BATCH_MAX = 100, 100_000


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_batch_size(count: int) -> int:
    """The guide's volume rule (small sets 100-500, ~1K-10K 1000, larger 5000-10000), capped
    at 5000: measured (docs/benchmarks.md), 5000 loads as fast as 10000 or 50000 with a
    fraction of the memory."""
    if count < 1_000:
        return 500
    if count < 10_000:
        return 1_000
    return 5_000


@dataclass
class ComponentPlan:
    name: str
    estimated_count: int
    batch_size: int

    @property
    def component(self) -> registry.Component:
        return registry.get(self.name)


@dataclass
class Plan:
    components: list[ComponentPlan]
    source_path: str | None = None  # the main database (the first of source_files)
    # every file of the installation, with why it is read and its records per component
    source_files: list[SourceFile] = field(default_factory=list)
    source_records: dict[str, dict[str, int]] = field(default_factory=dict)  # path -> comp -> n
    source_config: str | None = None  # the llmspell config the files were found from
    target_connection: str | None = None
    tenants: list[str] | None = None
    checksum_sample_percent: float = 10
    full_comparison_threshold: int = 100
    backup_enabled: bool = True
    backup_path: str | None = None
    # llmspell: rows where llmspell's PostgreSQL backend looks them up; verbatim: as in SQLite
    key_layout: str = LLMSPELL
    # the server and database the plan was made for (connection.identity), no secrets
    target_identity: dict[str, str] | None = None
    # source tenant -> target tenant (unmapped tenants keep their name); applied to the run's
    # private snapshot, so every stage works in target tenants (sources/tenant_map.py)
    tenant_map: dict[str, str] = field(default_factory=dict)
    # `source.tenants` as written (source names) when a tenant map renames some; `tenants`
    # then holds their target names, which is what the snapshot holds
    source_tenants: list[str] | None = None
    created_at: str = field(default_factory=utc_now)
    version: str = PLAN_VERSION

    @property
    def component_names(self) -> list[str]:
        return [c.name for c in self.components]

    @property
    def source_paths(self) -> list[str]:
        """Every file the run reads, the main database first (none: the default)."""
        if self.source_files:
            return [str(f.path) for f in self.source_files]
        return [self.source_path] if self.source_path else []

    def select_tenants(self, tenants: list[str] | None) -> None:
        """Narrow the plan to `tenants` (source names, as --tenant gives them)."""
        if not tenants:
            return
        self.source_tenants = list(tenants) if self.tenant_map else None
        self.tenants = mapped_list(tenants, self.tenant_map) if self.tenant_map else list(tenants)

    def fingerprint(self) -> str:
        """Identity of what this plan migrates, so a re-run can resume an unfinished run."""
        paths = [str(Path(p).expanduser().resolve()) for p in self.source_paths]
        ident = {
            "source": paths[0] if paths else None,
            "components": self.component_names,
            "tenants": sorted(self.tenants) if self.tenants else None,
            "key_layout": self.key_layout,  # a resumed run must write rows the same way
        }
        if self.tenant_map:  # no map: the same identity as before maps existed
            ident["tenant_map"] = dict(sorted(self.tenant_map.items()))
        if len(paths) > 1:  # one file: the same identity as before several were possible
            ident["also"] = paths[1:]
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        source: dict[str, Any] = {"backend": "sqlite"}
        if self.source_path:
            source["path"] = self.source_path
        if self.source_config:
            source["config"] = self.source_config
        if self.source_files:
            source["files"] = [
                {**f.to_dict(), "records": dict(self.source_records.get(str(f.path), {}))}
                for f in self.source_files
            ]
        if self.source_tenants or self.tenants:
            source["tenants"] = list(self.source_tenants or self.tenants)
        target: dict[str, Any] = {"backend": "postgres"}
        if self.target_connection:
            target["connection"] = redact(self.target_connection)
        target["key_layout"] = self.key_layout
        if self.tenant_map:
            target["tenant_map"] = dict(self.tenant_map)
        if self.target_identity:
            target["identity"] = dict(self.target_identity)
        rollback: dict[str, Any] = {"backup_enabled": self.backup_enabled}
        if self.backup_path:
            rollback["backup_path"] = self.backup_path
        pct = self.checksum_sample_percent
        return {
            "version": self.version,
            "created_at": self.created_at,
            "source": source,
            "target": target,
            "components": [
                {"name": c.name, "estimated_count": c.estimated_count, "batch_size": c.batch_size}
                for c in self.components
            ],
            "validation": {
                "checksum_sample_percent": int(pct) if float(pct).is_integer() else pct,
                "full_comparison_threshold": self.full_comparison_threshold,
            },
            "rollback": rollback,
        }

    def to_yaml(self) -> str:
        header = (
            "# llmspell-migrate plan (YAML). Review it, then:\n"
            "#   llmspell-migrate execute --plan <this file> --dry-run\n"
            "# Passwords never go here: use LLMSPELL_MIGRATE_PASSWORD or .dlt/secrets.toml.\n"
        )
        if any(c.name.startswith("episodic_memory_") for c in self.components):
            header += f"# Note: {HNSW_NOTE}.\n"
        return header + yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            tmp.write_text(self.to_yaml(), encoding="utf-8")
            tmp.replace(path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise UsageError(
                f"Cannot write the plan to {path}: {exc.strerror}",
                "Write it to a file in a folder you can write to (--output).",
            ) from None
        return path


# -- reading and checking ------------------------------------------------------------------
_TOP_KEYS = {"version", "created_at", "source", "target", "components", "validation", "rollback"}
_SECTION_KEYS = {
    "source": {"backend", "path", "tenants", "config", "files"},
    "target": {"backend", "connection", "key_layout", "identity", "tenant_map"},
    "validation": {"checksum_sample_percent", "full_comparison_threshold"},
    "rollback": {"backup_enabled", "backup_path"},
}
_COMPONENT_KEYS = {"name", "estimated_count", "batch_size"}


def _fail(where: str, problem: str, fix: str) -> PlanError:
    return PlanError(f"{where}: {problem}", fix)


def _check_keys(where: str, data: dict, allowed: set[str], label: str) -> None:
    for key in data:
        if key not in allowed:
            raise _fail(
                where,
                f"unknown key '{label}{key}'",
                f"Remove it; valid keys here: {', '.join(sorted(allowed))}.",
            )


def _int(where: str, key: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(
            where, f"'{key}' must be an integer, got {value!r}", f"Set {key} to a whole number."
        )
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f"{lo}-{hi}" if hi is not None else f">= {lo}"
        raise _fail(where, f"'{key}' is {value}, outside {rng}", f"Set {key} within {rng}.")
    return value


def _section(where: str, data: dict, name: str) -> dict:
    value = data.get(name, {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(
            where,
            f"'{name}' must be a mapping, got {type(value).__name__}",
            f"Write {name}: as a section with keys, as `plan` generates it.",
        )
    _check_keys(where, value, _SECTION_KEYS[name], f"{name}.")
    return value


def from_dict(data: Any, where: str = "plan") -> Plan:
    if not isinstance(data, dict):
        raise _fail(
            where,
            "not a migration plan (expected a YAML mapping)",
            f"Generate one with: {cli_command()} plan --output PLAN",
        )
    _check_keys(where, data, _TOP_KEYS, "")
    version = str(data.get("version", PLAN_VERSION))
    if version not in ("1.0", "1"):
        raise _fail(where, f"unsupported plan version '{version}'", "Use version: '1.0'.")
    source, target = _section(where, data, "source"), _section(where, data, "target")
    validation, rollback = _section(where, data, "validation"), _section(where, data, "rollback")
    if source.get("backend", "sqlite") != "sqlite":
        raise _fail(
            where,
            "Phase 1: Only 'sqlite' is supported as source backend",
            "Set source.backend: sqlite.",
        )
    if target.get("backend", "postgres") != "postgres":
        raise _fail(
            where, "Only 'postgres' is supported as target backend", "Set target.backend: postgres."
        )
    for key in ("path", "connection"):
        sec = source if key == "path" else target
        if key in sec and sec[key] is not None and not isinstance(sec[key], str):
            raise _fail(where, f"'{key}' must be a string", f"Quote the {key} value.")
    connection = target.get("connection")
    if connection and has_password(connection):
        raise _fail(
            where,
            "target.connection holds a password",
            "Remove it from the plan; put it in LLMSPELL_MIGRATE_PASSWORD or .dlt/secrets.toml.",
        )
    key_layout = target.get("key_layout", LLMSPELL)
    if key_layout not in LAYOUTS:
        raise _fail(
            where,
            f"'target.key_layout' is {key_layout!r}, not one of {', '.join(LAYOUTS)}",
            "Set key_layout: llmspell (rows where llmspell's PostgreSQL backend looks them "
            "up) or verbatim (every SQLite column unchanged).",
        )
    files, records = _source_files(where, source)
    identity = _target_identity(where, target.get("identity"))
    tenants = source.get("tenants")
    if tenants is not None and (
        not isinstance(tenants, list) or not all(isinstance(t, str) and t for t in tenants)
    ):
        raise _fail(
            where,
            "'source.tenants' must be a list of tenant ids",
            "Write tenants: [tenant-a, tenant-b] or remove the key.",
        )

    tenant_map = check_map(target.get("tenant_map"), f"{where}: target.tenant_map")
    source_tenants = list(tenants) if tenants else None
    if tenant_map and tenants:
        tenants = mapped_list(tenants, tenant_map)
    raw_components = data.get("components")
    if not isinstance(raw_components, list) or not raw_components:
        raise _fail(
            where,
            "'components' must be a non-empty list",
            "List at least one component (agent_state, workflow_state, sessions, kv_store).",
        )
    comps: list[ComponentPlan] = []
    for i, item in enumerate(raw_components):
        label = f"components[{i}]"
        if not isinstance(item, dict):
            raise _fail(
                where,
                f"'{label}' must be a mapping with name, estimated_count, batch_size",
                "Write each component as `- name: agent_state` with its keys.",
            )
        _check_keys(where, item, _COMPONENT_KEYS, f"{label}.")
        name = item.get("name")
        try:
            registry.get(str(name))
        except UsageError as exc:
            raise _fail(where, f"'{label}.name': {exc.message}", exc.hint) from None
        if name in [c.name for c in comps]:
            raise _fail(where, f"component '{name}' is listed twice", "List each component once.")
        comps.append(
            ComponentPlan(
                name=name,
                estimated_count=_int(
                    where, f"{label}.estimated_count", item.get("estimated_count", 0), lo=0
                ),
                batch_size=_int(
                    where,
                    f"{label}.batch_size",
                    item.get("batch_size", 1000),
                    lo=BATCH_MIN,
                    hi=BATCH_MAX,
                ),
            )
        )

    pct = validation.get("checksum_sample_percent", 10)
    if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 <= pct <= 100:
        raise _fail(
            where,
            f"'validation.checksum_sample_percent' is {pct!r}, outside 0-100",
            "Set checksum_sample_percent to a number from 0 to 100.",
        )
    threshold = _int(
        where,
        "validation.full_comparison_threshold",
        validation.get("full_comparison_threshold", 100),
        lo=0,
    )
    backup_enabled = rollback.get("backup_enabled", True)
    if not isinstance(backup_enabled, bool):
        raise _fail(
            where,
            f"'rollback.backup_enabled' must be true or false, got {backup_enabled!r}",
            "Set backup_enabled: true (recommended) or false.",
        )
    backup_path = rollback.get("backup_path")
    if backup_path is not None and not isinstance(backup_path, str):
        raise _fail(where, "'rollback.backup_path' must be a string", "Quote the path.")
    created = data.get("created_at")
    if isinstance(created, dt.datetime):
        created = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    return Plan(
        components=comps,
        source_path=source.get("path") or (str(files[0].path) if files else None),
        source_files=files,
        source_records=records,
        source_config=source.get("config") if isinstance(source.get("config"), str) else None,
        target_connection=connection,
        tenants=list(tenants) if tenants else None,
        checksum_sample_percent=pct,
        full_comparison_threshold=threshold,
        backup_enabled=backup_enabled,
        backup_path=backup_path,
        key_layout=key_layout,
        target_identity=identity,
        tenant_map=tenant_map,
        source_tenants=source_tenants if tenant_map else None,
        created_at=str(created) if created else utc_now(),
        version="1.0",
    )


_FILE_KEYS = {"path", "role", "found_by", "records"}


def _source_files(where: str, source: dict) -> tuple[list[SourceFile], dict[str, dict[str, int]]]:
    """`source.files`: every file of the installation; the first is `source.path`."""
    raw = source.get("files")
    if raw is None:
        return [], {}
    if not isinstance(raw, list) or not raw:
        raise _fail(
            where,
            "'source.files' must be a non-empty list of files",
            "Write each as `- path: /path/to/file.db`, or remove the key to use source.path.",
        )
    files: list[SourceFile] = []
    records: dict[str, dict[str, int]] = {}
    for i, item in enumerate(raw):
        label = f"source.files[{i}]"
        if isinstance(item, str):
            item = {"path": item}
        if not isinstance(item, dict):
            raise _fail(where, f"'{label}' must be a mapping", "Write `- path: /path/file.db`.")
        _check_keys(where, item, _FILE_KEYS, f"{label}.")
        path = item.get("path")
        if not isinstance(path, str) or not path:
            raise _fail(where, f"'{label}.path' must be a path", "Quote the file's path.")
        counts = item.get("records") or {}
        if not isinstance(counts, dict):
            raise _fail(where, f"'{label}.records' must be a mapping", "Remove it or fix it.")
        role, why = str(item.get("role") or "given"), str(item.get("found_by") or "")
        files.append(SourceFile(Path(path), role, why))
        records[path] = {str(k): v for k, v in counts.items() if isinstance(v, int)}
    paths = [str(f.path) for f in files]
    if len(set(paths)) != len(paths):
        raise _fail(where, "'source.files' lists a file twice", "List each file once.")
    main = source.get("path")
    if main is not None and main != paths[0]:
        raise _fail(
            where,
            f"'source.path' ({main}) is not the first of source.files ({paths[0]})",
            "Make source.path the first file (the main database), or remove source.path.",
        )
    return files, records


def _target_identity(where: str, value: Any) -> dict[str, str] | None:
    """target.identity: which server and database the plan was made for (absent in plans
    written before it existed: those are not checked)."""
    if value is None:
        return None
    allowed = set(IDENTITY_KEYS)
    if (
        not isinstance(value, dict)
        or not value
        or not set(value) <= allowed
        or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in value.values())
    ):
        raise _fail(
            where,
            "'target.identity' must map some of " + ", ".join(IDENTITY_KEYS) + " to values",
            "Restore it from the plan as written, or delete it (the target is then not "
            "checked against the one the plan was made for).",
        )
    return {k: str(v) for k, v in value.items()}


class PlanLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the
    last silently: a reviewer would read one value and the tool use another)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                continue  # an unusual key: from_dict names it as unknown
            if key in seen:
                raise PlanError(
                    f"{self.name}: key '{key}' appears twice (lines {seen[key]} and "
                    f"{key_node.start_mark.line + 1})",
                    "Keep one of them; the plan must say one thing.",
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load(path: str | Path) -> Plan:
    path = Path(path)
    if not path.exists():
        raise PlanError(
            f"Plan file not found: {path}",
            f"Generate one with: {cli_command()} plan --output {path}",
        )
    try:
        loader = PlanLoader(path.read_text(encoding="utf-8"))
        loader.name = str(path)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark else ""
        raise PlanError(
            f"{path}: not valid YAML{at}", "Fix the syntax, or regenerate the plan with `plan`."
        ) from None
    except UnicodeDecodeError:
        raise PlanError(
            f"{path}: not a UTF-8 text file", "Point --plan at the YAML plan."
        ) from None
    except OSError as exc:
        raise PlanError(
            f"Cannot read plan {path}: {exc.strerror}", "Point --plan at the YAML plan file."
        ) from None
    return from_dict(data, where=str(path))
