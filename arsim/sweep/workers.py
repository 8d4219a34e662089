"""Set-up of the worker processes of a sweep's own local Dask cluster.

Ctrl-C in a terminal sends SIGINT to every process of the foreground group: the sweep's
process, its Dask worker processes and the point processes they launched. The sweep's process
stops the workers itself and each point process stops at a minibatch boundary; a worker
process interrupted in its event loop would only print a traceback, so it ignores SIGINT.
"""

from __future__ import annotations

import signal
import threading

from distributed import WorkerPlugin

import arsim.runfolder  # noqa: F401  (imports Brian2, which sets its SIGINT handler, tidily)


class IgnoreSigint(WorkerPlugin):
    """A worker plugin: the worker process ignores SIGINT (a Ctrl-C meant for the sweep)."""

    name = "arsim-ignore-sigint"

    def setup(self, worker) -> None:
        """Ignore SIGINT in this worker process (the plugin runs in its main thread)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
