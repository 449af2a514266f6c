"""Typed results the Python API returns and the CLI renders (human text or `--json`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from destinations.artifact_writer import LARGE_OBJECT_NOTE
from pipelines.stages.preflight import PreflightReport
from validation.stage import ValidationReport


@dataclass
class PlanResult:
    path: str | None
    plan: dict
    per_tenant: dict[str, dict[str, int]]
    target: str
    warnings: list[str] = field(default_factory=list)
    reachability: dict[str, dict] = field(default_factory=dict)
    # with a tenant map: source tenant -> target tenant, and per_tenant in source names
    # (`per_tenant` is in target tenants: what the target will hold)
    tenant_map: dict[str, str] = field(default_factory=dict)
    source_per_tenant: dict[str, dict[str, int]] = field(default_factory=dict)

    def tenant_rows(self) -> list[tuple[str, str, dict[str, int]]]:
        """(source tenant, target tenant, records per component), source tenants sorted."""
        counts = self.source_per_tenant or self.per_tenant
        tenants = sorted({t for per in counts.values() for t in per})
        return [
            (t, self.tenant_map.get(t, t), {c: per[t] for c, per in counts.items() if t in per})
            for t in tenants
        ]

    def to_dict(self) -> dict:
        extra = {}
        if self.tenant_map:
            extra = {
                "tenant_map": self.tenant_map,
                "tenants": [
                    {"source": s, "target": d, "records": r} for s, d, r in self.tenant_rows()
                ],
            }
        return {
            **extra,
            "path": self.path,
            "plan": self.plan,
            "per_tenant": self.per_tenant,
            "target": self.target,
            "warnings": self.warnings,
            "reachability": self.reachability,
        }


@dataclass
class ExecuteResult:
    status: str  # SUCCESS | FAILED | DRY_RUN
    dry_run: bool
    components: list[str]
    target: str
    source: str
    run_id: str | None = None
    resumed_run: bool = False
    source_records: int = 0
    target_records: int = 0
    written: dict[str, int] = field(default_factory=dict)
    already_present: dict[str, int] = field(default_factory=dict)
    duration: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    backup_path: str | None = None
    preflight: PreflightReport | None = None
    validation: ValidationReport | None = None
    rolled_back: dict[str, int] | None = None
    error: dict | None = None

    @property
    def records_per_sec(self) -> float | None:
        """Throughput of a successful run; None otherwise (a rolled-back run moved nothing)."""
        if self.status != "SUCCESS":
            return None
        return self.source_records / self.duration if self.duration > 0 else 0.0

    def to_dict(self) -> dict:
        doc = {
            "status": self.status,
            "dry_run": self.dry_run,
            "components": self.components,
            "source": self.source,
            "target": self.target,
            "run_id": self.run_id,
            "resumed_run": self.resumed_run,
            "source_records": self.source_records,
            "target_records": self.target_records,
            "written": self.written,
            "already_present": self.already_present,
            "duration_s": round(self.duration, 3),
            "records_per_sec": None
            if self.records_per_sec is None
            else round(self.records_per_sec, 1),
            "stages_s": {k: round(v, 3) for k, v in self.stages.items()},
            "backup_path": self.backup_path,
            "preflight": self.preflight.to_dict() if self.preflight else None,
            "validation": self.validation.to_dict() if self.validation else None,
            "rolled_back": self.rolled_back,
            "error": self.error,
        }
        if "artifacts" in self.components:  # large objects: no row-level security
            doc["security_notes"] = [LARGE_OBJECT_NOTE]
        return doc
