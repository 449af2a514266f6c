"""Peak memory with large artifacts (not part of `make test`: it writes GiBs).

1. A full `execute` of an llmspell database holding one 100 MiB artifact (llmspell's own
   limit: both backends CHECK size_bytes <= 104857600), in a child process; its peak RSS
   (the largest of it and its children) is reported.
2. The streaming paths alone with a ~1 GiB blob (SQLite's default maximum, 10^9 bytes), in
   a fresh child process each: SQLite blob -> PostgreSQL large object (the copy), the
   backup's file export, and both validation digests.
   A 1 GiB artifact cannot exist in llmspell, so this measures the machinery, not a run.

    python -m bench.artifact_rss [--gib 1] [--mib 100] [--dir /tmp/artifact-rss]

Runs on its own embedded PostgreSQL in the work folder and stops it at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1 << 20
SQLITE_MAX_LENGTH = 1_000_000_000 - MIB  # the row around the blob needs a little room


def write_blob_db(path: Path, size: int) -> str:
    """An llmspell SQLite file with one session, one content row of `size` random-ish bytes
    (written piece by piece) and one artifact; returns the content hash."""
    from sources.sample_db import SampleSpec, generate

    generate(path, SampleSpec(agents=1, workflows=1, sessions=1, kv=1, tenants=1), overwrite=True)
    conn = sqlite3.connect(path)
    tenant, session = conn.execute("SELECT tenant_id, session_id FROM sessions").fetchone()
    h = hashlib.sha256()
    with conn:
        cur = conn.execute(
            "INSERT INTO artifact_content (tenant_id, content_hash, data, size_bytes, "
            "reference_count) VALUES (?, 'pending', zeroblob(?), ?, 1)",
            (tenant, size, min(size, 104_857_600)),
        )
        rowid = cur.lastrowid
    piece = os.urandom(MIB)
    with conn, conn.blobopen("artifact_content", "data", rowid) as blob:
        for offset in range(0, size, MIB):
            chunk = piece[: min(MIB, size - offset)]
            blob.write(chunk)
            h.update(chunk)
    digest = h.hexdigest()
    with conn:
        conn.execute(
            "UPDATE artifact_content SET content_hash = ? WHERE rowid = ?", (digest, rowid)
        )
        conn.execute(
            "INSERT INTO artifacts (tenant_id, artifact_id, session_id, sequence, content_hash, "
            "metadata, name, artifact_type, mime_type, size_bytes) VALUES (?, ?, ?, 0, ?, '{}', "
            "'big.bin', 'tool_result', 'application/octet-stream', ?)",
            (tenant, f"{session}:0:{digest}", session, digest, size),
        )
    conn.close()
    return digest


def run_child(args: list[str], env: dict) -> tuple[int, float, str]:
    """Run a child under /usr/bin/time; return (exit code, its peak RSS in MiB, the last lines
    it printed). Not wait4's figure from here: a child's peak starts at its parent's size
    (the forked image is counted before exec), and this process held the blob's writes."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss, open(os.devnull, "rb") as null:
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", rss.name, sys.executable, *args],
            env=env,
            stdin=null,
            capture_output=True,
            text=True,
            check=False,
        )
        peak_kib = int(rss.read().strip().splitlines()[-1])
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-6:]
    return proc.returncode, peak_kib / 1024, "\n".join(tail)


def stream_only(db_path: str, step: str) -> None:
    """One streaming path over the big blob (runs in its own child process)."""
    from destinations import connection
    from destinations.artifact_writer import stream_blob, write_large_object
    from pipelines.stages.artifact_backup import export_content
    from validation.artifact_content import lo_digest, source_digest

    src = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    (rowid,) = src.execute("SELECT rowid FROM artifact_content").fetchone()
    if step == "backup":
        out = Path(db_path).parent / "backup-source"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        export_content(out, Path(db_path), None)
        return
    if step == "source-digest":
        print(source_digest(src, rowid))
        return
    with connection.connect(connection.resolve(None, None)) as conn:
        if step == "copy":
            oid = write_large_object(conn, stream_blob(src, "artifact_content", "data", rowid))
            conn.commit()
            Path(db_path).with_suffix(".oid").write_text(str(oid))
        elif step == "lo-digest":
            oid = int(Path(db_path).with_suffix(".oid").read_text())
            print(lo_digest(conn, oid))
            conn.execute("SELECT lo_unlink(%s)", (oid,))
            conn.commit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--dir", default="/tmp/artifact-rss")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        stream_only(args.db, args.step)
        return 0
    root = Path(args.dir).resolve()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    env = {**os.environ, "LLMSPELL_MIGRATE_HOME": str(root / "home"), "PYTHONUNBUFFERED": "1"}
    env.pop("LLMSPELL_MIGRATE_TARGET", None)
    os.environ.update(env)
    os.chdir(root)
    try:
        small = root / "llmspell-100mib.db"
        write_blob_db(small, args.mib * MIB)
        plan = str(root / "plan.toml")
        code, _, tail = run_child(
            [
                "-m",
                "pipelines.migrate",
                "plan",
                "--components",
                "sessions,artifacts",
                "--source",
                str(small),
                "-o",
                plan,
            ],
            env,
        )
        assert code == 0, tail
        started = time.perf_counter()
        code, peak, tail = run_child(["-m", "pipelines.migrate", "execute", "--plan", plan], env)
        print(
            f"execute, one {args.mib} MiB artifact: exit {code}, "
            f"{time.perf_counter() - started:.1f}s, peak RSS {peak:.0f} MiB"
        )
        print("  " + tail.replace("\n", "\n  "))
        big = root / "llmspell-big.db"
        # SQLite's compiled-in SQLITE_MAX_LENGTH (1,000,000,000 bytes by default) caps a blob.
        size = min(int(args.gib * (1 << 30)), SQLITE_MAX_LENGTH)
        digest = write_blob_db(big, size)
        print(
            f"\nstreaming paths, one blob of {size:,} bytes ({size / (1 << 30):.2f} GiB, "
            f"SQLite's maximum), sha256 {digest[:12]}...:"
        )
        for step in ("copy", "lo-digest", "source-digest", "backup"):
            t0 = time.perf_counter()
            code, peak, tail = run_child(
                ["-m", "bench.artifact_rss", "--step", step, "--db", str(big)], env
            )
            ok = (
                ""
                if step not in ("lo-digest", "source-digest")
                else (
                    " (digest matches)" if tail.endswith(digest) else f" (DIGEST DIFFERS: {tail})"
                )
            )
            print(
                f"  {step}: exit {code}, {time.perf_counter() - t0:.1f}s, "
                f"peak RSS {peak:.0f} MiB{ok}"
            )
    finally:
        subprocess.run(
            [sys.executable, "-m", "pipelines.migrate", "stop-embedded"],
            env=env,
            capture_output=True,
            check=False,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
