"""Declarations: model and protocol files (TOML) loaded into frozen, validated specifications.

A specification can be built and checked without compiling anything. Every error is a
:class:`SpecError` whose message is one line naming the file, the key and what was expected.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arsim.activations import ACTIVATIONS, LOSSES, SOFTMAX

OPERATIONS = ("dense", "conv", "maxpool")
"""Linear maps a connection can be (:mod:`arsim.operators`)."""
FEEDBACK_KINDS = ("transpose", "fixed", "learned")
"""``transpose``: exact AR (ψ = Wᵀ); ``fixed``: feedback alignment; ``learned``: Hebbian ψ."""
PHASES = ("feedforward", "relaxation", "update")
"""Phases of one sample, in the order they happen."""
RECORDABLE = ("x", "xhat", "fp", "delta", "fb")
"""Neuron variables a protocol can record (``fb`` is the summed top-down input)."""
BATCH_REDUCTIONS = ("sum", "mean")
RELAXATION_STARTS = ("feedforward", "zero")
WAVEFORMS = ("square", "sine")
CODEGEN_TARGETS = ("auto", "cython", "numpy")
"""Brian2 code generation of the neurons (runtime device); ``auto`` is resolved per job by
``arsim.run.resolve_codegen_target``."""
"""How an oscillation gates the relaxation across its window: fully open (``square``) or by
a half sine rising from 0 at the window's start to 1 in its middle and back (``sine``)."""


class SpecError(ValueError):
    """A declaration that cannot be used; ``str(error)`` is ``"FILE: KEY: what was expected"``."""

    def __init__(self, file: str | Path | None, key: str, message: str):
        self.file, self.key, self.message = str(file or "<spec>"), key, message
        super().__init__(f"{self.file}: {key}: {message}" if key else f"{self.file}: {message}")


# --------------------------------------------------------------------------------------------
# Small typed readers over a TOML table that remember where they are (file and dotted key).
# --------------------------------------------------------------------------------------------
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_DURATION = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([a-zA-Zµ]+)\s*$")


def parse_duration(text: Any, file: str | Path | None = None, key: str = "") -> float:
    """Parse a duration such as ``"0.1 ms"`` into seconds.

    Parameters
    ----------
    text : str
        A number followed by one of the units s, ms, us (µs), ns.
    file, key : str
        Where the value came from, for the error message.

    Returns
    -------
    float
        The duration in seconds.
    """
    if isinstance(text, bool) or not isinstance(text, str):
        raise SpecError(
            file, key, f"expected a duration with a unit such as '10 ms', got {text!r} (no unit)"
        )
    return _parse_with_unit(text, _TIME_UNITS, "10 ms", file, key, what="a duration")


_FREQUENCY_UNITS = {"Hz": 1.0, "kHz": 1e3}
_PHASE_UNITS = {"deg": 1.0, "rad": 180.0 / math.pi}


def _parse_with_unit(
    text: Any, units: dict, example: str, file, key: str, what: str = "a number"
) -> float:
    """``"<number> <unit>"`` → number × ``units[unit]``; a one-line SpecError otherwise."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if not match or match.group(2) not in units:
        raise SpecError(
            file,
            key,
            f"expected {what} with a unit ({', '.join(units)}) such as '{example}', got {text!r}",
        )
    return float(match.group(1)) * units[match.group(2)]


class _Table:
    """A TOML table with its file and key path; every read is type-checked and marked used."""

    def __init__(self, data: dict, file: str | Path | None, prefix: str = ""):
        if not isinstance(data, dict):
            raise SpecError(file, prefix, f"expected a table, got {type(data).__name__}")
        self.data, self.file, self.prefix, self.used = data, file, prefix, set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, message: str) -> SpecError:
        return SpecError(self.file, self.key(name), message)

    def get(self, name: str, kinds: type | tuple, default: Any = ..., choices=None) -> Any:
        self.used.add(name)
        if name not in self.data:
            if default is ...:
                raise self.error(name, "missing (required)")
            return default
        value = self.data[name]
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            expected = " or ".join(k.__name__ for k in kinds)
            raise self.error(name, f"expected {expected}, got {value!r}")
        if choices is not None and value not in choices:
            raise self.error(name, f"expected one of {', '.join(map(str, choices))}; got {value!r}")
        return value

    def number(self, name: str, default: Any = ..., low=None, high=None, low_open=False) -> float:
        value = self.get(name, float, default)
        if value is None:
            return value
        if not math.isfinite(value):
            raise self.error(name, f"expected a finite number, got {value!r}")
        if low is not None and (value < low or (low_open and value == low)):
            raise self.error(
                name, f"expected a number {'>' if low_open else '>='} {low}, got {value!r}"
            )
        if high is not None and value > high:
            raise self.error(name, f"expected a number <= {high}, got {value!r}")
        return value

    def integer(self, name: str, default: Any = ..., low: int | None = None) -> int:
        value = self.get(name, int, default)
        if low is not None and value is not None and value < low:
            raise self.error(name, f"expected an integer >= {low}, got {value!r}")
        return value

    def duration(self, name: str, default: Any = ...) -> float:
        self.used.add(name)
        if name not in self.data:
            if default is ...:
                raise self.error(name, "missing (required)")
            return default
        return parse_duration(self.data[name], self.file, self.key(name))

    def frequency(self, name: str) -> float:
        """A frequency such as ``"8 Hz"``, in Hz."""
        self.used.add(name)
        if name not in self.data:
            raise self.error(name, "missing (required)")
        return _parse_with_unit(
            self.data[name], _FREQUENCY_UNITS, "8 Hz", self.file, self.key(name)
        )

    def phase(self, name: str, default: Any = ...) -> float:
        """A phase angle such as ``"90 deg"`` (or rad), in degrees."""
        self.used.add(name)
        if name not in self.data:
            if default is ...:
                raise self.error(name, "missing (required)")
            return default
        return _parse_with_unit(self.data[name], _PHASE_UNITS, "90 deg", self.file, self.key(name))

    def table(self, name: str, required: bool = False) -> _Table:
        self.used.add(name)
        if name not in self.data and required:
            raise self.error(name, "missing (required table)")
        return _Table(self.data.get(name, {}), self.file, self.key(name))

    def tables(self, name: str) -> list[_Table]:
        self.used.add(name)
        items = self.data.get(name, [])
        if not isinstance(items, list):
            raise self.error(name, f"expected an array of tables ([[{name}]]), got {items!r}")
        return [_Table(item, self.file, f"{self.key(name)}[{k}]") for k, item in enumerate(items)]

    def finish(self) -> None:
        """Reject keys that were never read (unknown keys, usually typos)."""
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            known = ", ".join(sorted(self.used)) or "none"
            raise self.error(unknown[0], f"unknown key; expected one of: {known}")


def read_toml(path: str | Path) -> dict:
    """The parsed TOML file; a one-line :class:`SpecError` naming the file otherwise."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise SpecError(path, "", "file not found") from None
    except tomllib.TOMLDecodeError as error:
        raise SpecError(path, "", f"TOML syntax error: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(path, "", f"cannot read: {error}") from None


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
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
    """

    name: str
    size: int
    activation: str = "linear"
    shape: tuple[int, ...] | None = None


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
    operation: str = "dense"
    kernel: int = 0
    stride: int = 1
    padding: int = 0
    pool: int = 0


MEMORY_KINDS = ("ideal", "trace", "two-compartment")
"""How hidden layers keep x̂ and f' through the relaxation."""


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
        Variance of the normal distribution (the paper: 0.05).
    mean : float
        Mean of the normal distribution.
    bias : float
        Initial value of every bias.
    """

    variance: float = 0.05
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
    root = _Table(data, source)
    name = root.get("name", str, Path(str(source)).stem)
    seed = root.integer("seed", 0, low=0)
    loss = root.get("loss", str, "mse", choices=LOSSES)
    loss_scale = root.number("loss_scale", 1.0, low=0.0, low_open=True)

    init_table = root.table("init")
    init = InitSpec(
        variance=init_table.number("variance", 0.05, low=0.0),
        mean=init_table.number("mean", 0.0),
        bias=init_table.number("bias", 0.0),
    )
    init_table.get("distribution", str, "normal", choices=("normal",))
    init_table.finish()

    memory_table = root.table("memory")
    kind = memory_table.get("kind", str, "ideal", choices=MEMORY_KINDS)
    memory = MemorySpec(kind, memory_table.duration("tau", None if kind == "ideal" else ...) or 0.0)
    if kind != "ideal" and memory.tau <= 0:
        raise memory_table.error(
            "tau", f"expected a positive time constant for memory {kind!r}, got {memory.tau}"
        )
    memory_table.finish()

    defaults_table = root.table("defaults")
    defaults = dict(
        bias=defaults_table.get("bias", bool, False),
        feedback=defaults_table.get("feedback", str, "transpose", choices=FEEDBACK_KINDS),
        derivative=defaults_table.get("derivative", bool, True),
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
        shape = table.get("shape", list, None)
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
        activation = table.get("activation", str, "linear", choices=(*ACTIVATIONS, SOFTMAX))
        table.finish()
        layers.append(LayerSpec(layer_name, size, activation, shape))

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
    return ModelSpec(
        name, tuple(layers), tuple(connections), loss, loss_scale, init, seed, str(source), memory
    )


def _connection(
    table: _Table, layers: list[LayerSpec], defaults: dict, earlier: list[ConnectionSpec]
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
    operation = table.get("operation", str, "dense", choices=OPERATIONS)
    if operation == "maxpool":
        for key in ("bias", "feedback", "derivative"):
            if key in table.data:
                raise table.error(
                    key, f"{pair} is a maxpool connection: it has no weights, so no {key} setting"
                )
        settings.update(bias=False, feedback="transpose", derivative=True)
    else:
        settings["bias"] = table.get("bias", bool, defaults["bias"])
        settings["feedback"] = table.get(
            "feedback", str, defaults["feedback"], choices=FEEDBACK_KINDS
        )
        settings["derivative"] = table.get("derivative", bool, defaults["derivative"])
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
    table: _Table, pair: str, layers: list[LayerSpec], settings: dict
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
            stride=table.integer("stride", 1, low=1),
            padding=table.integer("padding", 0, low=0),
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


def _check_graph(
    layer_tables: list[_Table],
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


# --------------------------------------------------------------------------------------------
# Protocol
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecordSpec:
    """What to record.

    Attributes
    ----------
    variables : tuple of str
        Neuron variables (see :data:`RECORDABLE`).
    layers : tuple of str or None
        Layer names; None means every layer.
    neurons : tuple of int or None
        Neuron indices recorded in every layer (those beyond a layer's size are skipped);
        None means all neurons.
    interval : float or None
        Sampling interval in seconds (a multiple of dt); None means every step.
    phases : tuple of str
        Phases whose rows are kept.
    samples : tuple of int or None
        Sample indices whose rows are kept; None means all samples.
    """

    variables: tuple[str, ...] = ("x", "xhat", "fp")
    layers: tuple[str, ...] | None = None
    neurons: tuple[int, ...] | None = (0, 1, 2, 3, 4)
    interval: float | None = None
    phases: tuple[str, ...] = PHASES
    samples: tuple[int, ...] | None = (0, 1)


@dataclass(frozen=True)
class OscillationSpec:
    """An oscillation whose phase gates the sweep, the relaxation and the plasticity.

    One cycle is one sample period: the feedforward sweep happens at phase 0, layers relax
    in a window of the cycle (each layer's window shifted by its phase offset) and the weights
    change at the plasticity phase.

    Attributes
    ----------
    frequency : float
        Cycles per second (Hz); the period 1/f is a whole number of steps.
    waveform : {'square', 'sine'}
        Relaxation gain across the window (see :data:`WAVEFORMS`).
    window : (float, float)
        Start and end phase of the relaxation window, degrees in (0, 360].
    plasticity : float
        Phase at which the weights change, degrees in (0, 360]; 360 is the cycle's end.
    phase_offset : tuple of (str, float)
        Lag of particular layers' windows in degrees (``[oscillation.phase_offset]``).
    """

    frequency: float
    waveform: str = "square"
    window: tuple[float, float] = (0.0, 360.0)
    plasticity: float = 360.0
    phase_offset: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class ProtocolSpec:
    """Timing, learning and recording of a simulation protocol.

    Attributes
    ----------
    name : str
        Protocol name.
    dt : float
        Integration step in seconds.
    tau : float
        Time constant of the leaky-integrator neurons in seconds; ``η_x = dt / τ``.
    feedforward, relaxation, update : float
        Durations of the three phases of each sample in seconds (multiples of dt).
    learning_rate : float
        η of the forward weights and biases.
    feedback_learning_rate : float
        η of the learned feedback weights ψ.
    batch_size : int
        Samples whose weight changes accumulate before they are applied.
    batch_reduction : {'sum', 'mean'}
        Whether a batch's weight change is the sum of the per-sample changes or their mean.
    record : RecordSpec
        What to record.
    relaxation_start : {'feedforward', 'zero'}
        Where the hidden activities start the relaxation: at their feedforward values x̂ (AR) or
        at rest (0).
    layer_tau : tuple of (str, float)
        Time constants of particular layers in seconds (``[layer_tau]``), overriding ``tau``.
    noise : float
        Amplitude σ of additive white noise on the relaxation, ``τ dx/dt = −x + fb + σ √τ ξ``
        (dimensionless): with a fixed input, x fluctuates with variance σ²/2 (σ²/(2 − η_x)
        under Euler–Maruyama). Drawn from the run's seed.
    feedback_delay : tuple of (str, float)
        Transmission delay in seconds of the top-down signal of particular connections, keyed
        ``"source-target"`` (``[feedback_delay]``): during the relaxation a layer receives the
        signal of its child as it was that long ago (as it was at the relaxation's start, before
        that).
    tolerance : float
        Relaxation until converged: a sample stops relaxing at the first step where every
        hidden neuron has ``|−x + fb| = τ |dx/dt| < tolerance`` (activity units); the phase
        duration is then the longest it may take. 0 (default): always the full phase.
    oscillation : OscillationSpec or None
        The oscillation that sets the phases (``[oscillation]``); the three phase durations
        are then derived from it: the feedforward phase lasts until the earliest window opens,
        the relaxation until the latest closes.
    dwell : float
        Stimulus stream (``[stimulus] dwell``): each stimulus is shown for this long in seconds,
        on its own clock, whatever the phase; 0 (default) shows one stimulus per sample period.
    source : str
        File the protocol was read from.
    """

    name: str
    dt: float
    tau: float
    feedforward: float
    relaxation: float
    update: float
    learning_rate: float = 0.0005
    feedback_learning_rate: float = 0.0005
    batch_size: int = 64
    batch_reduction: str = "sum"
    record: RecordSpec = field(default_factory=RecordSpec)
    relaxation_start: str = "feedforward"
    layer_tau: tuple[tuple[str, float], ...] = ()
    noise: float = 0.0
    feedback_delay: tuple[tuple[str, float], ...] = ()
    tolerance: float = 0.0
    oscillation: OscillationSpec | None = None
    dwell: float = 0.0
    source: str = "<spec>"

    @property
    def eta_x(self) -> float:
        """Euler step of the relaxation in units of τ, ``dt / τ`` (dimensionless)."""
        return self.dt / self.tau

    def learning_rates(self, count: int) -> tuple[float, float]:
        """η of W and biases, and of ψ, for a minibatch of ``count`` samples.

        The batch reduction 'mean' divides both by the count.
        """
        divisor = count if self.batch_reduction == "mean" else 1
        return self.learning_rate / divisor, self.feedback_learning_rate / divisor

    def tau_of(self, layer: str) -> float:
        """Time constant of ``layer`` in seconds (``[layer_tau]``, else ``tau``)."""
        return dict(self.layer_tau).get(layer, self.tau)

    def delay_steps(self, model) -> list[int]:
        """Feedback delay of every connection of ``model`` in steps (0 without one)."""
        delays = dict(self.feedback_delay)
        return [self.steps(delays.get(f"{c.source}-{c.target}", 0.0)) for c in model.connections]

    def eta_x_of(self, model) -> list[float]:
        """``dt / τ_l`` of every layer of ``model``, in layer order (dimensionless)."""
        return [self.dt / self.tau_of(layer.name) for layer in model.layers]

    def steps(self, duration: float) -> int:
        """Number of integration steps in ``duration`` seconds (exact multiple of dt)."""
        return int(round(duration / self.dt))

    @property
    def phase_steps(self) -> dict[str, int]:
        """Steps per phase, in phase order."""
        return {phase: self.steps(getattr(self, phase)) for phase in PHASES}

    @property
    def sample_steps(self) -> int:
        """Steps per sample (all phases)."""
        return sum(self.phase_steps.values())

    @property
    def sample_duration(self) -> float:
        """Duration of one sample in seconds."""
        return self.sample_steps * self.dt

    def phase_to_step(self, degrees: float) -> int:
        """Step of the sample period at which phase ``degrees`` falls (nearest step)."""
        return int(round(degrees / 360.0 * self.sample_steps))

    def window_steps(self, layer: str) -> tuple[int, int]:
        """First step and the step after the last of ``layer``'s relaxation window."""
        if self.oscillation is None:
            steps = self.phase_steps
            return steps["feedforward"], steps["feedforward"] + steps["relaxation"]
        start, stop = self.oscillation.window
        lag = dict(self.oscillation.phase_offset).get(layer, 0.0)
        return self.phase_to_step(start + lag), self.phase_to_step(stop + lag)

    def gate(self, layer: str) -> np.ndarray:
        """Relaxation gain of ``layer`` at every step of the sample period (dimensionless).

        0 outside the layer's window; inside, 1 for a square waveform, or the half sine
        ``sin(π (k − k_start) / (k_stop − k_start))`` at the start of step ``k`` for a sine
        waveform. The relaxation integrates ``dx/dt = gain · (−x + fb) / τ``.
        """
        start, stop = self.window_steps(layer)
        gain = np.zeros(self.sample_steps)
        if self.oscillation is not None and self.oscillation.waveform == "sine":
            gain[start:stop] = np.sin(np.pi * np.arange(stop - start) / (stop - start))
        else:
            gain[start:stop] = 1.0
        return gain

    @property
    def plasticity_step(self) -> int:
        """Step of the sample period at whose start the weights change.

        The period's length means the next period's first step, before its sweep.
        """
        if self.oscillation is None:
            return self.sample_steps
        return self.phase_to_step(self.oscillation.plasticity)

    @property
    def steps_before_plasticity(self) -> int:
        """Relaxation steps the weight update sees.

        The whole relaxation, or its part before an oscillation's plasticity phase.
        """
        first, steps = self.phase_steps["feedforward"], self.phase_steps["relaxation"]
        return min(max(self.plasticity_step - first, 0), steps)

    @property
    def dwell_steps(self) -> int:
        """Steps each stimulus of the stream is shown (0: one stimulus per sample period)."""
        return self.steps(self.dwell)

    def stream_samples(self, step: int, n_samples: int) -> np.ndarray:
        """Samples the stimulus stream shows at ``step`` of a run, one per minibatch replica.

        The stream shows the run's samples in order, a minibatch at a time, each for
        :attr:`dwell_steps` steps counted from the run's start, and then keeps showing the
        last: at step ``s`` replica ``r`` shows sample ``(m · B + r) mod n_samples`` with
        ``m = min(⌊s / dwell⌋, ⌈n_samples / B⌉ − 1)`` (the modulo fills a final partial
        minibatch).
        """
        last = -(-n_samples // self.batch_size) - 1
        item = min(step // self.dwell_steps, last)
        return (item * self.batch_size + np.arange(self.batch_size)) % n_samples

    def stream_periods(self, n_samples: int) -> int:
        """Sample periods (sweeps and weight updates) while a stream shows ``n_samples`` once.

        The stream takes ``⌈n / B⌉ · dwell`` and every sweep falls within it: a fast stream
        gives fewer updates than minibatches (stimuli pass unswept), a slow one more.
        """
        shown = -(-n_samples // self.batch_size) * self.dwell_steps
        return max(1, -(-shown // self.sample_steps))

    def to_dict(self) -> dict:
        """Plain nested dict (for the run folder's resolved configuration)."""
        return asdict(self)


def _is_multiple(duration: float, dt: float) -> bool:
    steps = duration / dt
    return abs(steps - round(steps)) <= 1e-9 * max(1.0, steps)


def protocol_from_dict(data: dict, source: str | Path = "<spec>") -> ProtocolSpec:
    """Validate a protocol declaration (the parsed TOML) into a :class:`ProtocolSpec`."""
    root = _Table(data, source)
    name = root.get("name", str, Path(str(source)).stem)
    tau = root.duration("tau")
    if tau <= 0:
        raise root.error("tau", f"expected a positive time constant, got {data['tau']!r}")
    dt = root.duration("dt")
    if dt <= 0:
        raise root.error("dt", f"expected a positive step, got {data['dt']!r}")
    if dt >= 2 * tau:
        raise root.error(
            "dt",
            f"forward Euler is unstable for dt >= 2 tau; got dt = {data['dt']} with tau = "
            f"{data['tau']} (dt/tau = {dt / tau:g}; 0.1 is the paper's value)",
        )

    layer_tau = _named_durations(
        root.table("layer_tau"),
        lambda value: value > 0 and dt < 2 * value,
        f"a time constant > dt/2 = {dt / 2:g} s (forward Euler is unstable below)",
    )
    feedback_delay = _named_durations(
        root.table("feedback_delay"),
        lambda value: value >= 0 and _is_multiple(value, dt),
        f"a delay >= 0 that is a multiple of dt = {data['dt']}",
    )

    oscillation, durations = _oscillation(root, dt, data["dt"])
    phases_table = root.table("phases", required=oscillation is None)
    for phase in PHASES if oscillation is not None else ():
        if phase in phases_table.data:
            raise phases_table.error(
                phase, "the [oscillation] sets the phase durations; remove this key or it"
            )
    for phase in PHASES if oscillation is None else ():
        minimum = 0 if phase == "relaxation" else dt
        value = phases_table.duration(phase, dt if phase != "relaxation" else ...)
        if value < minimum - 1e-12 * dt or not _is_multiple(value, dt):
            raise phases_table.error(
                phase,
                f"expected a multiple of dt = {data['dt']} that is at least "
                f"{'0' if phase == 'relaxation' else 'one step'}; "
                f"got {phases_table.data.get(phase)!r}",
            )
        durations[phase] = value
    relaxation_start = phases_table.get("start", str, "feedforward", choices=RELAXATION_STARTS)
    tolerance = phases_table.number("tolerance", 0.0, low=0.0)
    noise = root.number("noise", 0.0, low=0.0)
    phases_table.finish()
    stimulus = root.table("stimulus")
    dwell = stimulus.duration("dwell", 0.0)
    if dwell < 0 or not _is_multiple(dwell, dt) or 0 < dwell < dt:
        raise stimulus.error(
            "dwell",
            f"expected a multiple of dt = {data['dt']} (> 0), got {stimulus.data['dwell']!r}",
        )
    stimulus.finish()

    learning = root.table("learning")
    rate = learning.number("rate", 0.0005, low=0.0)
    feedback_rate = learning.number("feedback_rate", rate, low=0.0)
    batch_size = learning.integer("batch_size", 64, low=1)
    reduction = learning.get("batch_reduction", str, "sum", choices=BATCH_REDUCTIONS)
    learning.finish()

    record_table = root.table("record")
    variables = record_table.get("variables", list, list(RecordSpec.variables))
    for variable in variables:
        if variable not in RECORDABLE:
            raise record_table.error(
                "variables", f"expected names from {RECORDABLE}, got {variable!r}"
            )
    layers = record_table.get("layers", (list, str), "all")
    if isinstance(layers, str):
        if layers != "all":
            raise record_table.error(
                "layers", f"expected 'all' or a list of layer names, got {layers!r}"
            )
        layers = None
    neurons = _index_list(record_table, "neurons", list(RecordSpec.neurons))
    samples = _index_list(record_table, "samples", list(RecordSpec.samples))
    interval = record_table.duration("interval", None)
    if interval is not None and (interval < dt or not _is_multiple(interval, dt)):
        raise record_table.error(
            "interval",
            f"expected a multiple of dt = {data['dt']}, got {record_table.data['interval']!r}",
        )
    phases = record_table.get("phases", list, list(PHASES))
    for phase in phases:
        if phase not in PHASES:
            raise record_table.error("phases", f"expected names from {PHASES}, got {phase!r}")
    record_table.finish()
    root.finish()
    record = RecordSpec(
        tuple(variables),
        None if layers is None else tuple(layers),
        neurons,
        interval,
        tuple(phases),
        samples,
    )
    return ProtocolSpec(
        name,
        dt,
        tau,
        durations["feedforward"],
        durations["relaxation"],
        durations["update"],
        rate,
        feedback_rate,
        batch_size,
        reduction,
        record,
        relaxation_start,
        layer_tau,
        noise,
        feedback_delay,
        tolerance,
        oscillation,
        dwell,
        str(source),
    )


def _oscillation(root: _Table, dt: float, dt_text) -> tuple[OscillationSpec | None, dict]:
    """The ``[oscillation]`` table and the phase durations (seconds) it implies, or (None, {})."""
    if "oscillation" not in root.data:
        root.used.add("oscillation")
        return None, {}
    table = root.table("oscillation")
    frequency = table.frequency("frequency")
    text = table.data["frequency"]
    if frequency <= 0:
        raise table.error("frequency", f"expected a frequency > 0 Hz, got {text!r}")
    if not _is_multiple(1.0 / frequency, dt):
        raise table.error(
            "frequency",
            f"the period 1/f = {1e3 / frequency:g} ms of {text!r} is not a multiple of "
            f"dt = {dt_text}",
        )
    period = int(round(1.0 / frequency / dt))
    waveform = table.get("waveform", str, "square", choices=WAVEFORMS)
    window = table.get("relaxation", list)
    if len(window) != 2:
        raise table.error(
            "relaxation",
            f"expected [start, end] phases such as ['30 deg', '330 deg'], got {window}",
        )
    start, stop = (
        _parse_with_unit(value, _PHASE_UNITS, "90 deg", table.file, table.key("relaxation"))
        for value in window
    )
    if not 0 <= start < stop or stop - start > 360:
        raise table.error(
            "relaxation",
            "expected a window of at most one cycle, 0 deg <= start < end <= 360 deg; "
            f"got {window}",
        )
    plasticity = table.phase("plasticity", 360.0)
    if not 0 < plasticity <= 360:
        raise table.error(
            "plasticity", f"expected a phase in (0 deg, 360 deg], got {table.data['plasticity']!r}"
        )
    offsets_table = table.table("phase_offset")
    offsets = tuple((name, offsets_table.phase(name)) for name in list(offsets_table.data))
    offsets_table.finish()
    table.finish()
    to_step = lambda degrees: int(round(degrees / 360.0 * period))  # noqa: E731
    windows = {}
    for name, lag in (("", 0.0), *offsets):
        first, stop_step = to_step(start + lag), to_step(stop + lag)
        where = f"phase_offset.{name}" if name else "relaxation"
        if first < 1 or stop_step > period:
            raise table.error(
                where,
                f"the window {start + lag:g}-{stop + lag:g} deg leaves the cycle: it must "
                f"start after the sweep's step (>= {360 / period:g} deg) and end by 360 deg",
            )
        if stop_step <= first:
            raise table.error(where, f"the window is shorter than one step of {period} per cycle")
        windows[name] = (first, stop_step)
    if to_step(plasticity) < 1:
        raise table.error(
            "plasticity", f"expected a phase after the sweep's step, got {plasticity:g} deg"
        )
    first = min(w[0] for w in windows.values())
    last = max(w[1] for w in windows.values())
    durations = {
        "feedforward": first * dt,
        "relaxation": (last - first) * dt,
        "update": (period - last) * dt,
    }
    oscillation = OscillationSpec(frequency, waveform, (start, stop), plasticity, offsets)
    return oscillation, durations


def _named_durations(table: _Table, valid, expected: str) -> tuple[tuple[str, float], ...]:
    """Every key of ``table`` with its duration in seconds, each checked by ``valid``."""
    pairs = []
    for key in list(table.data):
        value = table.duration(key)
        if not valid(value):
            raise table.error(key, f"expected {expected}, got {table.data[key]!r}")
        pairs.append((key, value))
    table.finish()
    return tuple(pairs)


def _index_list(table: _Table, key: str, default: list) -> tuple[int, ...] | None:
    value = table.get(key, (list, str), default)
    if isinstance(value, str):
        if value != "all":
            raise table.error(key, f"expected 'all' or a list of indices, got {value!r}")
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise table.error(key, f"expected non-negative integers, got {value!r}")
    return tuple(value)


def load_protocol(path: str | Path) -> ProtocolSpec:
    """Read and validate a protocol file (TOML). Raises :class:`SpecError`."""
    return protocol_from_dict(read_toml(path), str(path))


def check_compatible(model: ModelSpec, protocol: ProtocolSpec) -> None:
    """Check what depends on both files (layer names). Raises :class:`SpecError`."""
    names = [layer.name for layer in model.layers]
    if model.memory.kind != "ideal" and protocol.dt >= 2 * model.memory.tau:
        raise SpecError(
            model.source,
            "memory.tau",
            f"forward Euler needs the memory time constant above dt/2 = {protocol.dt / 2:g} s "
            f"(dt of {protocol.source}); got {model.memory.tau:g} s",
        )
    connections = [f"{c.source}-{c.target}" for c in model.connections]
    for connection, _ in protocol.feedback_delay:
        if connection not in connections:
            raise SpecError(
                protocol.source,
                f"feedback_delay.{connection}",
                f"no connection {connection!r} in model {model.source}; connections are "
                f"{connections} (source-target)",
            )
    offsets = protocol.oscillation.phase_offset if protocol.oscillation else ()
    for key, pairs in (("layer_tau", protocol.layer_tau), ("oscillation.phase_offset", offsets)):
        for layer, _ in pairs:
            if layer not in names:
                raise SpecError(
                    protocol.source,
                    f"{key}.{layer}",
                    f"no layer {layer!r} in model {model.source}; layers are {names}",
                )
    for layer in protocol.record.layers or ():
        if layer not in names:
            raise SpecError(
                protocol.source,
                "record.layers",
                f"no layer {layer!r} in model {model.source}; layers are {names}",
            )
