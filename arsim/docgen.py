"""The key reference of the documentation, generated from the spec's own readers.

The model and protocol readers (:func:`arsim.spec.model_from_dict`,
:func:`arsim.spec.protocol_from_dict`) read every key through :class:`arsim.spec.schema.Table`,
whose methods know the key's type, unit, default and allowed values. :func:`traced_keys` runs
the readers over example declarations with those methods observed, so the reference lists what
the code accepts; the meanings come from :mod:`arsim.spec.keys`. The sweep file's keys come from
:mod:`arsim.sweep.declaration` (``TOP_LEVEL_KEYS``, ``RUN_DEFAULTS``, ``RUN_CHOICES``).

``docs/conf.py`` calls :func:`write_reference` when Sphinx starts, so the pages cannot drift from
the code; :func:`undocumented` is what the documentation test checks.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import inspect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from arsim.spec import keys
from arsim.spec.model import model_from_dict
from arsim.spec.protocol import protocol_from_dict
from arsim.spec.schema import FREQUENCY_UNITS, PHASE_UNITS, TIME_UNITS, SpecError, Table, read_toml
from arsim.sweep.declaration import RUN_CHOICES, RUN_DEFAULTS, TOP_LEVEL_KEYS

__all__ = [
    "KeyInfo",
    "traced_keys",
    "undocumented",
    "unexplained",
    "write_reference",
    "write_tutorials",
]

_READERS = ("get", "number", "integer", "duration", "frequency", "phase", "table", "tables")
_UNITS = {
    "duration": ", ".join(TIME_UNITS),
    "frequency": ", ".join(FREQUENCY_UNITS),
    "phase": ", ".join(PHASE_UNITS),
}
_TYPE_NAMES = {
    "str": "string",
    "bool": "boolean",
    "list": "array",
    "float": "number",
    "int": "integer",
}
DEFAULT_TEXT = {
    "model": {
        "name": "the file's stem",
        "layers[].size": "the product of `shape`",
        "memory.tau": "required for `trace`, `two-compartment`",
    },
    "protocol": {
        "name": "the file's stem",
        "phases.feedforward": "one step (dt)",
        "phases.update": "one step (dt)",
        "learning.feedback_rate": "`learning.rate`",
        "record.layers": "`all`",
        "record.interval": "every step",
        "feedforward.tau": "required for `leaky`",
    },
}
"""Defaults that depend on other keys, in words (the readers compute them)."""

_MODEL_EXAMPLE = {
    "seed": 1,
    "loss": "mse",
    "loss_scale": 1.0,
    "init": {"variance": 0.01, "mean": 0.0, "bias": 0.0, "distribution": "normal"},
    "memory": {"kind": "trace", "tau": "50 ms"},
    "defaults": {
        "bias": True,
        "feedback": "transpose",
        "derivative": True,
        "derivative_at": "stored",
        "update_uses": "stored",
    },
    "layers": [
        {"name": "input", "shape": [1, 6, 6]},
        {"name": "c1", "shape": [2, 4, 4], "size": 32, "activation": "tanh"},
        {"name": "p1", "shape": [2, 2, 2], "activation": "linear"},
        {"name": "out", "size": 3},
    ],
    "connections": [
        {"source": "input", "target": "c1", "operation": "conv", "kernel": 3, "stride": 1},
        {"source": "c1", "target": "p1", "operation": "maxpool", "pool": 2},
        {
            "source": "p1",
            "target": "out",
            "operation": "dense",
            "bias": True,
            "feedback": "fixed",
            "derivative": True,
            "derivative_at": "stored",
            "update_uses": "stored",
            "shape": [3, 8],
        },
    ],
}
_CONV_PADDING = {"source": "input", "target": "c1", "operation": "conv", "kernel": 3, "padding": 0}
_RECORD = {
    "variables": ["x"],
    "layers": "all",
    "neurons": "all",
    "samples": [0],
    "interval": "1 ms",
    "phases": ["relaxation"],
}
_PROTOCOL_EXAMPLES = (
    {
        "tau": "10 ms",
        "dt": "1 ms",
        "noise": 0.0,
        "layer_tau": {"h1": "5 ms"},
        "feedback_delay": {"h1-h2": "1 ms"},
        "phases": {
            "feedforward": "1 ms",
            "relaxation": "10 ms",
            "update": "1 ms",
            "start": "feedforward",
            "tolerance": 0.0,
        },
        "stimulus": {"dwell": "12 ms"},
        "learning": {"rate": 0.1, "feedback_rate": 0.1, "batch_size": 2, "batch_reduction": "sum"},
        "record": _RECORD,
    },
    {
        "tau": "10 ms",
        "dt": "1 ms",
        "oscillation": {
            "frequency": "100 Hz",
            "waveform": "sine",
            "relaxation": ["90 deg", "270 deg"],
            "plasticity": "300 deg",
            "feedforward": ["0 deg", "90 deg"],
            "phase_offset": {"h1": "36 deg"},
        },
        "feedforward": {
            "kind": "leaky",
            "tau": "2 ms",
            "layer_tau": {"h1": "1 ms"},
            "reset": True,
            "error_tau": "2 ms",
        },
    },
    {
        "tau": "10 ms",
        "dt": "1 ms",
        "phases": {"feedforward": "4 ms", "relaxation": "10 ms"},
        "feedforward": {
            "kind": "leaky",
            "tau": "2 ms",
            "relaxation_onset": "2 ms",
            "layer_onset": {"h1": "3 ms"},
        },
        "plasticity": {"continuous": True, "window": ["5 ms", "10 ms"]},
    },
    {
        "tau": "10 ms",
        "dt": "1 ms",
        "phases": {"relaxation": "10 ms"},
        "spikes": {
            "signals": ["feedback"],
            "encoder": "integrate-and-fire",
            "max_rate": "300 Hz",
            "scale": 0.1,
            "layer_scale": {"h1": 0.05},
            "synapse_tau": "5 ms",
            "population": 4,
        },
    },
)


@dataclass
class KeyInfo:
    """What the readers tell about one key.

    Attributes
    ----------
    key : str
        Dotted key (``[]`` for any index, ``<name>`` for a user-chosen name).
    kind : str
        Its type in words (``duration``, ``string``, ``table``, …).
    unit : str
        Accepted units ("" when the value has none).
    defaults : set of str
        Defaults seen in the declarations read ("required" when it had none).
    allowed : str
        The allowed values or the range, in words.
    """

    key: str
    kind: str
    unit: str = ""
    defaults: set = field(default_factory=set)
    allowed: str = ""


ALL_BY_DEFAULT = {"record.layers", "record.neurons", "record.samples", "record.minibatches"}
"""Keys whose absence (a default of None) means every layer, neuron, sample or minibatch."""


def _default_text(method: str, default) -> str:
    """A reader's default in words (durations are in seconds, phases in degrees)."""
    if default is ...:
        return "required"
    if default is None:
        return "none"
    if method == "duration":
        return f"{default:g} s"
    if method == "phase":
        return f"{default:g} deg"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, tuple | list):
        return "[" + ", ".join(map(str, default)) + "]"
    return repr(default) if isinstance(default, str) else str(default)


def _describe(method: str, bound: dict) -> tuple[str, str]:
    """The type and the allowed values of one reader call, in words."""
    if method == "get":
        kinds = bound["kinds"] if isinstance(bound["kinds"], tuple) else (bound["kinds"],)
        kind = " or ".join(_TYPE_NAMES.get(k.__name__, k.__name__) for k in kinds)
        choices = bound.get("choices")
        return kind, ", ".join(f"`{c}`" for c in choices) if choices else ""
    if method in ("number", "integer"):
        low, high = bound.get("low"), bound.get("high")
        parts = []
        if low is not None:
            parts.append(f"{'>' if bound.get('low_open') else '>='} {low:g}")
        if high is not None:
            parts.append(f"<= {high:g}")
        return method, " and ".join(parts)
    kinds = {"table": "table", "tables": "array of tables"}
    return kinds.get(method, method), ""


def _pattern_key(key: str, documented: dict) -> str:
    """``key`` with indices as ``[]`` and user-chosen names as the documented ``<name>``."""
    key = re.sub(r"\[\d+\]", "[]", key)
    if key in documented:
        return key
    for pattern in documented:
        if "<" in pattern:
            regex = re.escape(pattern).replace(r"\[\]", r"\[\]")
            regex = re.sub(r"<[^>]*>", r"[^.]+", regex)
            if re.fullmatch(regex, key):
                return pattern
    return key


@contextlib.contextmanager
def _observed(found: dict, documented: dict):
    """Within the block, every outermost :class:`Table` read is noted in ``found``."""
    originals = {name: getattr(Table, name) for name in _READERS}
    depth = [0]

    def observe(method_name, method):
        signature = inspect.signature(method)

        @functools.wraps(method)
        def observed(self, *args, **kwargs):
            if depth[0] == 0:
                bound = signature.bind(self, *args, **kwargs)
                bound.apply_defaults()
                values = dict(bound.arguments)
                key = _pattern_key(self.key(values["name"]), documented)
                kind, allowed = _describe(method_name, values)
                info = found.setdefault(key, KeyInfo(key, kind, _UNITS.get(method_name, "")))
                info.allowed = info.allowed or allowed
                if "default" in values:
                    text = _default_text(method_name, values["default"])
                    info.defaults.add("all" if text == "none" and key in ALL_BY_DEFAULT else text)
            depth[0] += 1
            try:
                return method(self, *args, **kwargs)
            finally:
                depth[0] -= 1

        return observed

    for name, method in originals.items():
        setattr(Table, name, observe(name, method))
    try:
        yield found
    finally:
        for name, method in originals.items():
            setattr(Table, name, method)


def traced_keys(kind: str, files=()) -> dict[str, KeyInfo]:
    """Every key the reader of ``kind`` reads from the built-in examples and ``files``.

    Parameters
    ----------
    kind : {'model', 'protocol'}
        Which reader.
    files : iterable of path
        Further declarations to read (e.g. the shipped ``models/*.toml``); invalid ones count
        for the keys read before their error.

    Returns
    -------
    dict of str to KeyInfo
        In the order the keys were first read.
    """
    if kind == "model":
        reader, documented = model_from_dict, keys.MODEL_KEYS
        conv_padding = dict(_MODEL_EXAMPLE, connections=[_CONV_PADDING])
        examples = [_MODEL_EXAMPLE, conv_padding]
    else:
        reader, documented = protocol_from_dict, keys.PROTOCOL_KEYS
        examples = list(_PROTOCOL_EXAMPLES)
    found: dict[str, KeyInfo] = {}
    with _observed(found, documented):
        for data in [*examples, *(read_toml(path) for path in files)]:
            with contextlib.suppress(SpecError):
                reader(data)
    return found


def _sweep_keys() -> dict[str, KeyInfo]:
    """The sweep file's keys from the sweep reader's own tables."""
    found = {key: KeyInfo(key, "string") for key in TOP_LEVEL_KEYS}
    found["model"].defaults = found["protocol"].defaults = {"required"}
    found["name"].defaults = {"the file's stem"}
    found["seeds"] = KeyInfo("seeds", "array of integers", defaults={"the model's seed"})
    found["grid"] = KeyInfo("grid", "table", defaults={"none"})
    found["grid.<key>"] = KeyInfo("grid.<key>", "array", defaults={"required"})
    found["run"] = KeyInfo("run", "table")
    for key, default in RUN_DEFAULTS.items():
        if key in RUN_CHOICES:
            kind, allowed = "string", ", ".join(f"`{c}`" for c in RUN_CHOICES[key])
        elif key in ("data-dir",):
            kind, allowed = "string", ""
        elif key == "timeout":
            kind, allowed = "number", "> 0"
        else:
            kind, allowed = "integer", ">= 1"
        found[f"run.{key}"] = KeyInfo(f"run.{key}", kind, "", {_default_text("", default)}, allowed)
    return found


def _all_keys(model_files=(), protocol_files=()) -> dict[str, tuple[dict, dict]]:
    """Per file kind: (keys found, meanings)."""
    return {
        "model": (traced_keys("model", model_files), keys.MODEL_KEYS),
        "protocol": (traced_keys("protocol", protocol_files), keys.PROTOCOL_KEYS),
        "sweep": (_sweep_keys(), keys.SWEEP_KEYS),
    }


def undocumented(model_files=(), protocol_files=()) -> list[str]:
    """``"kind: key"`` of every key the readers accept that has no meaning in :mod:`keys`."""
    return [
        f"{kind}: {key}"
        for kind, (found, meanings) in _all_keys(model_files, protocol_files).items()
        for key in found
        if key not in meanings
    ]


def unexplained(model_files=(), protocol_files=()) -> list[str]:
    """``"kind: key"`` of every meaning in :mod:`keys` for a key no reader reads."""
    return [
        f"{kind}: {key}"
        for kind, (found, meanings) in _all_keys(model_files, protocol_files).items()
        for key in meanings
        if key not in found
    ]


_TITLES = {
    "model": ("Model file keys", "A model file (`models/*.toml`) declares the network."),
    "protocol": (
        "Protocol file keys",
        "A protocol file (`protocols/*.toml`) declares timing, learning and recording.",
    ),
    "sweep": ("Sweep file keys", "A sweep file (`sweeps/*.toml`) declares a parameter grid."),
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(kind: str, found: dict, meanings: dict) -> str:
    """The reference page of one file kind, as MyST Markdown."""
    title, intro = _TITLES[kind]
    overrides = DEFAULT_TEXT.get(kind, {})
    lines = [
        f"# {title}",
        "",
        f"{intro} This page is generated from arsim's own readers when the documentation is "
        "built (`arsim.docgen`): every key they accept, its type, unit, default and allowed "
        'values. Durations, frequencies and phase angles are strings with a unit, `"10 ms"`.',
        "",
        "| key | type | unit | default | allowed | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for key in found:
        info = found[key]
        default = overrides.get(key) or (
            next(iter(info.defaults)) if len(info.defaults) == 1 else "depends: see meaning"
        )
        if not info.defaults and key not in overrides:
            default = "empty" if info.kind in ("table", "array of tables") else ""
        meaning = meanings.get(key, "**undocumented**")
        cells = (f"`{key}`", info.kind, info.unit, default, info.allowed, meaning)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_reference(folder: str | Path, root: str | Path | None = None) -> list[Path]:
    """Write ``model.md``, ``protocol.md`` and ``sweep.md`` into ``folder``.

    Parameters
    ----------
    folder : str or Path
        Where the pages go (created if missing); a page is rewritten only when it changes.
    root : str or Path, optional
        The repository, whose ``models/*.toml`` and ``protocols/*.toml`` are read as well.

    Returns
    -------
    list of Path
        The pages.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    models = sorted(Path(root).glob("models/*.toml")) if root else []
    protocols = sorted(Path(root).glob("protocols/*.toml")) if root else []
    pages = []
    for kind, (found, meanings) in _all_keys(models, protocols).items():
        page = folder / f"{kind}.md"
        text = render(kind, found, meanings)
        if not page.exists() or page.read_text(encoding="utf-8") != text:
            page.write_text(text, encoding="utf-8")
        pages.append(page)
    return pages


def _cell_markdown(cell, images: Path, name: str) -> list[str]:
    """One notebook cell as Markdown: its text, or its code and the outputs stored with it."""
    if cell["cell_type"] == "markdown":
        return [cell["source"], ""]
    if cell["cell_type"] != "code":
        return []
    lines = ["```python", cell["source"], "```", ""]
    for index, output in enumerate(cell.get("outputs", [])):
        data = output.get("data", {})
        text = output.get("text") or data.get("text/plain")
        if "image/png" in data:
            images.mkdir(exist_ok=True)
            image = images / f"{name}-{index}.png"
            image.write_bytes(base64.b64decode(data["image/png"]))
            lines += [f"![output]({images.name}/{image.name})", ""]
        elif text:
            text = text if isinstance(text, str) else "".join(text)
            lines += ["```text", text.rstrip("\n"), "```", ""]
    return lines


def write_tutorials(folder: str | Path) -> list[Path]:
    """Render every ``*.ipynb`` in ``folder`` as a Markdown page beside it.

    Markdown cells are copied, code cells become code blocks followed by the text and PNG
    outputs stored in the notebook (images go into ``folder/_images``). A page is rewritten only
    when it changes.

    Returns
    -------
    list of Path
        The pages.
    """
    folder = Path(folder)
    pages = []
    for notebook in sorted(folder.glob("*.ipynb")):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        lines = []
        for number, cell in enumerate(cells):
            cell = dict(cell, source="".join(cell["source"]))
            lines += _cell_markdown(cell, folder / "_images", f"{notebook.stem}-{number}")
        text = "\n".join(lines).rstrip("\n") + "\n"
        page = notebook.with_suffix(".md")
        if not page.exists() or page.read_text(encoding="utf-8") != text:
            page.write_text(text, encoding="utf-8")
        pages.append(page)
    return pages
