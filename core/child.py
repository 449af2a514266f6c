"""Work in a child process that runs a module of ours, never the caller's code.

multiprocessing's `spawn` and `forkserver` start their child by importing the parent's
`__main__` again (from its file): a script that calls the API without an
`if __name__ == "__main__":` guard runs a second time in the child, migration included;
`fork` copies a process whose other threads (a notebook's, a scheduler's, dlt's) may hold
locks. A child started here is a fresh interpreter (the parent's) that imports one module of
this project and calls its `child_main()`: nothing of the caller's `__main__` is imported.
It gets the parent's `sys.path` (the modules it imports are the parent's) and not the working
folder in front of it (`-P`).

Objects travel as pickles: the payload on the child's stdin, results on its stdout (the
child's fd 1 is pointed at its stderr, so a stray print cannot corrupt them). Both ends are
this project's code. The child exits as soon as its stdin closes: when the parent is done
with it, or dies.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
from typing import IO, Any, BinaryIO

_BOOT = (
    "import importlib, json, sys; sys.path[:] = json.loads(sys.argv[2]); "
    "importlib.import_module(sys.argv[1]).child_main()"
)


def start(module: str, payload: Any, stderr: IO[bytes] | int | None) -> subprocess.Popen:
    """Start `module`'s `child_main()` in a new interpreter and send it `payload`.
    `stderr` takes the child's diagnostics (a file: `stderr_tail` reads them back)."""
    proc = subprocess.Popen(
        [sys.executable, "-P", "-c", _BOOT, module, json.dumps(sys.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        close_fds=True,
    )
    try:
        pickle.dump(payload, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        proc.stdin.flush()
    except OSError:  # it died already: `receive` reports EOF, its stderr says why
        pass
    return proc


def receive(stream: BinaryIO) -> Any:
    """The next object the child sent; EOFError when it exited without sending one."""
    return pickle.load(stream)


def stop(proc: subprocess.Popen) -> None:
    """End the child (if still running) and close its pipes."""
    if proc.poll() is None:
        proc.terminate()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass
    proc.wait()


def stderr_tail(log: IO[bytes], limit: int = 600) -> str:
    """The last lines a child wrote to `log` (a file opened `w+b`), for a message."""
    try:
        log.flush()
        log.seek(0)
        text = log.read().decode("utf-8", "replace").strip()
    except (OSError, ValueError):
        return ""
    return text[-limit:]


# -- in the child ------------------------------------------------------------------------
def child_streams() -> tuple[Any, BinaryIO]:
    """(payload, results stream) for `child_main`: reads the payload, keeps fd 1 for the
    results only, and exits the process once the parent closes its end of stdin."""
    payload = pickle.load(sys.stdin.buffer)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    return payload, out


def send(out: BinaryIO, obj: Any) -> None:
    pickle.dump(obj, out, protocol=pickle.HIGHEST_PROTOCOL)
    out.flush()


def _exit_with_parent() -> None:
    try:
        while sys.stdin.buffer.read(65536):
            pass
    except (OSError, ValueError):
        pass
    os._exit(1)
