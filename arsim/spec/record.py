"""The ``[record]`` table of a protocol: which neuron variables are kept, where and when."""

from __future__ import annotations

from dataclasses import dataclass

from arsim.spec.schema import PHASES, RECORDABLE, Table, is_multiple

TRACE_DTYPES = ("auto", "float64", "float32")
"""Float types of recorded traces (``[record] dtype``); ``auto``: the simulation's."""


@dataclass(frozen=True)
class RecordSpec:
    """What to record.

    Attributes
    ----------
    variables : tuple of str
        Neuron variables (see :data:`RECORDABLE`), or variables that a recorded layer of the
        model declares in its ``equations`` (checked by
        :func:`arsim.spec.protocol.check_compatible`).
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
    minibatches : tuple of int or None
        Minibatch indices (of the run, or of each recorded training epoch) whose samples are
        kept, together with ``samples`` (a sample is kept when both allow it); None: all.
    epochs : tuple of int, "all" or None
        Training epochs (0-based) that a training records, or ``"all"``; None: a training
        records nothing.
    summary : bool
        Also store per layer and step the mean and standard deviation over all the layer's
        neurons of every recorded variable and the relative distance of x to the backprop
        gradient ``∂L/∂x̂`` (oracle, weights of the sample's minibatch).
    dtype : {'auto', 'float64', 'float32'}
        Float type of the stored values (:data:`TRACE_DTYPES`); ``auto``: the simulation's
        (float32 in single precision). float32 halves the memory, the disk and the time of a
        recording.
    """

    variables: tuple[str, ...] = ("x", "xhat", "fp")
    layers: tuple[str, ...] | None = None
    neurons: tuple[int, ...] | None = (0, 1, 2, 3, 4)
    interval: float | None = None
    phases: tuple[str, ...] = PHASES
    samples: tuple[int, ...] | None = (0, 1)
    minibatches: tuple[int, ...] | None = None
    epochs: tuple[int, ...] | str | None = None
    summary: bool = False
    dtype: str = "auto"

    def keeps(self, slot: int, batch_size: int) -> bool:
        """Whether the rows of presentation slot ``slot`` are kept."""
        in_samples = self.samples is None or slot in self.samples
        return in_samples and (self.minibatches is None or slot // batch_size in self.minibatches)


def read_record(table: Table, dt: float, dt_text) -> RecordSpec:
    """The ``[record]`` table."""
    variables = table.get("variables", list, RecordSpec.variables)
    for variable in variables:  # a layer's own variable is checked with the model
        if not (isinstance(variable, str) and variable.isidentifier()):
            raise table.error(
                "variables",
                f"expected names from {RECORDABLE} or of variables a model's layers declare "
                f"(check_compatible), got {variable!r}",
            )
    layers = table.get("layers", (list, str), RecordSpec.layers)
    if isinstance(layers, str):
        if layers != "all":
            raise table.error("layers", f"expected 'all' or a list of layer names, got {layers!r}")
        layers = None
    neurons = _index_list(table, "neurons", RecordSpec.neurons)
    samples = _index_list(table, "samples", RecordSpec.samples)
    interval = table.duration("interval", RecordSpec.interval)
    if interval is not None and (interval < dt or not is_multiple(interval, dt)):
        raise table.error(
            "interval", f"expected a multiple of dt = {dt_text}, got {table.data['interval']!r}"
        )
    phases = table.get("phases", list, RecordSpec.phases)
    for phase in phases:
        if phase not in PHASES:
            raise table.error("phases", f"expected names from {PHASES}, got {phase!r}")
    minibatches = _index_list(table, "minibatches", RecordSpec.minibatches)
    epochs = _index_list(table, "epochs", RecordSpec.epochs)
    if epochs is None and table.data.get("epochs") == "all":  # every epoch, not none
        epochs = "all"
    summary = table.get("summary", bool, RecordSpec.summary)
    dtype = table.get("dtype", str, RecordSpec.dtype, choices=TRACE_DTYPES)
    table.finish()
    return RecordSpec(
        tuple(variables),
        None if layers is None else tuple(layers),
        neurons,
        interval,
        tuple(phases),
        samples,
        minibatches,
        epochs,
        summary,
        dtype,
    )


def _index_list(table: Table, key: str, default) -> tuple[int, ...] | None:
    """Entry ``key``: a list of non-negative indices, or ``"all"`` (None)."""
    value = table.get(key, (list, str), default)
    if value is None:
        return None
    if isinstance(value, str):
        if value != "all":
            raise table.error(key, f"expected 'all' or a list of indices, got {value!r}")
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise table.error(key, f"expected non-negative integers, got {value!r}")
    return tuple(value)
