"""Human-readable output in the words and layout of the llmspell migration guide."""

from __future__ import annotations

import shlex

from core import settings
from destinations.artifact_writer import LARGE_OBJECT_NOTE
from pipelines.stages.results import ExecuteResult, PlanResult
from pipelines.stages.validation_lines import FAIL, OK
from pipelines.workflows.sync import SyncResult
from sources.record_checks import printable


def _duration(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}min"


def source_file_lines(source: dict) -> list[str]:
    """The files a plan reads, each with what it holds and why it was read."""
    files = source.get("files") or [{"path": source.get("path")}]
    if len(files) == 1:
        lines = [f"  Source file: {files[0]['path']}"]
    else:
        lines = [f"  Source files: {len(files)}"]
    for f in files:
        if len(files) > 1:
            held = ", ".join(f"{k}: {n}" for k, n in f.get("records", {}).items())
            lines.append(f"    - {f['path']} ({held or 'no records'})")
        if f.get("found_by"):
            lines.append(f"        found by: {f['found_by']}")
    return lines


def render_plan(result: PlanResult, plan_path: str) -> list[str]:
    plan = result.plan
    lines = [
        f'Migration plan generated: "{plan_path}"',
        "",
        "Plan summary:",
        f"  Source: sqlite → Target: postgres ({result.target})",
        *source_file_lines(plan["source"]),
        f"  Key layout: {plan['target'].get('key_layout', 'llmspell')}",
        f"  Components: {len(plan['components'])}",
    ]
    for c in plan["components"]:
        lines.append(
            f"    - {c['name']}: {c['estimated_count']} records (batch size: {c['batch_size']})"
        )
        tenants = result.per_tenant.get(c["name"], {})
        if len(tenants) > 1:
            lines.append("        " + ", ".join(f"{printable(t)}: {n}" for t, n in tenants.items()))
    if result.tenant_map:
        lines.append("  Tenants (source → target):")
        for src, dst, per in result.tenant_rows():
            total = sum(per.values())
            moved = "" if src == dst else " (remapped)"
            lines.append(f"    - {printable(src)} → {printable(dst)}: {total} records{moved}")
    for w in result.warnings:
        lines.append(f"  WARNING: {w}")
    cli = settings.cli_command()
    lines += [
        "",
        "Next steps:",
        f"  1. Review plan: cat {plan_path}",
        f"  2. Dry-run: {cli} execute --plan {shlex.quote(str(plan_path))} --dry-run",
        f"  3. Execute: {cli} execute --plan {shlex.quote(str(plan_path))}",
    ]
    return lines


def render_execute(result: ExecuteResult) -> list[str]:
    if result.dry_run:
        present = sum(result.already_present.values())
        lines = [
            "",
            "Migration Report (DRY-RUN)",
            "==========================",
            "Status: SUCCESS (dry-run, no data modified)",
            f"Components: {', '.join(result.components)}",
            f"Key layout: {_layout(result)}",
            f"Source Records: {result.source_records} (would migrate "
            f"{result.source_records - present}, {present} already in target)",
            "Target Records: unchanged (dry-run)",
            f"Duration: {_duration(result.duration)}",
            "",
            f"{OK} All pre-flight checks passed",
            f"{OK} Ready for actual migration",
        ]
        return lines
    if result.status != "SUCCESS":
        return _render_failed(result)
    lines = [
        "",
        "Migration Report",
        "================",
        f"Status: {result.status}",
        f"Components: {', '.join(result.components)}",
        f"Key layout: {_layout(result)}",
        f"Source Records: {result.source_records}",
        f"Target Records: {result.target_records}",
        f"Duration: {_duration(result.duration)}",
        f"Records/sec: {result.records_per_sec:,.1f}",
    ]
    written = sum(result.written.values())
    present = sum(result.already_present.values())
    lines.append(f"Written: {written} new, {present} already migrated")
    if result.backup_path:
        lines.append(f"Backup: {result.backup_path}")
    if result.run_id:
        lines.append(f"Run: {result.run_id}{' (resumed)' if result.resumed_run else ''}")
    v = result.validation
    if v is not None:
        lines += [
            "",
            "Validation Results:",
            f"  {OK if v.passed else FAIL} {v.target_records}/{v.source_records} count matches",
            f"  {OK} {v.checksum_samples} checksum samples validated",
            f"  {OK if v.errors == 0 else FAIL} {v.errors} errors",
        ]
    lines += _reachability(result)
    left = result.preflight.left_behind if result.preflight else []
    if "artifacts" in result.components:
        lines += ["", "Security:", f"  ! {LARGE_OBJECT_NOTE}"]
    if result.status == "SUCCESS":
        if left:
            lines += ["", "Not migrated (not in this plan):"] + [f"  ! {w}" for w in left]
            lines += ["", "The planned components migrated successfully."]
        else:
            lines += ["", "All data migrated successfully!"]
    return lines


def _layout(result: ExecuteResult) -> str:
    return result.preflight.key_layout if result.preflight else "llmspell"


def _reachability(result: ExecuteResult) -> list[str]:
    """The records llmspell's PostgreSQL backend reads under another key, or not at all."""
    if result.preflight is None:
        return []
    lines = []
    for name, r in result.preflight.reachability.items():
        if r.elsewhere:
            lines.append(
                f"  ! {name}: {len(r.elsewhere)} record(s) answer to another key in llmspell "
                "(key map in the backup's key-map.json)"
            )
        if r.unreachable:
            lines.append(
                f"  ! {name}: {len(r.unreachable)} record(s) copied unchanged that llmspell's "
                "PostgreSQL backend cannot find (--allow-unreachable)"
            )
    changed = sum(result.preflight.number_changes.values())
    if changed:
        lines.append(f"  ! {changed} JSON number(s) changed form in JSONB (listed as warnings)")
    return ["", "Reachability:"] + lines if lines else []


def _render_failed(result: ExecuteResult) -> list[str]:
    """A failed run: what it rolled back, never a throughput or rows it no longer holds."""
    lines = [
        "",
        "Migration Report",
        "================",
        f"Status: {result.status}",
        f"Components: {', '.join(result.components)}",
        f"Source Records: {result.source_records}",
        f"Duration: {_duration(result.duration)}",
    ]
    if result.rolled_back is not None:
        lines.append(
            f"Rolled back: {sum(result.rolled_back.values())} records deleted from the target"
        )
    else:
        lines.append("Rolled back: not completed (see the error below)")
    if result.backup_path:
        lines.append(f"Backup: {result.backup_path}")
    if result.run_id:
        lines.append(f"Run: {result.run_id}")
    return lines


def render_backend_check(check) -> list[str]:
    lines = [f"Validating {check.backend} backend: {check.where}"]
    for c in check.components:
        mark = OK if c.problem_count == 0 else FAIL
        lines.append(
            f"  {mark} {c.name}: {c.records} records"
            + (f", {c.problem_count} problem(s)" if c.problem_count else "")
        )
        if len(c.per_tenant) > 1:
            lines.append(
                "      " + ", ".join(f"{printable(t)}: {n}" for t, n in c.per_tenant.items())
            )
        for p in c.problems:
            lines.append(f"      {p}")
    for n in check.notes:
        lines.append(f"  Note: {n}")
    lines.append("Check passed." if check.ok else "Problems found (listed above).")
    return lines


def render_sync(result: SyncResult) -> list[str]:
    """The human report of a `sync` (or its dry-run), as the guide's lines read."""
    head = {
        "DRY_RUN": "[DRY-RUN] Sync would write",
        "NO_CHANGES": "No change since the last run: nothing written, no backup taken",
        "SUCCESS": "Sync complete",
    }.get(result.status, "Sync")
    lines = [f"{head} ({result.duration:.1f}s)"]
    for name, c in result.changes.items():
        lines.append(
            f"  - {name}: {c['inserted']} inserted, {c['updated']} updated, "
            f"{c['deleted']} deleted, {c['unchanged']} unchanged"
            + (
                f"; {result.adopted[name]} new in the source but already in the target, "
                "identical (now tracked, not written)"
                if result.adopted.get(name)
                else ""
            )
        )
    if result.backup_path:
        lines.append(f"Backup (pre-images): {result.backup_path}")
    if result.run_id and result.status == "SUCCESS":
        lines.append(f"Run: {result.run_id}")
    return lines
