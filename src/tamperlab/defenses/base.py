"""The defense registry and the one entry point that runs any of them, resumably."""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, fields
from pathlib import Path

from ..models.loading import LoadedModel, load_model, resolve_dtype
from ..utils.config import ConfigError, from_dict
from ..utils.hashing import stable_hash
from ..utils.io import atomic_write_json, atomic_write_text
from ..utils.registry import Registry

DEFENSES: Registry = Registry("defense")
DONE = "defense.json"  # written last: its presence means the directory is complete
STARTED = "defense.started"  # the key of an attempt in progress (its resume state is kept)


def check_config_targets(cfg, model) -> None:
    """Every ``*_targets`` list of module names (LoRA, the adversary's patch sites) must exist in
    this model: checked before any data is built or any weight trained."""
    from ..training.adapters import check_targets

    for name, value in vars(cfg).items():
        if name.endswith("targets") and isinstance(value, list):
            check_targets(model, value, field=name)


KEY_OMITS_DEFAULT = "key_omits_default"  # field metadata: a setting added later, left out of the key at its default


def defense_key(method: str, lm: LoadedModel, cfg) -> str:
    """A defended model's identity: method, base weights, config and data. A field marked
    ``KEY_OMITS_DEFAULT`` is hashed only when set, so adding a setting keeps every directory
    trained before it (and the studies resuming on them) valid."""
    from .data import data_fingerprint

    config = asdict(cfg)
    for f in fields(cfg):
        if f.metadata.get(KEY_OMITS_DEFAULT) and config[f.name] == f.default:
            del config[f.name]
    return stable_hash({"method": method, "base": lm.fingerprint, "config": config,
                        "data": data_fingerprint(getattr(cfg, "data_recipe", "v1"), getattr(cfg, "utility_answers", "dataset"), lm)})


def defend(model: str | LoadedModel, method: str, cfg=None, out_dir: str | Path = "runs/defended",
           overrides: dict | None = None, dtype: str = "float32") -> Path:
    """Train ``method`` on ``model`` into ``out_dir`` (merged safetensors + adapter + log + card).

    A finished directory with the same model and config is reused; an unfinished one for the same
    key keeps its resume state (a method such as AntiDote continues from its last checkpoint); an
    unfinished tamperlab attempt at another key is cleared. Any other non-empty directory is an
    error: tamperlab never deletes what it did not create. Safe to call again after a crash."""
    entry = DEFENSES.get(method)
    if cfg is None:
        cfg = from_dict(entry.config_cls, overrides or {}, source=f"defense {method!r}")
    cfg.validate()
    try:
        resolve_dtype(dtype)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    lm = load_model(model, dtype=dtype) if isinstance(model, str) else model
    check_config_targets(cfg, lm.model)
    out = Path(out_dir)
    key = defense_key(method, lm, cfg)
    done = out / DONE
    if done.exists():
        info = json.loads(done.read_text())
        if info.get("key") == key:
            return out
        raise ConfigError(f"{out}: holds a different defended model ({info.get('method')}, key "
                              f"{info.get('key')}); choose another --out")
    started = out / STARTED
    if out.exists() and any(out.iterdir()):
        if not started.exists():
            raise ConfigError(f"{out}: not empty and not a tamperlab defense directory (no {STARTED} or {DONE}); "
                              "tamperlab will not delete what it did not create: choose another --out")
        if started.read_text() != key:
            shutil.rmtree(out)  # our own unfinished attempt at something else: start clean
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(started, key)  # an unfinished attempt at *this* key keeps its resume state
    t0 = time.perf_counter()
    info = entry.obj(lm, cfg, out)
    atomic_write_json(done, {"key": key, "method": method, "base": {"name": lm.name, "fingerprint": lm.fingerprint},
                             "config": asdict(cfg), "seconds": round(time.perf_counter() - t0, 1),
                             **(info or {})})
    started.unlink(missing_ok=True)
    return out
