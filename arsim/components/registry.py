"""The registry of components: their names, declarations and the refusal a backend gives."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Feature(StrEnum):
    """The names of the registered components (:data:`REGISTRY`).

    The core components every backend builds come first; the others are what a protocol or
    model may ask of a backend beyond the plain relaxation. ``CONV`` and ``MAXPOOL`` are named
    as the connections' ``operation``.
    """

    RELAXATION = "leaky relaxation"
    SWEEP = "feedforward sweep"
    OUTPUT_CLAMP = "output clamped to the loss gradient"
    PLASTICITY = "plasticity at the sample period's end"
    GATING = "gated relaxation windows"
    MEMORY = "decaying memory of x̂ and f'"
    FEEDBACK_DELAY = "feedback delay"
    TOLERANCE = "relaxation until converged"
    STIMULUS_STREAM = "stimulus stream"
    EARLY_PLASTICITY = "plasticity before the sample period's end"
    CONV = "conv"
    MAXPOOL = "maxpool"
    NOISE = "noise"
    SINGLE_PRECISION = "single precision"
    LEAKY_FORWARD = "leaky forward dynamics"
    ERROR_UNIT = "output error unit"
    CARRY_OVER = "forward state carried from one sample to the next"
    PHASE_JITTER = "a phase boundary jittered per minibatch"
    CONTINUOUS_PLASTICITY = "continuous plasticity"
    TOP_DOWN_ORDER = "a relaxation step from the top down"
    INPUT_RELAXES = "relaxing input layers"
    SPIKING_FEEDBACK = "spiking feedback"
    DERIVATIVE_AT = "f' away from the stored pre-activation"
    UPDATE_USES = "weight updates from the current activity"
    UPDATE_DERIVATIVE_AT = "a weight update's f' away from the stored pre-activation"
    NEURON_TERMS = "a layer's own equations and drive"


@dataclass(frozen=True)
class Asks:
    """Which key asks for a component, and when.

    Attributes
    ----------
    key : str
        The key as a refusal names it after the file (``noise``, ``feedforward.kind``, a
        connection's ``derivative_at``).
    test : callable or None
        ``test(model, protocol) -> bool`` for a protocol or model key, ``test(connection)`` for
        a connection key; None: no key asks for it (a core component: every backend builds it).
    of : {'protocol', 'model', 'connection'}
        Where the key is.
    """

    key: str = ""
    test: Callable[..., bool] | None = None
    of: str = "protocol"

    def __call__(self, model, protocol) -> list[str]:
        """Where a job asks for the component, ``["<file>: <key>", …]`` (may be empty).

        ``model`` may be None: then only what the protocol asks.
        """
        if self.test is None:
            return []
        if self.of == "protocol":
            return [f"{protocol.source}: {self.key}"] if self.test(model, protocol) else []
        if model is None:
            return []
        if self.of == "model":
            return [f"{model.source}: {self.key}"] if self.test(model, protocol) else []
        return [
            f"{model.source}: connection {c.source} -> {c.target}: {self.key}"
            for c in model.connections
            if self.test(c)
        ]


@dataclass(frozen=True)
class Component:
    """The declaration of one component.

    Its name (``feature``), what a backend that builds it ``does`` (as a refusal says it: "only
    the dense mode <does> so far"), the key that ``asks`` for it (:class:`Asks`; its default
    and bounds are declared with the key in :mod:`arsim.spec`), a setting that does without it
    (``otherwise``, offered in a refusal) and the ``module`` that holds its Brian2 form and
    array step.
    """

    feature: Feature
    does: str
    asks: Asks = Asks()
    otherwise: str = ""
    module: str = ""

    @property
    def core(self) -> bool:
        """Built by every backend: no key asks for it."""
        return self.asks.test is None


REGISTRY: dict[Feature, Component] = {}
"""Every component by name (a job's needs are checked in :class:`Feature` order)."""


def register(
    feature: Feature, does: str, asks: Asks = Asks(), otherwise: str = "", module: str = ""
) -> Component:
    """Declare the component ``feature`` (:class:`Component`) in :data:`REGISTRY`; returns it.

    ``module`` defaults to the module that calls this (where the component is written).
    """
    if feature in REGISTRY:
        raise ValueError(f"component {feature!r} is registered twice")
    module = module or inspect.currentframe().f_back.f_globals["__name__"]
    REGISTRY[feature] = Component(feature, does, asks, otherwise, module)
    return REGISTRY[feature]


def core() -> frozenset[Feature]:
    """The components every backend builds (no key asks for them)."""
    return frozenset(feature for feature, component in REGISTRY.items() if component.core)


def required(protocol, model=None) -> list[tuple[Component, str]]:
    """The components a job asks for beyond the core, each with where it asks for it.

    With ``model``, also what depends on it (its conv and maxpool connections, the
    connections' f' and update variants).
    """
    needs = []
    for feature in Feature:
        component = REGISTRY[feature]
        needs += [(component, where) for where in component.asks(model, protocol)]
    return needs


def refusal(component: Component, where: str, backend, backends) -> str:
    """The one line with which ``backend`` refuses a job that asks for ``component``.

    ``backends`` are every backend class; those that build the component are offered: the
    modes (``--mode``), or, where ``backend`` names a reason of its device in
    ``device_refusals``, the devices (``--device``).
    """
    able = [cls for cls in backends if component.feature in cls.builds]
    modes = " or ".join(dict.fromkeys(cls.mode for cls in able))
    reason = getattr(backend, "device_refusals", {}).get(component.feature)
    if reason is not None:
        devices = " or ".join(dict.fromkeys(cls.device for cls in able))
        return f"{where}: {backend.device} {reason}; use --device {devices}"
    otherwise = f" or {component.otherwise}" if component.otherwise else ""
    return f"{where}: only the {modes} mode {component.does} so far; use --mode {modes}{otherwise}"
