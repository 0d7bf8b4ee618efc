"""Supervised fine-tuning on the engine: what refusal SFT (and any defense whose loss is an NLL on
(prompt, completion) pairs) runs. Same data pipeline as the Trainer path (``ordered_examples`` →
``build_features`` → ``collate``), so the data order is a function of the seed alone."""
from __future__ import annotations

from pathlib import Path

from ..models.loading import LoadedModel
from .data import IGNORE_INDEX, SFTExample, build_features, collate, fit_pool_or_warn, ordered_examples
from .engine import Engine
from .losses import mean_nll, weighted_nll


def nll_terms(model, batch: dict):
    """(mean token NLL, {}) of a batch; with ``loss_weights``, the weighted mean."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    if "loss_weights" in batch:
        return weighted_nll(out.logits, batch["labels"], batch["loss_weights"]), {}
    return mean_nll(out.logits, batch["labels"]), {}


def token_weight(batch: dict) -> float:
    """A micro-batch's share of an accumulated step: its (weighted) completion tokens."""
    if "loss_weights" in batch:
        w = batch["loss_weights"][:, 1:] * (batch["labels"][:, 1:] != IGNORE_INDEX)
        return float(w.sum())
    return float((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


class SupervisedBatches:
    """The seeded example sequence of a run, cut into micro-batches on demand (nothing is
    tokenised twice, nothing beyond the run is drawn)."""

    def __init__(self, lm: LoadedModel, pool: list[SFTExample], *, steps: int, batch_size: int, grad_accum: int,
                 seed: int, fmt: str, max_length: int, device):
        pool = fit_pool_or_warn(lm.tokenizer, pool, fmt, max_length)
        self.pool = pool
        self.examples = ordered_examples(pool, steps * batch_size * grad_accum, seed)
        self.feats = build_features(lm.tokenizer, self.examples, fmt, max_length)
        self.bs, self.ga, self.pad, self.device = batch_size, grad_accum, lm.pad_id, device

    def step(self, step: int) -> list[dict]:
        """The grad_accum micro-batches of optimizer step ``step`` (0-based)."""
        out = []
        for j in range(self.ga):
            i = (step * self.ga + j) * self.bs
            out.append(collate(self.feats[i:i + self.bs], self.pad, self.device))
        return out


def train_supervised(engine: Engine, model, lm: LoadedModel, pool: list[SFTExample], cfg, *,
                     description: str = "training", run=None) -> dict:
    """Fine-tune ``model`` (already LoRA-wrapped or a full copy) on ``pool`` with ``cfg`` (a
    TrainConfig); logs each step to the engine's JSONL. Returns the last step's numbers.
    ``run(total, step_fn, description)`` replaces ``engine.run`` (a defense adds dev checks)."""
    steps = cfg.total_steps(len(pool))
    player = engine.add_player("model", model, lr=cfg.lr, total_steps=steps, scheduler=cfg.scheduler,
                               warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay,
                               max_grad_norm=cfg.max_grad_norm)
    data = SupervisedBatches(lm, pool, steps=steps, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                             seed=cfg.seed, fmt=cfg.format, max_length=cfg.max_length, device=engine.device)
    last: dict = {}
    player.module.train()

    def one(step: int) -> int:
        row = engine.optimize(player, data.step(step), lambda b: nll_terms(player.module, b), token_weight)
        engine.log(step + 1, row)
        last.update(row)
        return 1

    (run or engine.run)(steps, one, description)
    player.module.eval()
    return {"examples": len(data.pool), **last}


def copy_log(engine: Engine, out: Path) -> None:
    """The finished run's log beside the model it made."""
    (out / "train_log.jsonl").write_text(engine.log_path.read_text())
