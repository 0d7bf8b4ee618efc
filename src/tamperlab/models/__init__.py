"""Model registry and loading: presets (real default, tiny test models), HF ids, local dirs."""
from .loading import LoadedModel, load_model, resolve_model_dir
from .registry import MODELS

__all__ = ["LoadedModel", "load_model", "resolve_model_dir", "MODELS"]
