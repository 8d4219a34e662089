"""Recording straight from a layer's own arrays into one chunk-sized array per variable.

The dense mode runs a whole minibatch as replicas of every layer, so the values of one step
are the rows of each group's ``(replicas, size)`` array. Instead of Brian2 ``StateMonitor`` s
(which grow a dynamic array per variable at every step and are then indexed row by row), one
``NetworkOperation`` copies those arrays at the end of every step, contiguously, into arrays of
shape ``(ticks, replicas, P, neurons)`` of the chunk: each step writes one row of neurons per
replica, and after the chunk the array, read as rows ``(sample, step)``, is the
:class:`~arsim.recording.Block` values without a copy; the trace writer writes those rows' bytes
as they are, in its own thread.

A chunk's arrays are reused by a later chunk once nothing else holds them (the trace writer has
written them; a recorder that keeps the blocks in memory keeps them, and new arrays are made):
memory already written to costs no page faults, which made the copies of fresh arrays about
three times slower. At most :attr:`TraceBuffer.SPARE_SETS` sets are kept for reuse. New
arrays are made in ordinary pages: NumPy asks Linux for transparent huge pages for large
arrays, and where the kernel compacts memory to find them (``defrag = madvise``) the first
writes cost several times the CPU of the copies themselves, as system time.

The tick that ends a chunk records the first step of the next samples; that step is carried
into the next chunk's arrays, so every chunk hands over exactly the rows of its own samples.
"""

from __future__ import annotations

import sys

import brian2 as b2
import numpy as np

try:
    from numpy._core import multiarray as _multiarray
except ImportError:  # NumPy 1
    from numpy.core import multiarray as _multiarray

from arsim.recording import Block, phase_of_step, trace_dtype
from arsim.spec import PHASES


class TraceBuffer:
    """Per-step copies of the recorded layers of a network whose replicas are samples.

    Parameters
    ----------
    network : arsim.dense.DenseNetwork
        Its ``groups``, ``roles``, ``replicas``, ``steps_per_sample``, ``batches_per_chunk``,
        ``ticks_done`` and ``step_clock``; tick ``c`` relaxes samples ``c·B + r``.
    layers : list of (int, str, list of str, ndarray)
        Group index, layer name, variables and neuron indices of every recorded layer.

    Attributes
    ----------
    operation : brian2.NetworkOperation
        The per-step copy (``when="end"``, where a ``StateMonitor`` records); its ``active``
        switches the recording.
    """

    SPARE_SETS = 4
    """Chunks' sets of arrays kept for reuse at most: the one being filled, and those the trace
    writer's queue (two) and thread (one) may still hold."""

    def __init__(self, network, layers):
        self.network = network
        self.layers = layers
        self.operation = b2.NetworkOperation(
            self._record, clock=network.step_clock, when="end", name="record_arrays"
        )
        self._counter = network.step_clock.variables["timestep"].get_value()
        self._sources = []  # (buffer key, group array as (replicas, size), neurons or None)
        for index, layer, variables, neurons in layers:
            size = network.model.layers[index].size
            every = len(neurons) == size and np.array_equal(neurons, np.arange(size))
            for variable in variables:
                flat = network.groups[index].variables[variable].get_value()
                view = flat.reshape(network.replicas, size)
                self._sources.append(((layer, variable), view, None if every else neurons))
        self._arrays: dict[tuple[str, str], np.ndarray] = {}
        self._spare: list[dict[tuple[str, str], np.ndarray]] = []  # sets that may be reused
        self._dtype = trace_dtype(network.protocol)  # the copy of each step casts to it
        self._first_tick = 0
        self._recorded = False  # a step of the running chunk was copied
        self._carried = False  # slot 0 holds the first step of the chunk's first tick

    def start_chunk(self, ticks: int) -> None:
        """The arrays for a chunk of ``ticks`` sample ticks (and the tick that ends it)."""
        period, replicas = self.network.steps_per_sample, self.network.replicas
        done = self.network.ticks_done
        carried = self._recorded and done == self._first_tick + self._ticks
        previous = self._arrays
        shapes = {}
        for key, view, neurons in self._sources:
            columns = view.shape[1] if neurons is None else len(neurons)
            shapes[key] = (ticks + 1, replicas, period, columns)
        self._arrays = self._free_set(shapes, previous)
        if carried:
            for key in shapes:
                self._arrays[key][0, :, 0] = previous[key][self._ticks, :, 0]
        self._first_tick, self._ticks = done, ticks
        # the first chunk records its first step itself
        self._carried, self._recorded = carried or done == 0, False

    def _free_set(self, shapes: dict, previous: dict) -> dict[tuple[str, str], np.ndarray]:
        """A kept set of arrays of ``shapes`` that nothing else holds, or a new one."""
        for arrays, alone in self._spare:
            if arrays is previous or any(a.shape != shapes[k] for k, a in arrays.items()):
                continue
            if _references(arrays) == alone:  # as when new: no block views any of them
                return arrays
        arrays = _new_arrays(shapes, self._dtype)
        self._spare = [(arrays, _references(arrays)), *self._spare][: self.SPARE_SETS]
        return arrays

    _ticks = 0

    def _record(self) -> None:
        tick, step = divmod(int(self._counter[0]), self.network.steps_per_sample)
        slot = tick - self._first_tick
        for key, view, neurons in self._sources:
            source = view if neurons is None else view[:, neurons]
            self._arrays[key][slot, :, step] = source  # a row of neurons per replica
        self._recorded = True

    def blocks(self, stop: int, phases, samples=None) -> list[Block]:
        """The chunk's blocks: rows of samples before ``stop``, in ``phases`` and ``samples``.

        Parameters
        ----------
        stop : int
            First sample slot not kept (later replicas of the last tick are padding).
        phases : sequence of str
            Phases to keep.
        samples : collection of int, optional
            Sample slots to keep (all when None).

        Returns
        -------
        list of Block
            One per recorded layer and variable, empty if the chunk recorded nothing.
        """
        if not self._recorded:
            return []
        network = self.network
        period, replicas = network.steps_per_sample, network.replicas
        first = self._first_tick * replicas
        count = min(self._ticks * replicas, stop - first)
        sample = np.repeat(np.arange(first, first + count, dtype=np.int32), period)
        step = np.tile(np.arange(period, dtype=np.int32), count)
        codes = phase_of_step(step, network.protocol, network.schedule)  # a jittered chunk's
        keep = np.isin(codes, [PHASES.index(p) for p in phases])
        if samples is not None:
            keep &= np.isin(sample, np.fromiter(samples, dtype=np.int64))
        if not self._carried:  # step 0 of the first tick was not recorded (recording off)
            keep &= (sample >= first + replicas) | (step > 0)
        rows = None if keep.all() else np.flatnonzero(keep)
        if rows is not None and rows.size == 0:
            return []
        ticks = -(-count // replicas)
        blocks = []
        for _, layer, variables, neurons in self.layers:
            for variable in variables:
                # rows (tick, replica, step) are (sample, step): a view, no copy; the writer
                # writes its bytes in its own thread
                array = self._arrays[layer, variable][:ticks]
                values = array.reshape(-1, len(neurons))[: count * period]
                if rows is None:
                    blocks.append(Block(layer, variable, sample, step, neurons, values))
                else:
                    values = values[rows]
                    blocks.append(Block(layer, variable, sample[rows], step[rows], neurons, values))
        return blocks


def _references(arrays: dict) -> list[int]:
    """The reference count of each array (a view of an array counts as one)."""
    return [sys.getrefcount(array) for array in arrays.values()]


def _new_arrays(shapes: dict, dtype) -> dict:
    """Uninitialised arrays of ``shapes``, in ordinary pages (no transparent huge pages)."""
    switch = getattr(_multiarray, "_set_madvise_hugepage", None)  # returns the previous state
    before = switch(False) if switch is not None else None
    try:
        return {key: np.empty(shape, dtype=dtype) for key, shape in shapes.items()}
    finally:
        if switch is not None:
            switch(before)
