"""The pieces of dynamics as components, and the registry every backend builds them from.

A component is one piece of the dynamics (the relaxation, leaky forward dynamics, a memory of
x̂ and f', a plasticity rule, a variant of f', noise, a delay, …). Its module holds, in one place,

- its declaration (:class:`Component`, registered with :func:`register`): the model and
  protocol keys that ask for it (their defaults and bounds are declared with the keys in
  :mod:`arsim.spec`), and what a backend that builds it does;
- its Brian2 form, as ``brian2.Equations`` fragments or code statements, where it has one;
- its array-level step, written once against an array namespace ``xp`` (NumPy today), which
  the period oracle (:mod:`arsim.period_oracle`, the executable statement of the dynamics)
  and the dense mode both call.

A backend (a network class of :mod:`arsim.modes`) declares the components it ``builds``; one
that lacks a component a job asks for refuses the job with the line :func:`refusal` generates
from the component's declaration.
"""

from __future__ import annotations

from arsim.components import (  # the modules register their components as they are imported
    connections,
    derivative,
    forward,
    memory,
    neuron_terms,
    plasticity,
    precision,
    relaxation,
    spikes,
    timing,
)
from arsim.components.registry import REGISTRY, Component, Feature, core, refusal, required

CORE = core()
"""The components every backend builds (no key asks for them)."""

__all__ = [
    "CORE",
    "REGISTRY",
    "Component",
    "Feature",
    "connections",
    "derivative",
    "forward",
    "memory",
    "neuron_terms",
    "plasticity",
    "precision",
    "refusal",
    "relaxation",
    "required",
    "spikes",
    "timing",
]
