"""``tamperlab attack``: a supervised fine-tuning attack, evaluated at checkpoint steps."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..models.loading import LoadedModel, load_model
from ..training.sft import TrainConfig, save_model_dir, train_sft
from ..utils.config import ConfigError
from ..utils.hashing import stable_hash
from ..utils.io import atomic_write_json
from .data import ATTACK_DATA, load_attack_data
from .registry import AttackSpec, register_attack


@dataclass
class AttackConfig(TrainConfig):
    """A fine-tuning attack: the training settings plus what data and when to look."""
    data: str = field(default="harmful", metadata={"help": "attack data: harmful | benign (attack split only)"})
    data_file: str | None = field(default=None, metadata={
        "help": "your own .jsonl/.csv with prompt,completion columns (replaces data)"})
    data_limit: int | None = field(default=None, metadata={"help": "use only the first N examples of the data"})
    checkpoint_steps: list[int] = field(default_factory=lambda: [0, 10, 25], metadata={
        "help": "steps at which the attacked model is evaluated (0 = before the attack)"})

    def validate(self) -> None:
        super().validate()
        if isinstance(self.checkpoint_steps, str):
            self.checkpoint_steps = [int(s) for s in self.checkpoint_steps.split(",") if s.strip()]
        if self.data_file is None and self.data not in ATTACK_DATA:
            raise ConfigError(f"field 'data': unknown attack data {self.data!r}; known: {', '.join(ATTACK_DATA.names())}")
        if self.data_file is not None and not Path(self.data_file).is_file():
            raise ConfigError(f"field 'data_file': file not found: {self.data_file}")
        if self.data_limit is not None and self.data_limit < 1:
            raise ConfigError(f"field 'data_limit': must be >= 1, got {self.data_limit}")
        if not self.checkpoint_steps:
            raise ConfigError("field 'checkpoint_steps': name at least one step")
        if self.steps is not None and max(self.checkpoint_steps) > self.steps:
            raise ConfigError(f"field 'checkpoint_steps': {max(self.checkpoint_steps)} is past steps={self.steps}")
        if min(self.checkpoint_steps) < 0:
            raise ConfigError("field 'checkpoint_steps': steps must be >= 0")

    def train_config(self) -> TrainConfig:
        return TrainConfig(**{k: v for k, v in asdict(self).items() if k in TrainConfig.__dataclass_fields__})

    def attack_hash(self) -> str:
        """Identity of the attack, seed excluded (seeds are repeats of one attack)."""
        d = asdict(self)
        d.pop("seed")
        d.pop("checkpoint_steps")  # looking more often does not change the attack
        ex = load_attack_data(self.data, self.data_limit, self.data_file)
        d["data_content"] = stable_hash([(e.id, e.prompt, e.completion) for e in ex])  # changed data = new attack
        return stable_hash(d)[:12]


def run_attack(model: str | LoadedModel, cfg: AttackConfig, out_dir: str | Path | None = None, *,
               eval_cfg=None, on_checkpoint=None, save_checkpoints: bool = False,
               merge: bool = False) -> dict:
    """Attack ``model``; at every checkpoint step evaluate (``eval_cfg``), save the weights
    (``save_checkpoints``) and/or call ``on_checkpoint(step, view)``. Returns {step: metrics}."""
    from ..evaluation.runner import evaluate

    cfg.validate()
    lm = load_model(model) if isinstance(model, str) else model
    pool = load_attack_data(cfg.data, cfg.data_limit, cfg.data_file)
    out = Path(out_dir) if out_dir else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "attack_config.json", {"kind": "finetune", "model": lm.name, "fingerprint": lm.fingerprint,
                                                       "attack_hash": cfg.attack_hash(), **asdict(cfg)})
    results: dict[int, dict] = {}

    def at_checkpoint(step: int, view: LoadedModel) -> None:
        if eval_cfg is not None:
            results[step] = evaluate(view, eval_cfg, out / f"step-{step}" if out else None)["suites"]
        if save_checkpoints and out is not None and step > 0:
            save_model_dir(view.model, lm.tokenizer, out / "checkpoints" / f"step-{step}", merge=merge)
        if on_checkpoint:
            on_checkpoint(step, view)
        if out is not None and eval_cfg is not None:
            atomic_write_json(out / "summary.json", {str(k): v for k, v in sorted(results.items())})

    train_sft(lm, pool, cfg.train_config(), checkpoint_steps=cfg.checkpoint_steps, on_checkpoint=at_checkpoint,
              log_path=out / "train_log.jsonl" if out else None,
              description=f"attack {cfg.method} {cfg.data} seed {cfg.seed}")
    return results


# ---- the fine-tuning attack as an ATTACKS entry ------------------------------------------------

def cell_label(cfg: AttackConfig) -> str:
    """Short human label: method, lr, schedule, data (what a reader needs to tell panels apart)."""
    sched = cfg.scheduler + (f"({cfg.warmup_steps})" if cfg.warmup_steps else "")
    rank = f" r{cfg.lora_rank}" if cfg.method == "lora" else ""
    return f"{cfg.method}{rank} lr={cfg.lr:g} {sched} {cfg.data_file or cfg.data}"


def describe(cfgs: list[AttackConfig], steps: list[int]) -> str:
    """What a list of fine-tuning attacks covers: methods, learning rates, length, data, schedules."""
    methods = sorted({a.method for a in cfgs})
    lrs = sorted({a.lr for a in cfgs})
    lr = f"{lrs[0]:g}" if len(lrs) == 1 else f"{lrs[0]:g}–{lrs[-1]:g}"
    data = sorted({a.data_file or a.data for a in cfgs})
    scheds = sorted({a.scheduler for a in cfgs})
    bs = sorted({a.batch_size * a.grad_accum for a in cfgs})
    return (f"{' and '.join(m if m != 'lora' else 'LoRA' for m in methods)} fine-tuning, lr {lr}, "
            f"up to {max(steps)} steps of batch {'/'.join(map(str, bs))} "
            f"(at most {max(steps) * max(bs)} examples), data: {', '.join(data)}, schedules: {', '.join(scheds)}")


def _run(model: LoadedModel, cfg: AttackConfig, on_checkpoint, out_dir: Path | None = None) -> None:
    run_attack(model, cfg, out_dir, on_checkpoint=on_checkpoint)


def check_model(cfg: AttackConfig, model) -> None:
    """LoRA targets must be modules of the attacked model."""
    if cfg.method == "lora":
        from ..training.adapters import check_targets

        check_targets(model, list(cfg.lora_targets))


register_attack("finetune", AttackConfig, AttackSpec(
    run=_run, describe=describe, step_unit="optimizer step", label=cell_label, key=AttackConfig.attack_hash,
    not_claimed="longer attacks, other learning rates, data", check_model=check_model),
    help="supervised fine-tuning (full or LoRA) on attack data, HF Trainer")
