"""TAR (Tamirisa et al. 2024, "Tamper-Resistant Safeguards for Open-Weight LLMs"): first-order
meta-learning against simulated fine-tuning attacks.

Each outer step samples an attack (learning rate and data from configured sets), runs K inner
AdamW steps of it on a *functional copy* — a fresh LoRA-shaped patch ΔW = (α/r)·B·A on every
targeted projection, B = 0 at the start as in a real LoRA attack, so the defended weights are never
written — and at inner steps k ∈ {tr_every, 2·tr_every, ..., K} takes the gradient of the
tamper-resistance loss (prefer the refusal over the harmful answer, DPO per token against the
original model) w.r.t. the *defended* weights at the attacked point, weighted ∝ k (later inner steps
count more). The outer update adds that accumulated gradient (first-order MAML) to the gradient of
a retain loss on the SFT mix: its NLL plus the relative distance of every layer's hidden states to
the original model's. Optional warm start: the first ``random_map_steps`` outer steps map the
harmful answers' hidden states towards fixed random directions instead (TAR's random mapping).

Where ours differs from the paper: the inner attack is a LoRA patch, not full fine-tuning (our
attacks are LoRA first; full-parameter inner loops at 135M would not fit on 2 cores), K is 4
not 64, and the tamper-resistance loss is the DPO form the paper uses for refusal."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..models.hooks import find_sites, low_rank_patch
from ..training.data import IGNORE_INDEX, fit_pool_or_warn, ordered_examples
from ..training.losses import mean_nll, nll, preference_loss, relative_distance, sequence_logps
from ..utils.config import ConfigError
from .base import DEFENSES
from .session import DefenseSession, Objective, PairFields, session_defense
from .sft import SFTDefenseConfig

INNER_DATA = ("harmful", "benign")


@dataclass
class TARConfig(PairFields, SFTDefenseConfig):
    inner_steps: int = field(default=4, metadata={"help": "K: inner attack steps per outer step (paper: 64)"})
    inner_lrs: list[float] = field(default_factory=lambda: [5e-5, 1e-4, 2e-4], metadata={
        "help": "learning rates an inner attack is sampled from (around the LoRA attack's 1e-4)"})
    inner_data: list[str] = field(default_factory=lambda: ["harmful"], metadata={
        "help": "data an inner attack is sampled from: harmful (the pairs' harmful answers) | benign (utility)"})
    inner_rank: int = field(default=8, metadata={"help": "rank of the inner attack's LoRA patch (the attack grid's)"})
    inner_alpha: float = field(default=16.0, metadata={"help": "alpha of the inner attack's LoRA patch"})
    tr_every: int = field(default=2, metadata={"help": "tamper-resistance gradient every this many inner steps (and at K)"})
    w_tamper: float = field(default=4.0, metadata={"help": "weight of the tamper-resistance gradient (paper: 4)"})
    w_rep: float = field(default=1.0, metadata={"help": "weight of the retain representation distance"})
    tr_beta: float = field(default=2.0, metadata={"help": "DPO beta of the tamper-resistance loss (per-token margins)"})
    random_map_steps: int = field(default=0, metadata={
        "help": "first outer steps spent mapping harmful hidden states to random directions (0: none)"})

    def validate(self) -> None:
        super().validate()
        self.validate_pairs()
        if isinstance(self.inner_data, str):
            self.inner_data = [x.strip() for x in self.inner_data.split(",") if x.strip()]
        if isinstance(self.inner_lrs, (int, float, str)):
            self.inner_lrs = [float(x) for x in str(self.inner_lrs).split(",")]
        for name in ("inner_steps", "inner_rank", "tr_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"field {name!r}: must be >= 1, got {getattr(self, name)}")
        if not self.inner_lrs or not all(float(x) > 0 and math.isfinite(float(x)) for x in self.inner_lrs):
            raise ConfigError(f"field 'inner_lrs': positive learning rates, got {self.inner_lrs}")
        bad = [d for d in self.inner_data if d not in INNER_DATA]
        if not self.inner_data or bad:
            raise ConfigError(f"field 'inner_data': from {', '.join(INNER_DATA)}, got {self.inner_data}")
        for name in ("w_tamper", "w_rep", "random_map_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"field {name!r}: must be >= 0, got {getattr(self, name)}")
        if not self.tr_beta > 0:
            raise ConfigError(f"field 'tr_beta': must be > 0, got {self.tr_beta}")


def tr_schedule(k: int, every: int) -> dict[int, float]:
    """Inner steps (1-based) at which the tamper-resistance gradient is taken, with weights ∝ the
    step and summing to 1: later (more attacked) points count more."""
    at = sorted({j for j in range(every, k + 1, every)} | {k})
    total = sum(at)
    return {j: j / total for j in at}


class TARObjective(Objective):
    uses_pairs = True

    def setup(self, s: DefenseSession) -> None:
        cfg = s.cfg
        self.sites = find_sites(s.model, cfg.lora_targets)
        self.weights = tr_schedule(cfg.inner_steps, cfg.tr_every)
        n = s.steps * cfg.inner_steps * cfg.harm_batch_size
        harmful = [h for _, h in s.pairs]
        benign = fit_pool_or_warn(s.lm.tokenizer, s.data.utility, cfg.format, cfg.max_length, "benign inner example")
        self.inner = {"harmful": ordered_examples(harmful, n, cfg.seed + 1)}
        if "benign" in cfg.inner_data:
            self.inner["benign"] = ordered_examples(benign, n, cfg.seed + 2)
        g = torch.Generator().manual_seed(cfg.seed + 3)
        d = s.engine.unwrap(s.model).get_input_embeddings().weight.shape[1]
        self.directions = None
        if cfg.random_map_steps:
            n_layers = s.engine.unwrap(s.model).config.num_hidden_layers
            self.directions = F.normalize(torch.randn(n_layers, d, generator=g), dim=-1).to(s.engine.device)

    # ---- the inner attack ------------------------------------------------------------------------
    def attack(self, s: DefenseSession, i: int) -> dict:
        """The attack of outer step ``i``, a function of (seed, i) alone: its lr and data."""
        rng = random.Random(f"tamperlab-tar:{s.cfg.seed}:{i}")
        return {"lr": float(rng.choice(list(s.cfg.inner_lrs))), "data": rng.choice(list(s.cfg.inner_data))}

    def fresh_patch(self, s: DefenseSession, i: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """A LoRA-initialised patch per site: A (r, in) ~ U(±1/√in) as PEFT's kaiming init, B = 0."""
        g = torch.Generator().manual_seed(s.cfg.seed * 100_003 + i)
        r, dev = s.cfg.inner_rank, s.engine.device
        out = {}
        for site in self.sites:
            bound = 1 / math.sqrt(site.in_features)
            a = ((torch.rand(r, site.in_features, generator=g) * 2 - 1) * bound).to(dev).requires_grad_(True)
            b = torch.zeros(site.out_features, r, device=dev, requires_grad=True)
            out[site.name] = (a, b)
        return out

    def tamper_loss(self, s: DefenseSession, chunk, patches) -> torch.Tensor:
        """Prefer each pair's refusal over its harmful answer under ``patches`` (DPO, per token)."""
        ref_b, harm_b = s.features([c[0] for c in chunk]), s.features([c[1] for c in chunk])
        scale = s.cfg.inner_alpha / s.cfg.inner_rank
        with low_rank_patch(s.model, patches, scale):
            lp_ref = sequence_logps(s.model, ref_b, average=True)
            lp_harm = sequence_logps(s.model, harm_b, average=True)
        return preference_loss(lp_ref, lp_harm, s.reference_logps(ref_b, [("tar", c[0].id, 0) for c in chunk]),
                               s.reference_logps(harm_b, [("tar", c[1].id, 1) for c in chunk]),
                               s.cfg.tr_beta, "dpo")

    def tamper_gradient(self, s: DefenseSession, i: int) -> tuple[list[torch.Tensor], dict]:
        """Σ_k w_k ∇_w L_TR(w, patch_k) over the inner attack of step ``i``, and what happened in it
        (the sampled lr and data, inner losses, the weighted TR loss, the final patch). The defended
        weights are only read: the inner optimizer holds the patch alone."""
        cfg = s.cfg
        atk = self.attack(s, i)
        patches = self.fresh_patch(s, i)
        opt = torch.optim.AdamW([t for uv in patches.values() for t in uv], lr=atk["lr"], weight_decay=0.0)
        scale = cfg.inner_alpha / cfg.inner_rank
        grads = [torch.zeros_like(p) for p in s.params]
        chunk_tr = s.pair_chunk(i)
        inner_losses, tr_value = [], 0.0
        flags = [p.requires_grad for p in s.params]
        b = cfg.harm_batch_size
        for k in range(1, cfg.inner_steps + 1):
            j = (i * cfg.inner_steps + k - 1) * b
            batch = s.features(self.inner[atk["data"]][j:j + b])
            for p in s.params:
                p.requires_grad_(False)  # the attack's loss must not reach the defended weights
            try:
                with low_rank_patch(s.model, patches, scale):
                    loss = nll(s.model, batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            finally:
                for p, f in zip(s.params, flags):
                    p.requires_grad_(f)
            inner_losses.append(float(loss.detach()))
            if k in self.weights:
                fixed = {n: (a.detach(), v.detach()) for n, (a, v) in patches.items()}
                tr = self.tamper_loss(s, chunk_tr, fixed)
                g = torch.autograd.grad(tr, s.params, allow_unused=True)
                for acc, x in zip(grads, g):
                    if x is not None:
                        acc.add_(x, alpha=self.weights[k])
                tr_value += self.weights[k] * float(tr.detach())
        return grads, {"inner_lr": atk["lr"], "inner_data": atk["data"], "inner_first": inner_losses[0],
                       "inner_last": inner_losses[-1], "tamper": tr_value, "patches": patches}

    def random_map_gradient(self, s: DefenseSession, i: int) -> tuple[list[torch.Tensor], dict]:
        """Warm start: ∇ of mean_l (1 − cos(h_l, r_l)) over the harmful answers' tokens."""
        chunk = s.pair_chunk(i)
        harm = s.features([c[1] for c in chunk])
        out = s.model(input_ids=harm["input_ids"], attention_mask=harm["attention_mask"], output_hidden_states=True)
        mask = harm["labels"] != IGNORE_INDEX
        losses = [(1 - F.cosine_similarity(h[mask].float(), self.directions[l].unsqueeze(0), dim=-1)).mean()
                  for l, h in enumerate(out.hidden_states[1:])]
        loss = torch.stack(losses).mean()
        g = torch.autograd.grad(loss, s.params, allow_unused=True)
        return [torch.zeros_like(p) if x is None else x for p, x in zip(s.params, g)], {"random_map": float(loss.detach())}

    # ---- the outer step --------------------------------------------------------------------------
    def retain(self, s: DefenseSession, batch: dict) -> tuple[torch.Tensor, dict]:
        out = s.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
        ref = s.reference(batch, hidden=True)
        lm = mean_nll(out.logits, batch["labels"])
        rep = torch.stack([relative_distance(h, r, batch["attention_mask"])
                           for h, r in zip(out.hidden_states[1:], ref.hidden_states[1:])]).mean()
        return lm + s.cfg.w_rep * rep, {"retain_lm": float(lm.detach()), "rep_distance": float(rep.detach())}

    def step(self, s: DefenseSession, i: int) -> dict:
        cfg = s.cfg
        if i < cfg.random_map_steps:
            grads, info = self.random_map_gradient(s, i)
            tr_value = info["random_map"]
        else:
            grads, info = self.tamper_gradient(s, i)
            info.pop("patches")
            tr_value = info["tamper"]

        def loss(mb):
            retain, nums = self.retain(s, mb["mix"])
            lin = sum((g * p).sum() for g, p in zip(grads, s.params))  # gradient: the tamper gradient
            total = retain + cfg.w_tamper * (tr_value + lin - lin.detach())
            return total, nums

        row = s.engine.optimize(s.player, s.micro_batches(i), loss, s.weight)
        return {**row, **{k: v for k, v in info.items() if k != "inner_data"},
                "inner_harmful": float(info.get("inner_data", "harmful") == "harmful")}

    def describe(self, s: DefenseSession) -> str:
        c = s.cfg
        return (f"TAR: per outer step a sampled LoRA-patch attack (r{c.inner_rank}, lr from {list(c.inner_lrs)}, "
                f"data from {list(c.inner_data)}) of {c.inner_steps} inner steps; tamper-resistance (DPO) gradients "
                f"at inner steps {sorted(self.weights)} (weights {[round(w, 2) for w in self.weights.values()]}) x "
                f"{c.w_tamper}, plus retain NLL + {c.w_rep} x representation distance.")


defend_tar = session_defense(TARObjective, "TAR")


DEFENSES.register("tar", defend_tar, config_cls=TARConfig,
                  help="TAR: first-order meta-learning against sampled inner fine-tuning attacks")
