"""AR on directed acyclic graphs (the paper's appendix A) against PyTorch autograd.

Random DAGs — skip connections, fan-in and fan-out up to 3, several input layers, mixed
activations, biases, layers declared in shuffled order — are built once as arsim models and once
directly in PyTorch (float64) from the generator's own description. Autograd's exact gradients
are the independent reference for the NumPy backprop, for the relaxed activities of the Brian2
simulation and for its weight updates; the NumPy AR oracle is the reference for the
simulation's traces step by step.
"""

from __future__ import annotations

from dataclasses import dataclass

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
from arsim.modes import set_codegen_target
from arsim.spec import SpecError, model_from_dict

torch = pytest.importorskip("torch")

N_GRAPHS = 20
RELAXATION_STEPS = 500  # at dt/τ = 0.1: 50 τ, far beyond the deepest graph's settling
LEARNING_RATE = 0.01
HIDDEN_ACTIVATIONS = ("relu", "tanh", "sigmoid", "linear")


@dataclass
class RandomGraph:
    """A DAG as the generator made it: nodes ``0 … n−1`` in a topological order of its own.

    Attributes
    ----------
    sizes, activations : list
        Per node; inputs are linear.
    edges : list of (int, int, bool)
        ``(source, target, bias)`` in the order the model file declares them.
    declared : list of int
        The order the model file declares the nodes in (shuffled).
    loss : str
        'mse' or 'cross-entropy' (then the output is softmax).
    loss_scale : float
    """

    sizes: list[int]
    activations: list[str]
    edges: list[tuple[int, int, bool]]
    declared: list[int]
    loss: str
    loss_scale: float

    @property
    def inputs(self) -> list[int]:
        """Nodes without parents, in declaration order (the stimulus concatenates them)."""
        targets = {target for _, target, _ in self.edges}
        return [node for node in self.declared if node not in targets]

    def model(self, **connection_settings):
        """The arsim model; ``connection_settings[k]`` adds keys to edge ``k``'s table."""
        layers = [
            {"name": f"n{node}", "size": self.sizes[node], "activation": self.activations[node]}
            for node in self.declared
        ]
        connections = [
            {"source": f"n{s}", "target": f"n{t}", "bias": b} | connection_settings.get(k, {})
            for k, (s, t, b) in enumerate(self.edges)
        ]
        data = {
            "name": "random-dag",
            "loss": self.loss,
            "loss_scale": self.loss_scale,
            "init": {"variance": 0.3, "bias": 0.1},
            "layers": layers,
            "connections": connections,
        }
        return model_from_dict(data, "random-dag.toml")


def random_graph(seed: int) -> RandomGraph:
    """A seeded random DAG: 3–7 nodes of 2–7 neurons, fan-in and fan-out at most 3.

    Every node but the last (the output) gets a child: a new node takes the earliest node
    still without a child among its parents, and other earlier nodes at random, so skip
    connections are common; graphs of 4 nodes or more have two input nodes half the time.
    """
    rng = np.random.default_rng([seed, 6])
    while True:
        n = int(rng.integers(3, 8))
        n_inputs = 2 if n >= 4 and rng.random() < 0.5 else 1
        fan_out, edges = [0] * n, []
        for node in range(n_inputs, n):
            candidates = [i for i in range(node) if fan_out[i] < 3]
            childless = [i for i in candidates if fan_out[i] == 0]
            first = childless[:1] or [int(rng.choice(candidates))]
            others = [i for i in candidates if i not in first]
            extra = int(rng.integers(0, min(2, len(others)) + 1))
            parents = first + [int(i) for i in rng.choice(others, size=extra, replace=False)]
            biased = int(rng.choice(parents)) if rng.random() < 0.6 else None
            for parent in parents:
                fan_out[parent] += 1
                edges.append((parent, node, parent == biased))
        if all(fan_out[:-1]):
            break
    loss = "cross-entropy" if rng.random() < 0.3 else "mse"
    activations = ["linear"] * n_inputs
    activations += [str(rng.choice(HIDDEN_ACTIVATIONS)) for _ in range(n_inputs, n - 1)]
    activations.append(
        "softmax" if loss == "cross-entropy" else str(rng.choice(("linear", "tanh")))
    )
    order = rng.permutation(len(edges))
    return RandomGraph(
        sizes=[int(s) for s in rng.integers(2, 8, n)],
        activations=activations,
        edges=[edges[k] for k in order],
        declared=[int(node) for node in rng.permutation(n)],
        loss=loss,
        loss_scale=float(rng.choice((1.0, 2.0))),
    )


GRAPHS = [random_graph(seed) for seed in range(N_GRAPHS)]

TORCH_ACTIVATIONS = {
    "linear": lambda a: a,
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}


def torch_gradients(graph: RandomGraph, params, inputs, targets):
    """Autograd's gradients of the summed batch loss, from the generator's description.

    Returns ``(activity, W, b)``: per node ``∂L/∂x̂`` (for a softmax output, w.r.t. its
    logits), per edge ``∂L/∂W`` and ``∂L/∂b`` (None without a bias).
    """
    as_tensor = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)  # noqa: E731
    weights = [as_tensor(w) for w in params.W]
    biases = [None if b is None else as_tensor(b) for b in params.b]
    stimulus, start = torch.tensor(inputs, dtype=torch.float64), 0
    activity = {}
    for node in graph.inputs:
        activity[node] = stimulus[:, start : start + graph.sizes[node]].clone().requires_grad_()
        start += graph.sizes[node]
    for node in range(len(graph.sizes)):
        if node in activity:
            continue
        pre = 0
        for k, (source, target, _) in enumerate(graph.edges):
            if target == node:
                pre = pre + activity[source] @ weights[k].T
                pre = pre if biases[k] is None else pre + biases[k]
        if graph.activations[node] == "softmax":
            logits = activity[node] = pre
        else:
            activity[node] = TORCH_ACTIVATIONS[graph.activations[node]](pre)
    output, target = activity[len(graph.sizes) - 1], torch.tensor(targets)
    if graph.loss == "cross-entropy":
        loss = -graph.loss_scale * (target * torch.log_softmax(logits, dim=1)).sum()
    else:
        loss = graph.loss_scale * 0.5 * ((output - target) ** 2).sum()
    nodes = list(range(len(graph.sizes)))
    with_bias = [b for b in biases if b is not None]
    wanted = [activity[node] for node in nodes] + weights + with_bias
    grads = iter(g.numpy() for g in torch.autograd.grad(loss, wanted))
    node_grads = {node: next(grads) for node in nodes}
    weight_grads = [next(grads) for _ in weights]
    bias_grads = [None if b is None else next(grads) for b in biases]
    return node_grads, weight_grads, bias_grads


def test_random_graphs_cover_the_cases():
    """Skip connections, fan-in 3, fan-out 3, several inputs, every activation, both losses."""
    edges = [e for g in GRAPHS for e in g.edges]
    depth_jumps = [t - s for s, t, _ in edges]
    fan_in = [sum(t == n for _, t, _ in g.edges) for g in GRAPHS for n in range(len(g.sizes))]
    fan_out = [sum(s == n for s, _, _ in g.edges) for g in GRAPHS for n in range(len(g.sizes))]
    assert max(depth_jumps) >= 3 and max(fan_in) == 3 and max(fan_out) == 3
    assert sum(len(g.inputs) > 1 for g in GRAPHS) >= 4
    assert {a for g in GRAPHS for a in g.activations} >= set(HIDDEN_ACTIVATIONS) | {"softmax"}
    assert any(b for _, _, b in edges) and {g.loss for g in GRAPHS} == {"mse", "cross-entropy"}
    assert any(g.declared != sorted(g.declared) for g in GRAPHS)


@pytest.mark.parametrize("index", range(N_GRAPHS))
def test_numpy_backprop_equals_autograd(index):
    graph = GRAPHS[index]
    model = graph.model()
    params = oracle.init_params(model, seed=index)
    inputs, targets = random_batch(model, 4, seed=index)
    grads = oracle.backprop(model, params, inputs, targets)
    node_grads, weight_grads, bias_grads = torch_gradients(graph, params, inputs, targets)
    for node, expected in node_grads.items():
        got = grads.activity[model.index(f"n{node}")]
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12, err_msg=f"n{node}")
    for got, expected in zip(grads.W + grads.b, weight_grads + bias_grads, strict=True):
        if expected is not None:
            np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


WORST = {"activity": 0.0, "update": 0.0}


@pytest.mark.parametrize("index", range(N_GRAPHS))
def test_brian_relaxation_reaches_the_autograd_gradients(index):
    """After 500 steps at dt/τ = 0.1 every hidden layer of the dense simulation holds
    autograd's ∂L/∂x̂ to 1e-6 and the weights changed by −η ∇L to 1e-6; on the way, every
    step's activities equal the NumPy oracle's to 1e-10."""
    set_codegen_target("numpy")
    graph = GRAPHS[index]
    model = graph.model()
    protocol = make_protocol(RELAXATION_STEPS, batch_size=4, rate=LEARNING_RATE)
    params, result, _ = _assert_matches_oracle(model, protocol, 4, "dense", seed=index)
    inputs, targets = random_batch(model, 4, seed=index)
    node_grads, weight_grads, bias_grads = torch_gradients(graph, params, inputs, targets)
    for node, expected in node_grads.items():
        name = f"n{node}"
        if not model.relaxes(name):
            continue
        got = relaxation_history(result.traces, protocol, name, 4)[-1]
        error = relative_norm_error(got, expected)
        WORST["activity"] = max(WORST["activity"], error)
        assert error < 1e-6, f"{name}: relaxed activity off autograd's gradient by {error:.2e}"
    assert_gradient_step(
        params,
        result.params,
        weight_grads,
        bias_grads,
        LEARNING_RATE,
        range(len(weight_grads)),
        WORST,
    )
    print(f"graph {index}: worst so far {WORST}")


# --------------------------------------------------------------------------------------------
# Per-edge feedback and derivative switches on a DAG: simulation against the oracle
# --------------------------------------------------------------------------------------------
def _feature_graph():
    """Two inputs (in2 declared first), fan-in 2 at h2, fan-out 2 at h1, a skip h1 → output
    with a fixed ψ and no f', a learned ψ on h1 → h2, biases, layers declared out of order."""
    data = {
        "name": "feature-dag",
        "layers": [
            {"name": "h2", "size": 3, "activation": "tanh"},
            {"name": "in2", "size": 2},
            {"name": "input", "size": 4},
            {"name": "h1", "size": 5, "activation": "sigmoid"},
            {"name": "output", "size": 3, "activation": "linear"},
        ],
        "connections": [
            {"source": "input", "target": "h1", "bias": True},
            {"source": "h1", "target": "h2", "feedback": "learned"},
            {"source": "in2", "target": "h2", "bias": True, "derivative": False},
            {"source": "h2", "target": "output"},
            {"source": "h1", "target": "output", "derivative": False, "feedback": "fixed"},
        ],
        "init": {"variance": 0.3},
    }
    return model_from_dict(data, "feature-dag.toml")


@pytest.mark.parametrize("mode", ["dense", "synapses"])
def test_fixed_and_learned_feedback_and_the_derivative_switch_per_edge(mode):
    """Traces and weights (W, b, fixed and learned ψ) equal the oracle's to 1e-10 over two
    minibatches, in both modes; fixed ψ stays, learned ψ learns."""
    set_codegen_target("numpy")
    model = _feature_graph()
    protocol = make_protocol(relax_steps=15, batch_size=3, rate=0.05, feedback_rate=0.03)
    params, result, _ = _assert_matches_oracle(model, protocol, 5, mode)
    np.testing.assert_array_equal(result.params.psi[4], params.psi[4])
    assert np.abs(result.params.psi[1] - params.psi[1]).max() > 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("device, target", [("runtime", "cython"), ("cpp_standalone", None)])
def test_graphs_compile_in_cython_and_cpp_standalone(device, target):
    """The same in compiled code (C++ integer division picks each input's stimulus slice)."""
    set_codegen_target(target or "numpy")
    protocol = make_protocol(relax_steps=15, batch_size=3, rate=0.05, feedback_rate=0.03)
    _assert_matches_oracle(_feature_graph(), protocol, 5, "synapses", device=device)


def test_the_switches_change_the_relaxation_as_declared():
    """Against a hand computation: one oracle step of h1, whose children are h2 (learned ψ,
    with f') and the output (fixed ψ, without f')."""
    model = _feature_graph()
    params = oracle.init_params(model, seed=3)
    inputs, targets = random_batch(model, 2, seed=3)
    fwd = oracle.forward(model, params, inputs)
    relaxed = oracle.relax(model, params, inputs, targets, 1, 0.1)
    h1, h2, out = model.index("h1"), model.index("h2"), model.index("output")
    clamp = fwd.xhat[out] - targets
    top_down = (fwd.xhat[h2] * fwd.fp[1]) @ params.psi[1].T + clamp @ params.psi[4].T
    expected = fwd.xhat[h1] + 0.1 * (-fwd.xhat[h1] + top_down)
    np.testing.assert_allclose(relaxed.x[h1], expected, rtol=1e-14)


# --------------------------------------------------------------------------------------------
# Declarations: order, several inputs, malformed graphs
# --------------------------------------------------------------------------------------------
def test_layers_are_sorted_topologically_inputs_first_in_declaration_order():
    model = _feature_graph()
    assert [layer.name for layer in model.layers] == ["in2", "input", "h1", "h2", "output"]
    assert [layer.name for layer in model.inputs] == ["in2", "input"]
    assert model.input_size == 6 and model.input_slices() == [slice(0, 2), slice(2, 6)]
    assert [model.relaxes(layer.name) for layer in model.layers] == [0, 0, 1, 1, 0]


def test_the_stimulus_concatenates_the_inputs_in_declaration_order():
    """in2 (declared first) reads columns 0–1, input columns 2–5: the same forward sweep as
    feeding each input layer its own part by hand."""
    model = _feature_graph()
    params = oracle.init_params(model)
    inputs, _ = random_batch(model, 3)
    a_h1 = inputs[:, 2:] @ params.W[0].T + params.b[0]
    np.testing.assert_array_equal(oracle.forward(model, params, inputs).pre[0], a_h1)


def test_declaration_order_of_the_layers_does_not_matter():
    """A chain declared backwards with its connections is the declared-in-order chain."""
    names = [("input", 4, "linear"), ("h1", 3, "relu"), ("output", 2, "linear")]
    layers = [{"name": n, "size": s, "activation": a} for n, s, a in names]
    connections = [{"source": "input", "target": "h1"}, {"source": "h1", "target": "output"}]
    forward = model_from_dict({"layers": layers}, "m.toml")
    backward = model_from_dict({"layers": layers[::-1], "connections": connections}, "m.toml")
    assert backward.layers == forward.layers and backward.is_chain()
    assert backward.connections == forward.connections


def _graph(layers, edges, **extra):
    """A model from ``(name, size, activation)`` and ``(source, target)`` or dict edges."""
    data = {
        "init": {"variance": 0.05},
        "layers": [{"name": n, "size": s, "activation": a} for n, s, a in layers],
        "connections": [
            e if isinstance(e, dict) else {"source": e[0], "target": e[1]} for e in edges
        ],
    }
    return model_from_dict(data | extra, "bad-graph.toml")


LAYERS = [("x", 3, "linear"), ("h1", 3, "relu"), ("h2", 3, "tanh"), ("y", 2, "linear")]
MALFORMED = [
    (
        "cycle",
        [("x", "h1"), ("h1", "h2"), ("h2", "h1"), ("h2", "y")],
        "connections: the connections form a cycle h1 -> h2 -> h1",
    ),
    ("self loop", [("x", "h1"), ("h1", "h1"), ("h1", "y")], "h1 -> h1 joins a layer to itself"),
    ("undeclared target", [("x", "h3")], "connections[0].target: no layer named 'h3'"),
    ("undeclared source", [("h0", "h1")], "connections[0].source: no layer named 'h0'"),
    (
        "hidden layer without parents",
        [("x", "h1"), ("h1", "y"), ("h2", "y")],
        "layers[2].activation: layer 'h2' has no incoming connection",
    ),
    (
        "hidden layer without children (several outputs)",
        [("x", "h1"), ("h1", "h2"), ("h1", "y")],
        "connections: layers h2, y have no outgoing connection",
    ),
    (
        "unconnected layer",
        [("x", "h1"), ("h1", "y")],
        "connections: layer h2 is not connected to any other layer, so unreachable from the loss",
    ),
    (
        "duplicate edge",
        [("x", "h1"), ("h1", "h2"), ("x", "h1"), ("h2", "y")],
        "connections[2].target: duplicate connection x -> h1 (also connections[0])",
    ),
    (
        "shape mismatch",
        [("x", "h1"), ("h1", "h2"), {"source": "h2", "target": "y", "shape": [3, 3]}],
        "connections[2].shape: sizes do not chain: h2 has 3 neurons and y 2",
    ),
    (
        "two biases into one layer",
        [
            {"source": "x", "target": "h1", "bias": True},
            {"source": "x", "target": "h2", "bias": True},
            {"source": "h1", "target": "h2", "bias": True},
            ("h2", "y"),
        ],
        "connections[2].bias: layer 'h2' already has a bias from x -> h2",
    ),
]


@pytest.mark.parametrize(
    "edges, message", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_graphs_fail_with_one_line_naming_the_layers(edges, message):
    with pytest.raises(SpecError) as error:
        _graph(LAYERS, edges)
    text = str(error.value)
    assert "\n" not in text and text.startswith("bad-graph.toml: ")
    assert message in text, text


def test_softmax_only_at_the_output():
    layers = [("x", 3, "linear"), ("h1", 3, "softmax"), ("y", 2, "softmax")]
    with pytest.raises(SpecError, match=r"layers\[1\].activation: softmax is for the output"):
        _graph(layers, [("x", "h1"), ("h1", "y")], loss="cross-entropy")
