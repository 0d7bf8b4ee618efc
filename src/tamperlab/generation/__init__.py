"""Batched generation with left padding and a content-addressed cache."""
from .cache import GenerationCache
from .generate import GenerationConfig, eval_mode, generate, score_next_token

__all__ = ["GenerationCache", "GenerationConfig", "eval_mode", "generate", "score_next_token"]
