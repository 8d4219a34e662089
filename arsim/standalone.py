"""The ``synapses`` mode on Brian2's ``cpp_standalone`` device: build once, run many times.

The network of :class:`arsim.synapses.SynapsesNetwork` is compiled into a C++ program that
simulates one minibatch. Each chunk runs that program again with the chunk's stimuli, targets,
weights, ψ and biases passed as ``run_args`` (no recompilation), then reads the weights back.
Every program run starts at t = 0; traces and divergence times are shifted onto the sequential
timeline of the whole run.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
import tempfile
from pathlib import Path

import brian2 as b2
import numpy as np
from brian2.devices.cpp_standalone.device import CPPStandaloneDevice

from arsim import threads as thread_policy
from arsim.backend import ChunkResult
from arsim.components import Feature
from arsim.network import FLOAT_DTYPES
from arsim.params import Params
from arsim.session import BrianSession
from arsim.synapses import SynapsesNetwork


def blocked_summation(threads: int):
    """The templater of summed variables with arsim's template (``arsim/brian_templates``).

    Returns ``derive(brian_templater) -> templater`` for :class:`~arsim.session.BrianSession`.
    Wherever the synapses have the layout of :func:`arsim.synapses.all_to_all` the template
    sums the top-down input block by block over its targets, ``threads`` OpenMP threads each
    taking a fixed range of targets; every target adds its terms in Brian2's order, so the
    result is bit-identical to Brian2's loop, which it falls back to otherwise. The rest of the
    program uses Brian2's OpenMP mode with as many threads: every other threaded loop writes
    only its own neuron's or synapse's variables (the sweep is a summed variable, see
    :meth:`arsim.synapses.SynapsesNetwork._make_synapses`).
    """

    def derive(templater):
        return templater.derive(
            "arsim",
            templates_dir="brian_templates",
            env_globals={"arsim_summation_threads": threads},
        )

    return derive


def claim_build_dir(model, protocol):
    """The build folder of a network that no other process uses now, and its lock.

    Folders are ``NAME-HASH-SLOT`` under ``ARSIM_BUILD_DIR`` (default: the temp folder's
    ``arsim-standalone``): the first slot whose lock is free is taken, so parallel processes
    never share one, and a later process reuses a folder built before, where ``make`` only
    compiles what changed (about 4 s of CPU instead of 40 for a small network).

    Returns
    -------
    (Path, file)
        The folder and the open lock file; the lock is released when the file is closed
        (or the process ends).
    """
    key = hashlib.sha1(repr((model, protocol)).encode()).hexdigest()[:12]
    root = Path(os.environ.get("ARSIM_BUILD_DIR", Path(tempfile.gettempdir()) / "arsim-standalone"))
    for slot in itertools.count():
        folder = root / f"{model.name}-{key}-{slot}"
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / ".lock", "w")  # held until the network closes
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return folder, lock


class StandaloneSynapsesNetwork(SynapsesNetwork):
    """:class:`~arsim.synapses.SynapsesNetwork` compiled with ``cpp_standalone``.

    Parameters
    ----------
    model, protocol, params, record
        As for :class:`~arsim.network.ARNetwork`.
    build_dir : path, optional
        Where the C++ program is built (default: a folder of :func:`claim_build_dir`).

    Notes
    -----
    Brian2's device is global: the network is built and run inside its :meth:`session`, which
    switches to the cpp_standalone device and back.
    """

    mode = "synapses"
    device = "cpp_standalone"
    device_refusals = {
        Feature.NOISE: "would draw the same noise in every minibatch",
        Feature.PHASE_JITTER: "compiles the phase boundary into its program",
        Feature.TOLERANCE: "does not keep each program run's relaxation steps",
    }
    """Why this device cannot build a component the runtime device builds."""
    builds = (
        SynapsesNetwork.builds
        - set(device_refusals)
        - {
            Feature.LEAKY_FORWARD,  # the leaky forward pass's code is not compiled here yet
            Feature.ERROR_UNIT,
        }
    )
    traces_per_chunk = True

    @classmethod
    def session(cls, protocol, threads: int | None = None) -> BrianSession:
        """The job's session: the cpp_standalone device, arsim's summation template.

        ``threads``: OpenMP threads of the program (default: the thread policy,
        :func:`arsim.threads.resolve`). Results do not depend on it: every sum keeps its order.
        """
        threads = threads or thread_policy.resolve()
        prefs = {
            "core.default_float_dtype": FLOAT_DTYPES[protocol.precision],
            "devices.cpp_standalone.openmp_threads": threads if threads > 1 else 0,
            # Brian2's default `make -j` starts a compiler per source file at once (about 20
            # here), which swamps a busy machine; as many jobs as usable cores compile as fast.
            "devices.cpp_standalone.extra_make_args_unix": [f"-j{len(os.sched_getaffinity(0))}"],
        }
        return BrianSession(
            prefs,
            device="cpp_standalone",
            device_options={"build_on_run": False},
            templater=blocked_summation(threads),
        )

    def __init__(self, model, protocol, params, record=True, build_dir=None):
        if not isinstance(b2.get_device(), CPPStandaloneDevice):
            raise RuntimeError(
                "a StandaloneSynapsesNetwork is built inside its session: "
                "with StandaloneSynapsesNetwork.session(protocol): ..."
            )
        self._build_lock = None
        if build_dir is None:
            build_dir, self._build_lock = claim_build_dir(model, protocol)
        self.build_dir = Path(build_dir)
        self.build_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(model, protocol, params, record)
        batch = protocol.batch_size
        for group in self.groups:
            group.chunk_start = 0 * b2.second
            group.apply_at = batch * self.steps_per_sample * self.dt
        self.network.run(batch * self.steps_per_sample * self.dt + self.dt, namespace={})
        b2.device.build(run=False, directory=str(self.build_dir))
        self._offset_steps = 0  # steps of the sequential timeline before the current program run

    def close(self) -> None:
        """Release the build folder (the built program stays in it, free for reuse).

        The job's session, not the network, leaves standalone mode.
        """
        if self._build_lock is not None:
            self._build_lock.close()
            self._build_lock = None

    # -- parameters are run arguments --------------------------------------------------------
    def set_params(self, params: Params) -> None:
        """Keep the parameters for the next program run (passed as ``run_args``)."""
        self._params = params.copy()

    def get_params(self) -> Params:
        """Parameters after the last program run (or as set)."""
        return self._params.copy()

    def _read_params(self) -> Params:
        weights, biases, feedbacks = [], [], []
        for index, connection in enumerate(self.model.connections):
            n_in = self.model.layer(connection.source).size
            n_out = self.model.layer(connection.target).size
            weights.append(np.asarray(self.forward_synapses[index].w[:]).reshape(n_out, n_in))
            target = self.groups[self._group_index(connection.target)]
            biases.append(np.array(target.b[:]) if connection.bias else None)
            feedback = self.feedback_synapses[index]
            psi = None
            if feedback is not None:  # pre-major over (upper, lower): psi[lower, upper]
                psi = np.asarray(feedback.psi[:]).reshape(n_out, n_in).T.copy()
            feedbacks.append(psi)
        return Params(weights, biases, feedbacks)

    # -- running -----------------------------------------------------------------------------
    def locate(self, rows, steps, layer_size):
        """As the synapses mode, shifted by the samples of earlier program runs."""
        return super().locate(rows, steps + self._offset_steps, layer_size)

    def run_chunk(
        self, inputs, targets, next_input=None, next_target=None, report=None
    ) -> ChunkResult:
        """Run the compiled program on one minibatch (see :meth:`ARNetwork.run_chunk`)."""
        count = len(inputs)
        if not 0 < count <= self.chunk_samples:
            raise ValueError(f"a chunk holds 1 to {self.chunk_samples} samples, got {count}")
        self._offset_steps = self.ticks_done * self.steps_per_sample
        self.stimulus.values[:] = 0
        self.targets.values[:] = 0
        self.stimulus.values[:count] = inputs
        self.targets.values[:count] = targets
        rate, feedback_rate = self.schedule.learning_rates(count)
        run_args = {self.stimulus: self.stimulus.values, self.targets: self.targets.values}
        apply_at = count * self.steps_per_sample * self.dt
        for group, role in zip(self.groups, self.roles, strict=True):
            run_args[group.apply_at] = apply_at
            if not role.is_input:
                run_args[group.eta_bias] = rate
        for index, connection in enumerate(self.model.connections):
            forward = self.forward_synapses[index]
            run_args[forward.w] = self._params.W[index].ravel()  # post-major order
            run_args[forward.eta] = rate
            if self._params.b[index] is not None:
                target = self.groups[self._group_index(connection.target)]
                run_args[target.b] = self._params.b[index]
            feedback = self.feedback_synapses[index]
            if feedback is not None:
                run_args[feedback.psi] = self._params.psi[index].T.ravel()
                run_args[feedback.eta] = feedback_rate
        b2.device.run(run_args=run_args)
        self._params = self._read_params()
        self.ticks_done += count
        return ChunkResult((self.get_params(),))
