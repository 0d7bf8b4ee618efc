"""The one training engine every defense runs on (Accelerate).

It owns what must not be written twice: optimizers and named schedules, gradient accumulation
(``accelerator.accumulate``; micro-batches weighted by their share of the step, so 1 × k and k × 1
give one update), mixed precision with ``accelerator.clip_grad_norm_`` (which unscales fp16
gradients before measuring them), a NaN/inf guard that stops *before* a bad update, safetensors
checkpoints of trainable weights, optimizer and schedule state and RNG (nothing is unpickled),
exact resume, a per-step JSONL log and a progress bar.

A defense supplies a loss for a micro-batch (``Engine.optimize``), or a custom step that makes
several such moves (AntiDote alternates two players; TAR's inner loop would be another), and runs
them through ``Engine.run``."""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from safetensors.torch import load_file, save_file

from ..utils.io import append_jsonl, atomic_write_json
from ..utils.progress import progress
from .schedules import make_scheduler

CKPT = "checkpoint"


class DivergedError(RuntimeError):
    """The loss became NaN/inf: stop, keep what was saved before."""


def non_finite(row: dict, skip: tuple[str, ...] = ("grad_norm",)) -> dict:
    """The logged numbers that are NaN/inf (an fp16 overflow's inf grad norm is a skipped step,
    not divergence): the one rule the engine and the Trainer path both stop on."""
    return {k: v for k, v in row.items() if isinstance(v, float) and not math.isfinite(v) and k not in skip}


def resolve_precision(mixed_precision: str) -> str:
    """auto -> bf16 where the GPU supports it, else no (fp32)."""
    if mixed_precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return mixed_precision


def _flatten_optimizer(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            key = f"{prefix}.state.{idx}.{k}"
            if torch.is_tensor(v):
                tensors[key] = v.detach().cpu().contiguous()
            else:
                scalars[key] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: dict, meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        if not key.startswith(prefix + ".state."):
            continue
        idx, k = key[len(prefix) + 7:].split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def trainable(mod: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """What a checkpoint holds: a PEFT model's adapter weights, or every weight of anything else
    (players toggle requires_grad, so that flag cannot decide)."""
    params = list(mod.named_parameters())
    if hasattr(mod, "peft_config"):
        return [(n, p) for n, p in params if "lora_" in n]
    return params


def decay_groups(params: Iterable[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict]:
    """AdamW groups as the HF Trainer makes them: no decay on biases and norm weights (1-D)."""
    params = [(n, p) for n, p in params if p.requires_grad]
    decay = [p for n, p in params if p.ndim >= 2 and "norm" not in n.lower()]
    rest = [p for n, p in params if not (p.ndim >= 2 and "norm" not in n.lower())]
    return [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0})
            if g["params"]]


@dataclass
class Player:
    """One trained module with its parameters, optimizer, schedule and clipping norm."""
    name: str
    module: torch.nn.Module  # prepared by the engine
    params: list[torch.nn.Parameter]
    optimizer: Any  # accelerate's AcceleratedOptimizer (skips steps while accumulating)
    scheduler: Any
    max_grad_norm: float

    @property
    def lr(self) -> float:
        """The learning rate the next optimizer step uses."""
        return float(self.scheduler.get_last_lr()[0])


class Engine:
    def __init__(self, out_dir: str | Path, *, mixed_precision: str = "auto", grad_accum: int = 1,
                 checkpoint_every: int = 0, log_name: str = "train_log.jsonl"):
        from accelerate import Accelerator

        if grad_accum < 1:
            raise ValueError(f"field 'grad_accum': must be >= 1, got {grad_accum}")
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.grad_accum = grad_accum
        self.acc = Accelerator(mixed_precision=resolve_precision(mixed_precision),
                               gradient_accumulation_steps=grad_accum)
        self.checkpoint_every = checkpoint_every
        self.log_path = self.out / log_name
        self.last_good: int | None = None
        self.players: dict[str, Player] = {}
        self._prepared: dict[int, torch.nn.Module] = {}

    @property
    def device(self) -> torch.device:
        return self.acc.device

    def prepare(self, *objs):
        return self.acc.prepare(*objs)

    def unwrap(self, module: torch.nn.Module) -> torch.nn.Module:
        return self.acc.unwrap_model(module)

    # ---- players -------------------------------------------------------------------------------
    def add_player(self, name: str, module: torch.nn.Module, *, lr: float, total_steps: int,
                   params: list[torch.nn.Parameter] | None = None, scheduler: str = "constant",
                   warmup_steps: int = 0, weight_decay: float = 0.0, max_grad_norm: float = 1.0,
                   optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.AdamW) -> Player:
        """Prepare ``module`` (once, however many players share it) and give it an optimizer
        (AdamW) over ``params`` (default: its trainable parameters) with the named schedule."""
        key = id(module)
        if key not in self._prepared:
            self._prepared[key] = self.acc.prepare(module)
        prepared = self._prepared[key]
        if params is None:
            named = list(self.unwrap(prepared).named_parameters())
            params = [p for _, p in named if p.requires_grad]
            groups = decay_groups(named, weight_decay)
        else:
            groups = [{"params": list(params), "weight_decay": weight_decay}]
        opt = self.acc.prepare(optimizer(groups, lr=lr))
        sched = make_scheduler(opt.optimizer, scheduler, warmup_steps, total_steps)  # stepped by us, not Accelerate
        player = Player(name, prepared, list(params), opt, sched, max_grad_norm)
        self.players[name] = player
        return player

    def optimize(self, player: Player, micro_batches: list, loss_fn: Callable[[Any], tuple[torch.Tensor, dict]],
                 weight_fn: Callable[[Any], float] | None = None) -> dict:
        """One optimizer step of ``player`` over ``micro_batches`` (the engine's ``grad_accum`` of
        them). ``loss_fn(mb) -> (loss, numbers to log)``; each micro-batch's loss counts by its
        share ``weight_fn(mb) / sum`` (default: equal), so a per-token mean with ``weight_fn`` =
        its token count gives the same update in 1 × k as in k × 1. Returns the logged numbers
        (weighted means), ``grad_norm`` (unscaled, before clipping) and the ``lr`` used."""
        if len(micro_batches) != self.grad_accum:
            raise ValueError(f"{player.name}: {len(micro_batches)} micro-batches for grad_accum={self.grad_accum}")
        weights = [float(weight_fn(mb)) if weight_fn else 1.0 for mb in micro_batches]
        total = sum(weights) or 1.0
        lr = player.lr
        row: dict[str, float] = {}
        gnorm = float("nan")
        for mb, w in zip(micro_batches, weights):
            with self.acc.accumulate(player.module):
                loss, numbers = loss_fn(mb)
                value = float(loss.detach())
                if not math.isfinite(value):
                    self._diverged(f"{player.name} loss={value}")
                # Accelerate divides by grad_accum; the share restores each micro-batch's weight
                self.acc.backward(loss * (self.grad_accum * w / total))
                for k, v in {"loss": value, **numbers}.items():
                    row[k] = row.get(k, 0.0) + float(v) * w / total
                if self.acc.sync_gradients:
                    gnorm = float(self.acc.clip_grad_norm_(player.params, player.max_grad_norm))
                player.optimizer.step()
                if self.acc.sync_gradients and not player.optimizer.step_was_skipped:
                    player.scheduler.step()  # an fp16 overflow skips the step and the schedule
                player.optimizer.zero_grad(set_to_none=True)
        return {**row, "grad_norm": gnorm, "lr": lr}

    # ---- logging, checkpoints, resume -----------------------------------------------------------
    def _diverged(self, what: str, step: int | None = None) -> None:
        where = (f"the last good checkpoint (step {self.last_good}) is in {self.out / CKPT}"
                 if self.last_good is not None else "no checkpoint was written yet")
        at = f"step {step}: " if step is not None else ""
        raise DivergedError(f"{at}{what}; {where}; lower the learning rate")

    def log(self, step: int, row: dict) -> None:
        """Append the step's numbers; a non-finite loss stops training, keeping the last checkpoint."""
        bad = non_finite(row)
        if bad:
            self._diverged(", ".join(f"{k}={v}" for k, v in bad.items()), step)
        if self.acc.is_main_process:
            append_jsonl(self.log_path, [{"step": step, **row}])

    def _modules(self, modules=None) -> dict[str, torch.nn.Module]:
        if modules is not None:
            return modules
        return {n: p.module for n, p in self.players.items()}

    def save(self, step: int, modules: dict[str, torch.nn.Module] | None = None,
             optimizers: dict[str, torch.optim.Optimizer] | None = None, extra: dict | None = None) -> None:
        """Trainable weights + optimizer and schedule state + RNG, as safetensors + JSON, swapped
        in atomically. With no arguments: every player."""
        if not self.acc.is_main_process:
            return
        modules = self._modules(modules)
        if optimizers is None:
            optimizers = {n: p.optimizer for n, p in self.players.items()}
        tensors, meta = {}, {"step": step, "extra": extra or {}, "optimizers": {}, "schedulers": {}}
        seen = set()
        for name, mod in modules.items():
            if id(mod) in seen:
                continue  # players sharing a module: one copy
            seen.add(id(mod))
            for pname, p in trainable(self.unwrap(mod)):
                tensors[f"{name}::{pname}"] = p.detach().cpu().contiguous()
        for name, opt in optimizers.items():
            t, m = _flatten_optimizer(opt, f"opt::{name}")
            tensors.update(t)
            meta["optimizers"][name] = m
        for name, p in self.players.items():
            meta["schedulers"][name] = p.scheduler.state_dict()  # plain numbers (lr_lambdas: None per group)
        tensors["rng::torch"] = torch.get_rng_state()
        tmp = self.out / (CKPT + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file(tensors, str(tmp / "state.safetensors"))
        atomic_write_json(tmp / "meta.json", meta)
        final = self.out / CKPT
        old = self.out / (CKPT + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        self.last_good = step

    def maybe_checkpoint(self, step: int, total: int, modules=None, optimizers=None, extra=None) -> None:
        if self.checkpoint_every and (step % self.checkpoint_every == 0) and step < total:
            self.save(step, modules, optimizers, extra)

    def resume(self, modules: dict[str, torch.nn.Module] | None = None,
               optimizers: dict[str, torch.optim.Optimizer] | None = None) -> tuple[int, dict]:
        """Load the last checkpoint, if any: (step it was taken at, extra), else (0, {})."""
        modules = self._modules(modules)
        if optimizers is None:
            optimizers = {n: p.optimizer for n, p in self.players.items()}
        final = self.out / CKPT
        if not (final / "meta.json").exists():
            old = self.out / (CKPT + ".old")  # crash between the two renames
            if (old / "meta.json").exists():
                old.rename(final)
            else:
                self.log_path.unlink(missing_ok=True)  # a run that crashed before its first checkpoint restarts
                return 0, {}
        meta = json.loads((final / "meta.json").read_text())
        tensors = load_file(str(final / "state.safetensors"))
        for name, mod in modules.items():
            params = dict(self.unwrap(mod).named_parameters())
            with torch.no_grad():
                for key, t in tensors.items():
                    if key.startswith(name + "::"):
                        params[key.split("::", 1)[1]].copy_(t)
        for name, opt in optimizers.items():
            _unflatten_optimizer(opt, f"opt::{name}", tensors, meta["optimizers"][name])
        for name, state in meta.get("schedulers", {}).items():
            if name in self.players:
                self.players[name].scheduler.load_state_dict(state)
        torch.set_rng_state(tensors["rng::torch"])
        self.last_good = meta["step"]
        if self.log_path.exists():  # drop log lines past the checkpoint: they will be re-logged
            lines = [ln for ln in self.log_path.read_text().splitlines()
                     if ln.strip() and json.loads(ln).get("step", 0) <= meta["step"]]
            self.log_path.write_text("".join(ln + "\n" for ln in lines))
        return meta["step"], meta["extra"]

    def run(self, total: int, step_fn: Callable[[int], int], description: str = "training",
            on_resume: Callable[[int], None] | None = None,
            after_step: Callable[[int], None] | None = None) -> int:
        """Resume, then call ``step_fn(step)`` until ``total`` steps are done; ``step_fn`` makes
        one or more steps (a block) from ``step`` and returns how many. ``after_step(step)`` runs
        after each call (dev checks), before the checkpoint, so a resume never repeats it."""
        start, _ = self.resume()
        if on_resume:
            on_resume(start)
        with progress(description, total) as advance:
            advance(start)
            step = start
            while step < total:
                n = step_fn(step)
                if n < 1:
                    raise RuntimeError(f"step function made no progress at step {step}")
                step += n
                advance(n)
                if after_step:
                    after_step(step)
                self.maybe_checkpoint(step, total)
        return step
