"""The `fleet` command line: its argparse subparser (under `python -m pipelines.migrate`) and
what it prints (the table, or one JSON document); the work is `pipelines.fleet.runner`."""

from __future__ import annotations

import argparse
import json
import sys

from core.errors import EXIT_FAILED, EXIT_OK, MigrateError
from destinations.connection import redact_text
from pipelines.fleet.runner import MIGRATED, PLANNED, Fleet, FleetResult


def render(result: FleetResult) -> list[str]:
    head = ["installation", "status", "source", "tenants (source → target)", "records", "note"]
    rows = []
    for o in result.outcomes:
        tenants = ", ".join(
            t["source"] if t["source"] == t["target"] else f"{t['source']} → {t['target']}"
            for t in o.tenants
        )
        records = ", ".join(f"{c}: {n}" for c, n in o.records.items()) or "-"
        note = o.error or ""
        if o.status == MIGRATED and o.when:
            note = f"since {o.when}" + (
                f", in sync since {o.in_sync_since}" if o.in_sync_since else ""
            )
        if o.skipped:
            note = "already migrated: skipped"
        if o.duration is not None and not o.skipped and o.status == MIGRATED:
            note = f"{o.duration:.1f}s" + (f", backup {o.backup_path}" if o.backup_path else "")
        rows.append([o.name, o.status, o.source or "-", tenants or "-", records, note])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head) - 1)]
    lines = [f"Fleet {result.command}: {result.manifest} → {result.target}"]
    for r in [head, *rows]:
        lines.append(
            "  " + "  ".join(str(c).ljust(w) for c, w in zip(r[:-1], widths)) + "  " + str(r[-1])
        )
    done = sum(o.status in (MIGRATED, PLANNED) for o in result.outcomes)
    lines.append(
        f"{done}/{len(result.outcomes)} installation(s) "
        f"{'planned' if result.command == 'plan' else 'migrated'}"
        + (f" in {result.duration:.1f}s" if result.duration else "")
    )
    return lines


def add_parser(sub) -> None:
    sp = sub.add_parser(
        "fleet",
        help="many installations into one PostgreSQL (a manifest; see docs/fleet.md)",
        description="Plan, execute, sync and report a fleet of llmspell installations, each "
        "its own all-or-nothing run, into one PostgreSQL (docs/fleet.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fsub = sp.add_subparsers(dest="fleet_command", metavar="FLEET_COMMAND", required=True)
    for name, text in (
        ("plan", "write one reviewable plan per installation and print a table"),
        ("execute", "run every installation not migrated yet (resumes interrupted ones)"),
        ("status", "per installation: not started, migrated, failed, in sync since"),
        ("sync", "sync every migrated installation with its source"),
    ):
        p = fsub.add_parser(name, help=text, description=text)
        p.add_argument("--manifest", required=True, metavar="M", help="the fleet manifest")
        p.add_argument(
            "--output-dir",
            metavar="D",
            help="where plans, working homes and backups go (default: <manifest>.fleet/ "
            "beside the manifest)",
        )
        p.add_argument("--json", action="store_true", help="one JSON document on stdout")
        p.add_argument(
            "--only", action="append", metavar="NAME", help="only this installation (repeat)"
        )
        if name == "execute":
            p.add_argument(
                "--parallel",
                type=int,
                default=1,
                metavar="N",
                help="installations run at once (1-32, default 1)",
            )
            p.add_argument("--dry-run", action="store_true", help="every pre-flight; no writes")


def run_cli(args) -> int:
    as_json = args.json
    try:
        fleet = Fleet(
            args.manifest, args.output_dir, emit=lambda line: print(line, file=sys.stderr)
        )
        if args.fleet_command == "plan":
            result = fleet.plan(args.only)
        elif args.fleet_command == "execute":
            result = fleet.execute(args.parallel, args.dry_run, args.only)
        elif args.fleet_command == "sync":
            result = fleet.sync(args.only)
        else:
            result = fleet.status()
    except MigrateError as exc:
        if as_json:
            print(json.dumps({"status": "FAILED", "error": exc.to_dict()}, indent=2))
        else:
            print(redact_text(exc.render()), file=sys.stderr)
        return exc.exit_code
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, default=str, ensure_ascii=False))
    else:
        print("\n".join(render(result)))
    if args.fleet_command == "status":
        return EXIT_OK if all(o.status == MIGRATED for o in result.outcomes) else EXIT_FAILED
    return result.exit_code
