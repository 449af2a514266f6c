"""Profile this project's `execute` with py-spy and name where the time goes.

    python -m bench.profile [--records N] [--percent 100] [--role llmspell_app|superuser]

Runs the same child as `bench.run` (fresh database, warm embedded server) under
`py-spy record --idle --format raw` (so time spent waiting on PostgreSQL or DuckDB shows up),
then prints inclusive and self time per function, as a share of all samples of the main
thread. Needs `py-spy` (the `bench` extra).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.server import APP_ROLE, BENCH_HOME, fresh_database, server_dsn, source_file, with_db


def _func(frame: str) -> str:
    """'fn (path/file.py:123)' -> 'fn (path/file.py)'."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def _thread(frames: list[str]) -> tuple[str, list[str]]:
    """Split py-spy's `--subprocesses --threads` prefix off a stack: ('main: MainThread',
    frames). Processes are told apart by their command (pre-flight's second scan process runs
    `pipelines.stages.source_scan` through `core.child`),
    dlt's numbered pool threads are grouped."""
    process = "main"
    while frames and frames[0].startswith("process "):
        if "pipelines.stages." in frames[0]:
            process = "worker"
        frames = frames[1:]
    label = "?"
    if frames and frames[0].startswith("thread ("):
        label = frames[0].partition(": ")[2] or "unnamed"
        frames = frames[1:]
        if label.startswith("dlt-pool"):
            label = "dlt-pool"
        elif label.startswith("ThreadPoolExecutor"):
            label = "ThreadPoolExecutor"
    return f"{process}: {label}", frames


def summarize(raw: Path, top: int = 30) -> list[str]:
    """Per thread: its samples (py-spy's --idle counts waiting too), then inclusive and self
    time per function as a share of that thread's samples."""
    per: dict[str, tuple[Counter[str], Counter[str]]] = {}
    totals: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        thread, frames = _thread(stack.split(";"))
        if not frames:
            continue
        n = int(count)
        totals[thread] += n
        incl, self_ = per.setdefault(thread, (Counter(), Counter()))
        names = [_func(f) for f in frames]
        for name in set(names):
            incl[name] += n
        self_[names[-1]] += n
    out = ["samples per thread (idle included):", ""]
    out += [f"{n:8d}  {t}" for t, n in totals.most_common()]
    for thread, total in totals.most_common():
        if total < sum(totals.values()) * 0.02:
            continue
        incl, self_ = per[thread]
        out += ["", f"## {thread}: inclusive ({total} samples)", ""]
        out += [f"{n / total:6.1%}  {name}" for name, n in incl.most_common(top)]
        out += ["", f"## {thread}: self (leaf frames)", ""]
        out += [f"{n / total:6.1%}  {name}" for name, n in self_.most_common(top)]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile")
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--percent", type=float, default=100)
    ap.add_argument("--role", default=APP_ROLE, choices=[APP_ROLE, "superuser"])
    ap.add_argument("--target")
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("--mixed", action="store_true", help="SampleSpec.scaled mix, not agents only")
    ap.add_argument("--tenants", type=int, default=3)
    args = ap.parse_args(argv)
    from sources.sample_db import SampleSpec

    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    work = (BENCH_HOME / "bench").resolve()
    work.mkdir(parents=True, exist_ok=True)
    admin = server_dsn(args.target)
    n = args.records
    if args.mixed:
        spec_ = SampleSpec.scaled(n, tenants=args.tenants)
        src = str(source_file(work, f"mixed-{n}-t{args.tenants}", spec_))
    else:
        spec_ = SampleSpec(n, 0, 0, 0, tenants=args.tenants)
        src = str(source_file(work, f"agents-{n}-t{args.tenants}", spec_))
    fresh_database(admin, "bench_profile")
    child_work = work / "run-bench_profile"
    shutil.rmtree(child_work, ignore_errors=True)
    child_work.mkdir(parents=True)
    role = APP_ROLE if args.role == APP_ROLE else None
    spec = {
        "method": "execute",
        "source": src,
        "dsn": with_db(admin, "bench_profile", role),
        "work": str(child_work),
        "percent": args.percent,
    }
    raw = work / "profile.raw"
    cmd = [spy, "record", "--idle", "--threads", "--subprocesses", "--format", "raw"]
    cmd += ["-r", str(args.rate), "-o", str(raw)]
    cmd += ["--", sys.executable, "-m", "bench.run", "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            print(line)
    if proc.returncode != 0:
        print(proc.stderr[-3000:])
    summary = summarize(raw)
    (work / "profile.txt").write_text("\n".join(summary) + "\n")
    print("\n".join(summary))
    print(f"\nraw stacks: {raw} (flamegraph.pl or speedscope can read them)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
