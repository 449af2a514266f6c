"""The validation stage as the engine and `verify` run it: every component of a plan,
compared through one DuckDB session attached to both databases."""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import duckdb
import numpy as np
import psycopg
import pyarrow as pa

from core import interrupts
from core.handoff import Handoff
from core.model.components import Component
from destinations import connection
from sources.key_routing import KeyMapper, Reachability
from sources.sqlite_reader import SourceDB
from validation import artifact_content, duck
from validation.compare import MAX_REPORTED, ComponentComparer, ComponentResult
from validation.readback import has_gets, readback, readback_tenants
from validation.source_prints import PrintsInMemory, PrintsOnDisk, TenantPrints
from validation.vector_knn import knn_check


class TargetPrintsListener(Protocol):
    """Hears the stored rows' prints validation's comparison fetched (the sync baseline)."""

    def offer(self, comp: Component, tenant: str, prints: pa.Table | None) -> None:
        """One tenant's prints (tenant_id, nkey, fp), or None: not every row's was fetched."""

    def done(self, comp: Component) -> None:
        """Every tenant of `comp` was offered."""


@dataclass
class ValidationReport:
    components: list[ComponentResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.components)

    @property
    def source_records(self) -> int:
        return sum(c.source_count for c in self.components if c.records)

    @property
    def target_records(self) -> int:
        return sum(c.target_count for c in self.components if c.records)

    @property
    def checksum_samples(self) -> int:
        return sum(c.compared for c in self.components)

    @property
    def errors(self) -> int:
        return sum(c.mismatch_count + c.missing_count for c in self.components)

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "seconds": round(self.seconds, 3),
            "source_records": self.source_records,
            "target_records": self.target_records,
            "checksum_samples": self.checksum_samples,
            "errors": self.errors,
            "components": [c.to_dict() for c in self.components],
        }


def source_tenants(con, comps: list[Component], tenants: list[str] | None) -> list[str]:
    if tenants:
        return sorted(tenants)
    found: set[str] = set()
    for comp in comps:
        if comp.sqlite_table not in duck.source_tables(con):
            continue
        rows = con.execute(f"SELECT DISTINCT tenant_id FROM src.{comp.sqlite_table}").fetchall()
        found.update(r[0] for r in rows)
    return sorted(found)


class Validator:
    """One DuckDB session with the source and the target attached, reused across components."""

    def __init__(
        self,
        source_read_path: str,
        target_dsn: str,
        bypass_rls: bool,
        comps: list[Component],
        tenants: list[str] | None = None,
        mappers: dict[str, KeyMapper] | None = None,
    ):
        self.con = duck.connect(source_read_path)
        self.source_read_path = source_read_path
        self.source_tables = duck.source_tables(self.con)  # read once, not per comparer
        self.records: dict[str, int] = {}  # each component's source records, once counted
        # Every session this validator opens on the target carries one name: a Ctrl-C
        # cancels their statements on the server, where DuckDB's scanner waits in C.
        self.session = connection.session_name("validation")
        self.target_dsn = connection.named(target_dsn, self.session)
        self.admin_dsn = target_dsn
        self.tenants = tenants
        self.mappers = mappers or {}  # the key layout's re-keying, per component
        if bypass_rls:
            self.targets: dict[str, str | None] = {"tgt": None}
        else:
            self.targets = {}
            for i, tenant in enumerate(source_tenants(self.con, comps, tenants)):
                alias = f"tgt_{i}"
                duck.attach_target(self.con, self.target_dsn, alias, tenant)
                self.targets[alias] = tenant
        if bypass_rls:
            duck.attach_target(self.con, self.target_dsn, "tgt")
        self._stop = interrupts.cancelling(self.cancel)
        self._stop.__enter__()

    def compare(
        self,
        comp: Component,
        percent: float,
        threshold: int,
        only: set[tuple[str, str]] | None = None,
        source_prints: TenantPrints | None = None,
        on_tenant: Callable[[str, pa.Table, pa.Table, bool], None] | None = None,
        all_prints: bool = False,
    ) -> ComponentResult:
        """Compare `comp`; `on_tenant` hears each tenant compared: its source prints, the
        stored rows' prints the comparison fetched (tenant_id, nkey, fp) and whether they
        are every row's (full comparison, or `all_prints`: every row's print fetched though
        a sample is compared)."""
        comparer = self.comparer(comp)
        comparer.on_tenant = on_tenant
        comparer.fetch_all_prints = all_prints
        result = comparer.run(percent, threshold, only, source_prints)
        if only is None and comp.vector_column is not None:
            knn = knn_check(self.con, comp, comparer.source, self.targets, list(result.per_tenant))
            result.knn_queries = knn.queries
            result.knn_failed = len(knn.problems)
            result.mismatch_count += len(knn.problems)
            result.mismatches.extend(knn.problems[: max(0, MAX_REPORTED - len(result.mismatches))])
        return result

    def comparer(self, comp: Component, layout: str | None = None) -> ComponentComparer:
        """`comp`'s comparer; with `layout`, its source prints carry read-back's columns."""
        comparer = ComponentComparer(
            self.con,
            comp,
            self.targets,
            self.tenants,
            self.mappers.get(comp.name),
            layout,
            self.source_tables,
        )
        comparer.records = self.records.get(comp.name)
        return comparer

    def validate(
        self,
        comps: list[Component],
        percent: float,
        threshold: int,
        source_print_files: dict[str, dict[str, list[str]]] | None = None,
        reach: dict[str, Reachability] | None = None,
        on_component: Callable[[str], None] | None = None,
        target_prints: TargetPrintsListener | None = None,
    ) -> ValidationReport:
        """Validate each component, a tenant at a time; `source_print_files` (pre-flight's,
        `scan_source`, per component and tenant) are read one tenant at a time. With `reach`
        (the key routing of every record), llmspell's PostgreSQL `get` is also replayed for
        the compared keys. `on_component` hears each component validated (for progress);
        `target_prints`, each tenant's stored rows' prints the comparison fetched (for the
        sync baseline)."""
        started = time.perf_counter()
        report = ValidationReport()
        # The comparison fetches each stored row's print once; read-back (and the sync
        # baseline, `target_prints`) take theirs from it instead of printing rows again.
        # Read-back runs on its own connection, a tenant behind the comparison (DuckDB and
        # psycopg both wait on PostgreSQL without the GIL); a few tenants' prints wait
        # between them (`Handoff`), so memory follows the tenant, not the component.
        pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="readback")
        pending: list = []  # (component, its result, its read-back running)
        feed: Handoff | None = None

        def settle() -> None:
            comp, result, future = pending.pop()
            if future is not None:
                result.readback = future.result()
            report.components.append(result)
            if comp.name == "artifacts":  # and the content they refer to, bytes included
                report.components.append(self.compare_content(comps, percent, threshold))
            if on_component is not None:
                on_component(comp.name)

        try:
            for comp in comps:
                pct = self.compare_percent(comp, percent, threshold)
                routes = reach.get(comp.name) if reach is not None else None
                files = (source_print_files or {}).get(comp.name)
                if files is not None:
                    prints: TenantPrints = PrintsOnDisk(files)
                else:  # one pass for the comparison and read-back's prints
                    layout = routes.layout if routes is not None else None
                    fps = self.comparer(comp, layout).source_fingerprints(pct)
                    prints = PrintsInMemory(fps)
                future = None
                feed = None
                if routes is not None:
                    feed = Handoff(room=3)
                    future = pool.submit(self._readback_from, comp, routes, pct, feed)
                heard = self._hearer(comp, feed, target_prints)
                all_prints = target_prints is not None  # the baseline wants every row's
                result = self.compare(comp, percent, threshold, None, prints, heard, all_prints)
                if feed is not None:
                    feed.close()
                if target_prints is not None:
                    target_prints.done(comp)
                if pending:
                    settle()
                pending.append((comp, result, future))
            if pending:
                settle()
        finally:  # a failure or Ctrl-C does not wait for a read-back still running
            if feed is not None:
                feed.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
        report.seconds = time.perf_counter() - started
        return report

    def _hearer(
        self,
        comp: Component,
        feed: Handoff | None,
        target_prints: TargetPrintsListener | None,
    ) -> Callable[[str, pa.Table, pa.Table, bool], None]:
        """What hears each tenant compared: the baseline gets its stored rows' prints,
        read-back its source prints with what the comparison proved (`proven_by_comparison`)."""

        def heard(tenant: str, part: pa.Table, target: pa.Table, full: bool) -> None:
            if target_prints is not None:
                target_prints.offer(comp, tenant, target if full else None)
            if feed is not None:
                proven = proven_by_comparison(self.con, comp, part, target)
                feed.put(part.append_column("proven", proven))

        return heard

    def _readback_from(self, comp: Component, reach: Reachability, percent: float, feed: Handoff):
        """Read-back of the tenants `feed` hands over (prints without read-back's columns:
        the whole component read from SQLite here)."""
        try:
            with (
                SourceDB(self.source_read_path, snapshot=False) as db,
                psycopg.connect(self.target_dsn) as conn,
            ):
                parts = iter(feed)
                first = next(parts, None)
                if first is not None and not has_gets(first, reach):
                    feed.cancel()
                    return readback(db, conn, comp, reach, percent, self.tenants)
                ahead = [] if first is None else [first]
                return readback_tenants(
                    db, conn, comp, reach, self.tenants, itertools.chain(ahead, parts)
                )
        finally:  # a read-back that failed frees the comparison waiting on it
            feed.cancel()

    def compare_percent(self, comp: Component, percent: float, threshold: int) -> float:
        """The percent `compare` will use for `comp` (100 below the full threshold)."""
        comparer = self.comparer(comp)
        pct = comparer.effective_percent(percent, threshold)
        self.records[comp.name] = comparer.records  # counted once per component
        return pct

    def compare_content(
        self, comps: list[Component], percent: float, threshold: int
    ) -> ComponentResult:
        """Artifact content, compared through psycopg and sqlite3 (bytes streamed)."""
        src = sqlite3.connect(f"file:{self.source_read_path}?mode=ro", uri=True)
        try:
            with connection.connect(self.target_dsn, application_name=self.session) as conn:
                tenants = source_tenants(self.con, comps, self.tenants)
                return artifact_content.compare(src, conn, tenants, percent, threshold)
        finally:
            src.close()

    def cancel(self) -> None:
        """Stop whatever this validator runs, now (from any thread): DuckDB's query, and
        every statement of its sessions on the target."""
        self.con.interrupt()
        connection.cancel_sessions(self.admin_dsn, self.session)

    def close(self) -> None:
        self._stop.__exit__(None, None, None)
        self.con.close()

    def __enter__(self) -> Validator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def proven_by_comparison(
    con: duckdb.DuckDBPyConnection, comp: Component, prints: pa.Table, target: pa.Table
) -> pa.Array:
    """Per source print (row of `prints`): whether the comparison already proved the value
    llmspell's `get` must find. So when `get` reads the very row compared (its table, under
    the row's own key: (tenant_id, key) is unique there) and that row's print, which covers
    the value column's canonical text, matched the source's. Read-back then only checks
    that `get` finds the row as llmspell does (its role, the tenant set), printing nothing."""
    if "get_table" not in prints.column_names or not prints.num_rows:
        return pa.array([False] * prints.num_rows, pa.bool_())
    src = prints.select(["tenant_id", "nkey", "picked", "fp", "get_table", "get_ident"])
    src = src.append_column("i", pa.array(np.arange(prints.num_rows)))
    con.register("proof_src", src)
    con.register("proof_tgt", target)
    try:
        return (
            con.execute(
                "SELECT coalesce(p.picked AND p.get_table = ? AND p.get_ident = p.nkey "
                "AND p.fp = t.fp, false) FROM proof_src p LEFT JOIN proof_tgt t "
                "USING (tenant_id, nkey) ORDER BY p.i",
                [comp.pg_table],
            )
            .to_arrow_table()
            .column(0)
            .combine_chunks()
        )
    finally:
        con.unregister("proof_src")
        con.unregister("proof_tgt")
