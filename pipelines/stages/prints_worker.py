"""The source side of validation, in a child process: `engine.SourcePrinter` starts it
(`core.child`) with pre-flight, and it sends back where it wrote each component's prints.

Sends ("ok", {component: arrow file}) or ("error", why); either way validation goes on (it
computes the prints itself when they are missing, and says why)."""

from __future__ import annotations

import os

from core import child
from validation.stage import source_prints_to_files


def child_main() -> None:
    args, out = child.child_streams()
    os.nice(10)  # PostgreSQL and the copy come first; this takes the idle time
    try:
        child.send(out, ("ok", source_prints_to_files(*args)))
    except Exception as exc:  # reported to the parent, which says so and goes on
        child.send(out, ("error", f"{type(exc).__name__}: {exc}"))
    finally:
        out.close()
