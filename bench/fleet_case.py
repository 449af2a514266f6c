"""Bench case: a fleet of installations into one server, `--parallel 1` against `--parallel 2`.

    python -m bench.fleet_case [--installations 50] [--records 2000] [--target DSN]
                               [--out docs/benchmarks-fleet.md]

Generates N installations (`SampleSpec.scaled(records, tenants=2)`, a seed each: their tenant
names and many keys are the same, as real installations' are), each mapped to tenants of its
own (`tenant_prefix: inst-<i>-`), then runs `fleet execute` of the same manifest into two fresh
databases of one server: once one installation at a time, once two at a time. Reported: total
wall time of each, and the sum of the single runs (each installation's own `execute`,
process start included) of the sequential fleet.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

import psycopg
import yaml


def run_case(admin: str, work: Path, installations: int, records: int) -> dict:
    from bench.server import with_db
    from destinations import target_schema
    from pipelines.fleet.runner import Fleet
    from sources.sample_db import SampleSpec, generate

    root = work / "fleet"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    entries = []
    for i in range(installations):
        src = root / f"inst-{i}" / "llmspell.db"
        src.parent.mkdir()
        generate(src, SampleSpec.scaled(records, tenants=2, seed=100 + i))
        entries.append({"name": f"inst-{i}", "source": str(src), "tenant_prefix": f"inst-{i}-"})
    out: dict = {"installations": installations, "records": records, "runs": {}}
    for parallel in (1, 2):
        db = f"bench_fleet_{parallel}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db}"')
        dsn = with_db(admin, db)
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                target_schema.ensure_schema(conn)
            manifest = root / f"fleet-{parallel}.yaml"
            manifest.write_text(
                yaml.safe_dump(
                    {
                        "target": {"connection": dsn},
                        "components": "all",
                        "validation": {"checksum_sample_percent": 10},
                        "installations": entries,
                    }
                )
            )
            fleet = Fleet(manifest, root / f"out-{parallel}")
            t0 = time.perf_counter()
            result = fleet.execute(parallel=parallel)
            total = time.perf_counter() - t0
            out["runs"][parallel] = {
                "total_s": total,
                "sum_single_s": sum(o.duration or 0 for o in result.outcomes),
                "migrated": sum(o.status == "migrated" for o in result.outcomes),
                "records": sum(sum(o.records.values()) for o in result.outcomes),
            }
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    return out


def render(out: dict, command: str) -> list[str]:
    n, r = out["installations"], out["records"]
    one = out["runs"][1]
    lines = [
        f"## Fleet: {n} installations x {r:,} records into one server",
        "",
        f"Command: `{command}` ({os.cpu_count()} CPUs)",
        "",
        "| --parallel | migrated | records | total wall time (s) | sum of single runs (s) | "
        "records/s |",
        "|---|---|---|---|---|---|",
    ]
    for p, run in sorted(out["runs"].items()):
        lines.append(
            f"| {p} | {run['migrated']}/{n} | {run['records']:,} | {run['total_s']:.1f} | "
            f"{run['sum_single_s']:.1f} | {run['records'] / run['total_s']:.0f} |"
        )
    lines += [
        "",
        f"Sum of the single runs of the sequential fleet: {one['sum_single_s']:.1f}s (each "
        "installation's own `execute` process); --parallel 2 against it: "
        f"{one['sum_single_s'] / out['runs'][2]['total_s']:.2f}x.",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fleet_case", description=__doc__)
    ap.add_argument("--installations", type=int, default=50)
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--target", help="superuser DSN (default: bench.run's embedded server)")
    ap.add_argument("--out", default="docs/benchmarks-fleet.md")
    args = ap.parse_args(argv)
    from bench.server import BENCH_HOME, server_dsn

    work = (BENCH_HOME / "bench").resolve()
    work.mkdir(parents=True, exist_ok=True)
    out = run_case(server_dsn(args.target), work, args.installations, args.records)
    command = "python -m bench.fleet_case " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join(["# Benchmark: fleet", "", *render(out, command.strip())])
    Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
