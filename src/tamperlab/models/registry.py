"""Named model presets. Each preset is a function that returns a local directory holding
safetensors weights + tokenizer, building or converting it into the cache on first use."""
from __future__ import annotations

from ..utils.registry import Registry

MODELS: Registry = Registry("model")

# importing the module registers the presets
from . import presets  # noqa: E402,F401
