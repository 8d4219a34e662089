"""Three timing features reproduced by a plain NumPy loop written from their equations.

Carried-over state (``[feedforward] reset = false``), ``[phases] jitter`` and ``[plasticity]
continuous`` are otherwise checked against :mod:`arsim.period_oracle`, which shares the
dense mode's step code (the components' array functions). The loop here shares none of it: it
is written from the algorithm's equations (the relaxation, the clamp and the rule of the
paper) and the timing documentation (``docs/timing-hypotheses.md``): a chain input → h1
(tanh) → h2 (tanh) → output (linear), MSE clamp ``x_L = s (x̂_L − T)``, exact feedback ``Wᵀ``,
one sample period of ``P`` steps per minibatch:

- *presentation* (start of step 0): the input shows the stimulus. The instant sweep computes
  ``x̂_l = f(W x̂_{l−1})``, ``f'_l = f'(W x̂_{l−1})`` and starts ``x = x̂``; with leaky forward
  dynamics the non-input layers start from rest (``reset = true``) or carry x̂, f', x over
  from the previous minibatch (``reset = false``); the output is clamped to its current x̂;
- *forward window* (leaky, steps ``0 … F−1``): ``x̂_l ← x̂_l + η_f (−x̂_l + f(a_l))``,
  ``f'_l = f'(a_l)``, ``a_l = W x̂_{l−1}``, every layer from the step's start;
- *onset* (leaky, start of step F): the hidden ``x = x̂``;
- *relaxation* (steps ``F … F+R−1``): ``x_l ← x_l + η_x (−x_l + Wᵀ (x_{l+1} ⊙ f'_{l+1}))``,
  every layer from the step's start; the output stays clamped to ``s (x̂_L − T)``;
- *plasticity*: ``W_l −= η Σ_batch (x_{l+1} ⊙ f'_{l+1}) x̂_lᵀ`` at the period's end; with
  ``continuous`` by ``η/K`` after each of the window's ``K`` steps instead (later steps and
  minibatches read the changed W);
- *jitter*: minibatch ``m`` has ``F + s_m`` feedforward and ``R − s_m`` relaxation steps, with
  ``s_m`` the seeded draw :func:`arsim.params.phase_shift` ``(seed, J, m)`` (the random
  numbers are arsim's; what they do is written here).

The dense mode (and the synapses mode where it builds the feature) must give the same weights
after the run and the same x and x̂ at every step of every sample, to 1e-10.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import random_batch, run_brian

from arsim.components import Feature
from arsim.params import Params, phase_shift
from arsim.spec import RecordSpec, model_from_dict, protocol_from_dict
from arsim.synapses import SynapsesNetwork

SIZES = (4, 5, 4, 3)
SCALE = 2.0  # the output clamp s (x̂_L − T)
MODEL = model_from_dict(
    {
        "name": "by-hand",
        "loss": "mse",
        "loss_scale": SCALE,
        "init": {"variance": 0.3},
        "layers": [
            {"name": "input", "size": SIZES[0]},
            {"name": "h1", "size": SIZES[1], "activation": "tanh"},
            {"name": "h2", "size": SIZES[2], "activation": "tanh"},
            {"name": "output", "size": SIZES[3], "activation": "linear"},
        ],
        "defaults": {"bias": False, "feedback": "transpose", "derivative": True},
    },
    "by-hand.toml",
)
DT, TAU, TAU_F = 1e-3, 10e-3, 4e-3
ETA_X, ETA_F = DT / TAU, DT / TAU_F
FEEDFORWARD, RELAXATION, UPDATE = 5, 8, 1  # steps of each phase (dt = 1 ms)
RATE, BATCH, SAMPLES = 0.05, 2, 8


def _protocol(feedforward=None, plasticity=None, jitter=None):
    phases = {"feedforward": f"{FEEDFORWARD} ms", "relaxation": f"{RELAXATION} ms"}
    phases["update"] = f"{UPDATE} ms"
    if jitter is not None:
        phases["jitter"] = f"{jitter} ms"
    data = {
        "tau": f"{TAU * 1e3:g} ms",
        "dt": f"{DT * 1e3:g} ms",
        "phases": phases,
        "learning": {"rate": RATE, "batch_size": BATCH, "batch_reduction": "sum"},
    }
    if feedforward is not None:
        data["feedforward"] = feedforward
    if plasticity is not None:
        data["plasticity"] = plasticity
    protocol = protocol_from_dict(data, "by-hand.toml")
    record = RecordSpec(variables=("x", "xhat"), neurons=None, samples=None)
    return replace(protocol, record=record)


def _tanh_prime(a):
    return 1.0 - np.tanh(a) ** 2


def _f(layer, a):
    """``(f(a), f'(a))`` of layer 1, 2 (tanh) or 3 (linear)."""
    if layer == len(SIZES) - 1:
        return a.copy(), np.ones_like(a)
    return np.tanh(a), _tanh_prime(a)


def by_hand(weights, inputs, targets, leaky=False, carry=False, shifts=None, continuous=None):
    """The weights after the run and ``x``, ``x̂`` after every step of every sample.

    ``continuous``: the window ``(first, stop)`` of steps after which the rule acts by η/K;
    ``shifts``: the phase-boundary shift of each minibatch (steps).

    Returns
    -------
    (list of ndarray, dict)
        Final ``W`` per connection; ``history[(variable, layer)]`` of shape
        ``(samples, P, n)``: the value at the end of each step.
    """
    W = [w.copy() for w in weights]
    n_layers, period = len(SIZES), FEEDFORWARD + RELAXATION + UPDATE
    out = n_layers - 1
    history = {
        (v, j): np.zeros((len(inputs), period, SIZES[j])) for v in ("x", "xhat") for j in range(4)
    }
    xhat = [np.zeros((BATCH, n)) for n in SIZES]
    fp = [np.zeros((BATCH, n)) for n in SIZES]
    x = [np.zeros((BATCH, n)) for n in SIZES]
    for m in range(len(inputs) // BATCH):
        rows = slice(m * BATCH, (m + 1) * BATCH)
        stimulus, target = inputs[rows], targets[rows]
        shift = 0 if shifts is None else shifts[m]
        forward_steps, relax_steps = FEEDFORWARD + shift, RELAXATION - shift
        if leaky and not carry:  # every layer from rest
            xhat = [np.zeros((BATCH, n)) for n in SIZES]
            fp = [np.zeros((BATCH, n)) for n in SIZES]
            x = [np.zeros((BATCH, n)) for n in SIZES]
        xhat[0], x[0] = stimulus.copy(), stimulus.copy()
        if not leaky:  # the instant sweep, and the relaxation starts from it
            for j in range(1, n_layers):
                xhat[j], fp[j] = _f(j, xhat[j - 1] @ W[j - 1].T)
                x[j] = xhat[j].copy()
        x[out] = SCALE * (xhat[out] - target)
        for k in range(period):
            new_xhat, new_fp, new_x = list(xhat), list(fp), list(x)
            if leaky and k < forward_steps:
                for j in range(1, n_layers):
                    value, derivative = _f(j, xhat[j - 1] @ W[j - 1].T)
                    new_xhat[j] = xhat[j] + ETA_F * (-xhat[j] + value)
                    new_fp[j] = derivative
            if leaky and k == forward_steps:  # the onset: x starts at x̂
                for j in range(1, out):
                    x[j] = xhat[j].copy()
                    new_x[j] = x[j]
            if forward_steps <= k < forward_steps + relax_steps:
                for j in range(1, out):
                    top_down = (x[j + 1] * fp[j + 1]) @ W[j]
                    new_x[j] = x[j] + ETA_X * (-x[j] + top_down)
            new_x[out] = SCALE * (new_xhat[out] - target)
            xhat, fp, x = new_xhat, new_fp, new_x
            if continuous is not None and continuous[0] <= k < continuous[1]:
                fraction = 1.0 / (continuous[1] - continuous[0])
                for c in range(n_layers - 1):
                    W[c] -= fraction * RATE * (x[c + 1] * fp[c + 1]).T @ xhat[c]
            for j in range(n_layers):
                history[("x", j)][rows, k] = x[j]
                history[("xhat", j)][rows, k] = xhat[j]
        if continuous is None:  # at the next tick, from the period's last state
            for c in range(n_layers - 1):
                W[c] -= RATE * (x[c + 1] * fp[c + 1]).T @ xhat[c]
    return W, history


def _modes(feature: Feature) -> list[str]:
    """The dense mode, and the synapses mode where it builds ``feature``."""
    return ["dense"] + (["synapses"] if feature in SynapsesNetwork.builds else [])


def _compare(protocol, mode, **hand):
    """Run ``mode`` and the loop on the same samples; weights and traces agree to 1e-10."""
    rng = np.random.default_rng(5)
    weights = [rng.normal(0.0, 0.6, (SIZES[c + 1], SIZES[c])) for c in range(len(SIZES) - 1)]
    params = Params(weights, [None] * 3, [None] * 3)
    inputs, targets = random_batch(MODEL, SAMPLES, seed=5)
    result, _ = run_brian(MODEL, protocol, inputs, targets, params, mode)
    assert result.diverged is None
    want, history = by_hand(weights, inputs, targets, **hand)
    for c, (got, expected) in enumerate(zip(result.params.W, want, strict=True)):
        assert np.abs(expected - weights[c]).max() > 1e-4  # it learned
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10, err_msg=f"W{c}")
    traces = result.traces
    period = FEEDFORWARD + RELAXATION + UPDATE
    step = np.rint(traces.t.to_numpy() / DT).astype(int) - 1 - traces["sample"].to_numpy() * period
    names = [layer.name for layer in MODEL.layers]
    compared = 0
    for (layer, variable), rows in traces.groupby(["layer", "variable"], observed=True):
        index = rows.index.to_numpy()
        expected = history[(variable, names.index(layer))][
            rows["sample"].to_numpy(), step[index], rows.neuron.to_numpy()
        ]
        np.testing.assert_allclose(
            rows.value.to_numpy(), expected, rtol=0, atol=1e-10, err_msg=f"{variable} {layer}"
        )
        compared += len(rows)
    assert compared == SAMPLES * period * (sum(SIZES) + sum(SIZES[1:]))  # the input has no x
    return want, weights


LEAKY = {"kind": "leaky", "tau": f"{TAU_F * 1e3:g} ms"}


@pytest.mark.parametrize("mode", _modes(Feature.CARRY_OVER))
def test_state_carried_over_between_minibatches_by_hand(mode):
    """``reset = false``: x̂, f' and x of every replica carry into the next minibatch (a
    forward phase of 1.25 τ_f leaves x̂ far from f(a), so what is carried matters)."""
    protocol = _protocol(feedforward=LEAKY | {"reset": False})
    carried, weights = _compare(protocol, mode, leaky=True, carry=True)
    reset, _ = by_hand(weights, *random_batch(MODEL, SAMPLES, seed=5), leaky=True)
    assert not np.allclose(carried[0], reset[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("leaky", [False, True], ids=["instant", "leaky"])
@pytest.mark.parametrize("mode", _modes(Feature.PHASE_JITTER))
def test_jittered_phase_boundary_by_hand(mode, leaky):
    """``jitter = 3 ms``: minibatch m's feedforward phase lasts F + s_m steps and its
    relaxation R − s_m, s_m drawn for seed 0 and minibatch m; the shifts differ."""
    shifts = [phase_shift(0, 3, m) for m in range(SAMPLES // BATCH)]
    assert len(set(shifts)) > 1, shifts
    protocol = _protocol(feedforward=LEAKY if leaky else None, jitter=3)
    jittered, weights = _compare(protocol, mode, leaky=leaky, shifts=shifts)
    fixed, _ = by_hand(weights, *random_batch(MODEL, SAMPLES, seed=5), leaky=leaky)
    assert not np.allclose(jittered[0], fixed[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("window", [None, ("2 ms", "6 ms")], ids=["whole-relaxation", "window"])
@pytest.mark.parametrize("mode", _modes(Feature.CONTINUOUS_PLASTICITY))
def test_continuous_plasticity_by_hand(mode, window):
    """``continuous = true``: W changes by η/K after every step of the window (the whole
    relaxation, K = R, or 2–6 ms into it, K = 4), the relaxation's later steps reading it."""
    plasticity = {"continuous": True} | ({} if window is None else {"window": list(window)})
    protocol = _protocol(plasticity=plasticity)
    steps = (FEEDFORWARD, FEEDFORWARD + RELAXATION) if window is None else (7, 11)
    online, weights = _compare(protocol, mode, continuous=steps)
    at_the_end, _ = by_hand(weights, *random_batch(MODEL, SAMPLES, seed=5))
    assert not np.allclose(online[0], at_the_end[0], rtol=0, atol=1e-6)
