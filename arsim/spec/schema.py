"""The vocabulary of the declaration files, their units and a typed reader over TOML tables.

Every error is a :class:`SpecError` whose message is one line naming the file, the key and what
was expected.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from pathlib import Path
from typing import Any

OPERATIONS = ("dense", "conv", "maxpool")
"""Linear maps a connection can be (:mod:`arsim.operators`)."""
FEEDBACK_KINDS = ("transpose", "fixed", "learned")
"""``transpose``: exact AR (ψ = Wᵀ); ``fixed``: feedback alignment; ``learned``: Hebbian ψ."""
MEMORY_KINDS = ("ideal", "trace", "two-compartment")
"""How hidden layers keep x̂ and f' through the relaxation."""
PHASES = ("feedforward", "relaxation", "update")
"""Phases of one sample, in the order they happen."""
RECORDABLE = ("x", "xhat", "fp", "delta", "fb", "spikes")
"""Neuron variables a protocol can record (``fb`` is the summed top-down input; ``spikes`` the
spike trains of spiking feedback, with a ``[spikes]`` table: :mod:`arsim.spiketrains`)."""
BATCH_REDUCTIONS = ("sum", "mean")
"""How a minibatch's weight changes combine: their sum or their mean."""
RELAXATION_STARTS = ("feedforward", "zero")
"""Where the hidden activities start the relaxation: at x̂ or at rest."""
WAVEFORMS = ("square", "sine")
"""How an oscillation gates the relaxation across its window: fully open (``square``) or by
a half sine rising from 0 at the window's start to 1 in its middle and back (``sine``)."""
FORWARD_KINDS = ("instant", "leaky")
"""How x̂ and f' come about: the sweep within one step, or leaky forward integration."""
DERIVATIVE_AT = ("stored", "current", "upper")
"""Where the relaxation evaluates f': at the stored pre-activation, at the pre-activation
computed from the current relaxing activity below, or of the upper layer's own activity."""
UPDATE_USES = ("stored", "current")
"""The presynaptic factor of the weight update: the stored x̂ or the current relaxed activity."""
UPDATE_DERIVATIVE_AT = ("stored", "current", "upper")
"""Where the weight update evaluates f': at the stored pre-activation, at the pre-activation
computed from the current relaxed activity below, or of the upper layer's own activity."""
RELAXATION_ORDERS = ("parallel", "top-down")
"""How a relaxation step updates the layers: all from the previous step's activities, or one
after the other from the top down, each reading the value the layer above got in this step."""
RELAXATION_INPUTS = ("clamped", "relaxes")
"""The input layers' activity in the relaxation: the stimulus, or relaxing like a hidden layer
from the stimulus (which stays the input's x̂)."""
CODEGEN_TARGETS = ("auto", "cython", "numpy")
"""Brian2 code generation of the neurons (runtime device); ``auto`` is resolved per job
(``resolve_codegen_target``)."""

TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
"""Duration units and their length in seconds."""
FREQUENCY_UNITS = {"Hz": 1.0, "kHz": 1e3}
"""Frequency units and their value in Hz."""
PHASE_UNITS = {"deg": 1.0, "rad": 180.0 / math.pi}
"""Phase-angle units and their value in degrees."""
_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([a-zA-Zµ]+)\s*$")


def phase_to_step(degrees: float, period_steps: int) -> int:
    """The step of a ``period_steps``-step cycle at which phase ``degrees`` falls.

    The nearest step; a phase exactly half-way between two steps goes to the later one
    (``⌊k + ½⌋`` with ``k = degrees / 360 · period_steps``, to 1e-9 of a step), so a lag of
    exactly ``n`` steps moves every phase, and both ends of a window, by ``n`` steps.
    """
    return math.floor(degrees / 360.0 * period_steps + 0.5 + 1e-9)


def is_multiple(duration: float, dt: float) -> bool:
    """Whether ``duration`` is a whole number of steps ``dt`` (to 1e-9 relative)."""
    steps = duration / dt
    return abs(steps - round(steps)) <= 1e-9 * max(1.0, steps)


class SpecError(ValueError):
    """A declaration that cannot be used; ``str(error)`` is ``"FILE: KEY: what was expected"``."""

    def __init__(self, file: str | Path | None, key: str, message: str):
        self.file, self.key, self.message = str(file or "<spec>"), key, message
        file, key, message = (printable(part) for part in (self.file, key, message))
        super().__init__(f"{file}: {key}: {message}" if key else f"{file}: {message}")


def printable(text: str) -> str:
    r"""``text`` on one line: control and other unprintable characters as escapes (``\n``)."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in str(text))


def parse_with_unit(
    text: Any, units: dict, example: str, file, key: str, what: str = "a number"
) -> float:
    """Parse ``"<number> <unit>"`` into the number times ``units[unit]``.

    Parameters
    ----------
    text : str
        The quantity, such as ``"90 deg"``.
    units : dict of str to float
        Accepted units and their value in the result's unit.
    example : str
        An accepted quantity, shown in the error message.
    file, key : str
        Where the value came from, for the error message.
    what : str
        What the quantity is, for the error message.

    Returns
    -------
    float
        The quantity in the unit whose value in ``units`` is 1.
    """
    match = _QUANTITY.match(text) if isinstance(text, str) else None
    if not match or match.group(2) not in units:
        raise SpecError(
            file,
            key,
            f"expected {what} with a unit ({', '.join(units)}) such as '{example}', got "
            f"{_shown(text)}",
        )
    value = float(match.group(1)) * units[match.group(2)]
    if not math.isfinite(value):
        raise SpecError(file, key, f"expected a finite quantity such as '{example}', got {text!r}")
    return value


NAME_PUNCTUATION = "._-"
"""The characters besides Unicode letters and digits that a name may hold."""
NAME_RULE = (
    "a name of Unicode letters, digits and ._- (no path separators, spaces or control "
    "characters; no leading dot; 1 to 100 characters)"
)
"""What :func:`check_name` accepts, in the words of its error message."""


def _shown(value: Any, limit: int = 60) -> str:
    """``repr(value)``, shortened to about ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}…({len(text)} characters)"


def check_name(name: Any, file: str | Path | None, key: str) -> str:
    """``name`` if it is safe in a file name (:data:`NAME_RULE`), else a :class:`SpecError`.

    Letters and digits are those of Unicode (``modèle``, ``τ-sweep``); everything else that
    could split, hide or escape a path (separators, spaces, control characters, a leading
    dot) is refused.
    """
    safe = (
        isinstance(name, str)
        and 1 <= len(name) <= 100
        and not name.startswith(".")
        and all(char.isalnum() or char in NAME_PUNCTUATION for char in name)
    )
    if not safe:
        raise SpecError(file, key, f"expected {NAME_RULE}, got {_shown(name)}")
    return name


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
    return parse_with_unit(text, TIME_UNITS, "10 ms", file, key, what="a duration")


def parse_phase(text: Any, file: str | Path | None = None, key: str = "") -> float:
    """Parse a phase angle such as ``"90 deg"`` (or rad) into degrees."""
    return parse_with_unit(text, PHASE_UNITS, "90 deg", file, key)


class Table:
    """A TOML table with its file and key path; every read is type-checked and marked used.

    Parameters
    ----------
    data : dict
        The parsed table.
    file : str or Path or None
        The file it was read from, for error messages.
    prefix : str
        Its dotted key in the file ("" for the root).
    """

    def __init__(self, data: dict, file: str | Path | None, prefix: str = ""):
        if not isinstance(data, dict):
            raise SpecError(file, prefix, f"expected a table, got {type(data).__name__}")
        self.data, self.file, self.prefix, self.used = data, file, prefix, set()

    def key(self, name: str) -> str:
        """The dotted key of entry ``name``."""
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, message: str) -> SpecError:
        """A :class:`SpecError` about entry ``name``."""
        return SpecError(self.file, self.key(name), message)

    def _present(self, name: str, default: Any) -> bool:
        """Mark ``name`` used; whether it is present (else ``default`` applies, if given)."""
        self.used.add(name)
        if name in self.data:
            return True
        if default is ...:
            raise self.error(name, f"missing (required){self._did_you_mean(name)}")
        return False

    def _did_you_mean(self, name: str) -> str:
        """``"; did you mean 'KEY'?"`` for an unread key of the table close to ``name``."""
        unread = [key for key in self.data if key not in self.used and isinstance(key, str)]
        close = difflib.get_close_matches(name, unread, n=1, cutoff=0.75)
        return f"; did you mean {printable(repr(close[0]))}?" if close else ""

    def get(self, name: str, kinds: type | tuple, default: Any = ..., choices=None) -> Any:
        """Entry ``name`` of one of the types ``kinds`` (and in ``choices``), else ``default``.

        Without a default (``...``) the entry is required. An integer passes as a float.
        """
        if not self._present(name, default):
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
        """A finite number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
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

    def safe_name(self, default: str) -> str:
        """Entry ``name``, a name safe in a file name (:func:`check_name`), else ``default``."""
        if "name" not in self.data:
            self.used.add("name")
            return default
        return check_name(self.data["name"], self.file, self.key("name")) and self.get("name", str)

    def integer(self, name: str, default: Any = ..., low: int | None = None) -> int:
        """An integer of at least ``low``."""
        value = self.get(name, int, default)
        if low is not None and value is not None and value < low:
            raise self.error(name, f"expected an integer >= {low}, got {value!r}")
        return value

    def duration(self, name: str, default: Any = ...) -> float:
        """A duration such as ``"10 ms"``, in seconds."""
        if not self._present(name, default):
            return default
        return parse_duration(self.data[name], self.file, self.key(name))

    def frequency(self, name: str, default: Any = ...) -> float:
        """A frequency such as ``"8 Hz"``, in Hz (required unless ``default`` is given)."""
        if not self._present(name, default):
            return default
        return parse_with_unit(self.data[name], FREQUENCY_UNITS, "8 Hz", self.file, self.key(name))

    def phase(self, name: str, default: Any = ...) -> float:
        """A phase angle such as ``"90 deg"`` (or rad), in degrees."""
        if not self._present(name, default):
            return default
        return parse_phase(self.data[name], self.file, self.key(name))

    def table(self, name: str, required: bool = False) -> Table:
        """The sub-table ``name`` (empty when absent and not ``required``)."""
        self.used.add(name)
        if name not in self.data and required:
            raise self.error(name, f"missing (required table){self._did_you_mean(name)}")
        return Table(self.data.get(name, {}), self.file, self.key(name))

    def tables(self, name: str) -> list[Table]:
        """The array of tables ``[[name]]`` (empty when absent)."""
        self.used.add(name)
        items = self.data.get(name, [])
        if not isinstance(items, list):
            raise self.error(name, f"expected an array of tables ([[{name}]]), got {items!r}")
        return [Table(item, self.file, f"{self.key(name)}[{k}]") for k, item in enumerate(items)]

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
        raise SpecError(path, "", f"TOML syntax error: {str(error).splitlines()[0]}") from None
    except RecursionError:
        raise SpecError(path, "", "tables or arrays nested too deeply") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(path, "", f"cannot read: {error}") from None
