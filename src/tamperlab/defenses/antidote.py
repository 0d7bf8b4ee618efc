"""AntiDote (arXiv 2509.08000): a bi-level game between a LoRA defender and an adversarial
hypernetwork that writes low-rank weight patches from the defender's own activations.

- adversary step: maximise harm *under its patch*: NLL of the harmful answer (default, the
  fine-tuning attacker's own objective), or prefer the harmful answer over the refusal with DPO/IPO
  against the frozen original model; only the adversary moves.
- defender step: safety loss *with the patch applied* (prefer the refusal) + utility LM loss + KL
  to the original model on benign data *with the patch removed*; only the defender moves.
- blocks of k adversary then k defender steps; optional adversary re-initialisation per block;
  optional clean-safety term (safety loss without the patch).

Unlike the released reference code, the adversary's step runs with gradients: it learns
(tests/test_antidote.py checks that its parameters move and its loss falls)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..models.hooks import capture_inputs, find_sites, low_rank_patch
from ..models.loading import LoadedModel
from ..prompts.formats import encode_prompts
from ..training.data import SFTExample, build_features, collate, fit_pool_or_warn, ordered_examples, ordered_items
from ..training.engine import Engine
from ..training.adapters import DEFAULT_TARGETS, AdapterScope, base_param_count, lora_on, save_defended
from ..training.losses import kl_to_reference, mean_nll, preference_loss, sequence_logps, token_logps
from ..training.sft import TrainConfig
from ..training.supervised import copy_log
from ..utils.config import ConfigError
from .base import DEFENSES
from .card import write_card
from .checks import BudgetFields, DevChecker, checked_run
from .data import DataFields, defense_data


@dataclass
class AntiDoteConfig(DataFields, BudgetFields):
    steps: int = field(default=60, metadata={"help": "defender steps (the adversary takes as many)"})
    block: int = field(default=5, metadata={"help": "k: adversary steps, then k defender steps, per block"})
    batch_size: int = field(default=4, metadata={"help": "harmful preference pairs per step"})
    benign_batch_size: int = field(default=4, metadata={"help": "benign (utility) examples per defender step"})
    lr: float = field(default=5e-5, metadata={
        "help": "defender learning rate (cosine-warmup schedule); preference training wants less than SFT's 2e-4"})
    warmup_steps: int = field(default=5, metadata={"help": "defender warmup steps"})
    adv_lr: float = field(default=1e-3, metadata={"help": "adversary learning rate (constant)"})
    lora_rank: int = field(default=16, metadata={"help": "defender LoRA rank"})
    lora_alpha: float = field(default=32.0, metadata={"help": "defender LoRA alpha"})
    lora_targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS),
                                    metadata={"help": "modules the defender's LoRA adapts"})
    adv_targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS), metadata={
        "help": "projections the adversary patches (default: every one a LoRA attack touches, attention and MLP)"})
    adv_rank: int = field(default=8, metadata={"help": "rank r of each patch ΔW = V·U (>= the attacks' LoRA rank)"})
    adv_per_example: bool = field(default=True, metadata={
        "help": "each example's patch from its own activations (false: one patch per batch, from the batch mean)"})
    adv_max_rel_norm: float = field(default=0.1, metadata={
        "help": "bound on each patch's ‖ΔW‖_F as a fraction of its weight's ‖W‖_F (0: unbounded)"})
    adv_hidden: int = field(default=64, metadata={"help": "hypernetwork hidden size"})
    adv_scale: float = field(default=1.0, metadata={"help": "patch scale"})
    adv_loss: str = field(default="nll", metadata={
        "help": "adversary objective: nll (of the harmful answers under the patch: what a fine-tuning attacker "
                "optimises) | dpo | ipo (prefer harmful over refusal against the frozen original)"})
    safety_loss: str = field(default="dpo", metadata={"help": "defender safety objective: dpo | ipo"})
    preference_norm: str = field(default="token", metadata={
        "help": "token: preference losses on mean per-token log-probs (one scale with the LM and KL terms) | "
                "sum: on summed sequence log-probs (the original formulation)"})
    beta: float = field(default=2.0, metadata={"help": "DPO/IPO beta (per-token margins are ~length times smaller "
                                                       "than summed ones: beta 2 per token ~ 0.05 summed over 40)"})
    w_anchor: float = field(default=0.5, metadata={
        "help": "weight of the NLL of the chosen refusal under the patch (per token; RPO-style anchor)"})
    w_safety: float = field(default=1.0, metadata={"help": "weight of the patched safety loss"})
    w_lm: float = field(default=0.8, metadata={"help": "weight of the utility LM loss (no patch)"})
    w_kl: float = field(default=0.3, metadata={"help": "weight of KL to the original model on benign data (no patch)"})
    w_clean_safety: float = field(default=0.0, metadata={"help": "weight of the safety loss without the patch"})
    adv_reinit: bool = field(default=False, metadata={"help": "re-initialise the adversary at each block"})
    max_length: int = field(default=192, metadata={"help": "tokens per example"})
    format: str = field(default="chat", metadata={"help": "prompt format of the training data"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping (each player)"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step (each player)"})
    mixed_precision: str = field(default="auto", metadata={"help": "auto | no | bf16 | fp16"})
    checkpoint_every: int = field(default=20, metadata={"help": "defender steps between resumable checkpoints (0: none)"})
    seed: int = field(default=0, metadata={"help": "seed: data order, initialisations"})

    def validate(self) -> None:
        for name in ("steps", "block", "batch_size", "benign_batch_size", "lora_rank", "adv_rank", "adv_hidden",
                     "max_length", "grad_accum"):
            if getattr(self, name) < 1:
                raise ConfigError(f"field {name!r}: must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "adv_lr", "beta"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"field {name!r}: must be > 0, got {getattr(self, name)}")
        if self.adv_loss not in ("dpo", "ipo", "nll"):
            raise ConfigError(f"field 'adv_loss': dpo | ipo | nll, got {self.adv_loss!r}")
        if self.preference_norm not in ("token", "sum"):
            raise ConfigError(f"field 'preference_norm': token | sum, got {self.preference_norm!r}")
        if self.adv_max_rel_norm < 0:
            raise ConfigError(f"field 'adv_max_rel_norm': must be >= 0, got {self.adv_max_rel_norm}")
        if self.safety_loss not in ("dpo", "ipo"):
            raise ConfigError(f"field 'safety_loss': dpo | ipo, got {self.safety_loss!r}")
        if self.checkpoint_every and self.checkpoint_every % self.block:
            raise ConfigError(f"field 'checkpoint_every': must be a multiple of block={self.block} "
                              f"(checkpoints are taken between blocks), got {self.checkpoint_every}")
        self.validate_budget(self.steps, self.block)
        self.validate_data()
        for name in ("w_safety", "w_lm", "w_kl", "w_clean_safety", "w_anchor"):
            if getattr(self, name) < 0:
                raise ConfigError(f"field {name!r}: must be >= 0, got {getattr(self, name)}")


class AntiDoteTrainer(AdapterScope):
    """Holds both players and the data; ``adversary_step``/``defender_step`` are the two moves.

    The defender's LoRA lives on the loaded model itself and the frozen original is the same
    weights with the adapter disabled: no copy of the model. Use it as a context manager (or call
    ``close``): leaving removes the adapter and gives the shared model back unchanged."""

    def __init__(self, lm: LoadedModel, cfg: AntiDoteConfig, engine: Engine,
                 pairs: list[tuple[SFTExample, SFTExample]] | None = None, benign: list[SFTExample] | None = None):
        cfg.validate()
        self.cfg, self.lm, self.engine = cfg, lm, engine
        if engine.grad_accum != cfg.grad_accum:
            raise ConfigError(f"field 'grad_accum': config says {cfg.grad_accum}, the engine {engine.grad_accum}")
        self.pad = lm.pad_id
        self.provenance: dict = {"pairs": "given", "utility": "given"}
        if pairs is None or benign is None:
            data = defense_data(cfg.data_recipe, cfg.utility_answers, lm)
            pairs = pairs if pairs is not None else data.pairs
            benign = benign if benign is not None else data.utility
            self.provenance = data.provenance
        # over-long prompts are left out (with a warning), as refusal SFT does, before the seeded order
        benign = fit_pool_or_warn(lm.tokenizer, benign, cfg.format, cfg.max_length, "utility example")
        fit = {e.id for e in fit_pool_or_warn(lm.tokenizer, [p[0] for p in pairs], cfg.format, cfg.max_length,
                                               "preference pair")}
        pairs = [p for p in pairs if p[0].id in fit]
        if not pairs:
            raise ConfigError("AntiDote needs (refusal, harmful answer) pairs; none found")
        torch.manual_seed(cfg.seed)
        tcfg = TrainConfig(method="lora", lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                           lora_targets=list(cfg.lora_targets), seed=cfg.seed)
        model = self._hold(lora_on(lm.model, tcfg))
        try:
            self.sites = find_sites(model, cfg.adv_targets)
            torch.manual_seed(cfg.seed + 1)
            from .hypernetwork import PatchHypernetwork

            bounds = None
            if cfg.adv_max_rel_norm > 0:  # ‖ΔW‖_F <= rel · ‖W‖_F of the frozen weight it patches
                mods = dict(model.named_modules())
                bounds = {s.name: cfg.adv_max_rel_norm * float(_weight(mods[s.name]).detach().float().norm())
                          for s in self.sites}
            adversary = PatchHypernetwork(self.sites, rank=cfg.adv_rank, hidden=cfg.adv_hidden,
                                          per_example=cfg.adv_per_example, max_norm=bounds)
            self.defender = engine.add_player("defender", model, lr=cfg.lr, total_steps=cfg.steps,
                                              scheduler="cosine-warmup", warmup_steps=cfg.warmup_steps,
                                              max_grad_norm=cfg.max_grad_norm)
            self.attacker = engine.add_player("adversary", adversary, lr=cfg.adv_lr, total_steps=cfg.steps,
                                              max_grad_norm=cfg.max_grad_norm)
            self.model, self.adversary = self.defender.module, self.attacker.module
            self.def_params = self.defender.params
            # data order: a pure function of the seed (one index sequence for the pairs, one for benign)
            g = cfg.grad_accum
            n = 2 * cfg.steps * cfg.batch_size * g
            self.pair_order = ordered_items(pairs, n, cfg.seed)
            self.benign_order = ordered_examples(benign, cfg.steps * cfg.benign_batch_size * g, cfg.seed)
            self._ref_cache: dict[tuple[str, str], float] = {}
            self.precompute_reference()
        except BaseException:
            self.close()
            raise

    # ---- parameter counts, for the card -------------------------------------------------------
    def param_counts(self) -> dict:
        base = base_param_count(self.lm.model)
        adv = sum(p.numel() for p in self.adversary.parameters())
        lora = sum(p.numel() for p in self.def_params)
        return {"model": base, "adversary": adv, "defender_lora": lora, "adversary_to_model": adv / base}

    # ---- batches ----------------------------------------------------------------------------
    def pair_batch(self, i: int) -> tuple[dict, dict, dict, list]:
        """Pairs of adversary-or-defender move ``i``: prompt batch, refusal batch, harmful batch."""
        b = self.cfg.batch_size
        chunk = self.pair_order[i * b:(i + 1) * b]
        refusals, harmful = [c[0] for c in chunk], [c[1] for c in chunk]
        tok, fmt, ml, dev = self.lm.tokenizer, self.cfg.format, self.cfg.max_length, self.engine.device
        prompt_ids = encode_prompts(tok, [r.prompt for r in refusals], fmt)
        prompts = collate([{"input_ids": p[:ml], "labels": p[:ml]} for p in prompt_ids], self.pad, dev)
        ref_b = collate(build_features(tok, refusals, fmt, ml), self.pad, dev)
        harm_b = collate(build_features(tok, harmful, fmt, ml), self.pad, dev)
        return prompts, ref_b, harm_b, chunk

    def benign_batch(self, i: int) -> dict:
        b = self.cfg.benign_batch_size
        ex = self.benign_order[i * b:(i + 1) * b]
        return collate(build_features(self.lm.tokenizer, ex, self.cfg.format, self.cfg.max_length), self.pad,
                       self.engine.device)

    # ---- pieces ----------------------------------------------------------------------------
    def read_activations(self, prompts: dict) -> dict[str, torch.Tensor]:
        """The defender's (adapter on, no patch) inputs to each targeted projection on the prompts."""
        with torch.no_grad(), capture_inputs(self.model, self.sites) as acts:
            self.model(input_ids=prompts["input_ids"], attention_mask=prompts["attention_mask"])
        return {k: v.detach() for k, v in acts.items()}

    def reference_logps(self, batch: dict, chunk: list, side: int) -> torch.Tensor:
        """Frozen original model (adapter off, no patch): cached per example, it never changes."""
        keys = [(c[side].id, "ref" if side == 0 else "harm") for c in chunk]
        if not all(k in self._ref_cache for k in keys):
            with torch.no_grad(), self.engine.unwrap(self.model).disable_adapter():
                lp = sequence_logps(self.model, batch, average=self.cfg.preference_norm == "token")
            for k, v in zip(keys, lp.tolist()):
                self._ref_cache[k] = v
        return torch.tensor([self._ref_cache[k] for k in keys], device=self.engine.device)

    def _patched_pair_logps(self, patches, ref_b, harm_b) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-probs (summed or per-token mean, by ``preference_norm``) of refusal and harmful
        answer under the patch, and the refusal's mean token NLL (the anchor). Two forwards, each
        at its own width: padding short refusals to the harmful answers' length would cost more."""
        avg = self.cfg.preference_norm == "token"
        with low_rank_patch(self.model, patches, self.cfg.adv_scale):
            out = self.model(input_ids=ref_b["input_ids"], attention_mask=ref_b["attention_mask"])
            lp, mask = token_logps(out.logits, ref_b["labels"])  # (B, T-1)
            lp_ref = lp.sum(-1) / mask.sum(-1).clamp(min=1) if avg else lp.sum(-1)
            anchor = -lp.sum() / mask.sum().clamp(min=1)  # = mean_nll, from the same forward
            return lp_ref, sequence_logps(self.model, harm_b, average=avg), anchor

    def precompute_reference(self, batch_size: int = 16) -> None:
        """Reference log-probs of every pair, once (the original model never changes; TRL's
        ``precompute_ref_log_probs``): steps then pay only for the two players."""
        todo = {}
        for c in self.pair_order:
            todo.setdefault(c[0].id, c)
        chunks = list(todo.values())
        for side in (0, 1):
            for i in range(0, len(chunks), batch_size):
                part = chunks[i:i + batch_size]
                feats = build_features(self.lm.tokenizer, [c[side] for c in part], self.cfg.format, self.cfg.max_length)
                self.reference_logps(collate(feats, self.pad, self.engine.device), part, side)

    # ---- the two moves ---------------------------------------------------------------------
    def _micro(self, i: int) -> list[int]:
        """Pair-batch indices of move ``i``'s micro-batches."""
        g = self.cfg.grad_accum
        return [i * g + j for j in range(g)]

    def _adversary_loss(self, j: int) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        prompts, ref_b, harm_b, chunk = self.pair_batch(j)
        acts = self.read_activations(prompts)
        patches = self.adversary(acts, prompts["attention_mask"])
        if cfg.adv_loss == "nll":
            with low_rank_patch(self.model, patches, cfg.adv_scale):
                out = self.model(input_ids=harm_b["input_ids"], attention_mask=harm_b["attention_mask"])
            loss = mean_nll(out.logits, harm_b["labels"])
        else:
            lp_ref, lp_harm, _ = self._patched_pair_logps(patches, ref_b, harm_b)
            loss = preference_loss(lp_harm, lp_ref, self.reference_logps(harm_b, chunk, 1),
                                   self.reference_logps(ref_b, chunk, 0), cfg.beta, cfg.adv_loss)
        return loss, {"patch_norm": total_patch_norm(patches)}

    def adversary_step(self, i: int) -> dict:
        """One adversary update on pair batch ``i``; the defender is frozen meanwhile."""
        for p in self.def_params:
            p.requires_grad_(False)  # the adversary's loss must not reach the defender
        try:
            r = self.engine.optimize(self.attacker, self._micro(i), self._adversary_loss)
        finally:
            for p in self.def_params:
                p.requires_grad_(True)
        return {"adv_loss": r["loss"], "adv_grad_norm": r["grad_norm"], "patch_norm": r["patch_norm"]}

    def _defender_loss(self, jk: tuple[int, int]) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        j, k = jk
        prompts, ref_b, harm_b, chunk = self.pair_batch(j)
        benign = self.benign_batch(k)
        acts = self.read_activations(prompts)
        with torch.no_grad():  # the defender's loss must not reach the adversary
            patches = {n: (u.detach(), v.detach()) for n, (u, v) in self.adversary(acts, prompts["attention_mask"]).items()}
        ref_ref, ref_harm = self.reference_logps(ref_b, chunk, 0), self.reference_logps(harm_b, chunk, 1)
        lp_ref, lp_harm, anchor = self._patched_pair_logps(patches, ref_b, harm_b)
        safety = preference_loss(lp_ref, lp_harm, ref_ref, ref_harm, cfg.beta, cfg.safety_loss)
        out = self.model(input_ids=benign["input_ids"], attention_mask=benign["attention_mask"])
        lm_loss = mean_nll(out.logits, benign["labels"])
        with torch.no_grad(), self.engine.unwrap(self.model).disable_adapter():
            ref_logits = self.model(input_ids=benign["input_ids"], attention_mask=benign["attention_mask"]).logits
        kl = kl_to_reference(out.logits, ref_logits, benign["labels"])
        loss = cfg.w_safety * safety + cfg.w_anchor * anchor + cfg.w_lm * lm_loss + cfg.w_kl * kl
        row = {"safety": float(safety.detach()), "anchor": float(anchor.detach()), "lm": float(lm_loss.detach()),
               "kl": float(kl.detach()), "patch_norm": total_patch_norm(patches)}
        if cfg.w_clean_safety > 0:
            c_ref, c_harm, _ = self._patched_pair_logps({}, ref_b, harm_b)
            clean = preference_loss(c_ref, c_harm, ref_ref, ref_harm, cfg.beta, cfg.safety_loss)
            loss = loss + cfg.w_clean_safety * clean
            row["clean_safety"] = float(clean.detach())
        return loss, row

    def defender_step(self, i: int, step: int) -> dict:
        """One defender update: pair batch ``i`` under the adversary's (fixed) patch, benign batch
        ``step`` without it; the learning rate follows the defender's cosine-warmup schedule."""
        g = self.cfg.grad_accum
        r = self.engine.optimize(self.defender, [(j, step * g + n) for n, j in enumerate(self._micro(i))],
                                 self._defender_loss)
        r["def_grad_norm"] = r.pop("grad_norm")
        return r

    # ---- the game --------------------------------------------------------------------------
    def train(self, description: str = "defend: AntiDote", checker: DevChecker | None = None) -> dict:
        """Play the blocks; with a ``checker``, dev checks every ``check_every`` steps and the
        budget's checkpoint loaded at the end (``self.choice`` says which)."""
        cfg, eng = self.cfg, self.engine
        last: dict = {}

        def block(step: int) -> int:
            k = min(cfg.block, cfg.steps - step)
            if cfg.adv_reinit and step > 0:
                self.adversary.reset_parameters()
                self.attacker.optimizer.state.clear()
            for j in range(k):  # adversary block: pair batches 2*step .. (shared index space)
                row = self.adversary_step(2 * (step + j))
                eng.log(step + j + 1, {"phase": "adversary", **row})
                last.update(row)
            for j in range(k):
                row = self.defender_step(2 * (step + j) + 1, step + j)
                eng.log(step + j + 1, {"phase": "defender", **row})
                last.update(row)
            return k

        self.choice = checked_run(eng, checker, self.model, cfg.check_every, cfg.steps, block, description)
        self.model.eval()
        return last


def _weight(mod) -> torch.Tensor:
    """The frozen weight of a projection (inside a PEFT LoRA wrapper, its base layer's)."""
    return mod.base_layer.weight if hasattr(mod, "base_layer") else mod.weight


def total_patch_norm(patches: dict) -> float:
    """sqrt(Σ_sites ‖ΔW‖_F²), averaged over examples for per-example patches."""
    from .hypernetwork import patch_norms

    if not patches:
        return 0.0
    sq = sum(patch_norms(u.detach(), v.detach()) ** 2 for u, v in patches.values())  # (B,) or ()
    return float(sq.sqrt().mean())


def defend_antidote(lm: LoadedModel, cfg: AntiDoteConfig, out: Path) -> dict:
    engine = Engine(out / "work", mixed_precision=cfg.mixed_precision, grad_accum=cfg.grad_accum,
                    checkpoint_every=cfg.checkpoint_every)
    with AntiDoteTrainer(lm, cfg, engine) as trainer:
        checker = DevChecker(lm, cfg, out / "work", cfg.format) if cfg.check_every else None
        last = trainer.train(checker=checker)
        choice = trainer.choice or {}
        save_defended(engine.unwrap(trainer.model), lm.tokenizer, out)
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in engine.unwrap(trainer.adversary).state_dict().items()},
                  str(out / "adversary.safetensors"))
        counts = trainer.param_counts()
        n_pairs = len({c[0].id for c in trainer.pair_order})
        provenance = trainer.provenance
    copy_log(engine, out)
    write_card(out, "AntiDote-defended model", (
        f"Defender: LoRA r{cfg.lora_rank} on a frozen base; adversary: patch hypernetwork with "
        f"{counts['adversary']:,} parameters ({counts['adversary_to_model']:.2%} of the model's {counts['model']:,}), "
        f"rank-{cfg.adv_rank} {'per-example' if cfg.adv_per_example else 'per-batch'} patches on "
        f"{', '.join(cfg.adv_targets)}, ‖ΔW‖_F <= {cfg.adv_max_rel_norm} ‖W‖_F (0: unbounded); {n_pairs} "
        f"preference pairs drawn from `harmful/defense-train`."), cfg, last, choice or None)
    import shutil

    for d in ("checkpoint", "checks"):  # finished: resume state and check snapshots not needed
        shutil.rmtree(out / "work" / d, ignore_errors=True)
    return {"params": counts, "final": last, **choice,
            "data": provenance}


DEFENSES.register("antidote", defend_antidote, config_cls=AntiDoteConfig,
                  help="AntiDote: LoRA defender vs a learning hypernetwork adversary that patches its weights")
