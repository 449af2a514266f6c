"""Where the target is and how to connect to it, without ever exposing a password.

Order: `--target`, then the plan's `target.connection`, then LLMSPELL_MIGRATE_TARGET, then
`.dlt/secrets.toml` (`[llmspell_migrate.target] dsn = ...`), else the embedded server. A
password may come in the DSN, from LLMSPELL_MIGRATE_PASSWORD, from `.dlt/secrets.toml`
(`[llmspell_migrate.target] password = ...`), or libpq's own PGPASSWORD / ~/.pgpass; only the
password-free form is ever printed or written.
"""

from __future__ import annotations

import getpass
import os
import re
import secrets
import shlex
from dataclasses import dataclass
from urllib.parse import quote

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from core.errors import TargetError, UsageError
from core.settings import cli_command
from destinations import embedded_server

ENV_DSN = "LLMSPELL_MIGRATE_TARGET"
ENV_PASSWORD = "LLMSPELL_MIGRATE_PASSWORD"


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


_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.S)
_QUERY_PASSWORD = re.compile(r"([?&])password=[^&#]*&?", re.I)
_KEYWORD_PASSWORD = re.compile(r"\bpassword\s*=\s*('(?:[^'\\]|\\.)*'?|\S*)", re.I)
SCHEMES = ("postgresql", "postgres")


def _split_uri(dsn: str) -> tuple[str, str, str, str] | None:
    """(scheme, userinfo, rest, had_at) of a URI DSN; the password may hold unescaped `@`,
    `/` or `:`, so userinfo runs to the last `@` before the query."""
    m = _URI.match(dsn.strip())
    if not m:
        return None
    scheme, rest = m.group(1), m.group(2)
    query_at = rest.find("?")
    head = rest if query_at < 0 else rest[:query_at]
    at = head.rfind("@")
    if at < 0:
        return scheme, "", rest, ""
    return scheme, rest[:at], rest[at + 1 :], "@"


def redact(dsn: str) -> str:
    """The DSN without its password, in the form it was given (URI or key=value). Works on
    any text, malformed or of another scheme, so even a refused DSN is shown safely."""
    parts = _split_uri(dsn)
    if parts is not None:
        scheme, userinfo, rest, at = parts
        user = userinfo.split(":", 1)[0]
        return _QUERY_PASSWORD.sub(r"\1", f"{scheme}://{user}{at}{rest}").rstrip("?&")
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return _KEYWORD_PASSWORD.sub("password=***", dsn)
    if "password" not in params:
        return dsn
    params.pop("password")
    return make_conninfo(**params)


_PASSWORD_IN_TEXT = re.compile(r"(://[^:/?#@\s]*):[^@\s]*@")


def redact_text(text: str) -> str:
    """Any message with a DSN somewhere in it, passwords masked (URI user:password@ and
    password=...)."""
    text = _PASSWORD_IN_TEXT.sub(r"\1:***@", text)
    return _KEYWORD_PASSWORD.sub("password=***", text)


def has_password(dsn: str) -> bool:
    parts = _split_uri(dsn)
    if parts is not None:
        return ":" in parts[1] or bool(_QUERY_PASSWORD.search(parts[2]))
    return bool(_KEYWORD_PASSWORD.search(dsn))


def checked_dsn(dsn: str, where: str = "the target connection string") -> str:
    """A DSN libpq will accept (URI scheme lower-cased), or a one-line UsageError that shows
    only the redacted form: libpq's own message would echo the DSN, password and all."""
    dsn = dsn.strip()
    parts = _split_uri(dsn)
    if parts is not None:
        scheme = parts[0]
        if scheme.lower() not in SCHEMES:
            raise UsageError(
                f"{where} uses the scheme '{scheme}://', not PostgreSQL's: {redact(dsn)}",
                "Write it as postgresql://user@host:5432/dbname (the password goes in "
                f"{ENV_PASSWORD} or .dlt/secrets.toml).",
            )
        dsn = scheme.lower() + dsn[len(scheme) :]
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise UsageError(
            f"{where} is not a valid PostgreSQL connection string: {redact(dsn)}",
            "Write it as postgresql://user@host:5432/dbname or 'host=H port=5432 dbname=D "
            f"user=U' (the password goes in {ENV_PASSWORD} or .dlt/secrets.toml).",
        ) from None
    return dsn


def _secret(name: str) -> str | None:
    try:
        import dlt

        value = dlt.secrets.get(f"llmspell_migrate.target.{name}")
    except Exception:  # no .dlt folder or unreadable secrets: treat as not configured
        return None
    return str(value) if value else None


def configured_dsn(cli_target: str | None, plan_connection: str | None) -> str | None:
    """The DSN the user configured anywhere (checked), or None for the embedded default."""
    for dsn, where in (
        (cli_target, "--target"),
        (plan_connection, "the plan's target.connection"),
        (os.environ.get(ENV_DSN), ENV_DSN),
        (_secret("dsn"), ".dlt/secrets.toml's llmspell_migrate.target.dsn"),
    ):
        if dsn and dsn.strip():
            return checked_dsn(dsn, where)
    return None


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


_NO_DATABASE = re.compile(r'database "(.*)" does not exist')


def _missing_database(name: str, display: str, init: bool) -> TargetError:
    create = f'createdb {shlex.quote(name)} (or, in psql: CREATE DATABASE "{name}";)'
    if init:
        hint = (
            f"Create it first, as its owner-to-be or a superuser: {create}; then run "
            "init-target again."
        )
    else:
        hint = (
            "Check the database name in the connection string (--target, the plan's "
            "target.connection, or LLMSPELL_MIGRATE_TARGET); a new one is created with "
            f"{create} and set up with {cli_command()} init-target."
        )
    return TargetError(
        f'Pre-flight failed: database "{name}" does not exist on the PostgreSQL server at '
        f"{display}",
        hint,
    )


def connect(target: Target | str, init: bool = False, **kwargs) -> psycopg.Connection:
    """Connect, turning libpq's failure into the guide's pre-flight error with a fix.
    `init`: the caller is init-target (a missing database gets the commands creating it)."""
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
        missing = _NO_DATABASE.search(reason)
        if missing:
            raise _missing_database(missing.group(1), display, init) from None
        raise TargetError(
            f"Pre-flight failed: could not connect to PostgreSQL at {display}: {reason}",
            "Start PostgreSQL or fix the connection string (--target, the plan's "
            "target.connection, or LLMSPELL_MIGRATE_TARGET); put the password in "
            f"{ENV_PASSWORD} or .dlt/secrets.toml.",
        ) from None


def session_name(purpose: str) -> str:
    """An application_name no other session carries: `cancel_sessions` finds its backends."""
    return f"llmspell-migrate-{purpose}-{os.getpid()}-{secrets.token_hex(4)}"


def named(dsn: str, application_name: str) -> str:
    """`dsn` with `application_name` set (for connections made by others, e.g. DuckDB's)."""
    return make_conninfo(dsn, application_name=application_name)


def cancel_sessions(dsn: str, application_name: str) -> int:
    """Cancel the statements running in every backend named `application_name` (our own
    sessions, possibly opened by DuckDB's scanner, which no client-side interrupt reaches).
    Returns how many were signalled."""
    with psycopg.connect(
        dsn, connect_timeout=5, application_name="llmspell-migrate-cancel", autocommit=True
    ) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_cancel_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (application_name,),
        ).fetchone()
    return int(row[0])


IDENTITY_KEYS = ("host", "port", "database", "embedded")


def identity(cli_target: str | None = None, plan_connection: str | None = None) -> dict[str, str]:
    """Which server and database `resolve` would connect to, without secrets and without
    starting anything: host, port and database of a configured DSN (libpq's PG* variables
    filling what it leaves out), or the embedded server's data folder and database."""
    dsn = configured_dsn(cli_target, plan_connection)
    if not dsn:
        return {
            "embedded": str(embedded_server.data_dir_from_env()),
            "database": embedded_server.DATABASE,
        }
    params = conninfo_to_dict(dsn)
    user = params.get("user") or os.environ.get("PGUSER") or getpass.getuser()
    return {
        "host": str(params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST", "")),
        "port": str(params.get("port") or os.environ.get("PGPORT") or 5432),
        "database": str(params.get("dbname") or os.environ.get("PGDATABASE") or user),
    }


def describe_identity(ident: dict[str, str]) -> str:
    if ident.get("embedded"):
        return f"the embedded PostgreSQL in {ident['embedded']} (database {ident.get('database')})"
    host = ident.get("host") or "libpq's default socket"
    return f"database {ident.get('database')} on {host} port {ident.get('port')}"


def check_identity(
    recorded: dict[str, str] | None,
    cli_target: str | None,
    plan_connection: str | None,
    where: str = "The plan",
) -> None:
    """Refuse (exit 2) when the target found now is another server or database than the one
    `recorded` (the plan's target.identity) names. A target passed explicitly (`--target`)
    is the user's choice and is not checked; a plan without an identity is not either."""
    if not recorded or cli_target:
        return
    now = identity(None, plan_connection)
    if {k: str(v) for k, v in recorded.items()} == now:
        return
    raise UsageError(
        f"{where} was made for {describe_identity(recorded)}, but the target now resolves to "
        f"{describe_identity(now)}",
        "Run it from the folder and with the configuration it was made with (.dlt/secrets.toml, "
        f"{ENV_DSN}, LLMSPELL_MIGRATE_HOME); to use this target on purpose, name it with "
        "--target DSN, or delete target.identity from the plan; nothing was written.",
    )
