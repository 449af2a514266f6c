"""`make demo`: a realistic llmspell SQLite database migrated into the embedded PostgreSQL.

Everything happens in ./demo (recreated on each run): the sample database, the plan, the
backups and the demo's own embedded PostgreSQL. Each step is printed as the command a user
would type, followed by what it prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil
import sys
from pathlib import Path

from core import settings
from destinations import embedded_server
from pipelines import migrate
from sources.memory_sample import MemorySpec
from sources.sample_db import SampleSpec, generate, tenant_ids


def step(args: list[str]) -> int:
    print(f"\n$ {settings.cli_command()} {shlex.join(args)}", flush=True)
    code = migrate.run(args)
    if code != 0:
        print(f"(exit code {code})")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default="demo", help="working folder (recreated)")
    parser.add_argument("--total", type=int, default=2000, help="records in the sample database")
    args = parser.parse_args(argv)
    root = Path(args.dir).resolve()
    home = root / ".llmspell-migrate"
    if (home / "postgres").exists():
        embedded_server.stop(home / "postgres")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    os.environ["LLMSPELL_MIGRATE_HOME"] = str(home)
    os.environ.pop("LLMSPELL_MIGRATE_TARGET", None)
    os.chdir(root)

    db = root / "llmspell.db"
    spec = SampleSpec.scaled(args.total)
    spec.memory = MemorySpec(
        vectors={384: 200, 768: 100},
        entities=120,
        relationships=160,
        patterns=80,
        tenants=("default", *tenant_ids(spec.tenants)),
    )
    # Plus the Phase 3 stores: events over several past months, hook history, and artifacts
    # with one of 1 MiB or more (a large object in PostgreSQL).
    spec = dataclasses.replace(spec, events=300, hooks=80, artifacts=40, large_artifact=True)
    counts = generate(db, spec)
    print(f"Sample llmspell database: {db}")
    for name, n in counts.items():
        print(f"  {name}: {n} records")

    plan = "migration.toml"
    components = "all"
    for cmd in (
        [
            "plan",
            "--from",
            "sqlite",
            "--to",
            "postgres",
            "--components",
            components,
            "--source",
            str(db),
            "--output",
            plan,
        ],
        ["execute", "--plan", plan, "--dry-run"],
        ["execute", "--plan", plan],
    ):
        if step(cmd) != 0:
            return 1
    print(f"\nThe embedded PostgreSQL keeps running with the migrated data in {home / 'postgres'}")
    dlt_cli = Path(sys.executable).with_name("dlt")
    for command in ("info", "trace"):
        print(
            f"Inspect the dlt run: {shlex.quote(settings.shown_path(dlt_cli))} pipeline "
            f"--pipelines-dir {shlex.quote(str(home / 'dlt'))} llmspell_migrate {command}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
