"""The execution modes and devices: which network class runs a job, and whether it can.

A mode is a way of making the connections (:mod:`arsim.dense`: BLAS products on a minibatch of
replicas; :mod:`arsim.synapses`: Brian2 ``Synapses``), a device where Brian2 runs it (the
runtime, or a compiled ``cpp_standalone`` program). Every network class declares its ``mode``,
its ``device`` and the components (:mod:`arsim.components`) it ``builds``;
:func:`check_execution` reads those declarations and refuses with the registry's line.
"""

from __future__ import annotations

import brian2 as b2
from brian2.codegen.runtime.cython_rt import CythonCodeObject

from arsim import components
from arsim.dense import DenseNetwork
from arsim.network import ARNetwork
from arsim.spec import CODEGEN_TARGETS, ProtocolSpec
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


class ExecutionError(ValueError):
    """A mode or device that cannot run the protocol (one line)."""


def network_class(mode: str, device: str) -> type[ARNetwork] | None:
    """The network class of ``mode`` on ``device``, or None where that pair does not run."""
    return next((cls for cls in NETWORKS if (cls.mode, cls.device) == (mode, device)), None)


def check_execution(protocol: ProtocolSpec, mode: str, device: str, model=None) -> None:
    """Raise :class:`ExecutionError` unless ``mode`` on ``device`` can run ``protocol``.

    With ``model``, also what depends on it (conv and maxpool connections). The refusal names
    the first component the job needs that the network class does not build
    (:func:`arsim.components.refusal`).
    """
    if mode not in MODES:
        raise ExecutionError(f"--mode: expected one of {', '.join(MODES)}, got {mode!r}")
    if device not in DEVICES:
        raise ExecutionError(f"--device: expected one of {', '.join(DEVICES)}, got {device!r}")
    network = network_class(mode, device)
    if network is None:
        modes = " or ".join(cls.mode for cls in NETWORKS if cls.device == device)
        raise ExecutionError(f"--device {device} runs the {modes} mode only (--mode {modes})")
    for component, where in components.required(protocol, model):
        if component.feature not in network.builds:
            raise ExecutionError(components.refusal(component, where, network, NETWORKS))


def session(protocol: ProtocolSpec, mode=DEFAULT_MODE, device="runtime"):
    """The :class:`~arsim.session.BrianSession` in which a job of ``mode`` on ``device`` runs.

    Build the network (:func:`build_network`) and run it inside it: it sets Brian2's
    preferences and device for the job and restores them afterwards.
    """
    check_execution(protocol, mode, device)
    return network_class(mode, device).session(protocol)


def build_network(model, protocol, params, mode=DEFAULT_MODE, device="runtime", record=True):
    """The network of an execution mode and Brian2 device (see :data:`NETWORKS`).

    A job builds it inside the mode's :func:`session`.
    """
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


def component_table() -> str:
    """Which backend builds which component, as a Markdown table generated from the registry.

    One row per registered component (:data:`arsim.components.REGISTRY`, in
    :class:`~arsim.components.Feature` order): its name, the key that asks for it, the module
    that holds it, and ✓ under every backend (mode and device) that builds it.
    """
    heads = [f"{cls.mode} ({cls.device})" for cls in NETWORKS]
    rows = [
        "| component | key | module | " + " | ".join(heads) + " |",
        "|---|---|---|" + "---|" * len(heads),
    ]
    for feature in components.Feature:
        component = components.REGISTRY[feature]
        key = f"`{component.asks.key}`" if component.asks.key else "(always)"
        built = " | ".join("✓" if feature in cls.builds else "" for cls in NETWORKS)
        rows.append(f"| {feature} | {key} | `{component.module}` | {built} |")
    return "\n".join(rows)
