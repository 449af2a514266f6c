"""The live progress bar on a terminal, drawn with rich (installed with dlt, through
rich-argparse): one row per stage and component at work, with records, rate and ETA.

Rows appear with a stage's first event and leave when it finishes; a finished copy prints
the guide's line (`[agent_state] Progress: 1000/1000 records (100%) - 1.2s`) above the bar,
so the terminal keeps a record. Lines the run prints go above the bar too. The bar is
transient: when the run ends (or Ctrl-C stops it) the rows are erased and the cursor comes
back before the report or the error is printed.
"""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
)
from rich.table import Column
from rich.text import Text

from destinations.connection import redact_text
from pipelines.shared.progress import COPY, Display, Event, guide_line


def _clock(seconds: float) -> str:
    """`4:05` under an hour, `1:02:03` above."""
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


class StatsColumn(ProgressColumn):
    """`420/1,000 · 1,431/s · ETA 0:20`: records done of the total, the model's rate (records
    per second since the count began) and ETA; with no cheap total, the count and the time
    so far. Short enough that an 80-column terminal keeps a bar."""

    def __init__(self) -> None:
        super().__init__(table_column=Column(no_wrap=True))

    def render(self, task: Task) -> Text:
        rate = task.fields.get("rate")
        speed = f"{rate:,.0f}/s" if rate is not None else "-/s"
        done = f"{int(task.completed):,}"
        if task.total is None:
            return Text(f"{done} · {speed} · {_clock(task.elapsed or 0)}")
        eta = task.fields.get("eta")
        left = _clock(eta) if eta is not None else "-:--"
        return Text(f"{done}/{int(task.total):,} · {speed} · ETA {left}")


class BarDisplay(Display):
    """A rich live display on `stream` (a terminal, or any stream with `force`)."""

    def __init__(self, stream: TextIO, force: bool = False):
        self.console = Console(file=stream, force_terminal=True if force else None, highlight=False)
        self.bar = Progress(
            SpinnerColumn(),
            TextColumn(
                "{task.description}",
                markup=False,
                table_column=Column(no_wrap=True, overflow="ellipsis", max_width=26),
            ),
            BarColumn(bar_width=None, table_column=Column(min_width=8, ratio=1)),
            TaskProgressColumn(),
            StatsColumn(),
            console=self.console,
            expand=True,
            transient=True,
            refresh_per_second=8,
            # stray prints from the run go above the bar; never the --json report's stream
            redirect_stdout=stream is sys.stdout,
            redirect_stderr=stream is sys.stderr,
        )
        self.tasks: dict[tuple[str, str | None], TaskID] = {}
        self._lock = threading.Lock()
        super().__init__(self.line, self.show)

    def line(self, text: str) -> None:
        """A line above the bar, as it is (no rich markup: `[agent_state]` is text)."""
        self.console.print(
            redact_text(text), markup=False, highlight=False, emoji=False, soft_wrap=True
        )

    def show(self, event: Event) -> None:
        key = (event.stage, event.component)
        with self._lock:
            task = self.tasks.get(key)
            if event.finished:
                if task is not None:
                    self.bar.remove_task(self.tasks.pop(key))
                if event.stage == COPY:
                    self.line(guide_line(event))
                return
            fields = {"rate": event.rate, "eta": event.eta_seconds}
            if task is None:
                self.tasks[key] = self.bar.add_task(
                    event.label, total=event.total, completed=event.done, **fields
                )
                self.bar.refresh()  # drawn at once: even a stage shorter than a refresh shows
            else:
                self.bar.update(task, total=event.total, completed=event.done, **fields)

    def __enter__(self) -> BarDisplay:
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()  # erases the rows and shows the cursor again, whatever ended the run
