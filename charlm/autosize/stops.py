"""Stop signals during a search: wherever one lands, the search ends with the command that continues it.

Between trials (a cut, the study, a trial's set-up) `Stops` turns the first stop signal into Interrupted at
once, so the search ends there (every file is written atomically, a study's write is a transaction or one
appended line, and a resume picks up from any point). Inside a trial the trainer's own handler takes it: it
saves and raises Interrupted at the next batch, but one that lands in its final eval is only recorded and the
trial returns as finished. Each signal delivered to a Python handler is also written, as its number, to the
wakeup fd that `Stops` set up; `check`, after each trial, reads it back, so that such a signal still ends the
search (after the rung it finished is written down).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading

from charlm.files.interrupts import STOP_SIGNALS, Interrupted


class Stops:
    """While a search runs: the stop signals (see the module). `resume` is the command that continues it."""

    def __init__(self, resume: str):
        self.resume = resume
        self.fired: int | None = None
        self.previous: dict = {}
        self.wakeup: tuple[socket.socket, socket.socket] | None = None
        self.previous_fd = -1

    def error(self, signum: int, where: str = "") -> Interrupted:
        name = signal.Signals(signum).name
        return Interrupted(f"{name}: the search stopped{where}; continue it with: {self.resume}", signum)

    def _handle(self, signum, frame):
        if self.fired is None:  # a second signal while the first unwinds is ignored (the clean-up is short)
            self.fired = signum
            raise self.error(signum)

    def check(self, where: str = "") -> None:
        """Raise the stop a trial's trainer took without acting on it (a signal in its final eval)."""
        if self.wakeup is None:
            return
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while data := self.wakeup[0].recv(512):
                for signum in data:
                    if signum in STOP_SIGNALS:
                        self.fired = signum
                        raise self.error(signum, where)

    def __enter__(self) -> Stops:
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may set handlers; signals are delivered there anyway
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self.wakeup = (reader, writer)
        self.previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        for sig in STOP_SIGNALS:
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if self.wakeup is not None:
            signal.set_wakeup_fd(self.previous_fd)
            for end in self.wakeup:
                end.close()
            self.wakeup = None
