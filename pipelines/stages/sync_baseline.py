"""Fingerprints of what a run wrote: the baseline `sync` diffs against.

Two prints per written row, both cheap enough to take for every record: the source
record's (`sources.record_print`: MD5 of the record's stored columns as a canonical text
this project defines; an execute takes it from pre-flight's pass over the records, `sync`
from DuckDB, vectorised, one scan of the file) and the target row's
(`destinations.row_text.row_print`: SHA-256 of its canonical text, computed in the server).
Both are stored, so neither may be an engine's internal hash (DuckDB's `hash()` and
PostgreSQL's `hashtextextended` promise nothing across versions); the scheme is recorded
per run (`run_ledger.PRINT_SCHEME`). The next `sync` prints the source again the same way:
a key whose print moved changed, whatever its timestamps say; and it prints the target
rows of changed keys again, so a row PostgreSQL changed since is never overwritten.
Validation's canonical comparison then checks every record a sync writes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import duckdb
import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from core.model.canonical import uuid_key
from core.model.components import Component, natural_key_of
from core.tenant_sql import tenant_in
from destinations import connection, sync_ledger
from sources import record_print
from sources.key_routing import KeyMapper
from validation import duck
from validation.duck import source_tables
from validation.source_prints import read_prints

SOURCE_PRINTS = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("nkey", pa.string()),
        ("llmspell_key", pa.string()),
        ("source_fp", pa.int64()),
    ]
)
_BATCH = 25_000  # prints a batch: ~12 MB of keys in Python at a time, whatever the size


def source_prints(
    con: duckdb.DuckDBPyConnection,
    comp: Component,
    tenants: list[str] | None,
    mapper: KeyMapper | None,
) -> pa.Table:
    """Every source record's tenant, target key (as the key layout writes it), SQLite key
    and print, as one table."""
    return pa.concat_tables(
        [SOURCE_PRINTS.empty_table(), *source_print_batches(con, comp, tenants, mapper)]
    )


def source_print_sql(con: duckdb.DuckDBPyConnection, comp: Component, source: str) -> str:
    """DuckDB expression: a source record's print (`sources.record_print`), as a UBIGINT.
    MD5 is about a third the cost of SHA-256 here (200,000 records: 0.87 s against 1.95 s,
    DuckDB's `hash` 0.34 s); a print only tells a change from none."""
    return record_print.print_sql(comp, record_print.duck_types(con, comp, source))


def source_print_batches(
    con: duckdb.DuckDBPyConnection,
    comp: Component,
    tenants: list[str] | None,
    mapper: KeyMapper | None,
    by_tenant: bool = False,
) -> Iterator[pa.Table]:
    """`source_prints` a batch at a time (memory: one batch, whatever the component's size).
    Only the key columns reach Python (to re-key), the print is computed in DuckDB.
    `by_tenant`: in tenant order (DuckDB sorts, spilling to disk past its memory limit)."""
    cols = comp.column_names
    needed = ["tenant_id", comp.key_column, *(["agent_id", "agent_type"] if mapper else [])]
    needed = list(dict.fromkeys(needed))
    where, params = tenant_in(tenants)
    source = comp.source_from("src.", source_tables(con))
    query = (
        f"SELECT {comp.key_sql} AS llmspell_key, "
        + ", ".join(f'"{c}"' for c in needed)
        + f", {source_print_sql(con, comp, source)} AS fp FROM {source}{where}"
        + (" ORDER BY tenant_id" if by_tenant else "")
    )
    key_of = natural_key_of(comp)
    is_uuid = comp.column(comp.key_column).kind.is_uuid
    slots = {c: 1 + cols.index(c) for c in needed}
    width = 1 + len(cols)
    for batch in con.execute(query, params).to_arrow_reader(_BATCH):
        lkeys = batch.column("llmspell_key").to_pylist()
        if mapper is not None:  # re-keyed rows: the mapper sees the key columns it needs
            values = {c: batch.column(c).to_pylist() for c in needed}
            nkeys = []
            for i, lkey in enumerate(lkeys):
                row = [None] * width
                row[0] = lkey
                for c, at in slots.items():
                    row[at] = values[c][i]
                nkeys.append(key_of(mapper.row(tuple(row))))
        elif is_uuid:
            nkeys = [uuid_key(v) for v in batch.column(comp.key_column).to_pylist()]
        else:
            nkeys = batch.column(comp.key_column).to_pylist()
        yield pa.table(
            [  # copies: DuckDB's batch memory is not ours to keep
                pa.array(batch.column("tenant_id").to_pylist(), pa.string()),
                pa.array(nkeys, pa.string()),
                pa.array(lkeys, pa.string()),
                pa.array(batch.column("fp").to_numpy().view("int64").copy()),
            ],
            schema=SOURCE_PRINTS,
        )


def source_prints_by_tenant(
    con: duckdb.DuckDBPyConnection,
    comp: Component,
    tenants: list[str] | None,
    mapper: KeyMapper | None,
) -> Iterator[tuple[str, pa.Table]]:
    """`source_prints` one tenant at a time: memory follows the largest tenant."""
    held: list[pa.Table] = []
    current = None
    for batch in source_print_batches(con, comp, tenants, mapper, by_tenant=True):
        column = batch.column("tenant_id")
        for tenant in pc.unique(column).to_pylist():  # in order: the batch is sorted
            part = batch.filter(pc.equal(column, tenant))
            if tenant != current and held:
                yield current, pa.concat_tables(held)
                held = []
            current = tenant
            held.append(part)
    if held:
        yield current, pa.concat_tables(held)


def recorded_source_prints(paths: list[str]) -> pa.Table:
    """`SOURCE_PRINTS` of one tenant from pre-flight's prints files (`record_fp`)."""
    prints = read_prints(paths)
    return pa.table(
        [prints.column(n) for n in ("tenant_id", "nkey", "llmspell_key", "record_fp")],
        schema=SOURCE_PRINTS,
    )


def target_print_values(fps: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Validation's 8-byte target prints (`row_text.target_fingerprint_expr`) as the BIGINT
    `row_text.row_print` gives for the same row: the 8 bytes big-endian, signed."""
    if isinstance(fps, pa.ChunkedArray):
        fps = fps.combine_chunks()
    fps = fps.cast(pa.binary())
    if fps.null_count or not len(fps):
        values = [
            None if v is None else int.from_bytes(v, "big", signed=True) for v in fps.to_pylist()
        ]
        return pa.array(values, pa.int64())
    offsets = np.frombuffer(fps.buffers()[1], dtype=np.int32)[
        fps.offset : fps.offset + len(fps) + 1
    ]
    if not (np.diff(offsets) == 8).all():
        raise ValueError("target prints are 8 bytes each")
    data = np.frombuffer(fps.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return pa.array(data.view(">i8").astype(np.int64))


class BaselineRecorder:
    """Records the prints of every row `run_id` inserted, in a thread, while validation runs.

    The source prints are pre-flight's (`source_files`: its pass over the records took
    them), else taken here (DuckDB, one scan of the file per component); the target
    prints are the ones validation's full comparison takes anyway, handed over a
    tenant at a time with `offer` (`shared`; `done` ends a component): PostgreSQL then
    prints and hashes each stored row once, for both. A component validation did not print
    in full (a sample), or any not offered by the time of `commit`, has its target prints
    taken by the server here, as before. Either way the baseline is stored compactly
    (`sync_ledger.print_batches`).
    The prints are written in one transaction that commits only after `commit()` (the run
    validated); `abandon()` rolls it back, cancelling a statement in flight, so a run that
    fails validation leaves no prints behind."""

    def __init__(
        self,
        source_read_path: str,
        target: connection.Target,
        bypass: bool,
        comps: list[Component],
        tenants: list[str] | None,
        mappers: dict,
        run_id: str,
        shared: bool = False,
        source_files: dict[str, dict[str, list[str]]] | None = None,
    ):
        self._decided = threading.Event()
        self._keep = False
        self._conn: psycopg.Connection | None = None
        self._duck: duckdb.DuckDBPyConnection | None = None
        self._ready = threading.Event()  # every print written, or the thread ended
        self._error: BaseException | None = None
        self._offers: dict[str, dict[str, pa.Table]] = {}  # component -> tenant -> prints
        self._unshared: set[str] = set()  # components validation did not print in full
        self._done: set[str] = set()  # components whose every tenant was offered
        self._offered = threading.Condition()
        self._closed = not shared  # no (more) target prints will be offered
        self.written = threading.Event()  # every print written, the commit still pending
        self.recorded = 0
        self.shared_components: list[str] = []  # whose target prints came from validation
        # per component and tenant, pre-flight's prints files carrying the source prints
        self.source_files = source_files or {}
        args = (source_read_path, target, bypass, comps, tenants, mappers, run_id)
        self._thread = threading.Thread(target=self._run, args=args, name="sync-baseline")
        self._thread.start()

    def offer(self, comp: Component, tenant: str, target_prints: pa.Table | None) -> None:
        """Validation's target prints of one tenant of `comp` (tenant_id, nkey, fp: every
        stored row of the tenant), or None when it did not print every row."""
        with self._offered:
            if target_prints is None:
                self._unshared.add(comp.name)
            else:
                self._offers.setdefault(comp.name, {})[tenant] = target_prints
            self._offered.notify_all()

    def done(self, comp: Component) -> None:
        """Every tenant of `comp` was offered."""
        with self._offered:
            self._done.add(comp.name)
            self._offered.notify_all()

    def _close_offers(self) -> None:
        with self._offered:
            self._closed = True
            self._offered.notify_all()

    def _next(self, left: list[Component]) -> tuple[Component, bool]:
        """The next component to record, in the order validation offers their target prints,
        and whether they are validation's (False: the server prints the rows here)."""
        with self._offered:
            while True:
                if self._decided.is_set() and not self._keep:
                    raise _Abandoned
                for comp in left:
                    name = comp.name
                    if name in self._unshared:  # the server's prints need no wait
                        left.remove(comp)
                        return comp, False
                    if name in self._offers or name in self._done or self._closed:
                        left.remove(comp)
                        return comp, name in self._offers or name in self._done
                self._offered.wait(0.2)

    def _take(self, comp: Component, tenant: str) -> pa.Table | None:
        """Validation's prints of `tenant`, waiting for them (None: it offered none)."""
        with self._offered:
            while True:
                if self._decided.is_set() and not self._keep:
                    raise _Abandoned
                offered = self._offers.get(comp.name, {})
                if tenant in offered:
                    return offered.pop(tenant)
                if comp.name in self._done or self._closed:
                    return None
                self._offered.wait(0.2)

    def _run(self, source_read_path, target, bypass, comps, tenants, mappers, run_id) -> None:
        con = None
        try:
            con = self._duck = duck.connect(source_read_path)
            with connection.connect(target) as conn:
                self._conn = conn
                with conn.transaction():
                    total = 0
                    left = list(comps)
                    while left:
                        comp, shared = self._next(left)
                        mapper = mappers.get(comp.name)
                        if not shared:  # the server prints the rows the run inserted
                            prints = source_prints(con, comp, tenants, mapper)
                            total += sync_ledger.write_prints(
                                conn, run_id, comp, prints, bypass, ledger_only=True
                            )
                        else:
                            total += self._write_shared(
                                con, conn, run_id, comp, tenants, mapper, bypass
                            )
                            self.shared_components.append(comp.name)
                        with self._offered:  # a tenant not in the source: nothing to join
                            self._offers.pop(comp.name, None)
                    self.written.set()
                    self._ready.set()
                    self._decided.wait()
                    if not self._keep:
                        raise _Abandoned  # rolls the transaction back
                self.recorded = total
        except _Abandoned:
            pass
        except BaseException as exc:  # reported by commit(); nothing was committed
            self._error = exc
        finally:
            self._conn = self._duck = None
            self._ready.set()
            if con is not None:
                con.close()

    def _write_shared(self, con, conn, run_id, comp, tenants, mapper, bypass) -> int:
        """The baseline from source prints and validation's target prints, for the keys
        the run's ledger holds; joined here (DuckDB) one tenant at a time, as validation
        offers them (memory: a few tenants' prints, not the component's), stored as a few
        array rows."""
        n = 0
        files = self.source_files.get(comp.name)
        if files is not None:  # taken by pre-flight's pass: no scan of the source here
            by_tenant = ((t, recorded_source_prints(files[t])) for t in sorted(files))
        else:
            by_tenant = source_prints_by_tenant(con, comp, tenants, mapper)
        for tenant, prints in by_tenant:
            mine = self._take(comp, tenant)
            if mine is None:  # not validated (no stored row of it was printed)
                continue
            sync_ledger.clear_all_prints(conn, run_id, comp, [tenant], bypass)
            if not mine.num_rows:
                continue
            ledger = sync_ledger.ledger_keys(conn, run_id, comp, [tenant], bypass)
            tgt = pa.table(
                [
                    mine.column("tenant_id").cast(pa.string()),
                    mine.column("nkey").cast(pa.string()),
                    target_print_values(mine.column("fp")),
                ],
                names=["tenant_id", "nkey", "target_fp"],
            )
            con.register("b_ledger", ledger)
            con.register("b_src", prints)
            con.register("b_tgt", tgt)
            try:
                joined = con.execute(
                    "SELECT s.tenant_id, s.nkey, s.llmspell_key, s.source_fp, t.target_fp "
                    "FROM b_ledger l JOIN b_src s USING (tenant_id, nkey) "
                    "JOIN b_tgt t USING (tenant_id, nkey)"
                ).to_arrow_table()
            finally:
                for view in ("b_ledger", "b_src", "b_tgt"):
                    con.unregister(view)
            n += sync_ledger.write_print_batches(conn, run_id, comp, joined, bypass, clear=False)
        return n

    def commit(self) -> int:
        """The run validated: commit the prints (waiting for them); returns how many.
        Interrupted while they are still being written (Ctrl-C), it abandons them."""
        self._close_offers()
        try:
            self._ready.wait()
        except BaseException:
            self.abandon()
            raise
        self._keep = True
        self._decided.set()
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.recorded

    def abandon(self) -> None:
        """The run failed: write nothing, and stop soon."""
        self._decided.set()
        self._close_offers()
        con = self._duck
        if con is not None:  # DuckDB's scan of the source, if that is where it is
            try:
                con.interrupt()
            except duckdb.Error:
                pass
        conn = self._conn
        if conn is not None:
            try:
                conn.cancel_safe(timeout=5)
            except psycopg.Error:
                pass
        self._thread.join()


class _Abandoned(Exception):
    pass
