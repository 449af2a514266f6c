"""Count, checksum and JSONB-aware comparison of one component across SQLite and PostgreSQL.

Both sides are read through DuckDB (the target with `postgres_query`, so tenant and sample
filters run inside PostgreSQL). Every record gets a fingerprint: the first 8 bytes of SHA-256
over the canonical text of each column (JSON in PostgreSQL's own jsonb text form, UUIDs in
canonical form, timestamps as exact epoch seconds, BLOBs as hex, NULL as its own marker).
The source side is computed in Python from SQLite's values; the target side is computed
inside PostgreSQL from the stored row (`sha256` of the same text), so only keys and
fingerprints travel, never the rows' text. Counts compare the
keys of every record; fingerprints compare every record (full comparison) or a deterministic
sample picked by xxhash of the record key, the same records on both sides. Each fingerprint
mismatch is then compared column by column, JSON structurally, to say which field differs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
from psycopg import sql

from core.model.components import Component
from core.model.kinds import NULL_TEXT
from core.tenant_sql import tenant_in
from destinations.row_text import target_expr, target_fingerprint_expr
from sources.key_routing import KeyMapper
from validation.duck import source_tables
from validation.source_prints import (
    PrintsInMemory,
    SourcePrints,
    TenantPrints,
    effective_percent,
)

NULL = NULL_TEXT  # the NULL marker: `destinations.row_text` prints chr(1)
_TARGET_PRINTS = pa.schema([("tenant_id", pa.string()), ("nkey", pa.string()), ("fp", pa.binary())])
MAX_REPORTED = 20
MAX_EXPLAINED = 200
_BATCH = 5_000


def short(value, limit: int = 60) -> str:
    text = NULL if value is None else str(value)
    if text == NULL:
        return "NULL"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- results -------------------------------------------------------------------------------
@dataclass
class Mismatch:
    component: str
    tenant_id: str
    key: str
    column: str
    source: str
    target: str

    def __str__(self) -> str:
        return (
            f"{self.component} tenant={self.tenant_id} key={self.key!r} {self.column}: "
            f"source={self.source} target={self.target}"
        )

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ComponentResult:
    component: str
    mode: str = "full"  # full | sample
    sample_percent: float = 100.0
    source_count: int = 0
    target_count: int = 0
    per_tenant: dict[str, dict[str, int]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    missing_count: int = 0
    compared: int = 0
    matched: int = 0
    json_compared: int = 0
    mismatch_count: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    knn_queries: int = 0  # vector tables: nearest-neighbour queries compared
    knn_failed: int = 0
    seconds: float = 0.0
    readback: object | None = None  # validation.readback.Readback: llmspell's get() replayed
    # False for a table checked along with a component (artifact_content with artifacts):
    # its rows are not the plan's records, so run totals leave them out.
    records: bool = True

    @property
    def counts_ok(self) -> bool:
        return self.missing_count == 0 and self.source_count == self.target_count

    @property
    def readback_ok(self) -> bool:
        return self.readback is None or self.readback.mismatch_count == 0

    @property
    def passed(self) -> bool:
        return self.counts_ok and self.mismatch_count == 0 and self.readback_ok

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("mismatches", "readback")}
        d["seconds"] = round(self.seconds, 3)
        d["mismatches"] = [m.to_dict() for m in self.mismatches]
        d["readback"] = self.readback.to_dict() if self.readback is not None else None
        d["passed"] = self.passed
        return d


# -- the comparison ------------------------------------------------------------------------
class ComponentComparer:
    """Compares one component; `targets` maps a DuckDB alias to the tenant it sees (None = all)."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        comp: Component,
        targets: dict[str, str | None],
        tenants: list[str] | None = None,
        mapper: KeyMapper | None = None,
        layout: str | None = None,
        tables: set[str] | None = None,
    ):
        self.con = con
        self.comp = comp
        self.mapper = mapper  # the key layout: source rows are compared as they are written
        self.gets_layout = layout  # and where llmspell's `get` finds them
        self.targets = targets
        self.tenants = tenants
        self.names = comp.column_names
        self.source = comp.source_from("src.", tables if tables is not None else source_tables(con))
        self.records: int | None = None  # the source's records (counted once, when asked)
        # Hears each tenant compared: its source prints, the stored rows' prints the
        # comparison fetched (every row's, or the sampled ones'), and whether they are
        # every row's; read-back and the sync baseline take theirs from it and print no
        # row again.
        self.on_tenant: Callable[[str, pa.Table, pa.Table, bool], None] | None = None
        # fetch every stored row's print even when comparing a sample (the sync baseline
        # needs them all: one print per row here instead of the sample's plus the server's)
        self.fetch_all_prints = False

    def restrict_to(self, wanted: str) -> None:
        """Compare only the source records whose tenant and SQLite key are a row (t, k) of
        the DuckDB relation `wanted` (e.g. the records a sync writes)."""
        self.source = (
            f"(SELECT * FROM {self.source} WHERE EXISTS (SELECT 1 FROM {wanted} w "
            f"WHERE w.t = tenant_id AND w.k = {self.comp.key_sql})) AS wanted_rows"
        )

    # source side -------------------------------------------------------------------------
    def _source_batches(self) -> Iterator[pa.RecordBatch]:
        cols = ", ".join(f'"{n}"' for n in self.names)
        where, params = tenant_in(self.tenants)
        query = f"SELECT {self.comp.key_sql} AS llmspell_key, {cols} FROM {self.source}{where}"
        reader = self.con.execute(query, params).to_arrow_reader(_BATCH)
        yield from reader

    def source_fingerprints(
        self, percent: float, only: set[tuple[str, str]] | None = None
    ) -> pa.Table:
        """Every source record's key, whether it is sampled, and (if so) its fingerprint, and
        with a key layout what `get` must find (`SourcePrints`); built batch by batch."""
        prints = SourcePrints(self.comp, percent, self.mapper, self.gets_layout)
        parts = [prints.schema.empty_table()]
        for batch in self._source_batches():
            columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
            parts.append(pa.Table.from_batches([prints.of(list(zip(*columns)), only)]))
        return pa.concat_tables(parts)

    # target side -------------------------------------------------------------------------
    def _target_query(
        self,
        alias: str,
        tenant: str | None,
        select: sql.Composable,
        keys: list[tuple[str, str]] | None,
        con: duckdb.DuckDBPyConnection | None = None,
    ) -> pa.RecordBatchReader:
        """Run `select` inside PostgreSQL (filters pushed down) and stream the result (on
        `con`, a cursor of this session, when another thread runs it)."""
        conds = []
        if tenant is not None:
            conds.append(sql.SQL("tenant_id = {}").format(sql.Literal(tenant)))
        elif self.tenants:
            conds.append(sql.SQL("tenant_id = ANY({})").format(sql.Literal(list(self.tenants))))
        if keys is not None:
            key_type = sql.SQL(self.comp.column(self.comp.key_column).pg_type)
            conds.append(
                sql.SQL(
                    "(tenant_id, {key}) IN (SELECT u.t, u.k::{kt} FROM unnest({ts}::text[], "
                    "{ks}::text[]) AS u(t, k))"
                ).format(
                    key=sql.Identifier(self.comp.key_column),
                    kt=key_type,
                    ts=sql.Literal([k[0] for k in keys]),
                    ks=sql.Literal([k[1] for k in keys]),
                )
            )
        query = sql.SQL("SELECT {select} FROM llmspell.{table}{where}").format(
            select=select,
            table=sql.Identifier(self.comp.pg_table),
            where=sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conds) if conds else sql.SQL(""),
        )
        text = query.as_string(None)
        return (
            (con or self.con)
            .execute("SELECT * FROM postgres_query(?, ?)", [alias, text])
            .to_arrow_reader(_BATCH)
        )

    def _key_select(self, prefix: str = "") -> sql.Composable:
        return sql.SQL("tenant_id AS {}, {}::text AS {}").format(
            sql.Identifier(f"{prefix}tenant_id"),
            sql.Identifier(self.comp.key_column),
            sql.Identifier(f"{prefix}nkey"),
        )

    def target_keys(self, tenant: str | None = None) -> pa.Table:
        """Every target key (of `tenant`'s rows only, if given)."""
        parts = [r.read_all() for r in self._per_target(self._key_select(), None, tenant)]
        return pa.concat_tables(parts) if parts else _TARGET_PRINTS.empty_table().drop(["fp"])

    def target_rows(self, keys: list[tuple[str, str]] | None) -> Iterator[pa.RecordBatch]:
        """The target's rows (all of them, or those with `keys`) as canonical text, in batches
        so memory stays bounded by the batch, not by the table."""
        select = (
            self._key_select("k_")
            + sql.SQL(", ")
            + sql.SQL(", ").join(
                target_expr(c) + sql.SQL(" AS {}").format(sql.Identifier(c.name))
                for c in self.comp.columns
            )
        )
        for reader in self._per_target(select, keys):
            yield from reader

    def _per_target(
        self,
        select: sql.Composable,
        keys: list[tuple[str, str]] | None,
        only_tenant: str | None = None,
        con: duckdb.DuckDBPyConnection | None = None,
    ) -> Iterator[pa.RecordBatchReader]:
        """`select` on each attached target (one per tenant for a role under RLS), limited to
        the `keys` of that target's tenant when keys are given, and to `only_tenant`'s rows."""
        for alias, tenant in self.targets.items():
            if only_tenant is not None:
                if tenant not in (None, only_tenant):
                    continue
                tenant = only_tenant
            wanted = keys
            if keys is not None and tenant is not None:
                wanted = [k for k in keys if k[0] == tenant]
                if not wanted:
                    continue
            yield self._target_query(alias, tenant, select, wanted, con)

    def target_fingerprints(
        self,
        keys: list[tuple[str, str]] | None,
        tenant: str | None = None,
        con: duckdb.DuckDBPyConnection | None = None,
    ) -> pa.Table:
        """Keys and fingerprints of the target's rows (all, or those with `keys`; of
        `tenant` only, if given), hashed by PostgreSQL: only 8 bytes a row come back."""
        select = (
            self._key_select()
            + sql.SQL(", ")
            + target_fingerprint_expr(self.comp.columns)
            + sql.SQL(" AS fp")
        )
        parts = [_TARGET_PRINTS.empty_table()]
        readers = self._per_target(select, keys, tenant, con)
        parts += [r.read_all().cast(_TARGET_PRINTS) for r in readers]
        return pa.concat_tables(parts)

    # field-level explanation -------------------------------------------------------------
    def explain(self, tenant: str, nkey: str, lkey: str) -> list[Mismatch]:
        """Which columns of one record differ; an empty list means equal in content."""
        src = self.con.execute(
            f"SELECT {', '.join(chr(34) + n + chr(34) for n in self.names)} "
            f"FROM {self.source} WHERE tenant_id = ? AND {self.comp.key_sql} = ?",
            [tenant, lkey],
        ).fetchone()
        if src is not None and self.mapper is not None:
            src = self.mapper.row((lkey, *src))[1:]
        batches = list(self.target_rows([(tenant, nkey)]))
        tgt_table = pa.Table.from_batches(batches) if batches else None
        tgt = None
        if tgt_table is not None and tgt_table.num_rows:
            tgt = [tgt_table.column(n)[0].as_py() for n in self.names]
        out = []
        if src is None or tgt is None:
            return [
                Mismatch(
                    self.comp.name,
                    tenant,
                    lkey,
                    "*",
                    "present" if src else "absent",
                    "present" if tgt else "absent",
                )
            ]
        for col, s, t in zip(self.comp.columns, src, tgt):
            differ = col.kind.difference  # structural, where the kind has it (JSON)
            if differ is not None and s is not None and t is not None:
                diff = differ(s, t)
                if diff:
                    out.append(
                        Mismatch(
                            self.comp.name, tenant, lkey, f"{col.name} {diff}", short(s), short(t)
                        )
                    )
                continue
            if col.source_text(s) != (NULL if t is None else t):
                out.append(
                    Mismatch(
                        self.comp.name, tenant, lkey, col.name, short(col.source_text(s)), short(t)
                    )
                )
        return out

    # all together ------------------------------------------------------------------------
    def _compare_tenant(
        self,
        tenant: str,
        src: pa.Table,
        everything: bool,
        result: ComponentResult,
        fetched: pa.Table | None = None,
    ) -> list[tuple[str, str, str]]:
        """Counts, missing keys and compared prints of one tenant's source prints `src` into
        `result`; returns the records whose prints differ (tenant, nkey, SQLite key).
        `fetched`: every stored row's print of the tenant, fetched ahead."""
        if everything:
            # Every row is fetched anyway: its keys serve the counts too (one pass, less memory).
            tgt = fetched if fetched is not None else self.target_fingerprints(None, tenant)
            tgt_keys = tgt.select(["tenant_id", "nkey"])

        else:
            tgt_keys = self.target_keys(tenant)
            picked = src.filter(src.column("picked"))
            keys = [(tenant, k) for k in picked.column("nkey").to_pylist()]
            tgt = self.target_fingerprints(keys, tenant) if keys else _TARGET_PRINTS.empty_table()
        if self.on_tenant is not None:
            self.on_tenant(tenant, src, tgt, everything)
        con = self.con
        con.register("v_src", src)
        con.register("v_tgt_keys", tgt_keys)
        con.register("v_tgt", tgt)
        try:
            n_src, n_tgt = con.execute(
                "SELECT count(*), count(t.nkey) FROM v_src s "
                "LEFT JOIN v_tgt_keys t USING (tenant_id, nkey)"
            ).fetchone()
            if n_src:
                result.per_tenant[tenant] = {"source": n_src, "target": n_tgt}
            result.source_count += n_src
            result.target_count += n_tgt
            missing = con.execute(
                "SELECT s.tenant_id, s.llmspell_key FROM v_src s ANTI JOIN v_tgt_keys t "
                "USING (tenant_id, nkey) ORDER BY 1, 2"
            ).fetchall()
            result.missing_count += len(missing)
            room = MAX_REPORTED - len(result.missing)
            result.missing += [f"{t}/{k}" for t, k in missing[: max(0, room)]]
            result.compared += con.execute(
                "SELECT count(*) FROM v_src s JOIN v_tgt t USING (tenant_id, nkey) WHERE s.picked"
            ).fetchone()[0]
            return con.execute(
                "SELECT s.tenant_id, s.nkey, s.llmspell_key FROM v_src s JOIN v_tgt t "
                "USING (tenant_id, nkey) WHERE s.picked AND s.fp <> t.fp ORDER BY 1, 3"
            ).fetchall()
        finally:
            for view in ("v_src", "v_tgt_keys", "v_tgt"):
                con.unregister(view)

    def effective_percent(self, percent: float, full_threshold: int) -> float:
        """100 when the component is below the full-comparison threshold, else `percent`."""
        if self.records is None:
            where, params = tenant_in(self.tenants)
            query = f"SELECT count(*) FROM {self.source}{where}"
            self.records = self.con.execute(query, params).fetchone()[0]
        return effective_percent(percent, full_threshold, self.records)

    def _fetch_ahead(
        self, pool: ThreadPoolExecutor, cursor, tenants: list[str], at: int
    ) -> Future | None:
        """Every stored row's print of `tenants[at]`, fetched on `cursor` in `pool`."""
        if cursor is None or at >= len(tenants):
            return None
        return pool.submit(self.target_fingerprints, None, tenants[at], cursor)

    def run(
        self,
        percent: float,
        full_threshold: int,
        only: set[tuple[str, str]] | None = None,
        source_prints: TenantPrints | None = None,
    ) -> ComponentResult:
        """Compare; `source_prints` are the source fingerprints if computed ahead (they must
        be `source_fingerprints`' with the same effective percent), read a tenant at a time."""
        started = time.perf_counter()
        pct = self.effective_percent(percent, full_threshold)
        full = pct >= 100
        result = ComponentResult(
            self.comp.name, mode="full" if full else "sample", sample_percent=pct
        )
        src = source_prints
        if src is None:
            src = PrintsInMemory(self.source_fingerprints(pct, only))
        everything = (full or self.fetch_all_prints) and only is None
        differing: list[tuple[str, str, str]] = []
        # One tenant at a time: memory follows the largest tenant, not the component. When
        # every row's print is fetched, the next tenant's are fetched (PostgreSQL hashing
        # them on its own core) while this one's are compared.
        tenants = src.tenants()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="target-prints") as pool:
            cursor = self.con.cursor() if everything else None
            ahead = None
            try:
                ahead = self._fetch_ahead(pool, cursor, tenants, 0)
                for i, tenant in enumerate(tenants):
                    fetched = ahead.result() if ahead is not None else None
                    ahead = self._fetch_ahead(pool, cursor, tenants, i + 1)
                    part = src.of(tenant)
                    differing += self._compare_tenant(tenant, part, everything, result, fetched)
            finally:
                if cursor is not None:  # a fetch still running on a failure: stop it first
                    cursor.interrupt()
                    if ahead is not None:
                        ahead.exception()  # waits; its error is the failure's consequence
                    cursor.close()
        real = 0
        for i, (tenant, nkey, lkey) in enumerate(differing):
            if i >= MAX_EXPLAINED:  # past this many, a fingerprint mismatch counts as is
                real += 1
                continue
            found = self.explain(tenant, nkey, lkey)
            if found:
                real += 1
                if len(result.mismatches) < MAX_REPORTED:
                    result.mismatches.extend(found[: MAX_REPORTED - len(result.mismatches)])
        result.mismatch_count = real
        result.matched = result.compared - real
        result.json_compared = result.compared * len(self.comp.json_columns)
        result.seconds = time.perf_counter() - started
        return result
