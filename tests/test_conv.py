"""Convolution and max-pooling connections: the oracle and the dense mode against autograd.

Small random CNNs (conv → maxpool → dense, tanh or relu, MSE or cross-entropy) are built from
declarations; PyTorch's ``conv2d`` and ``max_pool2d`` with the same weights, in float64, are
the independent reference for the sweep and the gradients.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import (
    assert_gradient_step,
    make_protocol,
    random_batch,
    relative_norm_error,
    relaxation_history,
)
from test_network import _assert_matches_oracle

from arsim import oracle
from arsim.modes import ExecutionError, check_execution, set_codegen_target
from arsim.operators import operator
from arsim.spec import SpecError, model_from_dict

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (input shape, conv kernel/stride/padding/channels, activation, loss, conv bias)
CASES = [
    ((1, 10, 10), dict(kernel=3, stride=1, padding=0), 2, "tanh", "mse", True),
    ((2, 9, 9), dict(kernel=3, stride=2, padding=1), 3, "relu", "cross-entropy", False),
    ((1, 10, 10), dict(kernel=3, stride=1, padding=1), 2, "relu", "mse", True),
    ((2, 9, 9), dict(kernel=2, stride=1, padding=0), 2, "tanh", "cross-entropy", True),
]
RELAXATION_STEPS, LEARNING_RATE = 500, 0.01


def cnn(case, **conv_settings) -> dict:
    """The declaration of case ``case``: input → conv → maxpool 2 → dense → output."""
    shape, conv, channels, activation, loss, bias = CASES[case]
    k, s, p = conv["kernel"], conv["stride"], conv["padding"]
    size = (shape[1] + 2 * p - k) // s + 1
    pooled = size // 2
    output = "softmax" if loss == "cross-entropy" else "linear"
    return {
        "name": f"cnn{case}",
        "loss": loss,
        "init": {"variance": 0.05},
        "layers": [
            {"name": "input", "shape": list(shape)},
            {"name": "h1", "shape": [channels, size, size], "activation": activation},
            {"name": "h2", "shape": [channels, pooled, pooled]},
            {"name": "output", "size": 3 if case % 2 else 4, "activation": output},
        ],
        "connections": [
            {"source": "input", "target": "h1", "operation": "conv", "bias": bias}
            | conv
            | conv_settings,
            {"source": "h1", "target": "h2", "operation": "maxpool", "pool": 2},
            {"source": "h2", "target": "output", "bias": True},
        ],
    }


def torch_gradients(model, params, inputs, targets):
    """Autograd's ``∂L/∂x̂`` of every layer (logits for softmax), ``∂L/∂W`` and ``∂L/∂b``."""
    as_tensor = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)  # noqa: E731
    weights = [as_tensor(w) for w in params.W]
    biases = [None if b is None else as_tensor(b) for b in params.b]
    conv, pool, dense = model.connections
    x0 = torch.tensor(inputs, dtype=torch.float64, requires_grad=True)
    images = x0.reshape(len(inputs), *model.layers[0].shape)
    a1 = F.conv2d(images, weights[0], biases[0], stride=conv.stride, padding=conv.padding)
    x1 = torch.tanh(a1) if model.layers[1].activation == "tanh" else torch.relu(a1)
    x2 = F.max_pool2d(x1, pool.pool)
    a3 = x2.flatten(1) @ weights[2].T + biases[2]
    target = torch.tensor(targets)
    if model.loss == "cross-entropy":
        loss = -model.loss_scale * (target * torch.log_softmax(a3, dim=1)).sum()
    else:
        loss = model.loss_scale * 0.5 * ((a3 - target) ** 2).sum()
    with_bias = [b for b in biases if b is not None]
    wanted = [x0, x1, x2, a3, weights[0], weights[2], *with_bias]
    grads = [g.numpy() for g in torch.autograd.grad(loss, wanted)]
    activity = [g.reshape(len(inputs), -1) for g in grads[:4]]
    bias_grads = iter(grads[6:])
    b = [None if bias is None else next(bias_grads) for bias in biases]
    forward = [x1.detach().numpy().reshape(len(inputs), -1), x2.detach().numpy()]
    return activity, [grads[4], None, grads[5]], b, forward


WORST = {"oracle": 0.0, "activity": 0.0, "update": 0.0}


@pytest.mark.parametrize("case", range(len(CASES)))
def test_oracle_forward_and_backprop_equal_autograd(case):
    model = model_from_dict(cnn(case), "cnn.toml")
    params = oracle.init_params(model, seed=case)
    inputs, targets = random_batch(model, 3, seed=case)
    inputs = inputs - 0.5  # negative values too, so relu and the maxima are not trivial
    fwd = oracle.forward(model, params, inputs)
    activity, weight_grads, bias_grads, torch_forward = torch_gradients(
        model, params, inputs, targets
    )
    np.testing.assert_allclose(fwd.xhat[1], torch_forward[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(fwd.xhat[2], torch_forward[1].reshape(3, -1), rtol=1e-12)
    grads = oracle.backprop(model, params, inputs, targets)
    pairs = list(zip(grads.activity, activity, strict=True))
    pairs += [(g, e) for g, e in zip(grads.W + grads.b, weight_grads + bias_grads, strict=True)]
    for got, expected in pairs:
        if expected is not None:
            WORST["oracle"] = max(WORST["oracle"], relative_norm_error(got, expected))
            np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert grads.W[1].shape == (0,)


def test_transposed_convolution_is_the_adjoint():
    """⟨conv(x), y⟩ = ⟨x, convᵀ(y)⟩ for the operator of a strided, padded convolution."""
    model = model_from_dict(cnn(1), "cnn.toml")
    op = operator(model, model.connections[0])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, model.layers[0].size))
    y = rng.standard_normal((2, model.layers[1].size))
    w = rng.standard_normal(op.weight_shape())
    assert np.isclose((op.forward(x, w) * y).sum(), (x * op.backward(y, w)).sum(), rtol=1e-12)
    blocked = operator(model, model.connections[0])
    blocked.block_entries = 1  # one sample per im2col block: the same numbers
    np.testing.assert_allclose(blocked.forward(x, w), op.forward(x, w), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(
        blocked.weight_gradient(y, x), op.weight_gradient(y, x), rtol=1e-13, atol=1e-14
    )


@pytest.mark.parametrize("case", [0, 1])
def test_dense_relaxation_reaches_the_autograd_gradients(case):
    """500 steps at dt/τ = 0.1: relaxed activities = autograd's ∂L/∂x̂ to 1e-6, the weight
    change = −η∇W to 1e-6, and every step equals the oracle's AR to 1e-10."""
    set_codegen_target("numpy")
    model = model_from_dict(cnn(case), "cnn.toml")
    protocol = make_protocol(RELAXATION_STEPS, batch_size=3, rate=LEARNING_RATE)
    params, result, _ = _assert_matches_oracle(model, protocol, 3, "dense", seed=case)
    inputs, targets = random_batch(model, 3, seed=case)
    activity, weight_grads, bias_grads, _ = torch_gradients(model, params, inputs, targets)
    for index in (1, 2):
        name = model.layers[index].name
        got = relaxation_history(result.traces, protocol, name, 3)[-1]
        error = relative_norm_error(got, activity[index])
        WORST["activity"] = max(WORST["activity"], error)
        assert error < 1e-6, f"{name}: relaxed activity off autograd's gradient by {error:.2e}"
    assert_gradient_step(
        params, result.params, weight_grads, bias_grads, LEARNING_RATE, (0, 2), WORST
    )
    print(f"case {case}: worst so far {WORST}")


@pytest.mark.parametrize(
    "settings",
    [
        dict(),
        dict(feedback="learned"),
        dict(feedback="fixed", derivative=False),
        dict(feedback="learned", derivative=False),
    ],
)
def test_dense_mode_matches_the_oracle_over_two_minibatches(settings):
    """Traces and weights after two minibatches equal the oracle's AR to 1e-10."""
    set_codegen_target("numpy")
    model = model_from_dict(cnn(2, **settings), "cnn.toml")
    protocol = make_protocol(20, batch_size=2, rate=0.05, feedback_rate=0.05)
    params, result, _ = _assert_matches_oracle(model, protocol, 4, "dense", seed=3)
    if settings.get("feedback") == "learned":
        assert np.abs(result.params.psi[0] - params.psi[0]).max() > 1e-6


def test_learned_and_fixed_psi_reach_a_relaxing_conv_source():
    """A conv between two hidden layers: its ψ carries the top-down signal (vs the oracle)."""
    set_codegen_target("numpy")
    data = {
        "name": "deep",
        "init": {"variance": 0.05},
        "layers": [
            {"name": "input", "size": 5},
            {"name": "h0", "shape": [1, 6, 6], "activation": "tanh"},
            {"name": "h1", "shape": [2, 4, 4], "activation": "tanh"},
            {"name": "h2", "shape": [2, 2, 2]},
            {"name": "output", "size": 3},
        ],
        "connections": [
            {"source": "input", "target": "h0", "bias": True},
            {
                "source": "h0",
                "target": "h1",
                "operation": "conv",
                "kernel": 3,
                "feedback": "learned",
                "derivative": False,
                "bias": True,
            },
            {"source": "h1", "target": "h2", "operation": "maxpool", "pool": 2},
            {"source": "h2", "target": "output", "feedback": "fixed"},
        ],
    }
    model = model_from_dict(data, "deep.toml")
    protocol = make_protocol(20, batch_size=2, rate=0.05)
    params, result, _ = _assert_matches_oracle(model, protocol, 4, "dense", seed=5)
    assert result.params.psi[1].shape == params.W[1].shape == (2, 1, 3, 3)
    assert np.abs(result.params.psi[1] - params.psi[1]).max() > 1e-6
    # ψ differs from W, so the relaxation is not backprop's
    relaxation = oracle.relax(model, params, *random_batch(model, 2, seed=5), 50, 0.1)
    grads = oracle.backprop(model, params, *random_batch(model, 2, seed=5))
    assert relative_norm_error(relaxation.x[1], grads.activity[1]) > 1e-3


def test_the_synapses_modes_refuse_conv_models():
    model = model_from_dict(cnn(0), "cnn.toml")
    protocol = make_protocol(5, batch_size=2)
    with pytest.raises(ExecutionError, match="conv") as error:
        check_execution(protocol, "synapses", "runtime", model)
    assert "\n" not in str(error.value)
    check_execution(protocol, "dense", "runtime", model)


def _declaration(**changes):
    data = cnn(0)
    for key, value in changes.items():
        index, name = key.split("__")
        table = data["layers" if index.startswith("l") else "connections"][int(index[1:])]
        if value is None:
            table.pop(name)
        else:
            table[name] = value
    return data


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(l1__shape=[2, 9, 9]), r"conv k=3 stride=1 padding=0 maps 'input' .* to \[2, 8, 8\]"),
        (dict(l1__shape=[3, 8, 8]), r"maps 'h1' of shape \[3, 8, 8\] to \[3, 4, 4\], but 'h2'"),
        (dict(l2__shape=[2, 5, 5]), r"maxpool 2 maps 'h1' of shape \[2, 8, 8\] to \[2, 4, 4\]"),
        (dict(l2__activation="tanh"), r"'h2' must be linear"),
        (dict(c1__bias=True), r"h1 -> h2 is a maxpool connection: it has no weights, so no bias"),
        (dict(c1__feedback="fixed"), r"h1 -> h2 is a maxpool.* no feedback"),
        (dict(c1__derivative=False), r"h1 -> h2 is a maxpool.* no derivative"),
        (dict(l0__shape=None, l0__size=100), r"layer 'input' needs shape"),
        (dict(c0__kernel=None), r"connections\[0\]\.kernel: missing"),
        (dict(c0__kernel=13), r"input -> h1: a 13x13 kernel does not fit"),
        (dict(c0__operation="pool"), r"expected one of dense, conv, maxpool"),
        (dict(l0__size=99), r"layer 'input' has shape \[1, 10, 10\] of 100 neurons"),
        (dict(l0__shape=[1, 10]), r"expected \[channels, height, width\]"),
    ],
)
def test_malformed_declarations_fail_with_one_line_naming_the_layers(changes, message):
    with pytest.raises(SpecError, match=message) as error:
        model_from_dict(_declaration(**changes), "cnn.toml")
    assert "\n" not in str(error.value)


def test_cnn_model_file_loads():
    from conftest import ROOT

    from arsim.spec import load_model

    model = load_model(ROOT / "models" / "cnn.toml")
    assert model.input_size == 784 and model.output.size == 10
    assert [layer.size for layer in model.layers] == [784, 3456, 864, 1024, 256, 120, 10]
    params = oracle.init_params(model)
    assert params.W[0].shape == (6, 1, 5, 5) and params.W[2].shape == (16, 6, 5, 5)
    inputs, targets = random_batch(model, 2)
    assert np.isfinite(oracle.backprop(model, params, inputs, targets).W[4]).all()
