"""Back up artifact content as files: `source/artifact_content.jsonl` holds each content row
(tenant, hash, sizes, flags, times) and names its bytes in `source/artifact_content/`, one
file per row, streamed from SQLite piece by piece — never base64 inside a JSON line, so a
100 MiB artifact costs a file, not 133 MiB of JSON in memory."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from core.files import private_dir
from core.tenant_sql import tenant_in
from destinations.artifact_writer import stream_blob

FOLDER = "artifact_content"


def export_content(source_dir: Path, read_path: Path, tenants: list[str] | None) -> int:
    """Write the content rows of `tenants` (all when None); returns how many."""
    files = private_dir(source_dir / FOLDER)
    src = sqlite3.connect(f"file:{read_path}?mode=ro", uri=True)
    where, args = tenant_in(tenants)
    n = 0
    try:
        with open(source_dir / f"{FOLDER}.jsonl", "w", encoding="utf-8") as out:
            rows = src.execute(
                "SELECT rowid, tenant_id, content_hash, size_bytes, is_compressed, "
                "original_size_bytes, reference_count, created_at, last_accessed_at "
                f"FROM artifact_content{where} ORDER BY tenant_id, content_hash",
                args,
            )
            for rowid, tenant, digest, size, compressed, original, refs, created, accessed in rows:
                n += 1
                name = f"{n:08d}.bin"
                fd = os.open(files / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as blob:
                    for piece in stream_blob(src, "artifact_content", "data", rowid):
                        blob.write(piece)
                    blob.flush()
                    os.fsync(blob.fileno())
                row = {
                    "tenant_id": tenant,
                    "content_hash": digest,
                    "size_bytes": size,
                    "is_compressed": compressed,
                    "original_size_bytes": original,
                    "reference_count": refs,
                    "created_at": created,
                    "last_accessed_at": accessed,
                    "data": {"file": f"{FOLDER}/{name}"},
                }
                out.write(json.dumps({"tenant_id": tenant, "key": digest, "row": row}) + "\n")
            out.flush()
            os.fsync(out.fileno())
    finally:
        src.close()
    return n
