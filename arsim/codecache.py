"""Reuse a Brian2 network's code objects from one ``run()`` to the next.

Brian2's runtime device generates the code of every code object again at each ``run()``
(parsing, checking units and resolving names: about 20 ms per object, 0.2–0.3 s for a layered
network), although nothing it depends on has changed between the chunks of an arsim run. The
code depends on the code-generation target, the float type, the values of the external
constants in the groups' namespace and the values of the groups' constant shared variables,
which Brian2 writes into the code; arrays (the state variables, the ``TimedArray`` values
written in place) are read through references and may change freely. :func:`reuse_code_objects`
makes each code runner of a network keep its code objects while all of those are unchanged,
and generate them anew as Brian2 does as soon as one of them changes.
"""

from __future__ import annotations

import numbers

import brian2 as b2
import numpy as np
from brian2.core.variables import ArrayVariable
from brian2.groups.group import CodeRunner

MONITORS = (b2.StateMonitor, b2.SpikeMonitor, b2.EventMonitor, b2.PopulationRateMonitor)
"""Code runners left to Brian2: their code depends on what they record, which may change."""


class _Same:
    """Equal to another ``_Same`` holding the very same object.

    It keeps that object alive, so that its identity cannot pass to a new object meanwhile.
    """

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __eq__(self, other) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj

    __hash__ = None


def _value_key(value):
    """A comparable stand-in for a namespace value: itself if a number, else its identity."""
    if isinstance(value, b2.Quantity):
        if value.shape == ():
            return (float(value), repr(value.dim))
        return _Same(value)
    if isinstance(value, numbers.Number | str | bool):
        return value
    return _Same(value)


def _runners(objects) -> list:
    """Every code runner among ``objects`` and the objects they contain, monitors excepted."""
    found = []
    for obj in objects:
        if isinstance(obj, CodeRunner) and not isinstance(obj, MONITORS):
            found.append(obj)
        found += _runners(getattr(obj, "contained_objects", ()))
    return found


def code_key(network: b2.Network, namespace: dict) -> tuple:
    """What the generated code of ``network`` depends on beyond its arrays (see module doc)."""
    constants = []
    for obj in network.objects:
        for name, variable in getattr(obj, "variables", {}).items():
            if isinstance(variable, ArrayVariable) and variable.scalar and variable.constant:
                constants.append((obj.name, name, np.asarray(variable.get_value()).item()))
    return (
        b2.prefs.codegen.target,
        np.dtype(b2.prefs.core.default_float_dtype).name,
        tuple(sorted((name, _value_key(value)) for name, value in namespace.items())),
        tuple(constants),
    )


def reuse_code_objects(network: b2.Network, namespace: dict) -> None:
    """Let the code runners of ``network`` keep their code objects while :func:`code_key` holds.

    Parameters
    ----------
    network : brian2.Network
        A network on the runtime device whose objects use ``namespace``.
    namespace : dict
        The namespace of its groups (external constants, functions, ``TimedArray`` s).
    """
    state = {"run": 0, "key": None}
    original_before_run = network.before_run

    def before_run(run_namespace):
        state["run"] += 1
        state["key"] = code_key(network, namespace)
        return original_before_run(run_namespace)

    network.before_run = before_run
    for runner in _runners(network.objects):
        _wrap(runner, state)


def _wrap(runner: CodeRunner, state: dict) -> None:
    create = runner.create_code_objects
    made = {"key": None, "run": None}

    def create_code_objects(run_namespace):
        if made["key"] == state["key"] and made["run"] is not None and runner.code_objects:
            return  # the code generated at an earlier run is still the code
        create(run_namespace)
        made["key"], made["run"] = state["key"], state["run"]

    runner.create_code_objects = create_code_objects
