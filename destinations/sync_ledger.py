"""What `sync` keeps in the target beside the run ledger: fingerprints and pre-images.

`llmspell_migrate.record_prints` holds, per run, component, tenant and key, the fingerprint
of the source record as it was written (`source_fp`) and of the target row right after
(`target_fp`); a NULL `source_fp` marks a key a sync deleted. The baseline a sync diffs
against is the latest print per key among completed runs, so a run that was rolled back or
never finished simply stops counting. `llmspell_migrate.preimages` holds every row a sync
replaced or deleted, as `to_jsonb(row)`, written in the transaction that removes it:
restoring puts back exactly those rows (`jsonb_populate_record` gives every column its type
again) after deleting what the run inserted. Both tables are under forced row-level
security like llmspell's own, so `llmspell_app` reads and writes one tenant at a time.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
import pyarrow as pa
from psycopg import sql

from destinations import run_ledger
from destinations.target_schema import BOOKKEEPING_SCHEMA, TENANT_SETTING
from sources.components import Component

_BOOK = sql.Identifier(BOOKKEEPING_SCHEMA)
PRINT_COLUMNS = ("tenant_id", "nkey", "llmspell_key", "source_fp", "target_fp")


def signed(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """xxhash's unsigned 64-bit fingerprints as BIGINT's signed values (same bits)."""
    return values.cast(pa.int64(), safe=False)


def baseline_sql(comp: Component, tenant: str | None, tenants: list[str] | None) -> str:
    """The latest written fingerprints of `comp` per key among completed runs (deleted keys
    left out), as text for DuckDB's postgres_query."""
    where = ""
    if tenant is not None:
        where = sql.SQL(" AND p.tenant_id = {}").format(sql.Literal(tenant))
    elif tenants:
        where = sql.SQL(" AND p.tenant_id = ANY({})").format(sql.Literal(list(tenants)))
    query = sql.SQL(
        "SELECT tenant_id, nkey, llmspell_key, source_fp, target_fp FROM (SELECT DISTINCT ON "
        "(p.tenant_id, p.nkey) p.tenant_id, p.nkey, p.llmspell_key, p.source_fp, p.target_fp "
        "FROM {book}.record_prints p JOIN {book}.runs r USING (run_id) "
        "WHERE p.component = {comp} AND r.status = {done}{where} "
        "ORDER BY p.tenant_id, p.nkey, r.started_at DESC, p.run_id DESC) b "
        "WHERE source_fp IS NOT NULL"
    ).format(
        book=_BOOK,
        comp=sql.Literal(comp.name),
        done=sql.Literal(run_ledger.COMPLETED),
        where=where or sql.SQL(""),
    )
    return query.as_string(None)


def _for_tenants(conn: psycopg.Connection, tenants: Iterable[str], bypass: bool):
    """Yield each tenant (or None once, bypassing RLS) with its setting in force for the
    caller's transaction."""
    if bypass:
        yield None
        return
    for tenant in tenants:
        conn.execute("SELECT set_config(%s, %s, true)", (TENANT_SETTING, tenant))
        yield tenant


def write_prints(
    conn: psycopg.Connection, run_id: str, comp_name: str, prints: pa.Table, bypass: bool
) -> int:
    """Record `prints` (PRINT_COLUMNS; fingerprints unsigned or signed, NULL source_fp for a
    deleted key) under `run_id`, in the caller's transaction. COPY goes to a TEMP table:
    PostgreSQL refuses COPY into a table whose row-level security applies."""
    if not prints.num_rows:
        return 0
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS llmspell_migrate_prints_stage (tenant_id TEXT, "
        "nkey TEXT, llmspell_key TEXT, source_fp BIGINT, target_fp BIGINT) ON COMMIT DELETE ROWS"
    )
    conn.execute("TRUNCATE llmspell_migrate_prints_stage")
    cols = [prints.column(n) for n in PRINT_COLUMNS[:3]]
    cols += [signed(prints.column(n)) for n in PRINT_COLUMNS[3:]]
    with conn.cursor() as cur:
        with cur.copy(
            "COPY llmspell_migrate_prints_stage (tenant_id, nkey, llmspell_key, source_fp, "
            "target_fp) FROM STDIN"
        ) as copy:
            for batch in pa.table(cols, names=list(PRINT_COLUMNS)).to_batches(50_000):
                for row in zip(*(c.to_pylist() for c in batch.columns)):
                    copy.write_row(row)
    insert = sql.SQL(
        "INSERT INTO {}.record_prints (run_id, component, tenant_id, nkey, llmspell_key, "
        "source_fp, target_fp) SELECT %s, %s, tenant_id, nkey, llmspell_key, source_fp, "
        "target_fp FROM llmspell_migrate_prints_stage{} ON CONFLICT (run_id, component, "
        "tenant_id, nkey) DO UPDATE SET llmspell_key = EXCLUDED.llmspell_key, "
        "source_fp = EXCLUDED.source_fp, target_fp = EXCLUDED.target_fp"
    )
    tenants = sorted(set(prints.column("tenant_id").to_pylist()))
    n = 0
    for tenant in _for_tenants(conn, tenants, bypass):
        if tenant is None:
            n += conn.execute(insert.format(_BOOK, sql.SQL("")), (run_id, comp_name)).rowcount
        else:
            n += conn.execute(
                insert.format(_BOOK, sql.SQL(" WHERE tenant_id = %s")),
                (run_id, comp_name, tenant),
            ).rowcount
    return n


def _key_match(comp: Component) -> sql.Composed:
    return sql.SQL("tenant_id = %(tenant)s AND {key} = ANY(%(keys)s::{kt}[])").format(
        key=sql.Identifier(comp.key_column), kt=sql.SQL(comp.column(comp.key_column).pg_type)
    )


def replace_out(
    conn: psycopg.Connection, run_id: str, comp: Component, tenant: str, keys: list[str]
) -> int:
    """Save the pre-image of the rows with these keys, then delete them (the caller's
    transaction, with the tenant's setting in force); returns rows deleted."""
    args = {"run": run_id, "comp": comp.name, "tenant": tenant, "keys": keys}
    conn.execute(
        sql.SQL(
            "INSERT INTO {book}.preimages (run_id, component, tenant_id, nkey, row_image) "
            "SELECT %(run)s, %(comp)s, tenant_id, {key}::text, to_jsonb(t) "
            "FROM llmspell.{table} t WHERE {match}"
        ).format(
            book=_BOOK,
            key=sql.Identifier(comp.key_column),
            table=sql.Identifier(comp.pg_table),
            match=_key_match(comp),
        ),
        args,
    )
    return conn.execute(
        sql.SQL("DELETE FROM llmspell.{} WHERE {}").format(
            sql.Identifier(comp.pg_table), _key_match(comp)
        ),
        args,
    ).rowcount


def preimage_rows(
    conn: psycopg.Connection, run_id: str, comp: Component, tenants: list[str], bypass: bool
) -> list[tuple[str, str, dict]]:
    """(tenant, key, row as JSON) of every pre-image the run saved for `comp`."""
    out: list[tuple[str, str, dict]] = []
    query = sql.SQL(
        "SELECT tenant_id, nkey, row_image FROM {}.preimages WHERE run_id = %s AND "
        "component = %s ORDER BY tenant_id, nkey"
    ).format(_BOOK)
    with conn.transaction():
        for _ in _for_tenants(conn, tenants, bypass):
            out += conn.execute(query, (run_id, comp.name)).fetchall()
    return out


def restore(
    conn: psycopg.Connection, run_id: str, comps: list[Component], bypass: bool
) -> dict[str, int]:
    """Undo a sync in one transaction: delete every row it inserted (its ledger), put back
    every pre-image; returns rows restored per component (`<name>_restored`) and deleted."""
    tenants = run_ledger.run_tenants(conn, run_id)
    done: dict[str, int] = {}
    with conn.transaction():
        done.update(run_ledger.delete_written(conn, run_id, comps, bypass))
        for comp in comps:
            put_back = sql.SQL(
                "INSERT INTO llmspell.{t} SELECT (jsonb_populate_record(NULL::llmspell.{t}, "
                "row_image)).* FROM {book}.preimages WHERE run_id = %s AND component = %s{w}"
            )
            n = 0
            for tenant in _for_tenants(conn, tenants, bypass):
                where = sql.SQL(" AND tenant_id = %s") if tenant else sql.SQL("")
                args = (run_id, comp.name, tenant) if tenant else (run_id, comp.name)
                n += conn.execute(
                    put_back.format(t=sql.Identifier(comp.pg_table), book=_BOOK, w=where), args
                ).rowcount
            if n:
                done[f"{comp.name}_restored"] = n
    return done
