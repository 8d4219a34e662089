"""Declarations: model and protocol files (TOML) loaded into frozen, validated specifications.

A specification can be built and checked without compiling anything. Every error is a
:class:`SpecError` whose message is one line naming the file, the key and what was expected.

- :mod:`arsim.spec.schema`: the vocabulary (the accepted values of each key), units, the typed
  TOML reader and :class:`SpecError`;
- :mod:`arsim.spec.model`: :class:`ModelSpec` (layers, connections, loss, initialisation);
- :mod:`arsim.spec.protocol`: :class:`ProtocolSpec` (timing, learning, recording);
- :mod:`arsim.spec.schedule`: :class:`Schedule`, the timing a protocol gives a model in steps.
"""

from arsim.spec.model import (
    ConnectionSpec,
    InitSpec,
    LayerSpec,
    MemorySpec,
    ModelSpec,
    load_model,
    model_from_dict,
    topological_order,
)
from arsim.spec.protocol import (
    PRECISIONS,
    OscillationSpec,
    ProtocolSpec,
    RecordSpec,
    check_compatible,
    load_protocol,
    protocol_from_dict,
)
from arsim.spec.schedule import Schedule
from arsim.spec.schema import (
    CODEGEN_TARGETS,
    PHASES,
    SpecError,
    Table,
    check_name,
    parse_duration,
    parse_phase,
    read_toml,
)

__all__ = [
    "CODEGEN_TARGETS",
    "PHASES",
    "PRECISIONS",
    "ConnectionSpec",
    "InitSpec",
    "LayerSpec",
    "MemorySpec",
    "ModelSpec",
    "OscillationSpec",
    "ProtocolSpec",
    "RecordSpec",
    "Schedule",
    "SpecError",
    "check_name",
    "Table",
    "check_compatible",
    "load_model",
    "load_protocol",
    "model_from_dict",
    "parse_duration",
    "parse_phase",
    "protocol_from_dict",
    "read_toml",
    "topological_order",
]
