"""dlt's own progress collector, feeding the progress model: before the first batch reaches
PostgreSQL, dlt extracts every component to parquet; on a large source that takes a while,
and the copy's bars would sit still. dlt reports the rows it extracts per table to its
collector; this one turns them into `extract` events.

dlt's normalize step only moves the parquet files (no time worth a bar), and its load step
counts jobs: the destination's delivery counts committed records, which is what the copy's
bars and the guide's lines show.
"""

from __future__ import annotations

from typing import Any

from dlt.common.runtime.collector_base import Collector

from pipelines.shared.progress import EXTRACT, Counter, Listener


class DltSteps(Collector):
    """Rows extracted per component (dlt's table names are the components')."""

    def __init__(self, listener: Listener, totals: dict[str, int]):
        self.listener = listener
        self.totals = totals
        self.stage: str | None = None
        self.counters: dict[str, Counter] = {}

    def update(
        self,
        name: str,
        inc: int = 1,
        total: int | None = None,
        inc_total: int | None = None,
        message: str | None = None,
        label: str | None = None,
    ) -> None:
        if self.stage is None or label or not inc or name not in self.totals:
            return  # dlt's own counters (Resources, Files, Jobs) are not records
        counter = self.counters.get(name)
        if counter is None:
            counter = self.counters[name] = Counter(
                self.listener, self.stage, name, self.totals[name]
            )
        counter.advance(inc)

    def _start(self, step: str) -> None:
        self.stage = EXTRACT if step.startswith("Extract") else None  # "Extract <source>"
        self.counters = {}

    def _stop(self) -> None:
        self.stage = None
        self.counters = {}

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        if exc_type is None:  # a step that failed or was interrupted did not finish
            for counter in self.counters.values():
                counter.finish()
        self._stop()
