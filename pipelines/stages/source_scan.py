"""Pre-flight's one pass over every source record, on both cores.

Every record is checked (storable in PostgreSQL?), looked up among the keys already in the
target, scanned for numbers JSONB rewrites and, for an `execute`, printed for validation
from the same parse of each document (`RecordChecker.check_rows(rows, picked)` gives the
canonical texts `SourcePrints` hashes). That is Python work, one core per process: above
`PARALLEL_MIN` records the records are dealt out by their key to this process and one child
process (`core.child` runs this module); SQLite selects each one's share
(`SourceDB.select_sql`), each scans its half of every component and writes its own prints
file. The child reports each batch (progress) and each component's part; if it fails, this
process scans that half itself, so the run never depends on it.
"""

from __future__ import annotations

import queue
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from core import child
from core.model import json_numbers, registry
from core.model.components import Component, natural_key_of
from pipelines.shared.progress import Counter
from sources.key_routing import KeyMapper
from sources.record_checks import BadRecord, RecordChecker
from sources.record_print import RecordPrinter
from sources.sqlite_reader import SourceDB
from validation.source_prints import SourcePrints, TenantPrintsWriter, merge_files

MAX_LISTED = 20
PARALLEL_MIN = 20_000  # records: below this a second process costs more than it saves
# Records a process checks at a time: enough for the column-wise checks to run at C speed,
# few enough that a component of large documents keeps the scan's memory small (the
# plan's batch size is the copy's; 5000 documents of several KB, parsed, are 100+ MB).
SCAN_BATCH = 1_000


@dataclass
class ComponentSpec:
    name: str
    batch_size: int
    percent: float | None  # the comparison's effective percent; None: no prints


@dataclass
class ScanSpec:
    """What a scan needs, in picklable form (components by name: their kinds hold code)."""

    read_path: str
    components: list[ComponentSpec]
    tenants: list[str] | None
    layout: str
    keep: dict[str, set[tuple[str, str]]]  # records kept verbatim, per component
    existing: dict[str, set[tuple[str, str]]]  # (tenant, key) already in the target
    prints_dir: str | None
    # DuckDB's types of each component's columns: the prints then carry the sync baseline's
    # print of each record (`sources.record_print`)
    types: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class PartResult:
    """One process's share of one component."""

    component: str
    records: int = 0
    found: set[tuple[str, str]] = field(default_factory=set)
    bad: list[BadRecord] = field(default_factory=list)  # the first MAX_LISTED
    bad_total: int = 0
    number_changes: int = 0
    number_examples: list[str] = field(default_factory=list)
    # its prints files per tenant (None: no prints, or a record is bad)
    prints: dict[str, list[str]] | None = None
    record_prints: bool = False  # they carry every record's baseline print

    def merge(self, other: PartResult) -> PartResult:
        bad = sorted(self.bad + other.bad, key=lambda b: (b.tenant_id, b.key, b.column))
        return PartResult(
            self.component,
            self.records + other.records,
            self.found | other.found,
            bad[:MAX_LISTED],
            self.bad_total + other.bad_total,
            self.number_changes + other.number_changes,
            (self.number_examples + other.number_examples)[:MAX_LISTED],
            None
            if self.bad_total or other.bad_total or self.prints is None or other.prints is None
            else merge_files(self.prints, other.prints),
            self.record_prints and other.record_prints,
        )


def scan_part(
    db: SourceDB,
    spec: ScanSpec,
    cs: ComponentSpec,
    part: int = 0,
    parts: int = 1,
    on_batch: Callable[[int], None] = lambda n: None,
) -> PartResult:
    """Scan this process's share of one component; memory stays bounded by the batch."""
    comp = registry.get(cs.name)
    out = PartResult(cs.name)
    checker = RecordChecker(comp)
    mapper = KeyMapper(comp, spec.layout, spec.keep.get(comp.name))
    tenant_at = 1 + comp.column_names.index("tenant_id")
    in_target = spec.existing.get(comp.name) or set()
    key_of = natural_key_of(comp)
    json_at = [1 + comp.column_names.index(n) for n in comp.json_columns]
    prints = sink = printer = None
    if cs.percent is not None and spec.prints_dir is not None:
        prints = SourcePrints(comp, cs.percent, mapper, spec.layout)
        sink = TenantPrintsWriter(spec.prints_dir, f"{comp.name}.{part}", prints.schema)
        if comp.name in spec.types:
            printer = RecordPrinter(spec.types[comp.name])
            out.record_prints = printer.usable
    try:
        share = (part, parts) if parts > 1 else None
        for raw in db.iter_batches(comp, min(cs.batch_size, SCAN_BATCH), spec.tenants, share):
            rows = mapper.rows(raw)
            picked = prints.picked(rows) if prints is not None and not out.bad_total else None
            problems = checker.check_rows(rows, picked)
            if checker.number_texts:
                _count_number_changes(comp, rows, json_at, checker.number_texts, out)
            if problems:
                out.bad_total += len(problems)
                out.bad.extend(problems[: max(0, MAX_LISTED - len(out.bad))])
            elif picked is not None:  # once a record is bad the run stops: no more prints
                record_fps = printer.prints(raw) if out.record_prints else None
                out.record_prints = record_fps is not None
                sink.write(prints.batch(raw, rows, picked, checker.texts, record_fps))
            if in_target:
                for row in rows:
                    key = (row[tenant_at], key_of(row))
                    if key in in_target:
                        out.found.add(key)
            out.records += len(rows)
            on_batch(len(rows))
    finally:
        if sink is not None:
            sink.close()
    if sink is not None and not out.bad_total:
        out.prints = sink.files
    return out


def _count_number_changes(
    comp: Component, rows: list[tuple], json_at: list[int], texts: set[int], out: PartResult
) -> None:
    """Numbers llmspell will decode differently after JSONB (`1e16` -> integer, `-0` -> 0),
    in the JSON texts the record checks flagged (`texts`: their ids)."""
    tenant_at = 1 + comp.column_names.index("tenant_id")
    for at in json_at:
        for row in rows:
            if id(row[at]) not in texts:
                continue
            for found in json_numbers.scan(row[at]):
                if found.after_jsonb is None:
                    continue  # refused by the record checks
                out.number_changes += 1
                if len(out.number_examples) < MAX_LISTED:
                    out.number_examples.append(
                        f"{comp.name} {row[tenant_at]} {row[0]}: {comp.column_names[at - 1]} "
                        f"{found.path} {found.written} -> {found.after_jsonb}"
                    )


class _Helper:
    """The child scanning the second half, and a thread turning its messages into a queue
    (so this process reads them between its own batches without blocking)."""

    def __init__(self, spec: ScanSpec):
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (the child's stderr, for a message)
        self.process = child.start("pipelines.stages.source_scan", spec, self.log)
        self.messages: queue.Queue = queue.Queue()
        self.failed: str | None = None
        self.parts: dict[str, PartResult] = {}  # the child's finished parts, by component
        self.current: str | None = None  # the component this process is scanning
        self.ahead: dict[str, int] = {}  # records the child checked of later components
        self.counted: dict[str, int] = {}  # records of each component counted for the child
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                message = child.receive(self.process.stdout)
                self.messages.put(message)
                if message[0] in ("end", "error"):
                    return
        except Exception as exc:  # EOF: it died; its stderr says why
            code = self.process.wait()
            said = child.stderr_tail(self.log).splitlines()  # its last line: the error
            why = f"exited with code {code}" + (f": {said[-1]}" if said else f" ({exc!r})")
            self.messages.put(("error", why))

    def begin(self, name: str, advance: Callable[[int], None]) -> None:
        """This process starts on `name`: the child's progress on it so far counts now."""
        self.current = name
        if name in self.ahead:
            advance(self.ahead.pop(name))

    def drain(self, advance: Callable[[int], None]) -> None:
        """Progress the child reported so far (parts it finished are kept for `part`)."""
        while True:
            try:
                message = self.messages.get_nowait()
            except queue.Empty:
                return
            self._hear(message, advance)

    def part(self, name: str, advance: Callable[[int], None]) -> PartResult | None:
        """Wait for the child's part of `name` (None: the child failed, `failed` says why)."""
        while name not in self.parts and self.failed is None:
            self._hear(self.messages.get(), advance)
        return self.parts.pop(name, None)

    def fallback(self, name: str, advance: Callable[[int], None]) -> Callable[[int], None]:
        """Progress for this process scanning the child's share of `name`: the records the
        child already reported are not counted twice."""
        left = [self.counted.get(name, 0)]

        def heard(n: int) -> None:
            skip = min(n, left[0])
            left[0] -= skip
            if n - skip:
                advance(n - skip)

        return heard

    def _hear(self, message: tuple, advance: Callable[[int], None]) -> None:
        kind = message[0]
        if kind == "batch":  # counted on its component's counter, now or when it starts
            name, n = message[1], message[2]
            self.counted[name] = self.counted.get(name, 0) + n
            if name == self.current:
                advance(n)
            else:
                self.ahead[name] = self.ahead.get(name, 0) + n
        elif kind == "part":
            self.parts[message[1].component] = message[1]
        elif kind in ("error", "end"):  # ended: a part it did not send never comes
            self.failed = message[1] if kind == "error" else "it ended early"

    def close(self) -> None:
        child.stop(self.process)
        self.log.close()


def scan(
    db: SourceDB,
    spec: ScanSpec,
    counter_for: Callable[[str], Counter],
    parallel: bool,
    warn: Callable[[str], None],
) -> dict[str, PartResult]:
    """Scan every component of `spec` (on two processes when `parallel`); `counter_for`
    gives a component's progress counter (with `advance` and `finish`)."""
    helper = _Helper(spec) if parallel else None
    parts = 2 if parallel else 1
    results: dict[str, PartResult] = {}
    try:
        for cs in spec.components:
            counter = counter_for(cs.name)
            if helper is not None:
                helper.begin(cs.name, counter.advance)

            def on_batch(n: int, counter=counter, helper=helper) -> None:
                counter.advance(n)
                if helper is not None:
                    helper.drain(counter.advance)

            result = scan_part(db, spec, cs, 0, parts, on_batch)
            if parts == 2:
                theirs = helper.part(cs.name, counter.advance) if helper is not None else None
                if theirs is None:  # the child stopped: its share is scanned here
                    heard = counter.advance
                    if helper is not None:
                        warn(
                            f"the second pre-flight process stopped ({helper.failed}); "
                            "this one scans its records too"
                        )
                        heard = helper.fallback(cs.name, counter.advance)
                        helper.close()
                        helper = None
                    theirs = scan_part(db, spec, cs, 1, parts, heard)
                result = result.merge(theirs)
            counter.finish()
            results[cs.name] = result
    finally:
        if helper is not None:
            helper.close()
    return results


def child_main() -> None:
    """The second process: scan part 1 of every component, reporting as it goes."""
    spec, out = child.child_streams()
    try:
        with SourceDB(spec.read_path, snapshot=False) as db:
            for cs in spec.components:

                def heard(n: int, name: str = cs.name) -> None:
                    child.send(out, ("batch", name, n))

                result = scan_part(db, spec, cs, 1, 2, heard)
                child.send(out, ("part", result))
        child.send(out, ("end",))
    except Exception as exc:  # reported to the parent, which scans this half itself
        child.send(out, ("error", f"{type(exc).__name__}: {exc}"))
    finally:
        out.close()
