"""The measured methods. Each runs inside its own child process (see `bench.run`), loads one
source file into one freshly created database and returns what it measured.

Every method reads the same SQLite file and writes the same PostgreSQL server; only the way
of loading differs. Timings cover reading SQLite through to the last commit.
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from core.model.components import Component
from core.model.kinds import BLOB, EPOCH, HEXID, JSON, UUID, VECTOR
from core.model.memory_values import vector_text
from core.model.registry import COMPONENTS
from destinations.postgres_writer import cast_expr
from destinations.target_schema import TENANT_SETTING

READ_CHUNK = 10_000
APP = "llmspell_app"


# -- helpers -------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM), in MB."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def present_components(source: str) -> list[Component]:
    """Components with at least one row in the source, in registry order."""
    con = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        out = []
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for comp in COMPONENTS.values():
            if comp.sqlite_table not in tables:
                continue
            n = con.execute(f"SELECT count(*) FROM {comp.source_from('', tables)}").fetchone()[0]
            if n:
                out.append(comp)
        return out
    finally:
        con.close()


def _rows(con: sqlite3.Connection, comp: Component, limit: int | None = None):
    cols = ", ".join(comp.column_names)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    query = f"SELECT {cols} FROM {comp.source_from('', tables)}"
    if limit:
        query += f" ORDER BY tenant_id, {comp.key_column} LIMIT {int(limit)}"
    cur = con.execute(query)
    while True:
        chunk = cur.fetchmany(READ_CHUNK)
        if not chunk:
            return
        yield from chunk


def _blob_fixer(comp: Component):
    """SQLite may hold a BLOB column's value as TEXT; PostgreSQL wants bytes. Vectors go as
    pgvector text (JSON as stored, raw f32 printed), nothing checked: the limit path."""
    idx = [i for i, c in enumerate(comp.columns) if c.kind == BLOB]
    vec = [i for i, c in enumerate(comp.columns) if c.kind == VECTOR]
    if not idx and not vec:
        return None

    def fix(row):
        row = list(row)
        for i in idx:
            if isinstance(row[i], str):
                row[i] = row[i].encode("utf-8")
        for i in vec:
            row[i] = vector_text(row[i])
        return row

    return fix


def _tenants(con: sqlite3.Connection, comp: Component) -> list[str]:
    rows = con.execute(f"SELECT DISTINCT tenant_id FROM {comp.sqlite_table} ORDER BY 1")  # superset
    return [r[0] for r in rows]


# -- b. the limit path ---------------------------------------------------------------------
def limit_staged(source: str, dsn: str) -> dict:
    """COPY every row into a TEMP staging table (raw SQLite values), then one INSERT ... SELECT
    per tenant with the casts in the SELECT, under set_config(tenant, true). One transaction
    per component. Works for llmspell_app (RLS forced) and for a superuser alike."""
    con = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    total = 0
    t0 = time.perf_counter()
    with psycopg.connect(dsn) as pg:
        for comp in present_components(source):
            stage = sql.Identifier(f"bench_stage_{comp.name}")
            cols = sql.SQL(", ").join(sql.Identifier(c) for c in comp.column_names)
            ddl = sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
                stage,
                sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.kind.stage))
                    for c in comp.columns
                ),
            )
            insert = sql.SQL(
                "INSERT INTO llmspell.{} ({}) SELECT {} FROM {} WHERE tenant_id = %s"
            ).format(
                sql.Identifier(comp.pg_table),
                cols,
                sql.SQL(", ").join(cast_expr(c) for c in comp.columns),
                stage,
            )
            fix = _blob_fixer(comp)
            with pg.transaction(), pg.cursor() as cur:
                cur.execute(ddl)
                with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, cols)) as cp:
                    for row in _rows(con, comp):
                        cp.write_row(fix(row) if fix else row)
                for tenant in _tenants(con, comp):
                    cur.execute("SELECT set_config(%s, %s, true)", (TENANT_SETTING, tenant))
                    cur.execute(insert, (tenant,))
                    total += cur.rowcount
    seconds = time.perf_counter() - t0
    con.close()
    return {"records": total, "seconds": seconds}


def server_ceiling(source: str, dsn: str, stage_dsn: str, connections: int = 2) -> dict:
    """The server's own ceiling: every row pre-staged (untimed, by the superuser) in an
    UNLOGGED table the app role may read; then `connections` llmspell_app connections, each
    moving its share of the tenants with one INSERT ... SELECT (casts in the SELECT) per
    tenant and component. No client in the timed part: what PostgreSQL itself can insert
    into the indexed, RLS-forced tables on this machine."""
    con = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    comps = present_components(source)
    tenants: set[str] = set()
    with psycopg.connect(stage_dsn) as pg:
        for comp in comps:
            stage = sql.Identifier(f"bench_ceiling_{comp.name}")
            cols = sql.SQL(", ").join(sql.Identifier(c) for c in comp.column_names)
            pg.execute(
                sql.SQL("CREATE UNLOGGED TABLE {} ({})").format(
                    stage,
                    sql.SQL(", ").join(
                        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.kind.stage))
                        for c in comp.columns
                    ),
                )
            )
            fix = _blob_fixer(comp)
            with pg.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, cols)) as cp:
                for row in _rows(con, comp):
                    cp.write_row(fix(row) if fix else row)
            pg.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(stage, sql.Identifier(APP)))
            pg.execute(sql.SQL("ANALYZE {}").format(stage))
            tenants.update(_tenants(con, comp))
    con.close()
    order = sorted(tenants)
    shares = [order[i::connections] for i in range(connections)]
    counts = [0] * connections
    errors: list[BaseException] = []

    def load(i: int) -> None:
        try:
            _load_share(i)
        except BaseException as exc:  # re-raised in the caller after both joined
            errors.append(exc)

    def _load_share(i: int) -> None:
        with psycopg.connect(dsn) as pg, pg.cursor() as cur:
            for comp in comps:
                insert = sql.SQL(
                    "INSERT INTO llmspell.{} ({}) SELECT {} FROM {} WHERE tenant_id = %s"
                ).format(
                    sql.Identifier(comp.pg_table),
                    sql.SQL(", ").join(sql.Identifier(c) for c in comp.column_names),
                    sql.SQL(", ").join(cast_expr(c) for c in comp.columns),
                    sql.Identifier(f"bench_ceiling_{comp.name}"),
                )
                for tenant in shares[i]:
                    with pg.transaction():
                        cur.execute("SELECT set_config(%s, %s, true)", (TENANT_SETTING, tenant))
                        cur.execute(insert, (tenant,))
                        counts[i] += cur.rowcount

    t0 = time.perf_counter()
    threads = [threading.Thread(target=load, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return {"records": sum(counts), "seconds": seconds}


def limit_direct_copy(source: str, dsn: str) -> dict:
    """Superuser only: COPY straight into the llmspell table, the casts done in Python
    beforehand (epoch -> aware datetime; hex ids, JSON and the rest go as text, which
    PostgreSQL parses into uuid/jsonb on input)."""
    con = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    utc = dt.UTC
    fromts = dt.datetime.fromtimestamp
    total = 0
    t0 = time.perf_counter()
    with psycopg.connect(dsn) as pg:
        for comp in present_components(source):
            epochs = [i for i, c in enumerate(comp.columns) if c.kind == EPOCH]
            blobs = [i for i, c in enumerate(comp.columns) if c.kind == BLOB]
            cols = sql.SQL(", ").join(sql.Identifier(c) for c in comp.column_names)
            stmt = sql.SQL("COPY llmspell.{} ({}) FROM STDIN").format(
                sql.Identifier(comp.pg_table), cols
            )
            with pg.transaction(), pg.cursor() as cur:
                with cur.copy(stmt) as cp:
                    for row in _rows(con, comp):
                        row = list(row)
                        for i in epochs:
                            if row[i] is not None:
                                row[i] = fromts(row[i], utc)
                        for i in blobs:
                            if isinstance(row[i], str):
                                row[i] = row[i].encode("utf-8")
                        cp.write_row(row)
                        total += 1
    seconds = time.perf_counter() - t0
    con.close()
    return {"records": total, "seconds": seconds}


# -- d. the naive per-record upsert loop ---------------------------------------------------
def naive_upsert(source: str, dsn: str, subset: int) -> dict:
    """The llmspell guide's loop: per record set_config + INSERT ... ON CONFLICT DO UPDATE,
    commit every 1,000 records."""
    con = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    comps = present_components(source)
    total = 0
    t0 = time.perf_counter()
    with psycopg.connect(dsn) as pg:
        cur = pg.cursor()
        for comp in comps:
            left = subset - total
            if left <= 0:
                break
            names = comp.column_names
            placeholders = []
            for c in comp.columns:
                if c.kind == EPOCH:
                    placeholders.append(sql.SQL("to_timestamp(%s)"))
                elif c.kind == JSON:
                    placeholders.append(sql.SQL("%s::jsonb"))
                elif c.kind in (HEXID, UUID):
                    placeholders.append(sql.SQL("%s::uuid"))
                else:
                    placeholders.append(sql.SQL("%s"))
            updates = [
                n for n in names if n not in ("tenant_id", comp.key_column, "state_id", "kv_id")
            ]
            stmt = sql.SQL(
                "INSERT INTO llmspell.{} ({}) VALUES ({}) ON CONFLICT (tenant_id, {}) "
                "DO UPDATE SET {}"
            ).format(
                sql.Identifier(comp.pg_table),
                sql.SQL(", ").join(sql.Identifier(n) for n in names),
                sql.SQL(", ").join(placeholders),
                sql.Identifier(comp.key_column),
                sql.SQL(", ").join(
                    sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in updates
                ),
            )
            tenant_at = names.index("tenant_id")
            fix = _blob_fixer(comp)
            for row in _rows(con, comp, limit=left):
                cur.execute("SELECT set_config(%s, %s, true)", (TENANT_SETTING, row[tenant_at]))
                cur.execute(stmt, fix(row) if fix else row)
                total += 1
                if total % 1000 == 0:
                    pg.commit()
        pg.commit()
    seconds = time.perf_counter() - t0
    con.close()
    return {"records": total, "seconds": seconds}


class RssSampler:
    """Samples the RSS of this process and its child processes (pre-flight's second scan
    process) every 0.1 s: the peak of the tool's processes together, and in which stage it
    fell (VmHWM says how high one process went, not when)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _rss_mb(pid: str) -> float:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    @staticmethod
    def _children() -> list[str]:
        out: list[str] = []
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{task}/children") as fh:
                    out += fh.read().split()
            except OSError:
                pass
        return out

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            total = self._rss_mb("self") + sum(self._rss_mb(pid) for pid in self._children())
            self.samples.append((time.perf_counter(), total))

    @property
    def peak_mb(self) -> float:
        return max((mb for _, mb in self.samples), default=0.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def peak_stage(self, t0: float, stages: dict[str, float]) -> str:
        """'copy (412 MB)': the stage (in ExecuteResult.stages order) holding the peak."""
        if not self.samples:
            return "?"
        at, mb = max(self.samples, key=lambda s: s[1])
        edge = t0
        for name in ("open", "preflight_and_backup", "copy", "validation"):
            edge += stages.get(name, 0)
            if at <= edge:
                return f"{name} ({mb:.0f} MB)"
        return f"after validation ({mb:.0f} MB)"


class CpuSampler:
    """CPU seconds used so far, every 0.5 s, by this process, its child processes (the
    source-print worker) and PostgreSQL's processes (visible only for a server on this
    machine), so a report can say per stage who kept the two cores busy, and how busy."""

    PARTS = ("main", "worker", "postgres")

    def __init__(self) -> None:
        self.samples: list[tuple[float, tuple[float, ...]]] = []
        self._tick = os.sysconf("SC_CLK_TCK")
        self._cpu: dict[int, tuple[int, float]] = {}  # pid -> (part, CPU s); kept once gone
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _stat(self, pid: str) -> tuple[str, int, float] | None:
        """(command, parent pid, CPU seconds) of one process, from /proc/<pid>/stat."""
        try:
            with open(f"/proc/{pid}/stat") as fh:
                head, _, rest = fh.read().rpartition(")")
        except OSError:
            return None
        fields = rest.split()
        cpu = (int(fields[11]) + int(fields[12])) / self._tick
        return head.partition("(")[2], int(fields[1]), cpu

    def _sample(self) -> tuple[float, ...]:
        me = os.getpid()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            stat = self._stat(pid)
            if stat is None:
                continue
            comm, parent, cpu = stat
            part = 0 if int(pid) == me else 1 if parent == me else 2 if comm == "postgres" else -1
            if part >= 0:
                self._cpu[int(pid)] = (part, cpu)
        totals = [0.0] * len(self.PARTS)
        for part, cpu in self._cpu.values():
            totals[part] += cpu
        return tuple(totals)

    def _run(self) -> None:
        while True:
            self.samples.append((time.perf_counter(), self._sample()))
            if self._stop.wait(0.5):
                self.samples.append((time.perf_counter(), self._sample()))
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def by_stage(self, t0: float, stages: dict[str, float]) -> dict[str, dict[str, float]]:
        """Per stage (ExecuteResult.stages order): CPU seconds of each part in it."""

        def at(t: float) -> tuple[float, ...]:
            before = [cpu for when, cpu in self.samples if when <= t]
            return before[-1] if before else self.samples[0][1]

        out: dict[str, dict[str, float]] = {}
        edge = t0
        for name, seconds in stages.items():
            start, end = at(edge), at(edge + seconds)
            out[name] = {p: round(b - a, 2) for p, a, b in zip(self.PARTS, start, end)}
            edge += seconds
        return out


# -- a. this project's execute -------------------------------------------------------------
def project_execute(
    source: str,
    dsn: str,
    batch_size: int | None,
    percent: float,
    work: str,
    workers: int | None = None,
) -> dict:
    """make_plan (not timed) -> execute with `percent` % checksum comparison (timed)."""
    os.environ["LLMSPELL_MIGRATE_HOME"] = str(Path(work) / "home")
    if workers:
        os.environ["LLMSPELL_MIGRATE_WORKERS"] = str(workers)
    from pipelines import api
    from pipelines.shared.plan import from_dict

    names = ",".join(c.name for c in present_components(source))
    planned = api.make_plan(names, source=source, target=dsn, batch_size=batch_size)
    plan = from_dict(planned.plan)
    plan.checksum_sample_percent = percent
    plan.backup_path = str(Path(work) / "backups")
    sampler, cpu = RssSampler(), CpuSampler()
    t0 = time.perf_counter()
    try:
        result = api.execute(plan, target=dsn)
    finally:
        sampler.stop()
        cpu.stop()
    seconds = time.perf_counter() - t0
    if result.status != "SUCCESS":
        raise RuntimeError(f"execute ended {result.status}")
    return {
        "rss_peak_in": sampler.peak_stage(t0, result.stages),
        "peak_rss_all_mb": sampler.peak_mb,
        "records": result.source_records,
        "seconds": seconds,
        "stages": result.stages,
        "cpu": cpu.by_stage(t0, result.stages),
        "validated": result.validation.checksum_samples if result.validation else 0,
        "batch_size": [c.batch_size for c in plan.components],
        "written": sum(result.written.values()),
    }


# -- c. vanilla dlt and pgloader -----------------------------------------------------------
def dlt_vanilla(source: str, dsn: str, file_format: str | None, work: str) -> dict:
    """dlt's sql_database source (pyarrow backend) into dlt's own postgres destination."""
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    try:
        import sqlalchemy  # noqa: F401 - dlt's sql_database needs it (the bench extra)
    except ImportError:
        return {"skipped": "not installed (pip install -e '.[bench]')"}
    import dlt
    from dlt.sources.sql_database import sql_database

    params = conninfo_to_dict(dsn)
    host = params.get("host", "localhost")
    # dlt requires a password; with trust auth (embedded server) any value does. A Unix
    # socket directory goes in the query string (libpq's host= overrides the URI's host).
    # Fields, not a connection string: the password never appears in a URL.
    creds = {
        "database": params.get("dbname"),
        "username": params.get("user", "postgres"),
        "password": params.get("password") or "unused-trust-auth",
        "host": "localhost" if host.startswith("/") else host,
        "port": int(params.get("port", "5432")),
    }
    if host.startswith("/"):
        creds["query"] = {"host": host}
    tables = [c.sqlite_table for c in present_components(source)]
    t0 = time.perf_counter()
    src = sql_database(credentials=f"sqlite:///{source}", table_names=tables, backend="pyarrow")
    pipe = dlt.pipeline(
        pipeline_name="bench_dlt_vanilla",
        pipelines_dir=str(Path(work) / "dlt"),
        destination=dlt.destinations.postgres(credentials=creds),
        dataset_name="dlt_bench",
    )
    kwargs = {"loader_file_format": file_format} if file_format else {}
    pipe.run(src, **kwargs)
    seconds = time.perf_counter() - t0
    with psycopg.connect(dsn) as pg:
        total = sum(
            pg.execute(
                sql.SQL("SELECT count(*) FROM dlt_bench.{}").format(sql.Identifier(t))
            ).fetchone()[0]
            for t in tables
        )
    return {"records": total, "seconds": seconds}


def pgloader_url(dsn: str) -> str:
    p = conninfo_to_dict(dsn)
    user = p.get("user", "postgres")
    pw = f":{p['password']}" if p.get("password") else ""
    host = p.get("host", "localhost")
    port = p.get("port", "5432")
    where = f"unix:{host}:{port}" if host.startswith("/") else f"{host}:{port}"
    return f"postgresql://{user}{pw}@{where}/{p.get('dbname')}"


def pgloader(source: str, dsn: str, work: str) -> dict:
    exe = shutil.which("pgloader")
    if not exe:
        return {"skipped": "not installed"}
    tables = [c.sqlite_table for c in present_components(source)]
    names = ", ".join(f"'{t}'" for t in tables)
    load = (
        f"LOAD DATABASE\n  FROM sqlite://{source}\n  INTO {pgloader_url(dsn)}\n"
        "  WITH include drop, create tables, create indexes, reset sequences\n"
        f"  INCLUDING ONLY TABLE NAMES LIKE {names};\n"
    )
    Path(work).mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".load", dir=work, delete=False) as fh:
        fh.write(load)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [exe, "--no-ssl-cert-verification", fh.name], capture_output=True, text=True, cwd=work
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"pgloader failed: {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    with psycopg.connect(dsn) as pg:
        total = 0
        for t in tables:
            row = pg.execute(
                "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relname = %s AND n.nspname NOT IN ('llmspell') LIMIT 1",
                (t,),
            ).fetchone()
            total += pg.execute(
                sql.SQL("SELECT count(*) FROM {}.{}").format(
                    sql.Identifier(row[0]), sql.Identifier(t)
                )
            ).fetchone()[0]
    return {"records": total, "seconds": seconds, "rss_from_children": True}


METHODS = {
    "execute": lambda s: project_execute(
        s["source"],
        s["dsn"],
        s.get("batch_size"),
        s.get("percent", 100),
        s["work"],
        s.get("workers"),
    ),
    "limit_staged": lambda s: limit_staged(s["source"], s["dsn"]),
    "limit_direct_copy": lambda s: limit_direct_copy(s["source"], s["dsn"]),
    "ceiling": lambda s: server_ceiling(s["source"], s["dsn"], s["stage_dsn"]),
    "naive_upsert": lambda s: naive_upsert(s["source"], s["dsn"], s["subset"]),
    "dlt_vanilla": lambda s: dlt_vanilla(s["source"], s["dsn"], s.get("file_format"), s["work"]),
    "pgloader": lambda s: pgloader(s["source"], s["dsn"], s["work"]),
}


def run_method(spec: dict) -> dict:
    out = METHODS[spec["method"]](spec)
    if "skipped" in out:
        return out
    out["peak_rss_mb"] = max(
        children_peak_rss_mb() if out.pop("rss_from_children", False) else peak_rss_mb(),
        out.pop("peak_rss_all_mb", 0.0),
    )
    return out
