"""interrupts: a stop signal during a write raises Interrupted (so `finally` cleans up), and only where no one
else handles that signal."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from charlm.files.interrupts import STOP_SIGNALS, Interrupted, raising

POSIX_ONLY = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")


@pytest.mark.parametrize("signum", [s for s in STOP_SIGNALS if s != getattr(signal, "SIGBREAK", None)])
def test_a_stop_signal_raises_interrupted_with_its_exit_code(signum):
    before = signal.getsignal(signum)
    with pytest.raises(Interrupted) as caught, raising("x.html"):
        os.kill(os.getpid(), signum)
    assert caught.value.exit_code == 128 + signum and "x.html" in str(caught.value)
    assert signal.getsignal(signum) is before


@POSIX_ONLY
def test_a_handler_someone_installed_is_left_alone():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    ignored = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with raising("x"):
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGHUP)
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGHUP, ignored)


def test_a_second_signal_does_not_cut_the_clean_up_short():
    cleaned = []
    with pytest.raises(Interrupted), raising("x"):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # while cleaning up: ignored
            cleaned.append(True)
    assert cleaned == [True]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_outside_the_main_thread_nothing_is_installed():
    seen = []

    def work():
        with raising("x"):
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [signal.SIG_DFL]
