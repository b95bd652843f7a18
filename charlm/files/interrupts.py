"""The signals that stop charlm, and what a stop by signal is: one definition for training and for writes.

Training turns a signal into a request to stop at the next batch boundary (training/stop.py). A write of a
file or folder (fsio) turns one into Interrupted at once, so that its `finally` removes the temp it made:
without that, SIGTERM (whose default is to end the process where it stands) would leave the temp behind.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from charlm.errors import RunError

# Ctrl-C, kill, the terminal closing (POSIX only), Ctrl-Break (Windows only): each where the OS has it
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK") if hasattr(signal, name)
)


class Interrupted(RunError):
    """Stopped by a signal; exit code 128 + signal number."""

    label = "interrupted"

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


@contextlib.contextmanager
def raising(what: str) -> Iterator[None]:
    """While inside: a stop signal that nobody else handles (its handler is the default one) raises
    Interrupted, so the `finally` blocks of the caller run. Handlers someone installed (training's
    StopSignals, a parent's SIG_IGN as under nohup) are left alone. Signals after the first are ignored
    until the block is left: they would cut the clean-up short (it is a few unlinks)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; signals are delivered there anyway
        return
    fired: list[int] = []

    def handle(signum, frame):
        if not fired:
            fired.append(signum)
            raise Interrupted(
                f"{signal.Signals(signum).name} while writing {what}: stopped, nothing left behind", signum
            )

    previous = {}
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler):
            previous[sig] = signal.signal(sig, handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
