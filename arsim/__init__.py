"""arsim: Activation Relaxation simulated with Brian2 rate neurons.

Declare a model and a protocol (TOML), build them into a Brian2 network, run it, and compare
the relaxed activities with exact backprop.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("arsim")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from arsim.spec import SpecError, load_model, load_protocol  # noqa: E402

__all__ = ["SpecError", "__version__", "load_model", "load_protocol"]
