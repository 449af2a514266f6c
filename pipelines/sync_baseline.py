"""Fingerprints of what a run wrote, and the baseline `sync` diffs against.

After `execute` validated, every row its ledger says it inserted gets two prints: the
source record's (as the key layout wrote it) and the target row's, both validation's
canonical xxhash. The next `sync` compares the source now with the first and the target
now with the second, so it finds every change on either side without trusting timestamps.
"""

from __future__ import annotations

import pyarrow as pa
from psycopg import sql

from destinations import connection, sync_ledger
from destinations.target_schema import BOOKKEEPING_SCHEMA
from sources.change_set import BASELINE_SCHEMA
from sources.components import Component
from validation.compare import ComponentComparer
from validation.stage import Validator


def comparer(validator: Validator, comp: Component) -> ComponentComparer:
    """A comparer on the validator's DuckDB session (source and target attached)."""
    return ComponentComparer(
        validator.con, comp, validator.targets, validator.tenants, validator.mappers.get(comp.name)
    )


def _from_target(validator: Validator, text_for, schema: pa.Schema) -> pa.Table:
    """Run `text_for(tenant)` in PostgreSQL through every attached target (one per tenant
    under RLS, one for all otherwise) and collect the rows as `schema`."""
    parts = [schema.empty_table()]
    for alias, tenant in validator.targets.items():
        got = validator.con.execute(
            "SELECT * FROM postgres_query(?, ?)", [alias, text_for(tenant)]
        ).arrow()
        if hasattr(got, "read_all"):
            got = got.read_all()
        columns = [got.column(i).cast(f.type) for i, f in enumerate(schema)]
        parts.append(pa.table(columns, schema=schema))
    return pa.concat_tables(parts)


def baseline(validator: Validator, comp: Component) -> pa.Table:
    """The latest written prints of `comp` per key (BASELINE_SCHEMA)."""
    return _from_target(
        validator,
        lambda tenant: sync_ledger.baseline_sql(comp, tenant, validator.tenants),
        BASELINE_SCHEMA,
    )


_LEDGER = pa.schema([("tenant_id", pa.string()), ("nkey", pa.string())])


def _ledger(validator: Validator, run_id: str, comp: Component) -> pa.Table:
    query = sql.SQL(
        "SELECT tenant_id::text, unnest(natural_keys) AS nkey FROM {}.written_keys "
        "WHERE run_id = {} AND component = {}"
    ).format(sql.Identifier(BOOKKEEPING_SCHEMA), sql.Literal(run_id), sql.Literal(comp.name))
    return _from_target(validator, lambda _tenant: query.as_string(None), _LEDGER)


def written_prints(validator: Validator, run_id: str, comp: Component) -> pa.Table:
    """Source and target prints of every row `run_id` inserted into `comp` (PRINT_COLUMNS)."""
    ledger = _ledger(validator, run_id, comp)
    if not ledger.num_rows:
        return pa.table({n: [] for n in sync_ledger.PRINT_COLUMNS})
    cmp = comparer(validator, comp)
    src = cmp.source_fingerprints(100, None).select(["tenant_id", "nkey", "llmspell_key", "fp"])
    tgt = cmp.target_fingerprints(None).rename_columns(["tenant_id", "nkey", "target_fp"])
    joined = (
        ledger.join(src, ["tenant_id", "nkey"], join_type="inner")
        .join(tgt, ["tenant_id", "nkey"], join_type="inner")
        .rename_columns({"fp": "source_fp"})
    )
    return joined.select(list(sync_ledger.PRINT_COLUMNS))


def record_run(
    source_read_path: str,
    target: connection.Target,
    bypass: bool,
    comps: list[Component],
    tenants: list[str] | None,
    mappers: dict,
    run_id: str,
) -> int:
    """Record the prints of everything `run_id` wrote (before it is marked completed);
    returns how many. A run that wrote nothing costs one ledger query per component."""
    total = 0
    with Validator(source_read_path, target.dsn, bypass, comps, tenants, mappers) as validator:
        prints = {c.name: written_prints(validator, run_id, c) for c in comps}
    with connection.connect(target) as conn:
        with conn.transaction():
            for name, table in prints.items():
                total += sync_ledger.write_prints(conn, run_id, name, table, bypass)
    return total
