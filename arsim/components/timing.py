"""When things happen within the sample period: gates, jitter, the stimulus stream, the sweep.

The phase windows and an oscillation's gains are computed by :class:`arsim.spec.Schedule`;
a non-square gate is a per-step gain looked up by the Brian2 neurons. ``[phases] jitter``
moves every minibatch's phase boundary by a seeded whole number of steps; ``[stimulus] dwell``
makes the stimulus a stream that changes on its own clock, not at the sample ticks.
"""

from __future__ import annotations

from arsim.components.registry import Asks, Feature, register

SWEEP = register(Feature.SWEEP, "sweeps forward", module="arsim.equations")
OUTPUT_CLAMP = register(Feature.OUTPUT_CLAMP, "clamps the output", module="arsim.activations")
_GATED = Asks("oscillation", lambda m, p: p.oscillation is not None)
GATING = register(Feature.GATING, "gates the relaxation", _GATED)
_JITTER = Asks("phases.jitter", lambda m, p: p.jitter > 0)
PHASE_JITTER = register(Feature.PHASE_JITTER, "moves the phase boundary per minibatch", _JITTER)
_STREAM = Asks("stimulus.dwell", lambda m, p: p.dwell > 0)
STIMULUS_STREAM = register(Feature.STIMULUS_STREAM, "shows a stimulus stream", _STREAM)
