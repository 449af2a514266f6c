"""Prints files one per tenant (`validation.source_prints.TenantPrintsWriter`): validation
reads one tenant's prints and nothing else. Pure Arrow files, no server."""

from __future__ import annotations

import pyarrow as pa

from validation.source_prints import (
    SOURCE_PRINTS,
    PrintsInMemory,
    PrintsOnDisk,
    TenantPrintsWriter,
    merge_files,
    read_prints,
)


def _batch(tenants: list[str], start: int) -> pa.RecordBatch:
    n = len(tenants)
    columns = {
        "tenant_id": tenants,
        "nkey": [f"k{start + i}" for i in range(n)],
        "llmspell_key": [f"k{start + i}" for i in range(n)],
        "picked": [True] * n,
        "fp": [bytes([i]) * 8 for i in range(n)],
    }
    arrays = [
        pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(n, f.type)
        for f in SOURCE_PRINTS
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=SOURCE_PRINTS)


def test_each_tenant_gets_its_own_files_and_reads_back_alone(tmp_path):
    one = TenantPrintsWriter(str(tmp_path), "agent_state.0", SOURCE_PRINTS)
    one.write(_batch(["a", "a", "b"], 0))  # a batch across a tenant boundary
    one.write(_batch(["b", "c"], 3))
    one.write(_batch(["a"], 5))  # a tenant seen again: a second file, nothing overwritten
    one.close()
    two = TenantPrintsWriter(str(tmp_path), "agent_state.1", SOURCE_PRINTS)
    two.write(_batch(["c", "d"], 6))
    two.close()
    assert {t: len(p) for t, p in one.files.items()} == {"a": 2, "b": 1, "c": 1}
    files = merge_files(one.files, two.files)
    on_disk = PrintsOnDisk(files)
    assert on_disk.tenants() == ["a", "b", "c", "d"]
    keys = {t: sorted(on_disk.of(t).column("nkey").to_pylist()) for t in on_disk.tenants()}
    assert keys == {"a": ["k0", "k1", "k5"], "b": ["k2", "k3"], "c": ["k4", "k6"], "d": ["k7"]}
    everything = pa.concat_tables(read_prints(p) for p in files.values())
    in_memory = PrintsInMemory(everything)
    assert in_memory.tenants() == on_disk.tenants()
    for t in on_disk.tenants():
        assert in_memory.of(t).sort_by("nkey").equals(on_disk.of(t).sort_by("nkey"))
