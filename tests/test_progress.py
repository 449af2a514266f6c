"""Progress a person can watch: the guide's plain lines when not on a terminal, JSON lines
with --log-format json, a live bar in a real pseudo-terminal (and a sane terminal after
Ctrl-C), never a bar into a pipe."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from pipelines.face import progress_display
from pipelines.face.progress_display import JsonLines
from pipelines.shared import progress
from pipelines.shared.progress import COPY, Counter, Event, PlainLines
from sources.sample_db import generate
from tests.helpers import BIG, REPO, make_plan, one_line_error, run_cli

HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"
FINAL = re.compile(r"^\[(\w+)\] Progress: (\d+)/(\d+) records \(100%\) - \d+\.\ds$")


def test_plain_lines_are_the_guides_every_10_percent():
    lines: list[str] = []
    counter = Counter(PlainLines(lines.append), COPY, "agent_state", 1000)
    for _ in range(7):
        counter.advance(150)
    counter.finish()  # again: nothing more
    assert lines[:-1] == [
        f"[agent_state] Progress: {n}/1000 records ({n // 10}%)"
        for n in (150, 300, 450, 600, 750, 900)
    ]
    assert FINAL.match(lines[-1]) and lines[-1].startswith("[agent_state] Progress: 1050/1000")
    other: list[str] = []  # the other stages print nothing in plain mode
    Counter(PlainLines(other.append), progress.PREFLIGHT, "agent_state", 10).advance(10)
    assert other == []


def test_json_lines_every_10_percent_with_rate_and_eta():
    out: list[str] = []
    show = JsonLines(out.append, heartbeat=3600)
    for done in range(1, 101):
        show(Event("backup", None, done, 100, elapsed=done / 10))
    show(Event("backup", None, 100, 100, elapsed=10.0, finished=True))
    docs = [json.loads(line) for line in out]
    assert [d["done"] for d in docs] == [1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert docs[1]["rate"] == 10.0 and docs[1]["eta_seconds"] == 9.0
    assert docs[-1]["finished"] and docs[-1]["eta_seconds"] == 0.0
    assert {"time", "level", "message", "stage", "component", "total"} <= set(docs[0])


def test_no_bar_on_a_dumb_terminal_or_into_a_pipe(monkeypatch):
    main, child = pty.openpty()
    with os.fdopen(child, "w") as tty:
        monkeypatch.setenv("TERM", "xterm")
        assert progress_display.wants_bar(tty)
        monkeypatch.setenv("TERM", "dumb")
        assert not progress_display.wants_bar(tty)
    os.close(main)
    read, write = os.pipe()
    with os.fdopen(write, "w") as pipe:
        assert not progress_display.wants_bar(pipe)
    os.close(read)


def test_execute_not_on_a_terminal_prints_the_guides_lines(tmp_path, sample_sqlite, target_db,
                                                           capsys):  # fmt: skip
    plan = make_plan(tmp_path, sample_sqlite, target_db.dsn, batch_size=100)
    code, out, err = run_cli(capsys, "execute", "--plan", str(plan))
    assert code == 0, out + err
    assert "\x1b[" not in out + err  # no bar, no cursor control into a pipe
    finals = [m.groups() for ln in out.splitlines() if (m := FINAL.match(ln))]
    assert {name for name, _, _ in finals} == {"agent_state", "workflow_state", "sessions",
                                               "kv_store"}  # fmt: skip
    assert all(done == total for _, done, total in finals)
    assert "[agent_state] Progress: 100/120 records (83%)" in out.splitlines()


def test_json_progress_lines_are_monotone_and_end_at_the_total(tmp_path, sample_sqlite,
                                                               target_db, capsys):  # fmt: skip
    plan = make_plan(tmp_path, sample_sqlite, target_db.dsn, batch_size=100)
    code, out, err = run_cli(capsys, "execute", "--plan", str(plan), "--json",
                             "--log-format", "json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["status"] == "SUCCESS"  # stdout: the report alone
    logs = [json.loads(ln) for ln in err.splitlines() if ln.strip()]
    events = [d for d in logs if d.get("event") == "progress"]
    by_key: dict[tuple, list[dict]] = {}
    for e in events:
        assert {"stage", "component", "done", "total", "rate", "eta_seconds"} <= set(e)
        by_key.setdefault((e["stage"], e["component"]), []).append(e)
    stages = {stage for stage, _ in by_key}
    assert stages == {"preflight", "backup", "extract", "copy", "validation"}
    for key, seq in by_key.items():
        dones = [e["done"] for e in seq]
        assert dones == sorted(dones), key
        assert seq[-1]["finished"] and seq[-1]["done"] == seq[-1]["total"], key
        assert not any(e["finished"] for e in seq[:-1]), key
    assert by_key[("copy", "agent_state")][-1]["total"] == 120
    assert by_key[("backup", None)][-1]["total"] == 270
    code, out, err = run_cli(capsys, "verify", "--plan", str(plan), "--log-format", "json")
    assert code == 0 and "Verification: PASSED" in out
    seen = [json.loads(ln) for ln in err.splitlines() if '"progress"' in ln]
    assert {e["stage"] for e in seen} == {"validation"}
    assert seen[0]["done"] == 0 and seen[-1]["done"] == 270 and seen[-1]["finished"]


def test_a_bar_with_json_lines_is_refused_and_none_is_silent(tmp_path, sample_sqlite,
                                                            target_db, capsys):  # fmt: skip
    plan = make_plan(tmp_path, sample_sqlite, target_db.dsn)
    code, _, err = run_cli(capsys, "execute", "--plan", str(plan), "--progress", "bar",
                           "--log-format", "json")  # fmt: skip
    assert code == 2
    one_line_error(err, "--progress bar", "--log-format json")
    assert target_db.count("agent_states") == 0
    for log_format in ("text", "json"):
        open_display = progress_display.open_display
        assert open_display("none", False, log_format).listener is progress.quiet
        assert open_display("plain", True, log_format).listener is not progress.quiet


def run_in_pty(
    argv: list[str],
    cwd: Path,
    on_output: Callable[[subprocess.Popen, str], None] | None = None,
) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal; returns (exit code, output).
    `on_output` sees the process and its output so far after each read."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TERM="xterm-256color", COLUMNS="100")
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.migrate", *argv],
        cwd=cwd, env=env, stdin=child, stdout=child, stderr=child, close_fds=True,
    )  # fmt: skip
    os.close(child)
    chunks: list[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([main], [], [], 300)
            assert ready, "no output for 300s:\n" + b"".join(chunks).decode(errors="replace")
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
            if on_output is not None:
                on_output(proc, b"".join(chunks).decode(errors="replace"))
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)
    return code, b"".join(chunks).decode(errors="replace")


def test_a_terminal_gets_a_live_bar(tmp_path, sample_sqlite, target_db):
    plan = make_plan(tmp_path, sample_sqlite, target_db.dsn, batch_size=100)
    code, out = run_in_pty(["execute", "--plan", str(plan)], tmp_path)
    assert code == 0, out
    assert HIDE_CURSOR in out and out.rindex(SHOW_CURSOR) > out.rindex(HIDE_CURSOR)
    assert re.search(r"\[copy\] agent_state .*\d+/120 · [\d,]+/s · ETA \d+:\d\d", out), out
    for row in ("[pre-flight] agent_state", "[backup] ", "[extract] agent_state", "[validation] "):
        assert row in out, row
    assert "[agent_state] Progress: 120/120 records (100%)" in out  # kept above the bar
    assert "All data migrated successfully!" in out
    report = out[out.index("Migration Report") :]
    assert "\x1b[" not in report  # the bar is gone before the report
    assert target_db.count("agent_states") == 120


def test_ctrl_c_under_a_live_bar_leaves_a_sane_terminal(tmp_path, target_db):
    big = tmp_path / "big.db"
    generate(big, BIG)
    plan = make_plan(tmp_path, big, target_db.dsn, batch_size=1000)
    sent: list[bool] = []

    def interrupt_mid_copy(proc: subprocess.Popen, out: str) -> None:
        if not sent and "[copy] agent_state" in out:  # the copy's bar is live
            proc.send_signal(signal.SIGINT)
            sent.append(True)

    code, out = run_in_pty(["execute", "--plan", str(plan)], tmp_path, interrupt_mid_copy)
    assert sent and code == 1, out
    assert out.rindex(SHOW_CURSOR) > out.rindex(HIDE_CURSOR)  # the cursor is back
    assert "Traceback" not in out
    assert "Rollback complete. Source data unchanged." in out
    tail = out[out.rindex(SHOW_CURSOR) :]
    assert "Migration interrupted" in tail and "[copy]" not in tail  # after the bar is gone
    assert target_db.count("agent_states") == 0
