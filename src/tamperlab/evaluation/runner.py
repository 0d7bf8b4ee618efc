"""``evaluate``: run suites on one model, writing metrics.json and samples.jsonl atomically
after every suite, so a crash keeps finished suites and a re-run reuses cached generations."""
from __future__ import annotations

import platform
import time
from dataclasses import asdict
from pathlib import Path

from .. import __version__
from ..generation import GenerationCache
from ..models import LoadedModel, load_model
from ..utils.io import atomic_write_json, atomic_write_jsonl
from .config import EvalConfig
from .suites import SUITES, SuiteContext


def evaluate(model: str | LoadedModel, cfg: EvalConfig | None = None, out_dir: str | Path | None = None) -> dict:
    cfg = cfg or EvalConfig()
    cfg.validate()
    lm = load_model(model) if isinstance(model, str) else model
    ctx = SuiteContext(lm=lm, cfg=cfg, cache=GenerationCache(lm.fingerprint) if cfg.use_cache else None)
    result = {"tamperlab_version": __version__,
              "model": {"name": lm.name, "source": lm.source, "fingerprint": lm.fingerprint},
              "config": asdict(cfg), "machine": platform.machine(), "suites": {}}
    samples: list[dict] = []
    out = Path(out_dir) if out_dir else None
    for name in cfg.suite:
        t0 = time.perf_counter()
        metrics, rows = SUITES.get(name).obj().run(ctx)
        metrics["seconds"] = round(time.perf_counter() - t0, 1)
        result["suites"][name] = metrics
        samples += rows
        if out is not None:
            atomic_write_jsonl(out / "samples.jsonl", samples)
            atomic_write_json(out / "metrics.json", result)
    if out is not None:
        from ..reports.card import write_card

        write_card(result, out / "card.md")
    return result
