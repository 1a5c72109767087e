"""The model factory: shape-true synthetic GGUFs, real model sources, quantization with the build under test,
inspection (ModelFile records, active bytes per token) and the cache that makes every (model, quant) file once.

Exports resolve lazily: the engine's Python imports vramwatch.models.quantize_child, and must not pull in this
package's gguf/numpy/pydantic dependencies on the way.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "active_bytes_per_token": "inspect", "inspect_gguf": "inspect", "read_header": "inspect",
    "sha256_file": "inspect", "tensor_sizes": "inspect",
    "prepare_models": "prepare", "vocab_dir": "prepare",
    "QuantizeResult": "quantize", "file_types": "quantize", "quantize_gguf": "quantize",
    "resolve_source": "sources",
    "SPEC_NAMES": "specs", "ModelSpec": "specs", "get_spec": "specs",
    "tensor_plan": "specs",
    "planned_file_bytes": "synth", "write_gguf": "synth",
}
_RENAMED = {"resolve_source": "resolve"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vramwatch.models' has no attribute {name!r}")
    module = importlib.import_module(f"vramwatch.models.{_EXPORTS[name]}")
    return getattr(module, _RENAMED.get(name, name))
