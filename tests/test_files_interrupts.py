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


class LibraryError(Exception):
    """What a library (torch's ONNX exporter) raises when something fails inside it: its own error."""


def wrapping_library(signum):
    """A library call the signal lands in, which turns every exception into its own (with a cause, or not)."""
    try:
        os.kill(os.getpid(), signum)
    except BaseException as e:
        raise LibraryError("Failed to export the model... please file an issue") from e


def swallowing_library(signum):
    """A library call that catches whatever happens inside it and carries on (a fallback, a retry)."""
    try:
        os.kill(os.getpid(), signum)
    except BaseException:
        pass
    return "done anyway"


def library_in_a_thread_of_errors(signum):
    """The signal's exception replaced by another one raised while handling it (no `from`)."""
    try:
        os.kill(os.getpid(), signum)
    except BaseException:
        raise AttributeError("module 'torch._dynamo' has no attribute 'exc'") from None


STOPS = [s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)) if s is not None]


@pytest.mark.parametrize("library", [wrapping_library, swallowing_library, library_in_a_thread_of_errors])
@pytest.mark.parametrize("signum", STOPS)
def test_the_signal_wins_over_what_a_library_makes_of_it(library, signum):
    """Wrapped in the library's error, replaced by another, or caught and dropped: the block ends in Interrupted
    with the signal's exit code and the one message, never the library's."""
    with pytest.raises(Interrupted) as caught, raising("onnx-out"):
        library(signum)
    assert caught.value.exit_code == 128 + signum
    assert str(caught.value) == f"{signal.Signals(signum).name} while writing onnx-out: stopped, nothing left behind"
    assert signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler)


def test_an_error_without_a_signal_is_left_as_it_is():
    with pytest.raises(LibraryError), raising("x"):
        raise LibraryError("a real failure")


def test_a_block_inside_another_shares_its_guard():
    with pytest.raises(Interrupted) as caught, raising("outer") as outer:
        with raising("inner") as inner:
            assert inner is outer
            swallowing_library(signal.SIGTERM)
            assert inner.signum == signal.SIGTERM
    assert "outer" in str(caught.value)


def test_the_guard_says_whether_a_signal_came():
    with raising("x") as guard:
        guard.check()  # none yet: nothing happens
    assert guard.signum is None
