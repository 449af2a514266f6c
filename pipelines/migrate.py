"""llmspell-migrate command line: `python -m pipelines.migrate <command>`.

    plan         count the SQLite source and write a reviewable YAML plan
    execute      run a plan: pre-flight, backup, copy, validate (or roll back); --dry-run checks
    sync         after execute: insert, update and delete what changed in the source since
    verify       compare a plan's source and target again (counts, checksums, JSON content)
    validate     check one backend on its own (JSON, checksums, storability, counts)
    rollback     undo a run from its backup folder (deletes exactly the rows it wrote)
    init-target  create the llmspell schema in PostgreSQL (idempotent)
    prune        delete old backups and dlt load packages, keeping the N newest
    stop-embedded  stop the embedded PostgreSQL this tool started (its data stays)

Exit codes: 0 success; 1 migration failed and was rolled back; 2 bad invocation, plan or
input (nothing written); 3 another run holds the target's migration lock.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

from core.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, MigrateError
from core.model.registry import SUPPORTED
from destinations import embedded_server
from destinations.connection import redact_text
from pipelines import api
from pipelines.face import fleet_cli, progress_display
from pipelines.face.report import render_backend_check, render_execute, render_plan, render_sync
from pipelines.stages.validation_lines import render_validation
from pipelines.workflows.sync import SyncResult
from sources.key_routing import LAYOUTS
from sources.tenant_map import parse_cli as parse_tenant_map

EPILOG = """\
The usual sequence (as in the llmspell migration guide):
  python -m pipelines.migrate plan --from sqlite --to postgres \\
      --components agent_state,workflow_state,sessions --output migration.toml
  cat migration.toml
  python -m pipelines.migrate execute --plan migration.toml --dry-run
  python -m pipelines.migrate execute --plan migration.toml

Target: --target DSN, the plan's target.connection, LLMSPELL_MIGRATE_TARGET or
.dlt/secrets.toml; with none, an embedded PostgreSQL in .llmspell-migrate/postgres.
Passwords: LLMSPELL_MIGRATE_PASSWORD, .dlt/secrets.toml or PGPASSWORD; never in a plan.
Exit codes: 0 ok, 1 failed and rolled back, 2 bad input (nothing written), 3 target busy.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llmspell-migrate",
        description="Move llmspell data from SQLite into PostgreSQL: planned, validated, "
        "reversible.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def key_layout(sp: argparse.ArgumentParser, default_note: str) -> None:
        sp.add_argument(
            "--key-layout",
            choices=LAYOUTS,
            help="llmspell: each record lands in the row llmspell's PostgreSQL backend looks up "
            "for its SQLite key (agent:X:Y -> agent_type X, agent_id Y); verbatim: every "
            f"SQLite column unchanged, for readers of the tables ({default_note})",
        )

    def progress_option(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--progress",
            choices=progress_display.MODES,
            default="auto",
            help="auto: a live bar (records, rate, ETA) when the output is a terminal, else "
            "plain lines; bar: always the bar; plain: the guide's lines; none: no progress "
            "lines. --log-format json gives progress as JSON lines instead",
        )

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--source",
            metavar="PATH",
            action="append",
            help="an llmspell SQLite file; repeat it for each file of the installation, the "
            "main database first (default: the plan's source files, else the files llmspell's "
            "config names, else ~/.llmspell/data/llmspell.db, else "
            "~/.local/share/llmspell/llmspell.db)",
        )
        sp.add_argument(
            "--target",
            metavar="DSN",
            help="PostgreSQL connection string (default: plan, "
            "LLMSPELL_MIGRATE_TARGET, .dlt/secrets.toml, else embedded)",
        )
        sp.add_argument(
            "--tenant",
            action="append",
            metavar="ID",
            dest="tenants",
            help="migrate only this tenant (repeat for several)",
        )
        sp.add_argument(
            "--json",
            action="store_true",
            help="print one JSON report on stdout (progress goes to stderr)",
        )
        sp.add_argument(
            "--log-format",
            choices=["text", "json"],
            default="text",
            help="progress lines as text, or as one JSON object per line "
            "(time, level, message; progress events add stage, component, done, total, rate, "
            "eta_seconds) for log collectors",
        )

    sp = sub.add_parser(
        "plan",
        help="count the source and write a migration plan",
        description="Count what the SQLite database holds per component and "
        "write a reviewable YAML plan.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sp.add_argument(
        "--from",
        dest="from_backend",
        default="sqlite",
        metavar="BACKEND",
        help="source backend (only: sqlite)",
    )
    sp.add_argument(
        "--to",
        dest="to_backend",
        default="postgres",
        metavar="BACKEND",
        help="target backend (only: postgres)",
    )
    sp.add_argument(
        "--components",
        default="agent_state,workflow_state,sessions",
        help=f"comma-separated, any of: {', '.join(SUPPORTED)}; or `all` (every component "
        "holding data). Non-empty llmspell tables a plan leaves out are listed as warnings "
        "(default: agent_state,workflow_state,sessions)",
    )
    sp.add_argument(
        "--output",
        "-o",
        required=True,
        metavar="PLAN",
        help="where to write the plan (YAML, whatever the extension); never the source "
        "database, and an existing file only if it is a plan (or with --force)",
    )
    sp.add_argument(
        "--force",
        action="store_true",
        help="replace --output even when it exists and is not a plan (never the source)",
    )
    sp.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help="records per batch, 100-100000 (default: chosen from each volume)",
    )
    sp.add_argument(
        "--config",
        metavar="PATH",
        help="llmspell's config file (llmspell.toml): plan every SQLite file it names (main "
        "database, RAG vectors). Without --source and --config, the config is found as "
        "llmspell finds it (./llmspell.toml, ~/.llmspell.toml, $XDG_CONFIG_HOME/llmspell/...)",
    )
    sp.add_argument(
        "--tenant-map",
        action="append",
        metavar="SRC=DST",
        help="move source tenant SRC to tenant DST in the target (repeat for each tenant; "
        "unmapped tenants keep their name); written to the plan as target.tenant_map",
    )
    key_layout(sp, "default llmspell; written to the plan")
    common(sp)

    sp = sub.add_parser(
        "execute",
        help="run a plan (or --dry-run to check it)",
        description="Pre-flight, backup, copy every record, validate; on any "
        "failure roll back everything this run wrote.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sp.add_argument("--plan", required=True, metavar="PLAN", help="plan file written by `plan`")
    sp.add_argument(
        "--dry-run", action="store_true", help="run every pre-flight check and write nothing"
    )
    sp.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="writer connections loading batches at once (default 2, or LLMSPELL_MIGRATE_WORKERS;"
        " 2 lets PostgreSQL use both cores of a small server)",
    )
    sp.add_argument(
        "--keep-packages",
        action="store_true",
        help="keep dlt's load packages (a parquet copy of every migrated row) after the run; "
        "by default their job files are emptied once the run is over",
    )
    key_layout(sp, "default: the plan's")
    progress_option(sp)
    sp.add_argument(
        "--allow-unreachable",
        action="store_true",
        help="copy records llmspell's PostgreSQL backend cannot find (listed by pre-flight) "
        "with their SQLite columns instead of stopping; they are listed in the report",
    )
    common(sp)

    sp = sub.add_parser(
        "sync",
        help="after execute: catch the target up with what changed in the source since",
        description="Bring a migrated target up to date with the source as it is now: "
        "inserts, updates and deletes since the plan's last execute or sync, found by "
        "fingerprint. Only rows this tool wrote and PostgreSQL left unchanged are replaced "
        "or deleted; a record changed on both sides stops the sync (exit 2, nothing "
        "written). Pre-images are backed up; any failure restores them.",
        epilog="Cutover: docs/cutover.md",
    )
    sp.add_argument("--plan", required=True, metavar="PLAN", help="the plan `execute` ran")
    sp.add_argument(
        "--dry-run", action="store_true", help="report the changes and conflicts, write nothing"
    )
    sp.add_argument(
        "--allow-unreachable",
        action="store_true",
        help="write changed records llmspell's PostgreSQL backend cannot find, with their "
        "SQLite columns, instead of stopping",
    )
    sp.add_argument(
        "--prefer-source",
        action="store_true",
        help="a record changed on both sides gets the source's copy (PostgreSQL's row is "
        "kept in the pre-image backup) instead of stopping the sync",
    )
    common(sp)

    sp = sub.add_parser(
        "verify",
        help="compare a plan's source and target again",
        description="Run the validation stage on its own: per-tenant counts, sampled (or full) "
        "checksums and JSONB-aware comparison between the SQLite source and PostgreSQL. "
        "Exit 1 on a mismatch.",
    )
    sp.add_argument("--plan", required=True, metavar="PLAN", help="plan file written by `plan`")
    sp.add_argument("--full", action="store_true", help="compare every record, not a sample")
    key_layout(sp, "default: the plan's")
    progress_option(sp)
    common(sp)

    sp = sub.add_parser(
        "validate",
        help="check one backend on its own",
        description="The llmspell guide's source check. sqlite: counts, JSON that does not "
        "parse, agent checksums that are not the SHA-256 of their state, records PostgreSQL "
        "cannot store. postgres: counts per tenant. Exit 1 when a problem is found.",
    )
    sp.add_argument("--backend", required=True, choices=["sqlite", "postgres"])
    sp.add_argument(
        "--components",
        default="agent_state,workflow_state,sessions",
        help=f"comma-separated, any of: {', '.join(SUPPORTED)}",
    )
    common(sp)

    sp = sub.add_parser(
        "rollback",
        help="undo a run from its backup folder",
        description="Delete exactly the rows a run wrote (its ledger in the target says "
        "which). Refuses when one of them was changed in PostgreSQL since, unless --force. "
        "Idempotent.",
    )
    sp.add_argument("--backup", metavar="DIR", help="backups/migration-<timestamp> folder")
    sp.add_argument("--run-id", metavar="ID", help="a run id, for runs without a backup")
    sp.add_argument("--force", action="store_true", help="delete rows changed since, too")
    sp.add_argument(
        "--target", metavar="DSN", help="PostgreSQL connection string (default: the run's)"
    )
    sp.add_argument("--json", action="store_true", help="print the result as JSON")

    sub.add_parser(
        "stop-embedded",
        help="stop the embedded PostgreSQL (its data stays)",
        description="Stop the embedded PostgreSQL in $LLMSPELL_MIGRATE_HOME/postgres (default "
        ".llmspell-migrate/postgres). Its data stays; the next command starts it again.",
    )

    sp = sub.add_parser(
        "init-target",
        help="create the llmspell schema in PostgreSQL",
        description="Create what is missing of the llmspell schema (tables, "
        "indexes, triggers, forced RLS, the llmspell_app role and "
        "its grants). Idempotent; never drops or alters.",
    )
    sp.add_argument("--target", metavar="DSN", help="PostgreSQL connection string")
    sp.add_argument(
        "--app-password-env",
        metavar="VAR",
        help="environment variable holding a password for a newly created "
        "llmspell_app role (default: the role gets no password)",
    )
    sp.add_argument("--json", action="store_true", help="print the result as JSON")

    fleet_cli.add_parser(sub)

    sp = sub.add_parser(
        "prune",
        help="delete old backups and dlt load packages",
        description="Keep the N newest backups (execute's backups/migration-* and sync's "
        "backups/sync-*, counted together) and the N newest dlt load packages; delete the "
        "older ones, oldest first. A run whose backup is gone can still be undone with "
        "rollback --run-id.",
    )
    sp.add_argument("--keep", required=True, type=int, metavar="N", help="how many to keep")
    sp.add_argument(
        "--backups", default="backups", metavar="DIR", help="backup folder (default: backups)"
    )
    sp.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def _print_report(result, as_json: bool, render: Callable) -> None:
    """A run's report on stdout: one JSON document, or the rendered text."""
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False, default=str))
    else:
        print("\n".join(render(result)))


def _emit_error(exc: MigrateError, as_json: bool) -> None:
    result = exc.result
    if as_json:
        doc = result.to_dict() if result is not None else {}
        doc["error"] = {
            k: redact_text(v) if isinstance(v, str) else v for k, v in exc.to_dict().items()
        }
        doc.setdefault("status", "FAILED")
        print(json.dumps(doc, indent=2, ensure_ascii=False, default=str))
    else:
        if result is not None and not result.dry_run and result.run_id:
            render = render_sync if isinstance(result, SyncResult) else render_execute
            for line in render(result):
                print(line)
            print()
        print(redact_text(exc.render()), file=sys.stderr)


def run(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.command:
        _parser().print_help()
        return EXIT_USAGE
    as_json = getattr(args, "json", False)
    if args.command == "fleet":
        return fleet_cli.run_cli(args)
    try:
        display = progress_display.open_display(
            getattr(args, "progress", "plain"), as_json, getattr(args, "log_format", "text")
        )
        if args.command == "plan":
            result = api.make_plan(
                args.components,
                output=args.output,
                source=args.source,
                config=args.config,
                target=args.target,
                batch_size=args.batch_size,
                tenants=args.tenants,
                from_backend=args.from_backend,
                to_backend=args.to_backend,
                force=args.force,
                key_layout=args.key_layout,
                tenant_map=parse_tenant_map(args.tenant_map),
            )
            if as_json:
                print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
            else:
                print("\n".join(render_plan(result, args.output)))
            return EXIT_OK
        if args.command == "execute":
            # the live bar (if any) is gone before the report or an error is printed
            with display:
                if args.dry_run:
                    result = api.dry_run(
                        args.plan,
                        source=args.source,
                        target=args.target,
                        tenants=args.tenants,
                        emit=display.emit,
                        workers=args.workers,
                        key_layout=args.key_layout,
                        allow_unreachable=args.allow_unreachable,
                        progress=display.listener,
                    )
                else:
                    result = api.execute(
                        args.plan,
                        source=args.source,
                        target=args.target,
                        tenants=args.tenants,
                        emit=display.emit,
                        workers=args.workers,
                        keep_packages=args.keep_packages,
                        key_layout=args.key_layout,
                        allow_unreachable=args.allow_unreachable,
                        progress=display.listener,
                    )
            _print_report(result, as_json, render_execute)
            return EXIT_OK
        if args.command == "sync":
            with display:
                result = api.sync(
                    args.plan,
                    source=args.source,
                    target=args.target,
                    tenants=args.tenants,
                    emit=display.emit,
                    dry_run=args.dry_run,
                    allow_unreachable=args.allow_unreachable,
                    prefer_source=args.prefer_source,
                )
            _print_report(result, as_json, render_sync)
            return EXIT_OK
        if args.command == "verify":
            with display:
                report = api.verify(
                    args.plan,
                    source=args.source,
                    target=args.target,
                    full=args.full,
                    tenants=args.tenants,
                    key_layout=args.key_layout,
                    progress=display.listener,
                )
            if as_json:
                print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
            else:
                plan = api.load(args.plan)
                print("Validating migration...")
                print("\n".join(render_validation(report, plan.full_comparison_threshold)))
                print(
                    f"\nVerification: {'PASSED' if report.passed else 'FAILED'} "
                    f"({report.errors} errors, {report.seconds:.1f}s)"
                )
            return EXIT_OK if report.passed else EXIT_FAILED
        if args.command == "validate":
            check = api.validate_backend(
                args.backend,
                args.components,
                source=args.source,
                target=args.target,
                tenants=args.tenants,
            )
            if as_json:
                print(json.dumps(check.to_dict(), indent=2, ensure_ascii=False))
            else:
                print("\n".join(render_backend_check(check)))
            return EXIT_OK if check.ok else EXIT_FAILED
        if args.command == "rollback":
            result = api.rollback(
                backup=args.backup, run_id=args.run_id, target=args.target, force=args.force
            )
            if as_json:
                print(json.dumps(result.to_dict(), indent=2))
            elif result.status == "already_rolled_back":
                print(f"Run {result.run_id} was already rolled back; nothing to do.")
            else:
                for name, n in result.deleted.items():
                    if name.endswith("_restored"):  # a sync's pre-images put back
                        print(f"[INFO] Restored {n} records of {name[: -len('_restored')]}")
                    else:
                        print(f"[INFO] Deleted {n} records from {name}")
                print(f"[INFO] Rollback of run {result.run_id} complete. Source data unchanged.")
            return EXIT_OK
        if args.command == "stop-embedded":
            where = embedded_server.data_dir_from_env()
            if not (where / "postmaster.pid").exists():
                print(f"No embedded PostgreSQL is running in {where}.")
            else:
                embedded_server.stop(where)
                print(f"Stopped the embedded PostgreSQL in {where} (data kept).")
            return EXIT_OK
        if args.command == "init-target":
            password = os.environ.get(args.app_password_env) if args.app_password_env else None
            report = api.init_target(args.target, app_password=password)
            if as_json:
                print(json.dumps(report.to_dict(), indent=2))
            else:
                for name in report.created:
                    print(f"Created {name}")
                for name in report.existing:
                    print(f"Exists  {name} (left unchanged)")
                for w in report.warnings:
                    print(f"WARNING: {w}")
                if report.role_created:
                    print(
                        "Created role llmspell_app"
                        + (" with the given password" if password else " (no password set)")
                    )
                print("Target schema ready.")
            return EXIT_OK
        if args.command == "prune":
            pruned = api.prune(args.keep, backups=args.backups)
            if as_json:
                print(json.dumps(pruned.to_dict(), indent=2))
            else:
                for b in pruned.backups:
                    print(
                        f"Deleted {b['kind']} backup {b['path']} "
                        f"(run {b['run_id']}, created {b['created_at']})"
                    )
                print(f"Kept {pruned.backups_kept} backup(s)")
                print(f"Deleted {len(pruned.packages_deleted)} dlt load package(s)")
            return EXIT_OK
    except MigrateError as exc:
        _emit_error(exc, as_json)
        return exc.exit_code
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # a bug: one line and a way to see more, never a raw traceback
        if os.environ.get("LLMSPELL_MIGRATE_DEBUG"):
            raise
        _emit_error(
            MigrateError(
                f"internal error: {type(exc).__name__}: {_first_line(exc)}",
                "Re-run with LLMSPELL_MIGRATE_DEBUG=1 for the traceback and report it; "
                "the target is either unchanged or rolled back (`verify` tells).",
            ),
            as_json,
        )
        return EXIT_FAILED
    return EXIT_USAGE


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return redact_text(text.splitlines()[0]) if text else ""


class _ReaderGone:
    """sys.stdout (or stderr) of the command-line process: once the stream's reader is gone
    (`llmspell-migrate plan ... --json | head -1`), what is left to write goes to /dev/null
    instead of raising BrokenPipeError mid-command (a migration is not abandoned because
    nobody reads its report) or printing "Exception ignored" at exit."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._discard()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._discard()

    def _discard(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)
        try:
            self._stream.flush()  # what was buffered goes to /dev/null too
        except OSError:
            pass

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def main() -> None:
    sys.stdout, sys.stderr = _ReaderGone(sys.stdout), _ReaderGone(sys.stderr)
    code = run()
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
