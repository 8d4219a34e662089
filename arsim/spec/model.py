"""The model: layers, the connections between them, the loss and the initialisation.

:func:`load_model` reads a model file (TOML) into a frozen, validated :class:`ModelSpec`; the
layers and connections are checked to form a directed acyclic graph with one output layer.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from arsim.activations import ACTIVATIONS, LOSSES, SOFTMAX
from arsim.spec import terms
from arsim.spec.schema import (
    DERIVATIVE_AT,
    FEEDBACK_KINDS,
    MEMORY_KINDS,
    OPERATIONS,
    UPDATE_DERIVATIVE_AT,
    UPDATE_USES,
    SpecError,
    Table,
    read_toml,
)


@dataclass(frozen=True)
class LayerSpec:
    """One population of rate neurons.

    Attributes
    ----------
    name : str
        Unique layer name (used in recordings and Brian2 object names).
    size : int
        Number of neurons.
    activation : str
        Activation applied to the layer's summed input (``linear`` for input layers).
    shape : tuple of int or None
        ``(channels, height, width)`` of an image-like layer (``size`` is their product and
        the activities are flattened in that order), or None for a flat layer.
    equations : str
        Extra state variables of a hidden layer in Brian2's syntax ("" for none); see
        :mod:`arsim.components.neuron_terms`.
    drive : str
        A term added to the hidden layer's relaxation, ``τ dx/dt = −x + fb + drive`` (a
        dimensionless Brian2 expression; "" for none).
    """

    name: str
    size: int
    activation: str = "linear"
    shape: tuple[int, ...] | None = None
    equations: str = ""
    drive: str = ""


@dataclass(frozen=True)
class ConnectionSpec:
    """A weighted projection ``source → target`` with its feedback path.

    Attributes
    ----------
    source, target : str
        Layer names; the forward signal flows from source to target.
    bias : bool
        Whether the target's pre-activation gets a learned bias from this connection's layer.
    feedback : {'transpose', 'fixed', 'learned'}
        What carries the top-down signal back: Wᵀ (exact AR), a fixed random ψ, or a ψ
        learned by the Hebbian rule.
    derivative : bool
        Whether the relaxation multiplies the top-down signal by f' of the target.
    derivative_at : {'stored', 'current', 'upper'}
        Where that f' is evaluated: at the target's stored pre-activation, at the
        pre-activation computed from the current relaxing activities of the target's parents,
        or at the target's own current activity (:data:`~arsim.spec.schema.DERIVATIVE_AT`).
    update_uses : {'stored', 'current'}
        The presynaptic factor of the weight update: the source's stored x̂ or its current
        relaxed activity (an input layer's is its stimulus unless the protocol's
        ``[relaxation] input = 'relaxes'``).
    update_derivative_at : {'stored', 'current', 'upper'}
        Where the f' of the weight update ``δ = x ⊙ f'`` is evaluated: at the target's stored
        pre-activation, at the pre-activation computed from the current relaxed activities of
        the target's parents, or at the target's own current activity
        (:data:`~arsim.spec.schema.UPDATE_DERIVATIVE_AT`).
    operation : {'dense', 'conv', 'maxpool'}
        The linear map (:mod:`arsim.operators`): a full matrix, a convolution with shared
        weights ``(C_out, C_in, k, k)``, or max-pooling (no weights).
    kernel, stride, padding : int
        Square kernel size, stride and zero padding (pixels) of a convolution.
    pool : int
        Window and stride of a max-pooling.
    """

    source: str
    target: str
    bias: bool = False
    feedback: str = "transpose"
    derivative: bool = True
    derivative_at: str = "stored"
    update_uses: str = "stored"
    update_derivative_at: str = "stored"
    operation: str = "dense"
    kernel: int = 0
    stride: int = 1
    padding: int = 0
    pool: int = 0

    @property
    def transposed(self) -> bool:
        """Whether the feedback is the forward weights transposed, ψ = Wᵀ (exact AR)."""
        return self.feedback == "transpose"

    @property
    def learns_feedback(self) -> bool:
        """Whether the feedback ψ is learned by the Hebbian rule."""
        return self.feedback == "learned"


@dataclass(frozen=True)
class MemorySpec:
    """How x̂ and f' survive the relaxation in the hidden layers.

    Attributes
    ----------
    kind : {'ideal', 'trace', 'two-compartment'}
        ``ideal``: held exactly. ``trace``: stored at the sweep, then decaying as eligibility
        traces, ``dx̂/dt = −x̂/τ_m`` and ``df'/dt = −f'/τ_m``, in the relaxation and in the
        weight update alike. ``two-compartment``: the soma holds x̂ (and f', set by the basal
        input) while the apical compartment relaxes as x; the soma is coupled to the apical
        compartment, ``dx̂/dt = (x − x̂)/τ_m``, so it drifts toward x once x leaves x̂.
    tau : float
        τ_m in seconds: the trace's time constant, or the soma–apical coupling's (not
        ``ideal``).
    """

    kind: str = "ideal"
    tau: float = 0.0


@dataclass(frozen=True)
class InitSpec:
    """Weight initialisation: forward W and feedback ψ drawn from N(mean, variance).

    Attributes
    ----------
    variance : float
        Variance of the normal distribution (dimensionless; default 0.0025, a standard deviation
        of 0.05 as the authors' code draws it; the paper's text says "variance 0.05").
    mean : float
        Mean of the normal distribution.
    bias : float
        Initial value of every bias.
    """

    variance: float = 0.0025
    mean: float = 0.0
    bias: float = 0.0


@dataclass(frozen=True)
class ModelSpec:
    """A network: layers, the connections between them, the loss and the initialisation.

    The layers and connections form a directed acyclic graph (checked by
    :func:`model_from_dict`): the input layers are those without incoming connections, the
    one output layer (where the loss is) the only one without outgoing connections, and every
    other layer relaxes towards the summed top-down input of its children.

    Attributes
    ----------
    name : str
        Model name.
    layers : tuple of LayerSpec
        Layers in topological order (every layer after its parents): the input layers first
        in declaration order, the output last, the others in the first order that declaration
        order allows (:func:`topological_order`).
    connections : tuple of ConnectionSpec
        Connections in declaration order (``Params.W[c]`` is connection ``c``'s); a chain in
        layer order when none is declared.
    loss : {'mse', 'cross-entropy'}
        Loss at the output layer.
    loss_scale : float
        Factor on the loss and so on the clamped output gradient.
    init : InitSpec
        Weight initialisation.
    seed : int
        Seed of the weight and ψ draws.
    source : str
        File the model was read from.
    memory : MemorySpec
        How the hidden layers keep x̂ and f' through the relaxation.
    """

    name: str
    layers: tuple[LayerSpec, ...]
    connections: tuple[ConnectionSpec, ...]
    loss: str = "mse"
    loss_scale: float = 1.0
    init: InitSpec = field(default_factory=InitSpec)
    seed: int = 0
    source: str = "<spec>"
    memory: MemorySpec = field(default_factory=MemorySpec)

    @property
    def inputs(self) -> tuple[LayerSpec, ...]:
        """The input layers (no incoming connection), in declaration order.

        They come first in :attr:`layers`; the stimulus vector is their activities
        concatenated in this order.
        """
        targets = {c.target for c in self.connections}
        return tuple(layer for layer in self.layers if layer.name not in targets)

    @property
    def input(self) -> LayerSpec:
        """The input layer of a model with one (see :attr:`inputs` for several)."""
        inputs = self.inputs
        if len(inputs) != 1:
            names = ", ".join(layer.name for layer in inputs)
            raise ValueError(f"model {self.name!r} has several input layers ({names}); use inputs")
        return inputs[0]

    @property
    def input_size(self) -> int:
        """Length of the stimulus vector: the sizes of the input layers summed."""
        return sum(layer.size for layer in self.inputs)

    def input_slices(self) -> list[slice]:
        """Where each input layer's activities sit in the stimulus vector (one per input)."""
        ends = np.cumsum([0] + [layer.size for layer in self.inputs])
        return [slice(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:], strict=True)]

    @property
    def output(self) -> LayerSpec:
        """The output layer (no outgoing connection; clamped to the loss gradient)."""
        return self.layers[-1]

    @property
    def sizes(self) -> tuple[int, ...]:
        """Layer sizes in order."""
        return tuple(layer.size for layer in self.layers)

    def layer(self, name: str) -> LayerSpec:
        """The layer called ``name``."""
        return next(layer for layer in self.layers if layer.name == name)

    def index(self, name: str) -> int:
        """Position of the layer called ``name`` in :attr:`layers` (topological order)."""
        return [layer.name for layer in self.layers].index(name)

    def incoming(self, name: str) -> tuple[int, ...]:
        """Indices of the connections into layer ``name`` (its parents' edges), ascending."""
        return tuple(c for c, conn in enumerate(self.connections) if conn.target == name)

    def outgoing(self, name: str) -> tuple[int, ...]:
        """Indices of the connections out of layer ``name`` (to its children), ascending."""
        return tuple(c for c, conn in enumerate(self.connections) if conn.source == name)

    def relaxes(self, name: str) -> bool:
        """Whether layer ``name`` relaxes: it has parents and children (not input, not output)."""
        return bool(self.incoming(name)) and bool(self.outgoing(name))

    @property
    def all_dense(self) -> bool:
        """Whether every connection is a full matrix (no conv or maxpool operation)."""
        return all(c.operation == "dense" for c in self.connections)

    def is_chain(self) -> bool:
        """True when connection ``l`` joins layer ``l`` to layer ``l + 1`` for every ``l``."""
        pairs = [(c.source, c.target) for c in self.connections]
        names = [layer.name for layer in self.layers]
        return pairs == list(zip(names[:-1], names[1:], strict=True))

    def to_dict(self) -> dict:
        """Plain nested dict (for the run folder's resolved configuration)."""
        return asdict(self)


def model_from_dict(data: dict, source: str | Path = "<spec>") -> ModelSpec:
    """Validate a model declaration (the parsed TOML) into a :class:`ModelSpec`."""
    root = Table(data, source)
    name = root.safe_name(Path(str(source)).stem)
    seed = root.integer("seed", ModelSpec.seed, low=0)
    loss = root.get("loss", str, ModelSpec.loss, choices=LOSSES)
    loss_scale = root.number("loss_scale", ModelSpec.loss_scale, low=0.0, low_open=True)

    init_table = root.table("init")
    init = InitSpec(
        variance=init_table.number("variance", InitSpec.variance, low=0.0),
        mean=init_table.number("mean", InitSpec.mean),
        bias=init_table.number("bias", InitSpec.bias),
    )
    init_table.get("distribution", str, "normal", choices=("normal",))
    init_table.finish()

    memory_table = root.table("memory")
    kind = memory_table.get("kind", str, MemorySpec.kind, choices=MEMORY_KINDS)
    memory = MemorySpec(
        kind, memory_table.duration("tau", MemorySpec.tau if kind == "ideal" else ...)
    )
    if kind != "ideal" and memory.tau <= 0:
        raise memory_table.error(
            "tau", f"expected a positive time constant for memory {kind!r}, got {memory.tau}"
        )
    memory_table.finish()

    defaults_table = root.table("defaults")
    defaults = dict(
        bias=defaults_table.get("bias", bool, ConnectionSpec.bias),
        feedback=defaults_table.get(
            "feedback", str, ConnectionSpec.feedback, choices=FEEDBACK_KINDS
        ),
        derivative=defaults_table.get("derivative", bool, ConnectionSpec.derivative),
        derivative_at=defaults_table.get(
            "derivative_at", str, ConnectionSpec.derivative_at, choices=DERIVATIVE_AT
        ),
        update_uses=defaults_table.get(
            "update_uses", str, ConnectionSpec.update_uses, choices=UPDATE_USES
        ),
        update_derivative_at=defaults_table.get(
            "update_derivative_at",
            str,
            ConnectionSpec.update_derivative_at,
            choices=UPDATE_DERIVATIVE_AT,
        ),
    )
    defaults_table.finish()

    layer_tables = root.tables("layers")
    if len(layer_tables) < 2:
        raise root.error(
            "layers", f"expected at least 2 [[layers]] (input and output), got {len(layer_tables)}"
        )
    layers = []
    for table in layer_tables:
        layer_name = table.get("name", str)
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", layer_name):
            raise table.error(
                "name", f"expected a name of letters, digits and _, got {layer_name!r}"
            )
        if any(layer.name == layer_name for layer in layers):
            raise table.error("name", f"duplicate layer name {layer_name!r}")
        shape = table.get("shape", list, LayerSpec.shape)
        if shape is not None:
            if len(shape) != 3 or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape
            ):
                raise table.error(
                    "shape", f"expected [channels, height, width] of positive integers, got {shape}"
                )
            shape = tuple(shape)
            size = table.integer("size", math.prod(shape), low=1)
            if size != math.prod(shape):
                raise table.error(
                    "size",
                    f"layer {layer_name!r} has shape {list(shape)} of "
                    f"{math.prod(shape)} neurons, got size = {size}",
                )
        else:
            size = table.integer("size", low=1)
        activation = table.get(
            "activation", str, LayerSpec.activation, choices=(*ACTIVATIONS, SOFTMAX)
        )
        equations = table.get("equations", str, LayerSpec.equations)
        drive = table.get("drive", str, LayerSpec.drive)
        try:
            terms.parse(equations, drive)
        except ValueError as error:
            raise table.error("equations" if equations else "drive", str(error)) from None
        table.finish()
        layers.append(LayerSpec(layer_name, size, activation, shape, equations, drive))

    names = [layer.name for layer in layers]
    connection_tables = root.tables("connections")
    if not connection_tables:
        pairs = zip(names[:-1], names[1:], strict=True)
        connections = [ConnectionSpec(source, target, **defaults) for source, target in pairs]
    else:
        connections = []
        for table in connection_tables:
            connections.append(_connection(table, layers, defaults, connections))
    root.finish()
    order = topological_order(names, connections, source)
    layers = [layers[names.index(name)] for name in order]
    _check_graph(layer_tables, names, layers, connections, loss, source)
    _check_neuron_terms(layer_tables, names, layers, connections)
    return ModelSpec(
        name, tuple(layers), tuple(connections), loss, loss_scale, init, seed, str(source), memory
    )


def _connection(
    table: Table, layers: list[LayerSpec], defaults: dict, earlier: list[ConnectionSpec]
) -> ConnectionSpec:
    """One ``[[connections]]`` entry, checked against the layers and the entries before it."""
    names = [layer.name for layer in layers]
    settings = {}
    for end in ("source", "target"):
        settings[end] = table.get(end, str)
        if settings[end] not in names:
            raise table.error(end, f"no layer named {settings[end]!r}; layers are {names}")
    pair = f"{settings['source']} -> {settings['target']}"
    if settings["source"] == settings["target"]:
        raise table.error("target", f"{pair} joins a layer to itself (a cycle)")
    for index, other in enumerate(earlier):
        if (other.source, other.target) == (settings["source"], settings["target"]):
            raise table.error("target", f"duplicate connection {pair} (also connections[{index}])")
    operation = table.get("operation", str, ConnectionSpec.operation, choices=OPERATIONS)
    if operation == "maxpool":
        keys = ("bias", "feedback", "derivative", "derivative_at", "update_uses")
        for key in (*keys, "update_derivative_at"):
            if key in table.data:
                raise table.error(
                    key, f"{pair} is a maxpool connection: it has no weights, so no {key} setting"
                )
        variant_keys = ("derivative_at", "update_uses", "update_derivative_at")
        no_weights = dict.fromkeys(variant_keys, "stored")
        settings.update(bias=False, feedback="transpose", derivative=True, **no_weights)
    else:
        settings["bias"] = table.get("bias", bool, defaults["bias"])
        settings["feedback"] = table.get(
            "feedback", str, defaults["feedback"], choices=FEEDBACK_KINDS
        )
        settings["derivative"] = table.get("derivative", bool, defaults["derivative"])
        settings["derivative_at"] = table.get(
            "derivative_at", str, defaults["derivative_at"], choices=DERIVATIVE_AT
        )
        settings["update_uses"] = table.get(
            "update_uses", str, defaults["update_uses"], choices=UPDATE_USES
        )
        settings["update_derivative_at"] = table.get(
            "update_derivative_at",
            str,
            defaults["update_derivative_at"],
            choices=UPDATE_DERIVATIVE_AT,
        )
    settings["operation"] = operation
    if operation != "dense":
        settings.update(_check_operation(table, pair, layers, settings))
    shape = table.get("shape", list, None)
    source_size = layers[names.index(settings["source"])].size
    target_size = layers[names.index(settings["target"])].size
    if shape is not None and operation == "dense" and list(shape) != [target_size, source_size]:
        raise table.error(
            "shape",
            f"sizes do not chain: {settings['source']} has {source_size} neurons and "
            f"{settings['target']} {target_size}, so W is [{target_size}, {source_size}]; "
            f"got {shape}",
        )
    biased = [c for c in earlier if c.bias and c.target == settings["target"]]
    if settings["bias"] and biased:
        raise table.error(
            "bias",
            f"layer {settings['target']!r} already has a bias from "
            f"{biased[0].source} -> {biased[0].target}; a layer has at most one bias "
            f"(set bias = false on all but one of its incoming connections)",
        )
    table.finish()
    return ConnectionSpec(**settings)


def _check_operation(
    table: Table, pair: str, layers: list[LayerSpec], settings: dict
) -> dict[str, int]:
    """Check a conv or maxpool connection against its layers' shapes; its integer settings."""
    operation = settings["operation"]
    source = next(layer for layer in layers if layer.name == settings["source"])
    target = next(layer for layer in layers if layer.name == settings["target"])
    for layer in (source, target):
        if layer.shape is None:
            raise table.error(
                "operation",
                f"{pair} is a {operation} connection, so layer {layer.name!r} needs "
                "shape = [channels, height, width]",
            )
    channels, height, width = source.shape
    if operation == "conv":
        found = dict(
            kernel=table.integer("kernel", low=1),
            stride=table.integer("stride", ConnectionSpec.stride, low=1),
            padding=table.integer("padding", ConnectionSpec.padding, low=0),
        )
        k, s, p = found["kernel"], found["stride"], found["padding"]
        if k > min(height, width) + 2 * p:
            raise table.error(
                "kernel",
                f"{pair}: a {k}x{k} kernel does not fit the {height}x{width} input of "
                f"{source.name!r} with padding {p}",
            )
        size = lambda n: (n + 2 * p - k) // s + 1  # noqa: E731
        expected = (target.shape[0], size(height), size(width))
        how = f"conv k={k} stride={s} padding={p}"
    else:
        found = dict(pool=table.integer("pool", low=1))
        p = found["pool"]
        if p > min(height, width):
            raise table.error(
                "pool", f"{pair}: a {p}x{p} pool does not fit the {height}x{width} input"
            )
        if target.activation != "linear":
            raise table.error(
                "operation",
                f"{pair} is a maxpool connection, so layer {target.name!r} must be linear "
                f"(f' = 1), got activation {target.activation!r}",
            )
        expected = (channels, height // p, width // p)
        how = f"maxpool {p}"
    if tuple(target.shape) != expected:
        raise table.error(
            "operation",
            f"{pair}: {how} maps {source.name!r} of shape {list(source.shape)} to "
            f"{list(expected)}, but {target.name!r} has shape {list(target.shape)}",
        )
    return found


def topological_order(
    names: list[str], connections: list[ConnectionSpec], source: str | Path = "<spec>"
) -> list[str]:
    """Layer names with every layer after its parents: the order of the sweep.

    The input layers (no incoming connection) come first in declaration order; then, of the
    layers whose parents are all placed, always the first declared (Kahn's algorithm), so a
    chain declared in order keeps its order and the output layer comes last.

    Parameters
    ----------
    names : list of str
        Layer names in declaration order.
    connections : list of ConnectionSpec
        The edges.
    source : str or Path
        The model file, for the error message.

    Raises
    ------
    SpecError
        When the connections contain a cycle; the message names its layers in order.
    """
    parents = {name: {c.source for c in connections if c.target == name} for name in names}
    order = [name for name in names if not parents[name]]
    placed = set(order)
    while len(order) < len(names):
        ready = [n for n in names if n not in placed and parents[n] <= placed]
        if not ready:
            cycle = _find_cycle([n for n in names if n not in placed], parents)
            raise SpecError(
                source,
                "connections",
                f"the connections form a cycle {' -> '.join(cycle)}; a model must be a "
                f"directed acyclic graph",
            )
        order.append(ready[0])
        placed.add(ready[0])
    return order


def _find_cycle(unplaced: list[str], parents: dict[str, set[str]]) -> list[str]:
    """A cycle among layers that each have an unplaced parent (forward, closed).

    It starts at its first declared layer.
    """
    path, node = [], unplaced[0]
    while node not in path:
        path.append(node)
        node = min((p for p in parents[node] if p in unplaced), key=unplaced.index)
    cycle = path[path.index(node) :]
    cycle.reverse()  # the walk followed parents; the connections run the other way
    first = cycle.index(min(cycle, key=unplaced.index))  # start at the first declared
    cycle = cycle[first:] + cycle[:first]
    return [*cycle, cycle[0]]


def _check_neuron_terms(layer_tables, names, layers, connections) -> None:
    """A layer's own ``equations`` and ``drive`` only where the layer relaxes."""
    sources = {c.source for c in connections}
    targets = {c.target for c in connections}
    for layer in layers:
        if (layer.equations or layer.drive) and not (
            layer.name in sources and layer.name in targets
        ):
            table = layer_tables[names.index(layer.name)]
            key = "equations" if layer.equations else "drive"
            raise table.error(key, f"layer {layer.name!r} does not relax (only hidden layers may)")


def _check_graph(
    layer_tables: list[Table],
    names: list[str],
    layers: list[LayerSpec],
    connections: list[ConnectionSpec],
    loss: str,
    source: str | Path,
) -> None:
    """Check the roles the graph gives the layers (``layers`` in topological order).

    Exactly one layer, the output, has no outgoing connection; layers without incoming
    connections are inputs, which are not computed (linear); softmax only at the output, and
    with cross-entropy.
    """
    has_parents = {c.target for c in connections}
    has_children = {c.source for c in connections}
    isolated = [layer.name for layer in layers if layer.name not in has_parents | has_children]
    if isolated:
        raise SpecError(
            source,
            "connections",
            f"layer{'s' if len(isolated) > 1 else ''} {', '.join(isolated)} "
            f"{'are' if len(isolated) > 1 else 'is'} not connected to any other layer, so "
            "unreachable from the loss",
        )
    sinks = [layer.name for layer in layers if layer.name not in has_children]
    if len(sinks) > 1:
        raise SpecError(
            source,
            "connections",
            f"layers {', '.join(sinks)} have no outgoing connection; exactly one layer, the "
            "output where the loss is, may have none (the others never reach the loss)",
        )
    output = layers[-1]
    for layer in layers:
        table = layer_tables[names.index(layer.name)]
        is_input = layer.name not in has_parents
        if is_input and layer.activation != "linear":
            raise table.error(
                "activation",
                f"layer {layer.name!r} has no incoming connection, so it is an input layer, "
                f"which is not computed; got {layer.activation!r} (connect a parent to it or "
                "make it linear)",
            )
        if layer.activation == SOFTMAX and layer is not output:
            raise table.error(
                "activation",
                f"softmax is for the output layer ({output.name!r}) only; got it on {layer.name!r}",
            )
    if (output.activation == SOFTMAX) != (loss == "cross-entropy"):
        raise SpecError(
            source,
            "loss",
            f"cross-entropy goes with a softmax output layer and softmax with cross-entropy; "
            f"got loss {loss!r} with output activation {output.activation!r}",
        )


def load_model(path: str | Path) -> ModelSpec:
    """Read and validate a model file (TOML). Raises :class:`SpecError`."""
    return model_from_dict(read_toml(path), str(path))
