"""How a command shows progress (`--progress`, `--log-format`): the JSON lines, the line
writer and printer, and the choice between them and the live bar (`open_display`)."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from core.errors import UsageError
from destinations.connection import redact_text
from pipelines.shared.progress import Display, Event, PlainLines, Steps, describe, quiet

MODES = ("auto", "bar", "plain", "none")


def json_record(message: str, level: str = "info", **fields) -> str:
    """One JSON log line (time, level, message and any fields), password-free."""
    doc = {"time": dt.datetime.now(dt.UTC).isoformat(), "level": level, "message": message}
    doc.update(fields)
    return redact_text(json.dumps(doc, ensure_ascii=False))


class JsonLines:
    """`--log-format json`: one object per event shown (every 10%, at the end, and at least
    every `heartbeat` seconds of a long stage), with rate (records/s) and ETA."""

    def __init__(self, write: Callable[[str], None], heartbeat: float = 5.0):
        self.write = write
        self.heartbeat = heartbeat
        self.steps = Steps()
        self._shown: dict[tuple[str, str | None], float] = {}
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        key = (event.stage, event.component)
        now = time.monotonic()
        crossed = self.steps.crossed(event)
        with self._lock:
            last = self._shown.get(key)
            if not (event.finished or crossed or last is None or now - last >= self.heartbeat):
                return
            if event.finished:
                self._shown.pop(key, None)
            else:
                self._shown[key] = now
        rate, eta = event.rate, event.eta_seconds
        self.write(
            json_record(
                describe(event),
                event="progress",
                stage=event.stage,
                component=event.component,
                done=event.done,
                total=event.total,
                rate=None if rate is None else round(rate, 1),
                eta_seconds=None if eta is None else round(eta, 1),
                finished=event.finished,
            )
        )


_WRITING = threading.Lock()  # stages report from several threads: whole lines, never mixed


def write_line(stream: TextIO, line: str) -> None:
    with _WRITING:
        stream.write(line + "\n")
        stream.flush()


def printer(stream: TextIO, as_json: bool) -> Callable[[str], None]:
    """Lines as they are (password-free), or as JSON log lines with a level."""

    def emit(line: str) -> None:
        if as_json:
            if not line.strip():
                return
            level = "error" if "[ERROR]" in line else "warning" if "WARNING" in line else "info"
            write_line(stream, json_record(line.strip(), level))
        else:
            write_line(stream, redact_text(line))

    return emit


def wants_bar(stream: TextIO) -> bool:
    """A bar only on a real terminal that can draw one: never into a pipe, a file, a
    notebook's captured output or a scheduler's log, nor on TERM=dumb."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and os.environ.get("TERM", "").lower() not in ("dumb", "unknown")


def open_display(mode: str, as_json: bool, log_format: str) -> Display:
    """The display for `--progress MODE` with `--json`/`--log-format`: progress goes to
    stderr when stdout carries the JSON report or when progress is JSON lines."""
    stream = sys.stderr if as_json or log_format == "json" else sys.stdout
    if log_format == "json":
        if mode == "bar":
            raise UsageError(
                "--progress bar draws on a terminal, --log-format json writes JSON lines",
                "Choose one: drop --progress bar, or --log-format json.",
            )
        emit = printer(stream, True)
        lines = JsonLines(lambda line: write_line(stream, line))
        return Display(emit, quiet if mode == "none" else lines)
    if mode == "bar" or (mode == "auto" and wants_bar(stream)):
        from pipelines.face.progress_bar import BarDisplay  # rich loads only when a bar is drawn

        return BarDisplay(stream, force=mode == "bar")
    emit = printer(stream, False)
    return Display(emit, quiet if mode == "none" else PlainLines(emit))
