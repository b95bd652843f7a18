"""The signals that stop charlm, and what a stop by signal is: one definition for training and for writes.

Training turns a signal into a request to stop at the next batch boundary (training/stop.py). A write of a
file or folder (fsio) turns one into Interrupted at once, so that its `finally` removes the temp it made:
without that, SIGTERM (whose default is to end the process where it stands) would leave the temp behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
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


@dataclasses.dataclass
class Guard:
    """What `raising` knows of its block: the stop signal that came (None: none yet)."""

    what: str
    signum: int | None = None

    def error(self) -> Interrupted:
        name = signal.Signals(self.signum).name
        return Interrupted(f"{name} while writing {self.what}: stopped, nothing left behind", self.signum)

    def check(self) -> None:
        """Raise Interrupted if a stop signal came: before publishing what the block wrote, since a library
        the signal interrupted may have caught the exception and carried on."""
        if self.signum is not None:
            raise self.error()


_active: list[Guard] = []  # the guard whose handlers are installed (main thread only; one at a time)


@contextlib.contextmanager
def raising(what: str) -> Iterator[Guard]:
    """While inside: a stop signal that nobody else handles (its handler is the default one) raises
    Interrupted, so the `finally` blocks of the caller run. Handlers someone installed (training's
    StopSignals, a parent's SIG_IGN as under nohup) are left alone. Signals after the first are ignored
    until the block is left: they would cut the clean-up short (it is a few unlinks).

    The signal wins over whatever the block does with the exception: a library it lands in (torch's ONNX
    exporter) may wrap it in an error of its own, or catch it and go on; either way the block ends in
    Interrupted. A block inside another shares the outer one's Guard (its handlers are already in place)."""
    if threading.current_thread() is not threading.main_thread():
        yield Guard(what)  # only the main thread may set handlers; signals are delivered there anyway
        return
    if _active:
        yield _active[0]
        return
    guard = Guard(what)

    def handle(signum, frame):
        if guard.signum is None:
            guard.signum = signum
            raise guard.error()

    previous = {}
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler):
            previous[sig] = signal.signal(sig, handle)
    _active.append(guard)
    try:
        yield guard
    except BaseException as e:
        if guard.signum is not None and not isinstance(e, Interrupted):
            raise guard.error() from None  # what a library made of the signal's Interrupted: the signal is what came
        raise
    finally:
        _active.remove(guard)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    guard.check()  # the Interrupted was caught and dropped inside: the stop still stands
