"""Typed errors shared by the CLI and the Python API.

Every error carries one line saying what went wrong and one saying what to do, and the exit
code the CLI uses for it, so the API and the CLI report failures identically.
"""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1  # a migration ran and failed (rolled back)
EXIT_USAGE = 2  # bad invocation, bad plan, bad input found before any write
EXIT_BUSY = 3  # another run holds the target's migration lock


class MigrateError(Exception):
    """Base error: `message` is what went wrong, `hint` what to do about it."""

    exit_code = EXIT_FAILED
    prefix = "ERROR"
    # The run's result (an ExecuteResult) when a run failed: what it did before failing and
    # what it rolled back, for the CLI's report and API callers. None for other errors.
    result: Any = None

    def __init__(self, message: str, hint: str = "", details: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = list(details or [])

    def render(self) -> str:
        lines = [f"{self.prefix}: {self.message}"]
        lines += [f"  - {d}" for d in self.details]
        if self.hint:
            lines.append(f"  → Solution: {self.hint}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "error": type(self).__name__,
            "message": self.message,
            "hint": self.hint,
            "details": self.details,
            "exit_code": self.exit_code,
        }


class UsageError(MigrateError):
    """A bad command line, plan file or setting."""

    exit_code = EXIT_USAGE


class PlanError(UsageError):
    """The plan file is missing, malformed or holds an invalid value."""


class SourceError(UsageError):
    """The SQLite source is missing, unreadable or not an llmspell database."""


class PreflightError(MigrateError):
    """A pre-flight check refused the run before anything was written."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, hint: str = "", details: list[str] | None = None):
        if not message.startswith("Pre-flight"):
            message = f"Pre-flight failed: {message}"
        super().__init__(message, hint, details)


class TargetError(MigrateError):
    """PostgreSQL is unreachable or its schema is missing or wrong."""

    exit_code = EXIT_USAGE


class ValidationFailed(MigrateError):
    """The copied data does not match the source; the run was rolled back."""


class MigrationFailed(MigrateError):
    """The copy failed after the first write; the run was rolled back."""


class LockBusy(MigrateError):
    """Another run holds the migration lock on this target."""

    exit_code = EXIT_BUSY


class RollbackRefused(MigrateError):
    """Rows a run wrote were changed since; nothing was deleted."""

    exit_code = EXIT_USAGE
