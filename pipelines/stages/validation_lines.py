"""The validation stage's report as lines, in the guide's words: the run prints them as it
validates (to the CLI and to an API caller's `emit` alike) and `verify` prints them again."""

from __future__ import annotations

from validation.stage import ValidationReport

OK, FAIL = "✓", "✗"


def render_validation(report: ValidationReport, threshold: int) -> list[str]:
    lines: list[str] = []
    for c in report.components:
        lines += ["", f"Component: {c.component}"]
        mark = OK if c.counts_ok else FAIL
        lines.append(
            f"  Count validation: {mark} {c.source_count} source "
            f"{'=' if c.counts_ok else '≠'} {c.target_count} target"
        )
        for key in c.missing[:5]:
            lines.append(f"    missing in target: {key}")
        mark = OK if c.mismatch_count == 0 else FAIL
        if c.mode == "full" and c.source_count < threshold:
            lines.append(
                f"  Full comparison: {mark} {c.matched}/{c.compared} records matched "
                f"(dataset <{threshold} records)"
            )
        elif c.mode == "full":
            lines.append(f"  Full comparison: {mark} {c.matched}/{c.compared} records matched")
        else:
            lines.append(
                f"  Checksum validation: {mark} {c.matched}/{c.compared} samples matched "
                f"({c.sample_percent:g}% sample)"
            )
        if c.json_compared:
            scope = "" if c.mode == "full" else f" in the {c.compared} sampled records"
            if c.mismatch_count == 0:
                lines.append(f"  Semantic validation: ✓ JSON content equivalent{scope}")
            else:
                lines.append(f"  Semantic validation: {FAIL} {c.mismatch_count} record(s) differ")
        if c.knn_queries:
            mark = OK if c.knn_failed == 0 else FAIL
            lines.append(
                f"  Vectors: {mark} float32 bits compared in every checked record; "
                f"{c.knn_queries - c.knn_failed}/{c.knn_queries} nearest-neighbour queries "
                "return the source's ids"
            )
        for m in c.mismatches[:10]:
            lines.append(
                f"    {m.tenant_id} {m.key}: {m.column}: source={m.source} target={m.target}"
            )
        rb = c.readback
        if rb is not None:
            mark = OK if rb.mismatch_count == 0 else FAIL
            skipped = (
                f", {rb.skipped_unreachable} unreachable not read" if rb.skipped_unreachable else ""
            )
            lines.append(
                f"  Read-back as llmspell ({rb.role}): {mark} {rb.matched}/{rb.compared} keys "
                f"return the SQLite value{skipped}"
            )
            lines += [f"    {m}" for m in rb.mismatches[:10]]
    return lines
