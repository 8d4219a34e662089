"""Run folders: default names, the temporary folder a run writes into, files, renaming.

A run (random data or training) writes into ``.<name>.partial-<pid>`` beside its final
folder and renames it to ``<name>`` when it ends, so a folder with the final name is never
half-written. JSON and ``.npz`` files are written under a temporary name and moved into
place, so a file is either absent or whole.

The default name is ``runs/<model>__<protocol>[__<data>]__seed<S>``; when that folder exists
the first free one of ``…-2``, ``…-3``, … is used.

Importing this module stops Brian2 from leaving files in the temp folder (its debug log, a
copy of the script, the captured output of compilers: ``brian_debug_*.log``,
``brian_script_*.py``, ``brian_stdout_*.log``, ``brian_stderr_*.log``) and from printing its
"please report this bug" banner over an uncaught error (:func:`no_brian_files`): arsim reports
its errors itself.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import brian2 as b2
import numpy as np
import pandas as pd
from brian2.utils.logger import BrianLogger, std_silent

import arsim
from arsim.spec import ModelSpec, ProtocolSpec
from arsim.spec.schedule import Schedule


def no_brian_files() -> None:
    """Remove Brian2's debug log and its copy of the script from the temp folder.

    Brian2 writes neither again in this process, prints no banner over an uncaught error (a
    plain traceback instead), and captures the output of compilers (``std_silent``) in files
    without a name in the temp folder (Linux; elsewhere they are removed at exit, even after
    an error), so that even a killed process leaves nothing behind.
    """
    b2.prefs.logging.file_log = False
    b2.prefs.logging.save_script = False
    b2.prefs.logging.display_brian_error_message = False
    _unnamed_output_capture()
    handler = BrianLogger.file_handler
    if handler is not None:
        handler.close()
        logging.getLogger("brian2").removeHandler(handler)
        BrianLogger.file_handler = None
    # Brian2's own log of an uncaught error then goes nowhere (not to logging's last resort)
    logging.getLogger("brian2").addHandler(logging.NullHandler())
    log, script = BrianLogger.tmp_log, BrianLogger.tmp_script
    for path in (log, f"{log}.1" if log else None, script):
        if path:
            Path(path).unlink(missing_ok=True)
    BrianLogger.tmp_log = BrianLogger.tmp_script = None


def _unnamed_output_capture() -> None:
    """Give Brian2's ``std_silent`` capture files that have no name in the temp folder.

    ``std_silent`` reopens its files by name only to replay them after an error; on Linux
    ``/proc/self/fd/N`` names an open file that has no other name.
    """
    if std_silent.dest_stdout is not None or not Path("/proc/self/fd").is_dir():
        return
    for stream in ("stdout", "stderr"):
        handle = tempfile.TemporaryFile("w+")  # noqa: SIM115 (open while the process lives)
        setattr(std_silent, f"dest_{stream}", handle)
        setattr(std_silent, f"dest_fname_{stream}", f"/proc/self/fd/{handle.fileno()}")


def _remove_output_capture() -> None:
    """Close and remove ``std_silent``'s files, which Brian2 keeps after an error."""
    std_silent.close()
    std_silent.dest_stdout = std_silent.dest_stderr = None


no_brian_files()
atexit.register(_remove_output_capture)

PARTIAL = ".partial-"
"""What separates the final name from the process id in a temporary folder's name."""


class RunFolderError(ValueError):
    """The output folder cannot be used."""


def versions() -> dict[str, str]:
    """Versions of arsim, Brian2, NumPy, pandas and Python, and the platform, for the record."""
    return {
        "arsim": arsim.__version__,
        "brian2": b2.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def default_run_folder(
    model: ModelSpec, protocol: ProtocolSpec, seed: int, data: str | None = None
) -> Path:
    """``runs/<model>__<protocol>[__<data>]__seed<seed>[-N]``, the first that does not exist."""
    parts = [model.name, protocol.name] + ([data] if data else []) + [f"seed{seed}"]
    base = Path("runs") / "__".join(parts)
    candidate, number = base, 1
    while candidate.exists():
        number += 1
        candidate = base.with_name(f"{base.name}-{number}")
    return candidate


def prepare_run_folder(out: Path) -> Path:
    """Check that ``out`` can be written and return the temporary folder to write into.

    Parameters
    ----------
    out : Path
        The final run folder: absent or an empty folder.

    Returns
    -------
    Path
        ``.<name>.partial-<pid>`` beside ``out``, created empty but for ``weights/``.

    Raises
    ------
    RunFolderError
        If ``out`` holds something or its parent folder cannot be written.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunFolderError(f"{out}: output folder exists and is not empty; choose another --out")
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK):
        raise RunFolderError(f"{parent}: cannot write the run folder here")
    partial = parent / f".{out.name}{PARTIAL}{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "weights").mkdir(parents=True)
    return partial


def partial_folders(out: Path) -> list[Path]:
    """The temporary folders of runs meant for ``out``, oldest first (by modification time)."""
    found = out.resolve().parent.glob(f".{out.name}{PARTIAL}*")
    return sorted(found, key=lambda path: path.stat().st_mtime)


def final_name(folder: Path) -> Path:
    """The folder a temporary run folder becomes (``folder`` itself if not temporary)."""
    name = folder.name
    if name.startswith(".") and PARTIAL in name:
        return folder.with_name(name[1 : name.rindex(PARTIAL)])
    return folder


def publish(folder: Path) -> Path:
    """Rename a finished temporary run folder to its final name; returns that name.

    Raises
    ------
    RunFolderError
        If the final folder exists and is not empty (the run then stays in ``folder``).
    """
    final = final_name(folder)
    if final == folder:
        return folder
    if final.exists():
        if not final.is_dir() or any(final.iterdir()):
            raise RunFolderError(f"{final}: exists; the run stays in {folder}")
        final.rmdir()
    folder.rename(final)
    return final


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON, atomically (a temporary file moved into place)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2))
    os.replace(temporary, path)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Save ``arrays`` to an uncompressed ``.npz``, atomically."""
    temporary = path.with_name(path.name + ".tmp.npz")
    np.savez(temporary, **arrays)
    os.replace(temporary, path)


def derived_timing(model: ModelSpec, protocol: ProtocolSpec) -> dict:
    """The ``derived`` entry of ``config.json``: what the protocol's timing comes to in steps.

    Returns
    -------
    dict
        ``eta_x`` (dt/τ), ``steps_per_sample``, ``phase_steps`` (steps of each phase),
        ``relaxation_steps``, ``plasticity_step`` (step of the sample period at which the
        weights change), ``relaxation_windows`` (per hidden layer, its window in steps of the
        period) and ``stimulus_dwell_steps``; the same for random-data runs and trainings.
    """
    schedule = Schedule(model, protocol)
    return {
        "eta_x": schedule.eta_x,
        "steps_per_sample": schedule.sample_steps,
        "phase_steps": schedule.phase_steps,
        "relaxation_steps": schedule.phase_steps["relaxation"],
        "plasticity_step": schedule.plasticity_step,
        "relaxation_windows": {
            layer.name: list(schedule.window_steps(layer.name)) for layer in model.layers[1:-1]
        },
        "stimulus_dwell_steps": schedule.dwell_steps,
    }
