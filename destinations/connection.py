"""Where the target is and how to connect to it, without ever exposing a password.

Order: `--target`, then the plan's `target.connection`, then LLMSPELL_MIGRATE_TARGET, then
`.dlt/secrets.toml` (`[llmspell_migrate.target] dsn = ...`), else the embedded server. A
password may come in the DSN, from LLMSPELL_MIGRATE_PASSWORD, from `.dlt/secrets.toml`
(`[llmspell_migrate.target] password = ...`), or libpq's own PGPASSWORD / ~/.pgpass; only the
password-free form is ever printed or written.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import quote

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from destinations import embedded_server
from pipelines.errors import TargetError

ENV_DSN = "LLMSPELL_MIGRATE_TARGET"
ENV_PASSWORD = "LLMSPELL_MIGRATE_PASSWORD"
_URI_PASSWORD = re.compile(r"^(postgres(?:ql)?://[^:/@?#]*):[^@/?#]*@")


@dataclass(frozen=True)
class Target:
    dsn: str  # what we connect with; may hold a password: never print or store it
    display: str  # the same DSN without its password
    embedded: embedded_server.EmbeddedServer | None = None

    @property
    def where(self) -> str:
        if self.embedded:
            return f"embedded PostgreSQL in {self.embedded.data_dir}"
        return self.display


def redact(dsn: str) -> str:
    """The DSN without its password, in the form it was given (URI or key=value)."""
    if _URI_PASSWORD.match(dsn):
        return _URI_PASSWORD.sub(r"\1@", dsn)
    if "://" in dsn:
        return re.sub(r"([?&])password=[^&]*&?", r"\1", dsn).rstrip("?&")
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return re.sub(r"password\s*=\s*('[^']*'|\S+)", "password=***", dsn)
    params.pop("password", None)
    return make_conninfo(**params)


def has_password(dsn: str) -> bool:
    return redact(dsn) != dsn


def _secret(name: str) -> str | None:
    try:
        import dlt

        value = dlt.secrets.get(f"llmspell_migrate.target.{name}")
    except Exception:  # no .dlt folder or unreadable secrets: treat as not configured
        return None
    return str(value) if value else None


def configured_dsn(cli_target: str | None, plan_connection: str | None) -> str | None:
    """The DSN the user configured anywhere, or None for the embedded default."""
    return cli_target or plan_connection or os.environ.get(ENV_DSN) or _secret("dsn")


def _with_password(dsn: str) -> str:
    if has_password(dsn):
        return dsn
    password = os.environ.get(ENV_PASSWORD) or _secret("password")
    if not password:
        return dsn  # libpq may still find PGPASSWORD or ~/.pgpass
    if "://" in dsn:
        return _insert_uri_password(dsn, password)
    return make_conninfo(dsn, password=password)


def _insert_uri_password(dsn: str, password: str) -> str:
    scheme, rest = dsn.split("://", 1)
    userinfo, at, hostpart = rest.partition("@")
    if not at:
        return make_conninfo(dsn, password=password)
    return f"{scheme}://{userinfo}:{quote(password, safe='')}@{hostpart}"


def resolve(cli_target: str | None = None, plan_connection: str | None = None) -> Target:
    """Find the target; start the embedded server when nothing is configured."""
    dsn = configured_dsn(cli_target, plan_connection)
    if dsn:
        return Target(dsn=_with_password(dsn), display=redact(dsn))
    server = embedded_server.ensure_running()
    return Target(dsn=server.dsn, display=server.dsn, embedded=server)


def connect(target: Target | str, **kwargs) -> psycopg.Connection:
    """Connect, turning libpq's failure into the guide's pre-flight error with a fix."""
    dsn = target.dsn if isinstance(target, Target) else target
    display = target.display if isinstance(target, Target) else redact(target)
    kwargs.setdefault("connect_timeout", 10)
    kwargs.setdefault("application_name", "llmspell-migrate")
    try:
        return psycopg.connect(dsn, **kwargs)
    except psycopg.OperationalError as exc:
        # libpq puts the cause ("Connection refused", "password authentication failed") on the
        # first line and a tab-indented hint after it: keep both, on one line.
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        reason = " ".join(lines).removeprefix("connection failed: ") or "connection failed"
        if dsn != display and dsn:
            reason = reason.replace(dsn, display)
        raise TargetError(
            f"Pre-flight failed: could not connect to PostgreSQL at {display}: {reason}",
            "Start PostgreSQL or fix the connection string (--target, the plan's "
            "target.connection, or LLMSPELL_MIGRATE_TARGET); put the password in "
            f"{ENV_PASSWORD} or .dlt/secrets.toml.",
        ) from None
