"""One Ctrl-C or SIGTERM stops a run, wherever it is.

Python runs a signal handler in the main thread between two bytecodes, so a handler that
raises KeyboardInterrupt stops Python code at once, and DuckDB's and psycopg's own waits in
the main thread as soon as they look at signals. It cannot stop a query blocked in C (DuckDB's
PostgreSQL scanner waiting on the server, say) or work in other threads. So, while `stopping()`
is active, the signal also wakes a watcher thread (through `signal.set_wakeup_fd`, written by
the interpreter's C-level handler even while the main thread is blocked), which runs every
cancel registered with `cancelling()`: `duckdb` `interrupt()`, a psycopg `cancel_safe()`, a
server-side cancel of a session's backends. The interrupted call then returns with an error
and the pending handler raises KeyboardInterrupt; `requested()` tells callers the error was
the interrupt's.

dlt's `pipeline.run` installs handlers of its own for its normalize and load steps (the first
signal only sets a flag its loader reads between jobs); code of ours running inside those
steps (the destination's `complete_load`) enters `stopping()` again to take signals back.
"""

from __future__ import annotations

import itertools
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_requested = threading.Event()
_cancels: dict[int, Callable[[], None]] = {}
_ids = itertools.count()
_lock = threading.Lock()
_depth = 0


def requested() -> bool:
    """A Ctrl-C or SIGTERM arrived during the current (or last) `stopping()`."""
    return _requested.is_set()


def check() -> None:
    """Raise KeyboardInterrupt if a stop was requested (for loops in worker threads)."""
    if _requested.is_set():
        raise KeyboardInterrupt("stop requested")


def _run(cancel: Callable[[], None]) -> None:
    try:
        cancel()
    except Exception:  # a cancel that fails leaves that work to finish on its own
        pass


def _fire() -> None:
    _requested.set()
    with _lock:
        cancels = list(_cancels.values())
    for cancel in cancels:
        _run(cancel)


@contextmanager
def cancelling(cancel: Callable[[], None]) -> Iterator[None]:
    """Run `cancel` (from another thread) if a stop is requested while this is active."""
    key = next(_ids)
    with _lock:
        _cancels[key] = cancel
    if _requested.is_set():
        _run(cancel)
    try:
        yield
    finally:
        with _lock:
            _cancels.pop(key, None)


def _handler(signum, frame) -> None:
    _requested.set()
    raise KeyboardInterrupt(f"signal {signum}")


def _watch(sock: socket.socket) -> None:
    while True:
        try:
            data = sock.recv(64)
        except OSError:
            return
        if not data:  # closed: `stopping()` is over
            return
        if any(b in data for b in SIGNALS):
            _fire()


@contextmanager
def stopping() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt and cancel the registered work. Nestable;
    the outermost call clears an earlier request and owns the watcher. A no-op outside the
    main thread (Python delivers signals there only)."""
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    watcher = None
    if _depth == 0:
        _requested.clear()
        receive, send = socket.socketpair()
        send.setblocking(False)
        previous_fd = signal.set_wakeup_fd(send.fileno(), warn_on_full_buffer=False)
        watcher = threading.Thread(target=_watch, args=(receive,), name="interrupts", daemon=True)
        watcher.start()
    previous = {sig: signal.signal(sig, _handler) for sig in SIGNALS}
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if watcher is not None:
            signal.set_wakeup_fd(previous_fd)
            send.close()
            receive.shutdown(socket.SHUT_RDWR)
            watcher.join()
            receive.close()
