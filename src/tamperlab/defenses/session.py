"""What every single-model defense shares with refusal SFT, so they differ only in their loss.

A :class:`DefenseSession` holds a LoRA adapter on the shared frozen base (or a full copy), the
engine's one player, the seeded SFT mix (refusals of harmful prompts + helpful utility examples,
the same pool refusal SFT trains on) and, for methods that need the harmful side, seeded batches of
the (prompt → refusal, same prompt → harmful answer) pairs. An :class:`Objective` supplies the loss
of one micro-batch (RepNoise, Vaccine, Booster) or a whole step (TAR's inner attack loop);
:func:`run_defense` adds what the budget needs (dev checks, the kept checkpoint), saves the model
and writes the card. So every method is trained on the same data, checked against the same budget
and kept by the same rule: a comparison at matched utility, not at matched luck."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..models.loading import LoadedModel
from ..training.adapters import AdapterScope, base_param_count, save_defended, trainable_model
from ..training.data import SFTExample, build_features, collate, fit_pool_or_warn, ordered_items
from ..training.engine import Engine
from ..training.supervised import SupervisedBatches, copy_log, token_weight
from ..utils.config import ConfigError
from .card import write_card
from .checks import DevChecker, checked_run
from .data import defense_data, mix


@dataclass
class PairFields:
    """Fields of a defense that also trains on the harmful side of the preference pairs."""
    harm_batch_size: int = field(default=4, metadata={
        "help": "(harmful prompt -> harmful answer) pairs per micro-batch (their refusal side shares the prompt)"})

    def validate_pairs(self) -> None:
        if self.harm_batch_size < 1:
            raise ConfigError(f"field 'harm_batch_size': must be >= 1, got {self.harm_batch_size}")


class Objective:
    """One defense's training signal on a :class:`DefenseSession`. ``loss(session, mb)`` returns
    (loss tensor, logged numbers) for one micro-batch ``mb`` (keys ``mix``, and with
    ``uses_pairs`` also ``refusal``, ``harmful``); the default ``step`` makes one engine
    optimizer step of it. A method with more structure (TAR) overrides ``step``."""
    uses_pairs = False

    def setup(self, s: "DefenseSession") -> None:
        """Anything built once the model and data exist (layer lists, reference caches)."""

    def loss(self, s: "DefenseSession", mb: dict):
        raise NotImplementedError

    def step(self, s: "DefenseSession", i: int) -> dict:
        return s.engine.optimize(s.player, s.micro_batches(i), lambda mb: self.loss(s, mb), s.weight)

    def describe(self, s: "DefenseSession") -> str:
        """One sentence for the card: what this method adds to the SFT mix."""
        return ""


class DefenseSession(AdapterScope):
    """The trained model, its player and its data for one defense run. A context manager: leaving
    removes the LoRA adapter from the shared model (bit-identical afterwards)."""

    def __init__(self, lm: LoadedModel, cfg, engine: Engine, objective: Objective, data=None):
        from transformers.trainer_utils import set_seed

        self.lm, self.cfg, self.engine, self.objective = lm, cfg, engine, objective
        data = data if data is not None else defense_data(cfg.data_recipe, cfg.utility_answers, lm)
        self.data, self.provenance = data, data.provenance
        self._ref_logps: dict = {}  # reference_logps' cache
        pool = mix(data.safety, data.utility, cfg.utility_fraction, cfg.n_safety)
        self.tcfg = cfg.train_config()
        self.steps = self.tcfg.total_steps(len(pool))
        set_seed(cfg.seed)
        self.model = self._hold(trainable_model(lm.model, self.tcfg))
        try:
            self.player = engine.add_player("model", self.model, lr=cfg.lr, total_steps=self.steps,
                                            scheduler=cfg.scheduler, warmup_steps=cfg.warmup_steps,
                                            weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm)
            self.model = self.player.module
            self.mix = SupervisedBatches(lm, pool, steps=self.steps, batch_size=cfg.batch_size,
                                         grad_accum=cfg.grad_accum, seed=cfg.seed, fmt=cfg.format,
                                         max_length=cfg.max_length, device=engine.device)
            self.pool = self.mix.pool
            self.pairs: list[tuple[SFTExample, SFTExample]] = []
            if objective.uses_pairs:
                fit = {e.id for e in fit_pool_or_warn(lm.tokenizer, [p[0] for p in data.pairs], cfg.format,
                                                       cfg.max_length, "harmful pair")}
                self.pairs = [p for p in data.pairs if p[0].id in fit]
                if not self.pairs:
                    raise ConfigError("this defense needs (refusal, harmful answer) pairs; none fit max_length")
                n = self.steps * cfg.harm_batch_size * cfg.grad_accum
                self.pair_order = ordered_items(self.pairs, n, cfg.seed)
            objective.setup(self)
        except BaseException:
            self.close()
            raise

    # ---- data --------------------------------------------------------------------------------
    def features(self, examples: list[SFTExample]) -> dict:
        """A collated batch of ``examples`` in the run's format, on the engine's device."""
        feats = build_features(self.lm.tokenizer, examples, self.cfg.format, self.cfg.max_length)
        return collate(feats, self.lm.pad_id, self.engine.device)

    def pair_chunk(self, j: int) -> list[tuple[SFTExample, SFTExample]]:
        b = self.cfg.harm_batch_size
        return self.pair_order[j * b:(j + 1) * b]

    def micro_batches(self, i: int) -> list[dict]:
        """The grad_accum micro-batches of step ``i``: the SFT mix batch, and the step's pairs."""
        out = []
        for j, batch in enumerate(self.mix.step(i)):
            mb = {"mix": batch}
            if self.objective.uses_pairs:
                chunk = self.pair_chunk(i * self.cfg.grad_accum + j)
                mb.update(refusal=self.features([c[0] for c in chunk]), harmful=self.features([c[1] for c in chunk]),
                          pair_ids=[c[0].id for c in chunk])
            out.append(mb)
        return out

    @staticmethod
    def weight(mb: dict) -> float:
        """A micro-batch's share of an accumulated step: its SFT-mix completion tokens."""
        return token_weight(mb["mix"])

    @property
    def params(self):
        return self.player.params

    def reference(self, batch: dict, hidden: bool = False):
        """The original model's forward on ``batch`` (no grad): the adapter disabled for LoRA, the
        untouched shared model for full fine-tuning. Returns its output (logits, hidden states)."""
        import torch

        kw = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
              "output_hidden_states": hidden}
        with torch.no_grad():
            model = self.engine.unwrap(self.model)
            if hasattr(model, "disable_adapter"):
                with model.disable_adapter():
                    return self.model(**kw)
            return self.lm.model(**kw)

    def reference_logps(self, batch: dict, keys: list) -> "torch.Tensor":
        """The original model's per-token mean log-prob of each completion in ``batch``, (B,),
        cached under ``keys`` (one hashable per row): it never changes, so each example is scored
        once per run (TRL's ``precompute_ref_log_probs``, lazily)."""
        import torch

        from ..training.losses import token_logps

        cache = self._ref_logps
        if not all(k in cache for k in keys):
            lp, mask = token_logps(self.reference(batch).logits, batch["labels"])
            cache.update(zip(keys, (lp.sum(-1) / mask.sum(-1).clamp(min=1)).tolist()))
        return torch.tensor([cache[k] for k in keys], device=self.engine.device)

    # ---- training ------------------------------------------------------------------------------
    def train(self, checker: DevChecker | None, description: str) -> tuple[dict, dict]:
        """All steps (resumable), dev checks every ``check_every``; returns (last row, choice)."""
        last: dict = {}
        self.model.train()

        def one(step: int) -> int:
            row = self.objective.step(self, step)
            self.engine.log(step + 1, row)
            last.update(row)
            return 1

        choice = checked_run(self.engine, checker, self.model, self.cfg.check_every, self.steps, one, description)
        self.model.eval()
        return last, choice or {}

    def param_counts(self) -> dict:
        return {"model": base_param_count(self.lm.model), "trained": sum(p.numel() for p in self.params)}


def run_defense(lm: LoadedModel, cfg, out: Path, objective: Objective, title: str) -> dict:
    """Train ``objective`` on the shared set-up into ``out``: merged safetensors + adapter, log,
    card with the budget checks; resumable from ``out/work``. Returns defense.json's extra fields."""
    engine = Engine(out / "work", mixed_precision=cfg.mixed_precision, grad_accum=cfg.grad_accum,
                    checkpoint_every=cfg.checkpoint_every)
    with DefenseSession(lm, cfg, engine, objective) as s:
        checker = DevChecker(lm, cfg, out / "work", cfg.format) if cfg.check_every else None
        last, choice = s.train(checker, f"defend: {title}")
        save_defended(engine.unwrap(s.model), lm.tokenizer, out)
        n_pool, counts, provenance = len(s.pool), s.param_counts(), s.provenance
        n_pairs = len({c[0].id for c in getattr(s, "pair_order", [])})
        extra = objective.describe(s)
    copy_log(engine, out)
    how = (f"LoRA r{cfg.lora_rank} on a frozen base" if cfg.method == "lora" else "Full fine-tune")
    pairs = f", {n_pairs} harmful pairs" if n_pairs else ""
    write_card(out, f"{title}-defended model", f"{how}, {n_pool} examples ({cfg.utility_fraction:.0%} utility)"
               f"{pairs}. {extra}".strip(), cfg, last, choice or None)
    for d in ("checkpoint", "checks"):  # finished: resume state and check snapshots not needed
        shutil.rmtree(out / "work" / d, ignore_errors=True)
    info = {"examples": n_pool, "final": {k: v for k, v in last.items() if k != "examples"}, **choice,
            "data": provenance, "params": counts}
    if n_pairs:
        info["pairs"] = n_pairs
    return info


def session_defense(objective_cls: type[Objective], title: str):
    """The registered function of a method built on the session: ``fn(lm, cfg, out)``, with its
    objective class attached (``fn.objective``) so tools such as the step-cost benchmark can build
    the same session and time one step."""
    def fn(lm: LoadedModel, cfg, out: Path) -> dict:
        return run_defense(lm, cfg, out, objective_cls(), title)

    fn.objective = objective_cls
    fn.__name__ = f"defend_{title.lower().replace('-', '_')}"
    fn.__doc__ = f"{title} on the shared defense session (see {objective_cls.__module__})."
    return fn
