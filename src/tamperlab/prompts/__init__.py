"""Prompt formats (chat template vs plain) as small YAML files that inherit."""
from .formats import PromptFormat, encode_prompts, format_prompt, get_format, list_formats

__all__ = ["PromptFormat", "encode_prompts", "format_prompt", "get_format", "list_formats"]
