"""Stop requests: SIGINT and SIGTERM end a run at the next minibatch boundary.

Inside :class:`StopRequests` (``arsim run`` wraps every job in one) the first SIGINT or SIGTERM
records the request and asks a running Brian2 simulation to stop after its current time step;
the run loop (:class:`arsim.loop.ChunkLoop`) then keeps the minibatches completed so far and
stops there (a minibatch boundary), and the run folder is written with what was computed. A
second SIGINT raises :class:`KeyboardInterrupt` at once.

Also here: the BLAS threads a run uses (:func:`blas_threads`, :func:`blas_threads_limited`),
which decide how the matrix products split their sums and so the last bits of every number.
"""

from __future__ import annotations

import contextlib
import signal
import threading

import brian2 as b2
from threadpoolctl import threadpool_info, threadpool_limits

EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}
"""Exit status of a run stopped by a signal: 128 + the signal number."""

_active: list[StopRequests] = []
_cuttable = [False]  # whether the running Brian2 simulation may end before its end time


class StopRequests:
    """Catch SIGINT and SIGTERM for the duration of a ``with`` block (main thread only).

    Attributes
    ----------
    signal : int or None
        The first signal received (``signal.SIGINT`` or ``signal.SIGTERM``), else None.
    """

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C stops at once
        if self.signal is None:
            self.signal = signum
            if _cuttable[0]:  # the running chunk ends after this time step
                b2.Network._globally_stopped = True

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for number in EXIT_STATUS:
                self._previous[number] = signal.signal(number, self._handle)
        _active.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _active.remove(self)
        b2.Network._globally_stopped = False
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}


@contextlib.contextmanager
def cuttable(allowed: bool):
    """A block (a Brian2 run) that a stop request may end early when ``allowed``.

    Only a network that collects each minibatch's weights as the minibatch ends (the dense
    mode's chunks of minibatches) may be cut: it then holds the minibatches completed.
    """
    _cuttable[0] = allowed
    try:
        yield
    finally:
        _cuttable[0] = False


def requested() -> int | None:
    """The signal that asked the current run to stop, or None (also outside any request)."""
    for requests in reversed(_active):
        if requests.signal is not None:
            return requests.signal
    return None


def signal_name(number: int) -> str:
    """``'SIGINT'`` or ``'SIGTERM'``."""
    return signal.Signals(number).name


def signal_number(name: str) -> int:
    """The number of the signal called ``name`` (``'SIGINT'`` or ``'SIGTERM'``)."""
    return int(signal.Signals[name])


class StoppedAtOnce(Exception):
    """A run stopped by a second SIGINT in the middle of a minibatch.

    Parameters
    ----------
    folder : Path or None
        The unfinished folder kept (a training's, which ``--resume`` continues), or None when
        nothing was kept.
    """

    def __init__(self, folder=None):
        super().__init__(folder)
        self.folder = folder


def blas_threads() -> int | None:
    """Threads of the BLAS library NumPy uses now (None if threadpoolctl cannot tell)."""
    counts = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]
    return max(counts) if counts else None


@contextlib.contextmanager
def blas_threads_limited(threads: int | None):
    """Run the block with ``threads`` BLAS threads (as it is when None)."""
    if threads is None:
        yield
        return
    with threadpool_limits(limits=int(threads), user_api="blas"):
        yield
