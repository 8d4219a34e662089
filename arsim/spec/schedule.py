"""The derived timing of a protocol applied to a model, in integration steps.

A :class:`Schedule` turns the durations, phases, oscillation, delays and stimulus stream of a
:class:`~arsim.spec.protocol.ProtocolSpec` into what the simulators count: steps per phase and
per sample, each layer's relaxation window and gain, the step of the weight update, the
feedback delays in steps and which samples the stimulus stream shows when.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from arsim.spec.model import ModelSpec
from arsim.spec.schema import PHASES, phase_to_step


class Schedule:
    """The timing that ``protocol`` gives ``model``.

    Every quantity is computed from the two specifications when asked for (nothing is cached,
    so a schedule is as cheap to make as to drop).

    Parameters
    ----------
    model : ModelSpec or None
        The model whose layers and connections the per-layer and per-connection quantities
        (:attr:`eta_x_per_layer`, :attr:`delay_steps`, :attr:`gains`) are for; None gives the
        protocol's own timing only.
    protocol : ProtocolSpec
        The protocol (durations in seconds).
    """

    def __init__(self, model: ModelSpec | None, protocol) -> None:
        self.model, self.protocol = model, protocol

    def _need_model(self) -> ModelSpec:
        if self.model is None:
            raise ValueError("this schedule has no model (Schedule(model, protocol))")
        return self.model

    # ---------------------------------------------------------------- time constants and rates
    @property
    def eta_x(self) -> float:
        """Euler step of the relaxation in units of τ, ``dt / τ`` (dimensionless)."""
        return self.protocol.dt / self.protocol.tau

    def tau_of(self, layer: str) -> float:
        """Time constant of ``layer`` in seconds (``[layer_tau]``, else ``tau``)."""
        return dict(self.protocol.layer_tau).get(layer, self.protocol.tau)

    def eta_x_of(self, layer: str) -> float:
        """``dt / τ_l`` of ``layer`` (dimensionless)."""
        return self.protocol.dt / self.tau_of(layer)

    @property
    def eta_x_per_layer(self) -> list[float]:
        """``dt / τ_l`` of every layer of the model, in layer order (dimensionless)."""
        return [self.eta_x_of(layer.name) for layer in self._need_model().layers]

    def learning_rates(self, count: int) -> tuple[float, float]:
        """η of W and biases, and of ψ, for a minibatch of ``count`` samples.

        The batch reduction 'mean' divides both by the count.
        """
        protocol = self.protocol
        divisor = count if protocol.batch_reduction == "mean" else 1
        return protocol.learning_rate / divisor, protocol.feedback_learning_rate / divisor

    # ------------------------------------------------------------------------- steps and phases
    def steps(self, duration: float) -> int:
        """Number of integration steps in ``duration`` seconds (exact multiple of dt)."""
        return int(round(duration / self.protocol.dt))

    @property
    def delay_steps(self) -> list[int]:
        """Feedback delay of every connection of the model in steps (0 without one)."""
        delays = dict(self.protocol.feedback_delay)
        connections = self._need_model().connections
        return [self.steps(delays.get(f"{c.source}-{c.target}", 0.0)) for c in connections]

    @property
    def phase_steps(self) -> dict[str, int]:
        """Steps per phase, in phase order."""
        return {phase: self.steps(getattr(self.protocol, phase)) for phase in PHASES}

    @property
    def sample_steps(self) -> int:
        """Steps per sample (all phases)."""
        return sum(self.phase_steps.values())

    @property
    def jitter_steps(self) -> int:
        """Largest shift of the phase boundary in steps (``[phases] jitter``; 0: none)."""
        return self.steps(self.protocol.jitter)

    def shifted(self, shift: int) -> Schedule:
        """The schedule of a minibatch whose phase boundary moves by ``shift`` steps.

        Its feedforward phase lasts ``shift`` steps longer and its relaxation ``shift`` steps
        shorter (negative: the other way); the sample period and a plasticity window keep
        their steps within the period. ``shifted(0)`` is this schedule's timing.
        """
        protocol, dt = self.protocol, self.protocol.dt
        plasticity = protocol.plasticity
        if plasticity.window is not None:
            start, end = plasticity.window
            plasticity = replace(plasticity, window=(start - shift * dt, end - shift * dt))
        moved = replace(
            protocol,
            feedforward=protocol.feedforward + shift * dt,
            relaxation=protocol.relaxation - shift * dt,
            plasticity=plasticity,
            jitter=0.0,
        )
        return Schedule(self.model, moved)

    @property
    def sample_duration(self) -> float:
        """Duration of one sample in seconds."""
        return self.sample_steps * self.protocol.dt

    def phase_to_step(self, degrees: float) -> int:
        """Step of the sample period at which phase ``degrees`` falls (:func:`phase_to_step`)."""
        return phase_to_step(degrees, self.sample_steps)

    # ------------------------------------------------------------- relaxation windows and gains
    def window_steps(self, layer: str) -> tuple[int, int]:
        """First step and the step after the last of ``layer``'s relaxation window.

        Without an oscillation the window is the relaxation phase, opened earlier or later by
        the layer's relaxation onset (:meth:`onset_step`).
        """
        oscillation = self.protocol.oscillation
        if oscillation is None:
            steps = self.phase_steps
            return self.onset_step(layer), steps["feedforward"] + steps["relaxation"]
        start, stop = oscillation.window
        lag = dict(oscillation.phase_offset).get(layer, 0.0)
        return self.phase_to_step(start + lag), self.phase_to_step(stop + lag)

    def relaxation_span(self) -> tuple[int, int]:
        """First step of the earliest relaxation window and the step after the latest.

        The windows of the layers that relax; without any, the relaxation phase.
        """
        model = self._need_model()
        windows = [
            self.window_steps(layer.name) for layer in model.layers if model.relaxes(layer.name)
        ]
        if not windows:
            steps = self.phase_steps
            return steps["feedforward"], steps["feedforward"] + steps["relaxation"]
        return min(w[0] for w in windows), max(w[1] for w in windows)

    def gate(self, layer: str) -> np.ndarray:
        """Relaxation gain of ``layer`` at every step of the sample period (dimensionless).

        0 outside the layer's window; inside, 1 for a square waveform, or the half sine
        ``sin(π (k − k_start) / (k_stop − k_start))`` at the start of step ``k`` for a sine
        waveform. The relaxation integrates ``dx/dt = gain · (−x + fb) / τ``.
        """
        start, stop = self.window_steps(layer)
        gain = np.zeros(self.sample_steps)
        oscillation = self.protocol.oscillation
        if oscillation is not None and oscillation.waveform == "sine":
            gain[start:stop] = np.sin(np.pi * np.arange(stop - start) / (stop - start))
        else:
            gain[start:stop] = 1.0
        return gain

    @property
    def gains(self) -> np.ndarray:
        """:meth:`gate` of every layer of the model, shape ``(sample_steps, n_layers)``."""
        return np.stack([self.gate(layer.name) for layer in self._need_model().layers], axis=1)

    # ------------------------------------------------------------------------ forward dynamics
    @property
    def leaky_forward(self) -> bool:
        """Whether the feedforward pass integrates in time (``[feedforward] kind = 'leaky'``)."""
        return self.protocol.forward.leaky

    def onset_step(self, layer: str) -> int:
        """Step at whose start ``layer``'s relaxation starts (x from x̂, or 0).

        ``[feedforward.layer_onset]``, else ``relaxation_onset``, else the end of the
        feedforward phase (the first step of an oscillation's window).
        """
        forward = self.protocol.forward
        onset = dict(forward.layer_onset).get(layer, forward.relaxation_onset)
        if onset is None or self.protocol.oscillation is not None:
            if self.protocol.oscillation is not None:
                return self.window_steps(layer)[0]
            return self.phase_steps["feedforward"]
        return self.steps(onset)

    def tau_f_of(self, layer: str) -> float:
        """Forward time constant τ_f of ``layer`` in seconds (leaky forward dynamics)."""
        forward = self.protocol.forward
        return dict(forward.layer_tau).get(layer, forward.tau)

    @property
    def eta_f_per_layer(self) -> list[float]:
        """``dt / τ_f`` of every layer of the model (0 for instant forward dynamics)."""
        if not self.leaky_forward:
            return [0.0] * len(self._need_model().layers)
        return [self.protocol.dt / self.tau_f_of(layer.name) for layer in self._need_model().layers]

    @property
    def forward_steps(self) -> int:
        """Steps of the feedforward phase, from the presentation (0 for the instant sweep)."""
        return self.phase_steps["feedforward"] if self.leaky_forward else 0

    def forward_window(self, layer: str) -> tuple[int, int]:
        """First step and the step after the last of ``layer``'s forward integration (leaky).

        The feedforward phase, or an oscillation's ``feedforward`` window shifted by the
        layer's phase offset; ``(0, 0)`` for the instant sweep.
        """
        oscillation = self.protocol.oscillation
        if not self.leaky_forward or oscillation is None or oscillation.feedforward is None:
            return 0, self.forward_steps
        start, stop = oscillation.feedforward
        lag = dict(oscillation.phase_offset).get(layer, 0.0)
        return self.phase_to_step(start + lag), self.phase_to_step(stop + lag)

    @property
    def forward_gains(self) -> np.ndarray:
        """Forward gate of every layer at every step, ``(sample_steps, n_layers)``.

        1 in the forward window of every layer with a parent (leaky forward dynamics), else
        0: while it is 0 a layer's x̂ and f' follow the model's memory.
        """
        model = self._need_model()
        gains = np.zeros((self.sample_steps, len(model.layers)))
        for k, layer in enumerate(model.layers):
            if model.incoming(layer.name):
                start, stop = self.forward_window(layer.name)
                gains[start:stop, k] = 1.0
        return gains

    @property
    def eta_error(self) -> float | None:
        """``dt / τ_e`` of the output's error unit, or None (clamped at every step)."""
        error_tau = self.protocol.forward.error_tau
        return self.protocol.dt / error_tau if error_tau else None

    # ------------------------------------------------------------------------------ plasticity
    @property
    def continuous_steps(self) -> tuple[int, int] | None:
        """Steps ``[first, stop)`` at the end of each of which the weights change by η/K.

        None unless ``[plasticity] continuous``; the window counts from the relaxation
        phase's start, the whole relaxation phase by default.
        """
        plasticity = self.protocol.plasticity
        if not plasticity.continuous:
            return None
        first = self.phase_steps["feedforward"]
        if plasticity.window is None:
            return first, first + self.phase_steps["relaxation"]
        start, end = plasticity.window
        return first + self.steps(start), first + self.steps(end)

    @property
    def plasticity_step(self) -> int:
        """Step of the sample period at whose start the weights change.

        The period's length means the next period's first step, before its sweep.
        """
        if self.protocol.oscillation is None:
            return self.sample_steps
        return self.phase_to_step(self.protocol.oscillation.plasticity)

    @property
    def steps_before_plasticity(self) -> int:
        """Relaxation steps the weight update sees.

        The whole relaxation, or its part before an oscillation's plasticity phase.
        """
        first, steps = self.phase_steps["feedforward"], self.phase_steps["relaxation"]
        return min(max(self.plasticity_step - first, 0), steps)

    # ------------------------------------------------------------------------- stimulus stream
    @property
    def dwell_steps(self) -> int:
        """Steps each stimulus of the stream is shown (0: one stimulus per sample period)."""
        return self.steps(self.protocol.dwell)

    def stream_samples(self, step: int, n_samples: int) -> np.ndarray:
        """Samples the stimulus stream shows at ``step`` of a run, one per minibatch replica.

        The stream shows the run's samples in order, a minibatch at a time, each for
        :attr:`dwell_steps` steps counted from the run's start, and then keeps showing the
        last: at step ``s`` replica ``r`` shows sample ``(m · B + r) mod n_samples`` with
        ``m = min(⌊s / dwell⌋, ⌈n_samples / B⌉ − 1)`` (the modulo fills a final partial
        minibatch).
        """
        batch_size = self.protocol.batch_size
        last = -(-n_samples // batch_size) - 1
        item = min(step // self.dwell_steps, last)
        return (item * batch_size + np.arange(batch_size)) % n_samples

    def stream_periods(self, n_samples: int) -> int:
        """Sample periods (sweeps and weight updates) while a stream shows ``n_samples`` once.

        The stream takes ``⌈n / B⌉ · dwell`` and every sweep falls within it: a fast stream
        gives fewer updates than minibatches (stimuli pass unswept), a slow one more.
        """
        shown = -(-n_samples // self.protocol.batch_size) * self.dwell_steps
        return max(1, -(-shown // self.sample_steps))
