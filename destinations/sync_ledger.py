"""What `sync` keeps in the target beside the run ledger: fingerprints and pre-images.

`llmspell_migrate.record_prints` holds, per run, component, tenant and key, the fingerprint
of the source record as it was written (`source_fp`) and of the target row right after
(`target_fp`); a NULL `source_fp` marks a key a sync deleted. The baseline a sync diffs
against is the latest print per key among completed runs, so a run that was rolled back or
never finished simply stops counting. An execute's baseline (every row it inserted) is
stored compactly in `llmspell_migrate.print_batches`: one row per (run, component, tenant,
batch of up to `PRINT_BATCH` keys in key order) holding the keys and both prints as arrays,
instead of a heap row and two index entries per record; `baseline` reads both tables alike.
The target prints are the ones validation's full comparison already took (the same
`row_text` print), so PostgreSQL prints each stored row once.
`llmspell_migrate.preimages` holds every row a sync replaced or deleted, as `to_jsonb(row)`,
written in the transaction that removes it: restoring puts back exactly those rows
(`jsonb_populate_record` gives every column its type again) after deleting what the run
inserted. All three tables are under forced row-level
security like llmspell's own, so `llmspell_app` reads and writes one tenant at a time.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from core.model.components import Component
from destinations import run_ledger
from destinations.postgres_writer import table_csv
from destinations.row_text import row_print
from destinations.run_ledger import PRINT_SCHEME
from destinations.target_schema import BOOKKEEPING_SCHEMA, act_as_bookkeeper, act_as_tenant

_BOOK = sql.Identifier(BOOKKEEPING_SCHEMA)
PRINT_COLUMNS = ("tenant_id", "nkey", "llmspell_key", "source_fp", "target_fp")


def signed(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """xxhash's unsigned 64-bit fingerprints as BIGINT's signed values (same bits)."""
    return values.cast(pa.int64(), safe=False)


def completed_runs(conn: psycopg.Connection, fingerprints: list[str] | None = None) -> list[str]:
    """Every completed run (of these plan fingerprints: a fleet's installation counts only
    its own runs, never another installation's), newest first. Read with no tenant set: a
    session acting as a tenant sees no run record (`runs` is not for tenants to read)."""
    act_as_bookkeeper(conn)
    only = " AND plan_fingerprint = ANY(%s)" if fingerprints is not None else ""
    args = (run_ledger.COMPLETED, list(fingerprints)) if only else (run_ledger.COMPLETED,)
    return [
        r[0]
        for r in conn.execute(
            sql.SQL(
                "SELECT run_id FROM {}.runs WHERE status = %s"
                + only
                + " ORDER BY started_at DESC, run_id DESC"
            ).format(_BOOK),
            args,
        ).fetchall()
    ]


def has_print_batches(conn: psycopg.Connection) -> bool:
    """Whether the bookkeeping has `print_batches` (one made by an earlier version has not
    until an execute or sync completes it; its baselines are all in `record_prints`)."""
    return conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f"{BOOKKEEPING_SCHEMA}.print_batches",)
    ).fetchone()[0]


def baseline_sql(
    comp: Component,
    tenant: str | None,
    tenants: list[str] | None,
    completed: list[str],
    batches: bool = True,
) -> str:
    """The latest written fingerprints of `comp` per key among the `completed` runs (newest
    first; deleted keys left out): of `tenant`, else of `tenants` (None: all); `batches`:
    `print_batches` exists, its prints count as `record_prints`' do."""
    where = ""
    if tenant is not None:
        where = sql.SQL(" AND p.tenant_id = {}").format(sql.Literal(tenant))
    elif tenants:
        where = sql.SQL(" AND p.tenant_id = ANY({})").format(sql.Literal(list(tenants)))
    query = sql.SQL(
        "SELECT tenant_id, nkey, llmspell_key, source_fp, target_fp FROM (SELECT DISTINCT ON "
        "(p.tenant_id, p.nkey) p.tenant_id, p.nkey, p.llmspell_key, p.source_fp, p.target_fp "
        "FROM (SELECT run_id, component, tenant_id, nkey, llmspell_key, source_fp, target_fp "
        "FROM {book}.record_prints{compact}) p "
        "JOIN unnest({done}::text[]) WITH ORDINALITY "
        "AS r(run_id, newest) USING (run_id) WHERE p.component = {comp}{where} "
        "ORDER BY p.tenant_id, p.nkey, r.newest) b "
        "WHERE source_fp IS NOT NULL"
    ).format(
        book=_BOOK,
        comp=sql.Literal(comp.name),
        done=sql.Literal(list(completed)),
        where=where or sql.SQL(""),
        compact=sql.SQL(_COMPACT if batches else "").format(book=_BOOK),
    )
    return query.as_string(None)


_COMPACT = (
    " UNION ALL SELECT c.run_id, c.component, c.tenant_id, u.* FROM {book}.print_batches c "
    "CROSS JOIN LATERAL unnest(c.nkeys, c.llmspell_keys, c.source_fps, c.target_fps) "
    "AS u(nkey, llmspell_key, source_fp, target_fp)"
)


def known_tenants(conn: psycopg.Connection) -> set[str]:
    """Every tenant any run recorded writing to (what a role under RLS must visit)."""
    act_as_bookkeeper(conn)
    rows = conn.execute(
        sql.SQL("SELECT DISTINCT unnest(tenants) FROM {}.runs").format(_BOOK)
    ).fetchall()
    conn.commit()
    return {r[0] for r in rows if r[0] is not None}


def _for_tenants(conn: psycopg.Connection, tenants: Iterable[str], bypass: bool):
    """Yield each tenant (or None once, bypassing RLS) with its setting in force for the
    caller's transaction."""
    if bypass:
        yield None
        return
    for tenant in tenants:
        act_as_tenant(conn, tenant)
        yield tenant


def row_hash(comp: Component, alias: str = "t", scheme: str | None = PRINT_SCHEME) -> sql.Composed:
    """The target print of a whole row (every column): SHA-256 of its canonical text
    (`destinations.row_text.row_print`). A run recorded before PRINT_SCHEME (`scheme` None)
    stored PostgreSQL's `hashtextextended(row::text)`: only reading such a run back (rollback
    of an old sync) computes it again."""
    if scheme is None:
        return sql.SQL("hashtextextended({}::text, 0)").format(sql.Identifier(alias))
    return row_print(comp, alias)


STAGE = "llmspell_migrate_prints_stage"
LEDGER_STAGE = "llmspell_migrate_ledger_stage"


def create_stage(conn: psycopg.Connection) -> None:
    """The session's TEMP tables: the prints, COPYed in (PostgreSQL refuses COPY into a
    table whose row-level security applies; a UUID key is also kept typed, `ukey`), and the
    run's ledger keys, unnested. Both are ANALYZEd once filled, so the planner joins them
    knowing their sizes: it guesses 10 keys per ledger array and would loop over them."""
    conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} (tenant_id TEXT, nkey TEXT, "
        "llmspell_key TEXT, source_fp BIGINT, ukey UUID) ON COMMIT DELETE ROWS"
    )
    conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {LEDGER_STAGE} (tenant_id TEXT, k TEXT) "
        "ON COMMIT DELETE ROWS"
    )
    conn.execute(f"TRUNCATE {STAGE}, {LEDGER_STAGE}")


def _stage_ledger(
    conn: psycopg.Connection, run_id: str, comp: Component, tenants: list[str], bypass: bool
) -> None:
    for _ in _for_tenants(conn, tenants, bypass):
        conn.execute(
            sql.SQL(
                "INSERT INTO {} SELECT tenant_id, unnest(natural_keys) FROM {}.written_keys "
                "WHERE run_id = %s AND component = %s"
            ).format(sql.Identifier(LEDGER_STAGE), _BOOK),
            (run_id, comp.name),
        )
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(LEDGER_STAGE)))


def _key_by_uuid(comp: Component) -> bool:
    key_type = comp.column(comp.key_column).match_type
    if key_type not in ("TEXT", "UUID"):
        raise ValueError(f"{comp.name}: no print join for a {key_type} key")
    return key_type == "UUID"


def prints_insert_sql(comp: Component, ledger_only: bool, per_tenant: bool) -> sql.Composed:
    """INSERT ... SELECT of the staged prints with each target row's print (parameters run,
    comp, tenant); `ledger_only` keeps the staged ledger's keys. The join on the target
    table is leakproof (`Column.match_type`), so under RLS it can use the table's
    (tenant_id, key) index whatever the statistics say.

    `ledger_only` (an execute's baseline, written once, after `clear_prints`) writes compact
    `print_batches` rows (RETURNING each batch's size); a sync's prints go to `record_prints`
    and may replace the run's own earlier ones."""
    ledger = sql.SQL(" JOIN {} w ON w.tenant_id = s.tenant_id AND w.k = s.nkey").format(
        sql.Identifier(LEDGER_STAGE)
    )
    if ledger_only:  # compact: a row per batch of keys, in key order
        return sql.SQL(
            "INSERT INTO {book}.print_batches (run_id, component, tenant_id, batch, nkeys, "
            "llmspell_keys, source_fps, target_fps) SELECT %(run)s, %(comp)s, tenant_id, "
            "(n - 1) / {size}, array_agg(nkey ORDER BY n), array_agg(llmspell_key ORDER BY n), "
            "array_agg(source_fp ORDER BY n), array_agg(target_fp ORDER BY n) FROM (SELECT "
            "s.tenant_id, s.nkey, s.llmspell_key, s.source_fp, {hash} AS target_fp, "
            "row_number() OVER (PARTITION BY s.tenant_id ORDER BY s.nkey) AS n "
            "FROM {stage} s{ledger} JOIN llmspell.{table} t "
            "ON t.tenant_id = s.tenant_id AND t.{key} = s.{skey}{where}) p "
            "GROUP BY tenant_id, (n - 1) / {size} RETURNING cardinality(nkeys)"
        ).format(
            book=_BOOK,
            size=sql.Literal(PRINT_BATCH),
            hash=row_hash(comp),
            stage=sql.Identifier(STAGE),
            ledger=ledger,
            table=sql.Identifier(comp.pg_table),
            key=sql.Identifier(comp.key_column),
            skey=sql.Identifier("ukey" if _key_by_uuid(comp) else "nkey"),
            where=sql.SQL(" WHERE s.tenant_id = %(tenant)s") if per_tenant else sql.SQL(""),
        )
    return sql.SQL(
        "INSERT INTO {book}.record_prints (run_id, component, tenant_id, nkey, llmspell_key, "
        "source_fp, target_fp) SELECT %(run)s, %(comp)s, s.tenant_id, s.nkey, s.llmspell_key, "
        "s.source_fp, CASE WHEN s.source_fp IS NULL THEN NULL ELSE {hash} END "
        "FROM {stage} s{ledger} {join} llmspell.{table} t "
        "ON t.tenant_id = s.tenant_id AND t.{key} = s.{skey}{where}{tail}"
    ).format(
        book=_BOOK,
        hash=row_hash(comp),
        stage=sql.Identifier(STAGE),
        ledger=sql.SQL(""),
        join=sql.SQL("LEFT JOIN"),
        table=sql.Identifier(comp.pg_table),
        key=sql.Identifier(comp.key_column),
        skey=sql.Identifier("ukey" if _key_by_uuid(comp) else "nkey"),
        where=sql.SQL(" WHERE s.tenant_id = %(tenant)s") if per_tenant else sql.SQL(""),
        tail=sql.SQL(_REPLACING),
    )


PRINT_BATCH = 10_000  # keys per `print_batches` row
_REPLACING = (
    " ON CONFLICT (run_id, component, tenant_id, nkey) DO UPDATE SET "
    "llmspell_key = EXCLUDED.llmspell_key, source_fp = EXCLUDED.source_fp, "
    "target_fp = EXCLUDED.target_fp"
)


def clear_prints(
    conn: psycopg.Connection, run_id: str, comp: Component, tenants: list[str] | None = None
) -> None:
    """Remove `run_id`'s prints of `comp` for the tenant in force (all, bypassing RLS), or
    of `tenants` only: an execute resumed after a crash between writing its baseline and
    completing writes it again."""
    only = sql.SQL(" AND tenant_id = ANY(%s)") if tenants is not None else sql.SQL("")
    for table in ("record_prints", "print_batches"):
        conn.execute(
            sql.SQL("DELETE FROM {}.{} WHERE run_id = %s AND component = %s{}").format(
                _BOOK, sql.Identifier(table), only
            ),
            (run_id, comp.name, *([list(tenants)] if tenants is not None else [])),
        )


def write_prints(
    conn: psycopg.Connection,
    run_id: str,
    comp: Component,
    prints: pa.Table | Iterable[pa.Table],
    bypass: bool,
    ledger_only: bool = False,
) -> int:
    """Record prints under `run_id`, in the caller's transaction: `prints` (a table, or
    batches of one, streamed in) gives tenant_id, nkey, llmspell_key and source_fp (NULL for
    a deleted key); each target row's fingerprint is taken here, in PostgreSQL, from the row
    as it is now. `ledger_only` keeps the keys the run's ledger holds (what an execute
    inserted)."""
    create_stage(conn)
    by_uuid = _key_by_uuid(comp)
    names = list(PRINT_COLUMNS[:4]) + (["ukey"] if by_uuid else [])
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        sql.Identifier(STAGE), sql.SQL(", ").join(map(sql.Identifier, names))
    )
    tenants: set[str] = set()
    for part in [prints] if isinstance(prints, pa.Table) else prints:
        if not part.num_rows:
            continue
        columns = [part.column(n) for n in PRINT_COLUMNS[:3]] + [signed(part.column("source_fp"))]
        table = pa.table(columns + ([part.column("nkey")] if by_uuid else []), names=names)
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            copy.write(table_csv(table))
        tenants.update(pc.unique(part.column("tenant_id")).to_pylist())
    if not tenants:
        return 0
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(STAGE)))
    if ledger_only:
        _stage_ledger(conn, run_id, comp, sorted(tenants), bypass)
    n = 0
    for tenant in _for_tenants(conn, sorted(tenants), bypass):
        if ledger_only:
            clear_prints(conn, run_id, comp)
        statement = prints_insert_sql(comp, ledger_only, tenant is not None)
        cur = conn.execute(statement, {"run": run_id, "comp": comp.name, "tenant": tenant})
        n += sum(r[0] for r in cur.fetchall()) if ledger_only else cur.rowcount
    return n


def ledger_keys(
    conn: psycopg.Connection, run_id: str, comp: Component, tenants: list[str], bypass: bool
) -> pa.Table:
    """The keys `run_id` inserted into `comp` (its ledger), as tenant_id, nkey; under RLS
    the `tenants` are read one by one (the caller's transaction)."""
    query = sql.SQL(
        "SELECT tenant_id, natural_keys FROM {}.written_keys "
        "WHERE run_id = %s AND component = %s AND tenant_id = ANY(%s)"
    ).format(_BOOK)
    tenant_ids: list[str] = []
    nkeys: list[str] = []
    for _ in _for_tenants(conn, tenants, bypass):
        for tenant, keys in conn.execute(query, (run_id, comp.name, list(tenants))):
            tenant_ids += [tenant] * len(keys)
            nkeys += keys
    return pa.table(
        [pa.array(tenant_ids, pa.string()), pa.array(nkeys, pa.string())],
        names=["tenant_id", "nkey"],
    )


def clear_all_prints(
    conn: psycopg.Connection, run_id: str, comp: Component, tenants: list[str], bypass: bool
) -> None:
    """`clear_prints` of `tenants` only (once for all, bypassing RLS)."""
    for _ in _for_tenants(conn, tenants, bypass):
        clear_prints(conn, run_id, comp, tenants)


def write_print_batches(
    conn: psycopg.Connection,
    run_id: str,
    comp: Component,
    prints: pa.Table,
    bypass: bool,
    clear: bool = True,
) -> int:
    """Store `run_id`'s baseline of `comp` as compact `print_batches` rows, in the caller's
    transaction, after removing any it stored before (an execute resumed): `prints` holds
    tenant_id, nkey, llmspell_key, source_fp and target_fp (both prints taken already, e.g.
    the target's by validation), one row per key the run inserted. Nothing is hashed here:
    PostgreSQL only stores a few array rows. `clear=False`: the caller cleared them
    (`clear_all_prints`) and stores a component in parts."""
    if not prints.num_rows:
        return 0
    prints = prints.sort_by([("tenant_id", "ascending"), ("nkey", "ascending")])
    statement = sql.SQL(
        "INSERT INTO {}.print_batches (run_id, component, tenant_id, batch, nkeys, "
        "llmspell_keys, source_fps, target_fps) VALUES (%s, %s, %s, %s, %b, %b, %b, %b)"
    ).format(_BOOK)
    tenants = prints.column("tenant_id")
    n = 0
    for tenant in _for_tenants(conn, sorted(pc.unique(tenants).to_pylist()), bypass):
        if clear:
            clear_prints(conn, run_id, comp)
        mine = prints if tenant is None else prints.filter(pc.equal(tenants, tenant))
        groups = (
            [mine]
            if tenant is not None
            else [
                mine.filter(pc.equal(mine.column("tenant_id"), t))
                for t in sorted(pc.unique(mine.column("tenant_id")).to_pylist())
            ]
        )
        with conn.cursor() as cur:
            for part in groups:
                t = part.column("tenant_id")[0].as_py()
                rows = []
                for batch, start in enumerate(range(0, part.num_rows, PRINT_BATCH)):
                    chunk = part.slice(start, PRINT_BATCH)
                    rows.append(
                        (
                            run_id,
                            comp.name,
                            t,
                            batch,
                            chunk.column("nkey").to_pylist(),
                            chunk.column("llmspell_key").to_pylist(),
                            chunk.column("source_fp").to_pylist(),
                            chunk.column("target_fp").to_pylist(),
                        )
                    )
                cur.executemany(statement, rows)
                n += part.num_rows
    return n


def target_prints(
    conn: psycopg.Connection,
    comp: Component,
    keys: dict[str, list[str]],
    bypass: bool,
    scheme: str | None = PRINT_SCHEME,
) -> dict[tuple[str, str], int]:
    """The fingerprint of each target row with these keys (per tenant), as it is now (as
    `scheme` computes it: see `row_hash`)."""
    query = sql.SQL(
        "SELECT tenant_id, {key}::text, {hash} FROM llmspell.{table} t WHERE {match}"
    ).format(
        key=sql.Identifier(comp.key_column),
        hash=row_hash(comp, "t", scheme),
        table=sql.Identifier(comp.pg_table),
        match=_key_match(comp),
    )
    out: dict[tuple[str, str], int] = {}
    with conn.transaction():
        for tenant, wanted in keys.items():
            if not bypass:
                act_as_tenant(conn, tenant)
            for t, k, h in conn.execute(query, {"tenant": tenant, "keys": wanted}):
                out[(t, k)] = h
    return out


def baseline(
    conn: psycopg.Connection,
    comp: Component,
    visit: list[str],
    only: list[str] | None,
    bypass: bool,
    fingerprints: list[str] | None = None,
) -> pa.Table:
    """The latest written prints of `comp` per key among completed runs, deleted keys left
    out: tenant_id, nkey, llmspell_key, source_fp, target_fp. Under RLS the tenants in
    `visit` are read one by one; bypassing it, those in `only` (None: all)."""
    rows: list[tuple] = []
    with conn.transaction():
        completed = completed_runs(conn, fingerprints)
        batches = has_print_batches(conn)
        for tenant in _for_tenants(conn, visit, bypass):
            rows += conn.execute(baseline_sql(comp, tenant, only, completed, batches)).fetchall()
    names = ["tenant_id", "nkey", "llmspell_key", "source_fp", "target_fp"]
    columns = list(zip(*rows)) if rows else [[] for _ in names]
    types = [pa.string()] * 3 + [pa.int64()] * 2
    return pa.table([pa.array(c, t) for c, t in zip(columns, types)], names=names)


def changed_since(
    conn: psycopg.Connection,
    run_id: str,
    comps: list[Component],
    bypass: bool,
    tenants: list[str] | None = None,
) -> list[str]:
    """Rows a sync wrote or deleted that PostgreSQL changed since (llmspell writing after the
    cutover, or a hand): undoing the sync would lose those writes. A written row whose print
    moved, or that is gone; a deleted key that exists again. Under RLS the tenants read are
    `tenants` (default: the run's record)."""
    if tenants is None:
        tenants = run_ledger.run_tenants(conn, run_id)
    scheme = run_ledger.print_scheme(conn, run_id)  # its prints are compared as they were taken
    query = sql.SQL(
        "SELECT tenant_id, nkey, llmspell_key, target_fp FROM {}.record_prints "
        "WHERE run_id = %s AND component = %s"
    ).format(_BOOK)
    out: list[str] = []
    for comp in comps:
        recorded = _read_per_tenant(conn, query, (run_id, comp.name), tenants, bypass)
        by_tenant: dict[str, list[str]] = {}
        for tenant, nkey, _, _ in recorded:
            by_tenant.setdefault(tenant, []).append(nkey)
        now = target_prints(conn, comp, by_tenant, bypass, scheme)
        for tenant, nkey, llmspell_key, written in recorded:
            current = now.get((tenant, nkey))
            where = f"{comp.name} tenant={tenant} key={llmspell_key!r}"
            if written is None and current is not None:
                out.append(f"{where}: deleted by the sync, exists again in PostgreSQL")
            elif written is not None and current is None:
                out.append(f"{where}: written by the sync, deleted in PostgreSQL since")
            elif written is not None and current != written:
                out.append(f"{where}: written by the sync, changed in PostgreSQL since")
    return out


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
    query = sql.SQL(
        "SELECT tenant_id, nkey, row_image FROM {}.preimages WHERE run_id = %s AND "
        "component = %s ORDER BY tenant_id, nkey"
    ).format(_BOOK)
    return _read_per_tenant(conn, query, (run_id, comp.name), tenants, bypass)


def _read_per_tenant(
    conn: psycopg.Connection, query: sql.Composable, args: tuple, tenants: list[str], bypass: bool
) -> list[tuple]:
    """The rows `query` returns for every tenant (one query bypassing RLS)."""
    out: list[tuple] = []
    with conn.transaction():
        for _ in _for_tenants(conn, tenants, bypass):
            out += conn.execute(query, args).fetchall()
    return out


def restore(
    conn: psycopg.Connection,
    run_id: str,
    comps: list[Component],
    bypass: bool,
    tenants: list[str] | None = None,
) -> dict[str, int]:
    """Undo a sync in one transaction: delete every row it inserted (its ledger), put back
    every pre-image; returns rows restored per component (`<name>_restored`) and deleted.
    Under RLS the tenants visited are `tenants` (default: the run's record)."""
    if tenants is None:
        tenants = run_ledger.run_tenants(conn, run_id)
    done: dict[str, int] = {}
    with conn.transaction():
        done.update(run_ledger.delete_written(conn, run_id, comps, bypass, tenants))
        for comp in comps:
            images = sql.SQL(
                "FROM {}.preimages WHERE run_id = %(run)s AND component = %(comp)s "
                "AND tenant_id = %(tenant)s"
            ).format(_BOOK)
            # a row PostgreSQL wrote since under a pre-image's key gives way to the pre-image
            # (only reached with `rollback --force`: `changed_since` refuses it otherwise)
            make_way = sql.SQL(
                "DELETE FROM llmspell.{t} WHERE tenant_id = %(tenant)s AND {key} = ANY(ARRAY("
                "SELECT nkey::{kt} {images}))"
            ).format(
                t=sql.Identifier(comp.pg_table),
                key=sql.Identifier(comp.key_column),
                kt=sql.SQL(comp.column(comp.key_column).match_type),
                images=images,
            )
            put_back = sql.SQL(
                "INSERT INTO llmspell.{t} SELECT (jsonb_populate_record(NULL::llmspell.{t}, "
                "row_image)).* {images}"
            ).format(t=sql.Identifier(comp.pg_table), images=images)
            n = 0
            for tenant in tenants:
                if not bypass:
                    act_as_tenant(conn, tenant)
                args = {"run": run_id, "comp": comp.name, "tenant": tenant}
                conn.execute(make_way, args)
                n += conn.execute(put_back, args).rowcount
            if n:
                done[f"{comp.name}_restored"] = n
    return done
