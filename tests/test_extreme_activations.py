"""The Brian2 forms of f' and the softmax at extreme pre-activations, in both precisions.

References are NumPy closed forms evaluated in float64 with the stable algebra
(``e^{−|a|} / (1 + e^{−|a|})²`` for the sigmoid's f', the softmax shifted by its maximum).
"""

from __future__ import annotations

from dataclasses import replace

import brian2 as b2
import numpy as np
import pytest
from conftest import make_model, make_protocol, run_brian

from arsim import oracle
from arsim.activations import ACTIVATIONS, softmax

EXTREME = np.array([-1000.0, -100.0, -88.0, -50.0, -40.0, -1.0, 0.0, 1.0, 40.0, 100.0, 1000.0])
DTYPES = {"double": np.float64, "single": np.float32}


def _stable_sigmoid_fprime(a: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(a.astype(np.float64)))
    return e / (1.0 + e) ** 2


@pytest.fixture
def float_type():
    """Restores Brian2's float type after a test that sets it."""
    before = b2.prefs.core.default_float_dtype
    yield
    b2.prefs.core.default_float_dtype = before


@pytest.mark.parametrize("precision", DTYPES)
def test_sigmoid_fprime_is_finite_and_exact_at_extremes(precision, float_type):
    dtype = DTYPES[precision]
    b2.prefs.core.default_float_dtype = dtype
    group = b2.NeuronGroup(len(EXTREME), "a : 1\nfp : 1")
    group.a = EXTREME
    group.run_regularly(f"fp = {ACTIVATIONS['sigmoid'].fprime_expr}")
    b2.Network(group).run(b2.defaultclock.dt)
    fp = np.asarray(group.fp[:])
    assert fp.dtype == dtype and np.isfinite(fp).all()
    tiny = np.finfo(dtype).tiny  # below the smallest normal number only subnormals are left
    rtol = 20 * np.finfo(dtype).eps
    np.testing.assert_allclose(fp, _stable_sigmoid_fprime(EXTREME.astype(dtype)), rtol, tiny)


def _softmax_model():
    """input (3) → output (4, softmax), cross-entropy, with a bias."""
    return make_model([3, 4], ["softmax"], loss="cross-entropy", bias=True)


@pytest.mark.parametrize("precision", DTYPES)
@pytest.mark.parametrize("scale", [100.0, 1000.0])
def test_softmax_at_extreme_logits_equals_the_max_shifted_closed_form(
    precision, scale, mode, float_type
):
    """Logits of ±``scale``: both modes' stored output x̂ is the float64 max-shifted softmax
    of the same logits (within the precision's rounding), with no non-finite value."""
    model = _softmax_model()
    protocol = replace(make_protocol(relax_steps=2, batch_size=2), precision=precision)
    params = oracle.init_params(model, seed=0)
    params.W[0] = np.array([[1.0, -1.0, 0.5], [-1.0, 1.0, 0.0], [0.3, 0.2, -1.0], [0.0, 0.0, 0.0]])
    params.W[0] *= scale
    params.b[0] = np.array([0.0, 1.0, -2.0, 0.5])
    inputs = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 1.0]])
    targets = np.eye(4)[[0, 1]]
    protocol = replace(protocol, record=replace(protocol.record, variables=("xhat",)))
    result, _ = run_brian(model, protocol, inputs, targets, params, mode)
    rows = result.traces[(result.traces.layer == "output") & (result.traces.variable == "xhat")]
    first = rows[rows.t == rows.groupby("sample").t.transform("min")]
    first = first.sort_values(["sample", "neuron"])
    got = first.value.to_numpy().reshape(2, 4)
    logits = (inputs @ params.W[0].T + params.b[0]).astype(DTYPES[precision]).astype(np.float64)
    assert np.abs(logits).max() > 0.5 * scale
    assert np.isfinite(got).all()
    eps = np.finfo(DTYPES[precision]).eps
    np.testing.assert_allclose(got, softmax(logits), rtol=0, atol=20 * eps)
    assert result.diverged is None
