"""One Brian2 session per job: every preference and the device set on entry, restored on exit.

Brian2 keeps its preferences (``brian2.prefs``), the active device and the cpp_standalone
templater in global state. A job (:func:`arsim.run.simulate`, a training, a benchmark row)
runs inside a :class:`BrianSession` that sets what it needs and, on exit, puts every
preference, the device and the templater back as they were, as Brian2's own tests back up and
restore ``prefs``. No network constructor changes global state.
"""

from __future__ import annotations

import brian2 as b2
from brian2.devices.cpp_standalone.codeobject import CPPStandaloneCodeObject
from brian2.devices.device import reset_device


class BrianSession:
    """Brian2's global state for one job (a context manager; construction changes nothing).

    Parameters
    ----------
    prefs : dict, optional
        Preferences to set on entry, by their dotted names (``"core.default_float_dtype"``).
    device : str
        The Brian2 device of the job (``"runtime"`` or ``"cpp_standalone"``).
    device_options : dict, optional
        Keyword arguments of ``brian2.set_device`` (such as ``build_on_run``).
    templater : callable, optional
        ``templater(brian_templater) -> templater`` giving the cpp_standalone templater of the
        job, derived from the one in use (see :func:`arsim.standalone.use_blocked_summation`).

    Notes
    -----
    On exit every preference is set back to the value it had on entry (the whole public
    mapping ``brian2.prefs``), a cpp_standalone device is reinitialised and the previous device
    restored with ``brian2.reset_device``, and the templater put back.
    """

    def __init__(self, prefs=None, device="runtime", device_options=None, templater=None):
        self.prefs = dict(prefs or {})
        self.device = device
        self.device_options = dict(device_options or {})
        self.templater = templater
        self._saved: tuple | None = None

    def __enter__(self) -> BrianSession:
        if self._saved is not None:
            raise RuntimeError("a BrianSession is entered once at a time")
        # the templater is a class attribute of Brian2's code object (no setter exists)
        self._saved = (dict(b2.prefs), CPPStandaloneCodeObject.templater)
        try:
            for name, value in self.prefs.items():
                b2.prefs[name] = value
            if self.templater is not None:
                CPPStandaloneCodeObject.templater = self.templater(self._saved[1])
            if self.device != "runtime":
                b2.set_device(self.device, **self.device_options)
        except BaseException:
            self._restore(switched=False)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._restore(switched=self.device != "runtime")

    def _restore(self, switched: bool) -> None:
        prefs, templater = self._saved
        self._saved = None
        if switched:
            b2.get_device().reinit()  # forget the built program's objects
            reset_device()
        for name, value in prefs.items():
            if b2.prefs[name] != value:
                b2.prefs[name] = value
        CPPStandaloneCodeObject.templater = templater
