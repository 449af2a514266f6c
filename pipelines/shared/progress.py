"""Progress a person can watch: one model of events, three ways to show them.

The stages count what they have done (`Counter`); each count becomes an `Event` (stage,
component, done, total, elapsed) handed to a listener. The listeners are the renderers:

- `PlainLines`: the guide's `[agent_state] Progress: 420/1000 records (42%)` lines, every
  10% of the copy (what a pipe, a log file or a notebook gets; byte for byte as before);
- `JsonLines` (`pipelines.face.progress_display`): one JSON object per event
  (`--log-format json`), with rate and ETA;
- `BarDisplay` (`pipelines.face.progress_bar`): a live bar per stage and component on a terminal.

A stage with no cheap total reports `total=None`: a count and a rate, never a percentage.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

PREFLIGHT, BACKUP, COPY, VALIDATION = "preflight", "backup", "copy", "validation"
EXTRACT = "extract"  # dlt's step before the copy's first batch (pipelines.stages.progress_dlt)
STAGE_LABELS = {PREFLIGHT: "pre-flight", BACKUP: "backup", COPY: "copy", VALIDATION: "validation"}


@dataclass(frozen=True)
class Event:
    """How far one stage got with one component (`component` None: the whole stage)."""

    stage: str
    component: str | None
    done: int
    total: int | None  # None: no cheap total (a count, not a percentage)
    elapsed: float  # seconds since the count started
    finished: bool = False

    @property
    def percent(self) -> int | None:
        if self.total is None:
            return None
        return 100 if self.total == 0 else int(self.done * 100 / self.total)

    @property
    def rate(self) -> float | None:
        """Records per second so far (the average: steadier than the last batch's)."""
        return self.done / self.elapsed if self.elapsed > 0 else None

    @property
    def eta_seconds(self) -> float | None:
        if self.finished:
            return 0.0
        if self.total is None or not self.rate:
            return None
        return max(self.total - self.done, 0) / self.rate

    @property
    def label(self) -> str:
        stage = f"[{STAGE_LABELS.get(self.stage, self.stage)}]"
        return f"{stage} {self.component}" if self.component else stage


Listener = Callable[[Event], None]


def quiet(_: Event) -> None:
    """The listener of `--progress none`."""


class Counter:
    """One stage's count for one component (or the whole stage). Not locked: each counter is
    advanced by one thread at a time (the copy's under the delivery's lock)."""

    def __init__(self, listener: Listener, stage: str, component: str | None, total: int | None):
        self.listener = listener
        self.stage = stage
        self.component = component
        self.total = total
        self.done = 0
        self.finished = False
        self.started = time.perf_counter()

    def advance(self, n: int) -> None:
        self.done += n
        if self.finished:
            return
        if self.total is not None and self.done >= self.total:
            self.finish()
        else:
            self._publish()

    def finish(self) -> None:
        """The stage is done with it (idempotent); its last event says so."""
        if not self.finished:
            self.finished = True
            self._publish()

    def _publish(self) -> None:
        elapsed = time.perf_counter() - self.started
        self.listener(
            Event(self.stage, self.component, self.done, self.total, elapsed, self.finished)
        )


class StageCounter(Counter):
    """A whole stage (backup, validation) counted in records, a component at a time: the
    work inside one component gives no cheap count."""

    def __init__(self, listener: Listener, stage: str, counts: dict[str, int]):
        super().__init__(listener, stage, None, sum(counts.values()))
        self.counts = counts
        self._publish()  # shown from the start: its first component may take a while

    def component_done(self, name: str) -> None:
        self.advance(self.counts.get(name, 0))


def guide_line(event: Event) -> str:
    """The llmspell guide's progress line for a copy event."""
    head = f"[{event.component}] Progress: {event.done}/{event.total} records"
    if event.finished:
        return f"{head} (100%) - {event.elapsed:.1f}s"
    return f"{head} ({min(event.percent or 0, 100)}%)"


def describe(event: Event) -> str:
    """One line for any event: the guide's for the copy, `[stage] component: n/N` otherwise."""
    if event.stage == COPY and event.total is not None:
        return guide_line(event)
    of = f"/{event.total}" if event.total is not None else ""
    head = f"{event.label}: " if event.component else f"{event.label} "
    return f"{head}{event.done}{of} records" + (
        f" - {event.elapsed:.1f}s" if event.finished else ""
    )


class Steps:
    """When a count crossed its next 10% since it was last shown (per stage and component)."""

    def __init__(self) -> None:
        self._next: dict[tuple[str, str | None], int] = {}
        self._lock = threading.Lock()

    def crossed(self, event: Event) -> bool:
        key = (event.stage, event.component)
        with self._lock:
            if event.finished:
                self._next.pop(key, None)  # a later run may count the same component again
                return False
            pct = event.percent
            if pct is None or event.done >= (event.total or 0):
                return False
            if pct < self._next.get(key, 10):
                return False
            self._next[key] = (pct // 10 + 1) * 10
            return True


class PlainLines:
    """The guide's lines: the copy every 10% and once finished; other stages stay silent
    (their plain output is the stage's own messages, as before)."""

    def __init__(self, emit: Callable[[str], None]):
        self.emit = emit
        self.steps = Steps()

    def __call__(self, event: Event) -> None:
        if event.stage != COPY:
            return
        if event.finished or self.steps.crossed(event):
            self.emit(guide_line(event))


class Display:
    """Where a command's lines and progress go: `emit` for lines, `listener` for events.
    Used as a context around the work (the live bar starts and stops with it)."""

    def __init__(self, emit: Callable[[str], None], listener: Listener):
        self.emit = emit
        self.listener = listener

    def __enter__(self) -> Display:
        return self

    def __exit__(self, *exc) -> None:
        return None
