"""Where tamperlab keeps converted models and generation caches."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$TAMPERLAB_CACHE``, else ``$XDG_CACHE_HOME/tamperlab``, else ``~/.cache/tamperlab``."""
    if env := os.environ.get("TAMPERLAB_CACHE"):
        root = Path(env)
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tamperlab"
    root.mkdir(parents=True, exist_ok=True)
    return root
