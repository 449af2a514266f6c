"""Benchmark llmspell-migrate against two references, vanilla dlt, pgloader and a naive loop.

    python -m bench.run [--records N] [--tenants T] [--repeats R] [--scale-records N]
                        [--out docs/benchmarks.md] [--target DSN] [--only a,b,...] [--skip-scale]

One run, one generated source file per size, one warm PostgreSQL (the embedded server in
`.llmspell-migrate/bench-pg` unless --target names a superuser DSN). Every method runs in a
child process of its own (so its peak RSS is its own) against a database created for it
(`CREATE DATABASE bench_<method>` + `ensure_schema`). The two references (the limit path and
the server's ceiling) and `execute` run interleaved, `--repeats` times, so noise from other
work on the machine hits all three; the report gives medians and every method as a ratio of
both references. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from bench.server import (
    APP_ROLE,
    BENCH_HOME,
    drop_database,
    fresh_database,
    server_dsn,
    server_version,
    source_file,
    with_db,
)

RESULT_TAG = "BENCH_RESULT "
TARGETS = {
    "copy_vs_limit": 1.30,
    "execute_vs_limit": 1.00,
    "sampled_vs_limit": 1.20,
    "validation_share": 0.25,
}
RSS_TARGET_MB = 400
RSS_FLAT_MB = 100
VECTOR_COPY_TARGET = 0.90  # the vectors case (docs/benchmarks-vectors.md)


# -- one method in its own process ---------------------------------------------------------
def run_child(spec: dict) -> dict:
    env = dict(os.environ, RUNTIME__DLTHUB_TELEMETRY="false")
    cmd = [sys.executable, "-m", "bench.run", "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-40:]
    return {"error": "\n".join(tail) or f"exit {proc.returncode}"}


def measure(admin: str, work: Path, method: str, db: str, role: str | None, **spec) -> dict:
    fresh_database(admin, db)
    child_work = work / f"run-{db}"
    shutil.rmtree(child_work, ignore_errors=True)
    child_work.mkdir(parents=True)
    spec = dict(
        spec,
        method=method,
        dsn=with_db(admin, db, role),
        stage_dsn=with_db(admin, db),
        work=str(child_work),
    )
    print(f"  {db:<28} {method} ...", end=" ", flush=True)
    load_before = os.getloadavg()[0]
    out = run_child(spec)
    out["load_before"] = load_before
    out["load_after"] = os.getloadavg()[0]
    if "error" in out:
        print("ERROR")
        print("    " + out["error"].replace("\n", "\n    "))
    elif "skipped" in out:
        print(out["skipped"])
    else:
        rate = out["records"] / out["seconds"] if out["seconds"] else 0
        print(f"{out['records']} records in {out['seconds']:.1f}s ({rate:,.0f}/s)", flush=True)
    drop_database(admin, db)
    shutil.rmtree(child_work, ignore_errors=True)
    return out


# -- report --------------------------------------------------------------------------------
def rate(r: dict, seconds_key: str = "seconds") -> float:
    s = r.get(seconds_key) or 0
    return r["records"] / s if s else 0.0


def summary(runs: list[dict]) -> dict:
    """Medians over repeated runs (seconds and each stage); peak RSS is the largest seen."""
    ok = [r for r in runs if "records" in r]
    if not ok:
        return runs[-1] if runs else {"error": "not run"}
    out = dict(ok[0])
    out["first_stages"] = ok[0].get("stages", {})  # the stages `cpu` (first round) belongs to
    out["seconds"] = statistics.median(r["seconds"] for r in ok)
    out["all_seconds"] = [r["seconds"] for r in ok]
    top = max(ok, key=lambda r: r["peak_rss_mb"])
    out["peak_rss_mb"] = top["peak_rss_mb"]
    if "rss_peak_in" in top:
        out["rss_peak_in"] = top["rss_peak_in"]
    out["loads"] = [(r["load_before"], r["load_after"]) for r in ok if "load_before" in r]
    stages = {k for r in ok for k in r.get("stages", {})}
    out["stages"] = {k: statistics.median(r["stages"].get(k, 0) for r in ok) for k in stages}
    return out


def _ratio(rps: float, ref: float) -> str:
    return f"{rps / ref:.2f}" if ref and rps else "—"


def fmt_row(name: str, r: dict, seconds: float, refs: tuple[float, float], rss) -> str:
    rps = r["records"] / seconds if seconds else 0.0
    rss_s = f"{rss:.0f}" if isinstance(rss, (int, float)) else (rss or "—")
    runs = r.get("all_seconds") or []
    spread = f" ({', '.join(f'{x:.1f}' for x in runs)})" if len(runs) > 1 else ""
    loads = r.get("loads") or ([(r["load_before"], r["load_after"])] if "load_before" in r else [])
    load = ", ".join(f"{a:.1f}→{b:.1f}" for a, b in loads) or "—"
    return (
        f"| {name} | {r['records']:,} | {seconds:.2f}{spread} | {rps:,.0f} "
        f"| {_ratio(rps, refs[0])} | {_ratio(rps, refs[1])} | {rss_s} | {load} |"
    )


def table(rows: list[tuple[str, dict]], refs: tuple[float, float]) -> list[str]:
    out = [
        "| method | records | seconds: median (each run) | records/s | × limit path "
        "| × server ceiling | peak RSS MB | 1-min load before→after |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in rows:
        if "error" in r:
            out.append(
                f"| {name} | — | — | — | — | — | error: {r['error'].splitlines()[-1][:80]} | — |"
            )
            continue
        if "skipped" in r:
            out.append(f"| {name} | — | — | {r['skipped']} | — | — | — | — |")
            continue
        rss = f"{r['peak_rss_mb']:.0f}"
        if r.get("rss_peak_in"):
            rss += f" (in {r['rss_peak_in'].split(' (')[0]})"
        out.append(fmt_row(name, r, r["seconds"], refs, rss))
        for stage in ("preflight_and_backup", "copy", "validation"):
            secs = r.get("stages", {}).get(stage)
            if secs:
                label = f"&nbsp;&nbsp;↳ {stage} stage"
                out.append(fmt_row(label, {"records": r["records"]}, secs, refs, "(same)"))
    return out


def verdict(ok: bool) -> str:
    return "**pass**" if ok else "**MISS**"


def machine_facts(admin: str) -> list[str]:
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return [
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}",
        f"- machine: {os.cpu_count()} CPUs (nproc) — {cpu}; memory {mem}",
        f"- PostgreSQL {server_version(admin)}; Python {platform.python_version()}",
    ]


# -- main ----------------------------------------------------------------------------------
REFERENCES = ("limit_app", "ceiling")
ONCE = {  # key: (child method, database, role, extra spec)
    "execute_super": ("execute", "bench_execute_super", None, {"percent": 100}),
    "limit_super_staged": ("limit_staged", "bench_limit_super_staged", None, {}),
    "limit_super_copy": ("limit_direct_copy", "bench_limit_super_copy", None, {}),
    "dlt": ("dlt_vanilla", "bench_dlt", None, {}),
    "dlt_csv": ("dlt_vanilla", "bench_dlt_csv", None, {"file_format": "csv"}),
    "pgloader": ("pgloader", "bench_pgloader", None, {}),
}


def interleaved(admin: str, work: Path, src: str, repeats: int, want, tag: str) -> dict:
    """limit path, server ceiling and execute, one after the other, `repeats` times."""
    plan = [
        ("limit_app", "limit_staged", APP_ROLE, {}),
        ("ceiling", "ceiling", APP_ROLE, {}),
        ("execute_app", "execute", APP_ROLE, {"percent": 100}),
        ("execute_sampled", "execute", APP_ROLE, {"percent": 10}),
    ]
    runs: dict[str, list[dict]] = {}
    for i in range(repeats):
        print(f"  round {i + 1}/{repeats}")
        for key, method, role, extra in plan:
            if want(key):
                out = measure(admin, work, method, f"bench_{tag}_{key}", role, source=src, **extra)
                runs.setdefault(key, []).append(out)
    return {k: summary(v) for k, v in runs.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=200_000, help="mixed records, main run")
    ap.add_argument("--tenants", type=int, default=10, help="tenants in the generated sources")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds, main run")
    ap.add_argument("--scale-records", type=int, default=1_000_000, help="mixed records")
    ap.add_argument("--scale-repeats", type=int, default=1)
    ap.add_argument("--rss-small", type=int, default=100_000, help="execute's RSS at this size")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--skip-others", action="store_true", help="only the references + execute")
    ap.add_argument("--vectors", type=int, default=0, help="vectors for the vectors case")
    ap.add_argument("--vector-dim", type=int, default=768, choices=(384, 768, 1536, 3072))
    ap.add_argument("--naive-subset", type=int, default=5_000)
    ap.add_argument("--out", default="docs/benchmarks.md")
    ap.add_argument("--target", help="superuser DSN of the server to use (default: embedded)")
    ap.add_argument("--only", help="comma list of method keys to run (debugging)")
    ap.add_argument(
        "--sync-records", type=int, default=1_000_000, help="mixed records for the sync case"
    )
    ap.add_argument(
        "--fleet-installations", type=int, default=50, help="fleet case installations (0: skip)"
    )
    ap.add_argument("--fleet-records", type=int, default=2000, help="records per installation")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        from bench.methods import run_method

        out = run_method(json.loads(args.child))
        print(RESULT_TAG + json.dumps(out), flush=True)
        return 0

    from sources.sample_db import SampleSpec

    work = (BENCH_HOME / "bench").resolve()
    work.mkdir(parents=True, exist_ok=True)
    admin = server_dsn(args.target)
    only = set(args.only.split(",")) if args.only else None

    def want(key: str) -> bool:
        return only is None or key in only

    def mixed(total: int) -> str:
        spec = SampleSpec.scaled(total, tenants=args.tenants)
        return str(source_file(work, f"mixed-{total}-t{args.tenants}", spec))

    n = args.records
    res: dict[str, dict] = {}
    scale: dict[str, dict] = {}
    if only != {"vectors"}:
        src = mixed(n)
        print(f"source: {src}")
        print("warm-up (throwaway limit-path load, not reported) ...")
        measure(admin, work, "limit_staged", "bench_warmup", APP_ROLE, source=src)
        print(f"main run ({args.repeats} interleaved rounds):")
        res = interleaved(admin, work, src, args.repeats, want, "main")
        if not args.skip_others:
            for key, (method, db, role, extra) in ONCE.items():
                if want(key):
                    res[key] = measure(admin, work, method, db, role, source=src, **extra)
            if want("naive"):
                res["naive"] = measure(
                    admin,
                    work,
                    "naive_upsert",
                    "bench_naive",
                    APP_ROLE,
                    source=src,
                    subset=args.naive_subset,
                )
        if not args.skip_scale and want("scale"):
            small = mixed(args.rss_small)
            print(f"RSS at {args.rss_small} records ({small}):")
            scale["execute_small"] = measure(
                admin, work, "execute", "bench_small_execute", APP_ROLE, source=small, percent=100
            )
            total = args.scale_records
            big = mixed(total)
            print(f"scale run ({total} mixed records, {big}):")
            scale.update(interleaved(admin, work, big, args.scale_repeats, lambda k: True, "scale"))

    vectors: dict[str, dict] = {}
    if want("vectors") and args.vectors:
        from sources.memory_sample import MemorySpec
        from sources.sample_db import tenant_ids

        nv, dim = args.vectors, args.vector_dim
        memory = MemorySpec(
            vectors={dim: nv}, entities=0, relationships=0, patterns=0, tenants=tuple(tenant_ids(3))
        )
        vsrc = str(source_file(work, f"vectors-{nv}x{dim}", SampleSpec(0, 0, 0, 0, memory=memory)))
        print(f"vectors run ({nv} x {dim}-dim, {vsrc}):")
        vectors["limit_app"] = measure(
            admin, work, "limit_staged", "bench_vec_limit", APP_ROLE, source=vsrc
        )
        vectors["execute_app"] = measure(
            admin, work, "execute", "bench_vec_execute", APP_ROLE, source=vsrc, percent=100
        )
        for r in vectors.values():
            r["payload_mb"] = nv * dim * 4 / 1e6

    sync_lines = run_sync_case(args, admin, work) if want("sync") and args.sync_records else []
    if want("fleet") and args.fleet_installations:  # bench/fleet_case.py
        from bench import fleet_case

        out = fleet_case.run_case(admin, work, args.fleet_installations, args.fleet_records)
        sync_lines += ["", *fleet_case.render(out, "python -m bench.run " + " ".join(sys.argv[1:]))]

    lines = render(args, argv, admin, n, res, scale)
    if only == {"vectors"}:  # the header only: no mixed-records table without its methods
        lines = lines[: lines.index(MAIN_HEADING.format(n=n, t=args.tenants))]
    if vectors:
        lines += render_vectors(args, vectors)
    lines += sync_lines
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"written to {out}")
    return 0


def run_sync_case(args, admin: str, work: Path) -> list[str]:
    """`sync` of 1% changes next to `execute` of the same data (bench/sync_case.py)."""
    from bench import sync_case

    print(f"sync run ({args.sync_records} mixed records, 1% changed):")
    out = sync_case.run_case(admin, work, args.sync_records, 1.0)
    return ["", *sync_case.render(out, "python -m bench.run " + " ".join(sys.argv[1:]), 1.0)]


MAIN_HEADING = "## {n:,} mixed records ({t} tenants; SampleSpec.scaled)"
LABELS = {
    "limit_app": "b. **limit path**: COPY → TEMP stage → INSERT…SELECT per tenant, one "
    "connection, llmspell_app",
    "ceiling": "b. **server ceiling**: rows pre-staged UNLOGGED, 2 llmspell_app connections "
    "INSERT…SELECT half the tenants each",
    "execute_app": "a. `execute`, full validation (100%), as llmspell_app",
    "execute_sampled": "a. `execute`, default validation (10% sampled), as llmspell_app",
    "execute_super": "a. `execute`, full validation (100%), as superuser (once)",
    "limit_super_staged": "b. same staged path, as superuser (once)",
    "limit_super_copy": "b. superuser COPY straight into the table, casts in Python (once)",
    "dlt": "c. vanilla dlt: sql_database(pyarrow) → dlt postgres (insert_values) (once)",
    "dlt_csv": "c. vanilla dlt, loader_file_format=csv (COPY) (once)",
    "pgloader": "c. pgloader (sqlite → postgres, its own tables) (once)",
    "naive": "d. naive per-record upsert loop, llmspell_app (subset) (once)",
}


def refs_of(res: dict) -> tuple[float, float]:
    return tuple(rate(res[k]) if "records" in res.get(k, {}) else 0.0 for k in REFERENCES)


def target_rows(ex: dict, refs: tuple[float, float], label: str) -> list[str]:
    """Targets 1, 2 and 4 for one `execute` summary."""
    if "stages" not in ex or not refs[0]:
        return [f"| {label}: execute | not measured | — |"]
    st = ex["stages"]
    exec_ratio = rate(ex) / refs[0]
    copy_ratio = (ex["records"] / st["copy"]) / refs[0]
    share = st["validation"] / st["copy"]
    return [
        f"| {label}: `execute` end to end ≥ {TARGETS['execute_vs_limit']:.1f}× limit path "
        f"| {exec_ratio:.2f}× ({rate(ex):,.0f} vs {refs[0]:,.0f} rec/s) "
        f"| {verdict(exec_ratio >= TARGETS['execute_vs_limit'])} |",
        f"| {label}: copy stage ≥ {TARGETS['copy_vs_limit']:.1f}× limit path "
        f"| {copy_ratio:.2f}× | {verdict(copy_ratio >= TARGETS['copy_vs_limit'])} |",
        f"| {label}: full validation ≤ {TARGETS['validation_share']:.0%} of copy time "
        f"| {share:.0%} ({st['validation']:.1f}s vs {st['copy']:.1f}s) "
        f"| {verdict(share <= TARGETS['validation_share'])} |",
    ]


def sampled_row(ex: dict, refs: tuple[float, float], label: str) -> list[str]:
    """The sampled-validation target for one `execute` summary (if it ran)."""
    if "records" not in ex or not refs[0]:
        return []
    ratio = rate(ex) / refs[0]
    goal = TARGETS["sampled_vs_limit"]
    return [
        f"| {label}: `execute` with default (sampled) validation ≥ {goal:.1f}× limit path "
        f"| {ratio:.2f}× ({rate(ex):,.0f} rec/s) | {verdict(ratio >= goal)} |"
    ]


def cpu_rows(ex: dict, label: str) -> list[str]:
    """Who kept the cores busy in each stage of one `execute` (its first round)."""
    cpu = ex.get("cpu")
    if not cpu:
        return []
    lines = [
        "",
        f"CPU seconds per stage, {label} (`execute`'s first round; the worker is "
        "pre-flight's second scan process, PostgreSQL every server process; 2 cores = 2.0 "
        "busy):",
        "",
        "| stage | seconds | main process | worker | PostgreSQL | cores busy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for stage, parts in cpu.items():
        seconds = ex.get("first_stages", ex["stages"]).get(stage, 0)
        if seconds < 0.05:
            continue
        busy = sum(parts.values()) / seconds
        lines.append(
            f"| {stage} | {seconds:.1f} | {parts['main']:.1f} | {parts['worker']:.1f} "
            f"| {parts['postgres']:.1f} | {busy:.2f} |"
        )
    return lines


def render(args, argv, admin, n, res, scale) -> list[str]:
    refs = refs_of(res)
    cmd = "python -m bench.run " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    if args.target:
        cmd = cmd.replace(args.target, "<superuser DSN>")
    where = (
        "--target server" if args.target else "embedded PostgreSQL in .llmspell-migrate/bench-pg"
    )
    lines = [
        "# Benchmarks",
        "",
        "Generated by `bench/run.py` (see `bench/README.md`). Rerun with:",
        "",
        "```bash",
        f".venv/bin/{cmd.strip()}",
        "```",
        "",
        *machine_facts(admin),
        f"- target: {where}"
        ", warmed with one throwaway load before measuring; every method into a fresh database"
        " (`CREATE DATABASE` + `ensure_schema`: all indexes incl. GIN, forced RLS), each in its"
        " own process; peak RSS is that process's VmHWM (pgloader: its own max RSS); for"
        " `execute`, the largest sum of its own and its child processes' RSS (pre-flight's"
        " second scan process), sampled every 0.1 s, if above its VmHWM."
        " PostgreSQL's own memory is not included.",
        "",
        MAIN_HEADING.format(n=n, t=args.tenants),
        "",
        f"The two references and `execute` ran interleaved, {args.repeats} rounds; seconds are "
        "medians, the runs in brackets. Ratios are records/s over the reference's median "
        "records/s in this run.",
        "",
    ]
    lines += table([(LABELS[k], v) for k, v in res.items()], refs)
    lines += [
        "",
        "Notes:",
        "",
        "- c. writes a weaker target: JSON as text, no GIN index, no RLS, dlt/pgloader's own "
        "tables and types (not llmspell's schema).",
        f"- d. is timed on the first {args.naive_subset:,} records only.",
        "- The load average is the machine's (2 cores): above 2, other work competed with "
        "the run and every figure is slower than on an idle machine; compare ratios, not "
        "seconds, across runs.",
    ]
    lines += cpu_rows(res.get("execute_app", {}), f"{n:,} records")
    lines += ["", "## Targets (issue 24)", "", "| target | measured | result |", "|---|---|---|"]
    lines += target_rows(res.get("execute_app", {}), refs, f"{n:,}")
    lines += sampled_row(res.get("execute_sampled", {}), refs, f"{n:,}")
    if scale:
        s_refs = refs_of(scale)
        sx, small = scale.get("execute_app", {}), scale.get("execute_small", {})
        lines += target_rows(sx, s_refs, f"{args.scale_records:,}")
        lines += sampled_row(scale.get("execute_sampled", {}), s_refs, f"{args.scale_records:,}")
        if "peak_rss_mb" in sx:
            lines.append(
                f"| {args.scale_records:,}: peak RSS < {RSS_TARGET_MB} MB "
                f"| {sx['peak_rss_mb']:.0f} MB | {verdict(sx['peak_rss_mb'] < RSS_TARGET_MB)} |"
            )
        if "peak_rss_mb" in sx and "peak_rss_mb" in small:
            grow = sx["peak_rss_mb"] - small["peak_rss_mb"]
            lines.append(
                f"| RSS flat: {args.scale_records:,} vs {args.rss_small:,} differ < "
                f"{RSS_FLAT_MB} MB | {grow:+.0f} MB ({small['peak_rss_mb']:.0f} → "
                f"{sx['peak_rss_mb']:.0f}) | {verdict(abs(grow) < RSS_FLAT_MB)} |"
            )
        lines += ["", f"## Scale run: {args.scale_records:,} mixed records", ""]
        lines += table(
            [(LABELS[k], v) for k, v in scale.items() if k in LABELS]
            + [(f"a. `execute` at {args.rss_small:,} records (RSS)", small or {"error": "-"})],
            s_refs,
        )
        lines += cpu_rows(sx, f"{args.scale_records:,} records")
    else:
        lines.append(f"| scale run (peak RSS < {RSS_TARGET_MB} MB) | not run | — |")
    return lines


def render_vectors(args, vectors: dict[str, dict]) -> list[str]:
    """The vectors case: records/s and MB/s (float32 payload), copy stage against the limit."""
    lim, ex = vectors.get("limit_app", {}), vectors.get("execute_app", {})
    lines = [
        "",
        f"## Vectors: {args.vectors:,} x {args.vector_dim}-dim (episodic_memory, llmspell_app)",
        "",
        "Limit path: the same vectors (JSON text as stored) COPYed into a TEMP stage and moved "
        "with one INSERT ... SELECT `::vector` per tenant into the same table, as the same role, "
        "nothing checked. MB = float32 payload (records x dim x 4 bytes).",
        "",
        "| method | records | seconds | records/s | MB/s | ratio to limit |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    limit_rps = rate(lim) if "records" in lim else 0.0

    def row(name: str, r: dict, seconds: float | None) -> str:
        if not seconds:
            return f"| {name} | — | — | — | — | {r.get('error', 'not run')[:60]} |"
        rps = r["records"] / seconds
        ratio = f"{rps / limit_rps:.2f}" if limit_rps else "—"
        return (
            f"| {name} | {r['records']:,} | {seconds:.2f} | {rps:,.0f} "
            f"| {r['payload_mb'] / seconds:,.1f} | {ratio} |"
        )

    lines.append(row("b. limit path", lim, lim.get("seconds")))
    lines.append(row("a. `execute`, full validation", ex, ex.get("seconds")))
    for stage in ("preflight_and_backup", "copy", "validation"):
        secs = ex.get("stages", {}).get(stage)
        if secs:
            lines.append(row(f"&nbsp;&nbsp;↳ {stage} stage", ex, secs))
    copy = ex.get("stages", {}).get("copy")
    if copy and limit_rps:
        ratio = (ex["records"] / copy) / limit_rps
        lines += [
            "",
            f"Copy stage vs limit: {ratio:.0%} (target ≥ {VECTOR_COPY_TARGET:.0%}): "
            f"{verdict(ratio >= VECTOR_COPY_TARGET)}",
        ]
    lines += VECTOR_NOTES
    return lines


VECTOR_NOTES = [
    "",
    "Notes:",
    "",
    "- Both paths insert into a table that already carries upstream V3's HNSW index "
    "(`vector_cosine_ops`, m=16, ef_construction=128 for 768 dimensions): its maintenance, "
    "inside PostgreSQL, is most of the time. `llmspell_app` may not drop or build indexes on "
    "llmspell's tables, so loading first and indexing after is not open to either path.",
    "- The copy stage writes on 2 connections (`--workers` default), the limit path on one: "
    "the likely reason the copy stage is faster here (not measured separately).",
    "- Vectors go to PostgreSQL as the JSON text llmspell stored (pgvector parses it); "
    "pre-flight and validation parse every vector in Python (length, NaN/Inf, and the f32 bits "
    "compared with the target's).",
]


if __name__ == "__main__":
    raise SystemExit(main())
