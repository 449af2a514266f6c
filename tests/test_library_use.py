"""The API used as a library: from a script without a `__main__` guard, nothing of the
caller's runs again in the processes the tool starts (they run modules of ours), and a
worker that fails says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

from pipelines import api
from pipelines.workflows.engine import SourcePrinter

ROOT = Path(__file__).resolve().parent.parent


def _run_script(tmp_path: Path, body: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run `body` as a script file of its own (no main guard), in a real interpreter; return
    the process and the lines its top level wrote to a marker file (one per run of it)."""
    marker = tmp_path / "marker.txt"
    script = tmp_path / "user_script.py"
    script.write_text(
        textwrap.dedent(
            f"""\
            import os
            with open({str(marker)!r}, "a") as f:
                f.write(f"{{os.getpid()}}\\n")
            """
        )
        + textwrap.dedent(body)
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    lines = marker.read_text().splitlines() if marker.exists() else []
    return proc, lines


def test_execute_from_a_script_without_main_guard_runs_it_once(tmp_path, sample_sqlite, target_db):
    plan = tmp_path / "p.toml"
    api.make_plan("agent_state,kv_store", output=plan, source=sample_sqlite, target=target_db.dsn)
    proc, runs = _run_script(
        tmp_path,
        f"""\
        import json
        from pipelines import api
        lines = []
        result = api.execute({str(plan)!r}, emit=lines.append)
        print(json.dumps({{"status": result.status, "lines": lines}}))
        """,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(runs) == 1, f"the script's top level ran {len(runs)} times: {runs}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"] == "SUCCESS"
    # the prints worker did its job (no fallback): it never needed the caller's script
    assert not [ln for ln in out["lines"] if "not computed ahead" in ln], out["lines"]
    assert target_db.count("agent_states") == 120


def test_sample_generator_from_a_script_without_main_guard_runs_it_once(tmp_path):
    """The generator's child (50,000+ records) under `spawn`, the default on macOS (and
    `forkserver`, Python 3.14's on Linux, which imports the main script the same way)."""
    proc, runs = _run_script(
        tmp_path,
        f"""\
        import multiprocessing
        multiprocessing.set_start_method("spawn")
        from sources.sample_db import PARALLEL_MIN, SampleSpec, generate
        counts = generate({str(tmp_path / "big.db")!r}, SampleSpec.scaled(PARALLEL_MIN))
        print(sum(counts.values()))
        """,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(runs) == 1, f"the script's top level ran {len(runs)} times: {runs}"
    assert proc.stdout.split()[-1] == "50000"


def test_a_failing_prints_worker_says_why(tmp_path):
    db = SimpleNamespace(read_path=tmp_path / "no-such-snapshot.db")
    plan = SimpleNamespace(
        component_names=["agent_state"],
        tenants=None,
        checksum_sample_percent=100,
        full_comparison_threshold=0,
        key_layout=None,
    )
    with SourcePrinter(db, plan) as printer:
        assert printer.result() is None
    assert printer.failure and "no-such-snapshot.db" in printer.failure, printer.failure
