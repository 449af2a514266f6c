"""Which source records changed since they were last written: sync's diff.

The source side is every record's fingerprint now (a hash of its stored columns, keyed as
the key layout writes it); the baseline is the fingerprint of what was last written per
key. A key only in the source is an insert, one only in the baseline a delete, one in both
with another fingerprint an update. Fingerprints cover every column, so a change that
keeps `updated_at`/`data_version` (or happens within the same second) is found all the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

_KEYS = ["tenant_id", "nkey"]
CHANGE_SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("nkey", pa.string()),
        ("llmspell_key", pa.string()),
        ("source_fp", pa.int64()),  # the source's fingerprint now (NULL for a delete)
        ("base_source_fp", pa.int64()),  # as last written (NULL for an insert)
        ("base_target_fp", pa.int64()),
    ]
)
BASELINE_SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("nkey", pa.string()),
        ("llmspell_key", pa.string()),
        ("source_fp", pa.int64()),
        ("target_fp", pa.int64()),
    ]
)


@dataclass
class ChangeSet:
    """One component's changes; each table has CHANGE_SCHEMA."""

    component: str
    inserts: pa.Table
    updates: pa.Table
    deletes: pa.Table
    unchanged: int = 0
    per_tenant: dict[str, int] = field(default_factory=dict)  # source records now
    source_keys: pa.Table | None = None  # tenant_id, nkey of every source record now

    @property
    def total(self) -> int:
        return self.inserts.num_rows + self.updates.num_rows + self.deletes.num_rows

    def keys(self, *which: str) -> set[tuple[str, str]]:
        """(tenant, natural key) of the named kinds (inserts, updates, deletes)."""
        out: set[tuple[str, str]] = set()
        for name in which or ("inserts", "updates", "deletes"):
            table = getattr(self, name)
            out.update(zip(table.column("tenant_id").to_pylist(), table.column("nkey").to_pylist()))
        return out

    def counts(self) -> dict[str, int]:
        return {
            "inserted": self.inserts.num_rows,
            "updated": self.updates.num_rows,
            "deleted": self.deletes.num_rows,
            "unchanged": self.unchanged,
        }


def _shape(table: pa.Table) -> pa.Table:
    columns = [table.column(f.name).cast(f.type) for f in CHANGE_SCHEMA]
    return pa.table(columns, schema=CHANGE_SCHEMA)


def diff(component: str, source: pa.Table, baseline: pa.Table) -> ChangeSet:
    """`source`: tenant_id, nkey, llmspell_key, source_fp of every record now;
    `baseline`: BASELINE_SCHEMA."""
    src = source.select(["tenant_id", "nkey", "llmspell_key", "source_fp"])
    base = baseline.rename_columns(
        ["tenant_id", "nkey", "base_llmspell_key", "base_source_fp", "base_target_fp"]
    )
    both = src.join(base, _KEYS, join_type="inner")
    changed = both.filter(pc.not_equal(both.column("source_fp"), both.column("base_source_fp")))
    inserts = src.join(base, _KEYS, join_type="left anti")
    inserts = inserts.append_column(
        "base_source_fp", pa.nulls(inserts.num_rows, pa.int64())
    ).append_column("base_target_fp", pa.nulls(inserts.num_rows, pa.int64()))
    deletes = base.join(src, _KEYS, join_type="left anti")
    deletes = pa.table(
        {
            "tenant_id": deletes.column("tenant_id"),
            "nkey": deletes.column("nkey"),
            "llmspell_key": deletes.column("base_llmspell_key"),
            "source_fp": pa.nulls(deletes.num_rows, pa.int64()),
            "base_source_fp": deletes.column("base_source_fp"),
            "base_target_fp": deletes.column("base_target_fp"),
        }
    )
    per_tenant: dict[str, int] = {}
    for row in src.group_by("tenant_id").aggregate([("nkey", "count")]).to_pylist():
        per_tenant[row["tenant_id"]] = row["nkey_count"]
    return ChangeSet(
        component,
        _shape(inserts),
        _shape(changed),
        _shape(deletes),
        unchanged=both.num_rows - changed.num_rows,
        per_tenant=per_tenant,
        source_keys=src.select(_KEYS),
    )
