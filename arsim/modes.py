"""The execution modes and devices: which network class runs a job, and whether it can.

A mode is a way of making the connections (:mod:`arsim.dense`: BLAS products on a minibatch of
replicas; :mod:`arsim.synapses`: Brian2 ``Synapses``), a device where Brian2 runs it (the
runtime, or a compiled ``cpp_standalone`` program). Every network class declares its ``mode``,
its ``device`` and the :class:`~arsim.network.Feature` s it ``supports``;
:func:`check_execution` reads those declarations.
"""

from __future__ import annotations

import brian2 as b2
from brian2.codegen.runtime.cython_rt import CythonCodeObject

from arsim.dense import DenseNetwork
from arsim.network import ARNetwork, Feature
from arsim.spec import CODEGEN_TARGETS, ProtocolSpec
from arsim.spec.schedule import Schedule
from arsim.standalone import StandaloneSynapsesNetwork
from arsim.synapses import SynapsesNetwork

COMPILE_PAYS_OFF = 10_000
"""Sample presentations from which ``target='auto'`` compiles the neurons' code with Cython.

A network's first compilation takes about 30 s on 2 cores (then it is cached in
``~/.cython/brian_extensions``); the compiled state updaters make a dense-mode step about a
quarter faster than NumPy's, which repays a cold compilation over about 100,000 samples and a
cached one at once. Shorter jobs start at once with NumPy.
"""
MODES = {"dense": DenseNetwork, "synapses": SynapsesNetwork}
"""Execution modes: Brian2 neurons with BLAS connections, or Brian2 ``Synapses``."""
DEFAULT_MODE = "dense"
DEVICES = ("runtime", "cpp_standalone")
NETWORKS: tuple[type[ARNetwork], ...] = (DenseNetwork, SynapsesNetwork, StandaloneSynapsesNetwork)
"""Every network class, one per (mode, device) that runs."""

_REFUSALS = {
    Feature.FEEDBACK_DELAY: "only the {modes} mode delays the top-down signal so far; "
    "use --mode {modes}",
    Feature.TOLERANCE: "only the {modes} mode relaxes until converged so far; use --mode {modes}",
    Feature.STIMULUS_STREAM: "only the {modes} mode shows a stimulus stream so far; "
    "use --mode {modes}",
    Feature.EARLY_PLASTICITY: "only the {modes} mode changes the weights before the cycle's end "
    "so far; use --mode {modes} or plasticity = '360 deg'",
    Feature.CONV: "only the {modes} mode runs conv connections so far; use --mode {modes}",
    Feature.MAXPOOL: "only the {modes} mode runs maxpool connections so far; use --mode {modes}",
    Feature.NOISE: "{device} would draw the same noise in every minibatch; use --device {devices}",
    Feature.LEAKY_FORWARD: "only the {modes} mode integrates the forward pass in time so far; "
    "use --mode {modes}",
    Feature.DERIVATIVE_AT: "only the {modes} mode evaluates f' away from the stored "
    "pre-activation so far; use --mode {modes}",
    Feature.UPDATE_USES: "only the {modes} mode updates weights from the current activity so "
    "far; use --mode {modes}",
    Feature.CONTINUOUS_PLASTICITY: "only the {modes} mode changes the weights at every "
    "relaxation step so far; use --mode {modes}",
    Feature.SINGLE_PRECISION: "only the {modes} mode runs in single precision so far; "
    "use --mode {modes} or precision = 'double'",
    Feature.TOP_DOWN_ORDER: "only the {modes} mode updates the layers from the top down within "
    "a step so far; use --mode {modes} or order = 'parallel'",
    Feature.INPUT_RELAXES: "only the {modes} mode relaxes the input layers so far; use --mode "
    "{modes} or input = 'clamped'",
    Feature.UPDATE_DERIVATIVE_AT: "only the {modes} mode evaluates the weight update's f' away "
    "from the stored pre-activation so far; use --mode {modes}",
    Feature.CARRY_OVER: "only the {modes} mode carries the state over between samples (a "
    "minibatch's replicas side by side) so far; use --mode {modes} or reset = true",
    Feature.PHASE_JITTER: "only the {modes} mode moves the phase boundary per minibatch so far; "
    "use --mode {modes}",
    Feature.SPIKING_FEEDBACK: "only the {modes} mode sends the top-down signal as spikes so far; "
    "use --mode {modes}",
}
"""Why a network class lacking a feature refuses a job (after ``<file>: <field>: ``)."""


class ExecutionError(ValueError):
    """A mode or device that cannot run the protocol (one line)."""


def network_class(mode: str, device: str) -> type[ARNetwork] | None:
    """The network class of ``mode`` on ``device``, or None where that pair does not run."""
    return next((cls for cls in NETWORKS if (cls.mode, cls.device) == (mode, device)), None)


def required_features(protocol: ProtocolSpec, model=None) -> list[tuple[Feature, str]]:
    """The features a job needs, each with where it asks for it (``<file>: <field>``).

    With ``model``, also what depends on it (its first conv or maxpool connection).
    """
    source = protocol.source
    needs = []
    if any(delay > 0 for _, delay in protocol.feedback_delay):
        needs.append((Feature.FEEDBACK_DELAY, f"{source}: feedback_delay"))
    if protocol.tolerance > 0:
        needs.append((Feature.TOLERANCE, f"{source}: phases.tolerance"))
    if protocol.dwell > 0:
        needs.append((Feature.STIMULUS_STREAM, f"{source}: stimulus.dwell"))
    schedule = Schedule(model, protocol)
    if schedule.plasticity_step != schedule.sample_steps:
        needs.append((Feature.EARLY_PLASTICITY, f"{source}: oscillation.plasticity"))
    if model is not None and not model.all_dense:
        c = next(c for c in model.connections if c.operation != "dense")
        needs.append((Feature(c.operation), f"{model.source}: connection {c.source} -> {c.target}"))
    if protocol.noise > 0:
        needs.append((Feature.NOISE, f"{source}: noise"))
    if protocol.precision == "single":
        needs.append((Feature.SINGLE_PRECISION, f"{source}: precision"))
    if protocol.forward.leaky:
        needs.append((Feature.LEAKY_FORWARD, f"{source}: feedforward.kind"))
        if not protocol.forward.reset:
            needs.append((Feature.CARRY_OVER, f"{source}: feedforward.reset"))
    if protocol.jitter > 0:
        needs.append((Feature.PHASE_JITTER, f"{source}: phases.jitter"))
    if protocol.plasticity.continuous:
        needs.append((Feature.CONTINUOUS_PLASTICITY, f"{source}: plasticity.continuous"))
    if protocol.relaxation_order != "parallel":
        needs.append((Feature.TOP_DOWN_ORDER, f"{source}: relaxation.order"))
    if protocol.spikes is not None:
        needs.append((Feature.SPIKING_FEEDBACK, f"{source}: spikes"))
    if protocol.relaxation_input != "clamped":
        needs.append((Feature.INPUT_RELAXES, f"{source}: relaxation.input"))
    for c in model.connections if model is not None else ():
        where = f"{model.source}: connection {c.source} -> {c.target}"
        if c.derivative_at != "stored":
            needs.append((Feature.DERIVATIVE_AT, f"{where}: derivative_at"))
        if c.update_uses != "stored":
            needs.append((Feature.UPDATE_USES, f"{where}: update_uses"))
        if c.update_derivative_at != "stored":
            needs.append((Feature.UPDATE_DERIVATIVE_AT, f"{where}: update_derivative_at"))
    return needs


def check_execution(protocol: ProtocolSpec, mode: str, device: str, model=None) -> None:
    """Raise :class:`ExecutionError` unless ``mode`` on ``device`` can run ``protocol``.

    With ``model``, also what depends on it (conv and maxpool connections). The refusal names
    the first feature the job needs that the network class does not declare.
    """
    if mode not in MODES:
        raise ExecutionError(f"--mode: expected one of {', '.join(MODES)}, got {mode!r}")
    if device not in DEVICES:
        raise ExecutionError(f"--device: expected one of {', '.join(DEVICES)}, got {device!r}")
    network = network_class(mode, device)
    if network is None:
        modes = " or ".join(cls.mode for cls in NETWORKS if cls.device == device)
        raise ExecutionError(f"--device {device} runs the {modes} mode only (--mode {modes})")
    for feature, where in required_features(protocol, model):
        if feature in network.supports:
            continue
        able = [cls for cls in NETWORKS if feature in cls.supports]
        modes = " or ".join(dict.fromkeys(cls.mode for cls in able))
        devices = " or ".join(dict.fromkeys(cls.device for cls in able))
        reason = _REFUSALS[feature].format(modes=modes, device=device, devices=devices)
        raise ExecutionError(f"{where}: {reason}")


def build_network(model, protocol, params, mode=DEFAULT_MODE, device="runtime", record=True):
    """The network of an execution mode and Brian2 device (see :data:`NETWORKS`)."""
    check_execution(protocol, mode, device, model)
    return network_class(mode, device)(model, protocol, params, record=record)


def resolve_codegen_target(target: str, presentations: int) -> str:
    """The code generation target ``target`` stands for, in a job of ``presentations`` samples.

    ``'auto'`` is ``'cython'`` for jobs of at least :data:`COMPILE_PAYS_OFF` sample
    presentations when Cython can compile here, else ``'numpy'``; the others stand for
    themselves.
    """
    if target not in CODEGEN_TARGETS:
        raise ValueError(f"codegen target: expected one of {CODEGEN_TARGETS}, got {target!r}")
    if target != "auto":
        return target
    if presentations < COMPILE_PAYS_OFF:
        return "numpy"
    return "cython" if CythonCodeObject.is_available() else "numpy"


def set_codegen_target(target: str) -> None:
    """Choose Brian2's code generation target ('cython' compiles, 'numpy' does not)."""
    if target not in CODEGEN_TARGETS[1:]:
        raise ValueError(f"codegen target: expected 'cython' or 'numpy', got {target!r}")
    b2.prefs.codegen.target = target
    b2.BrianLogger.log_level_warn()
    # arsim reports divergence itself, naming layer, sample and time
    b2.BrianLogger.suppress_name("invalid_values")
