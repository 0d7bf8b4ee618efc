"""The training core defenses share: an Accelerate loop helper with mixed precision, gradient
accumulation, safetensors checkpoints of trainable weights *and* optimizer state (nothing is ever
unpickled), resume, a per-step JSONL log and a NaN/inf guard.

A defense writes its own step (any number of models, optimizers and losses: AntiDote alternates two
players) and calls ``engine.log``/``engine.maybe_checkpoint``; the engine owns everything else."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..utils.io import append_jsonl, atomic_write_json
from .sft import DivergedError

CKPT = "checkpoint"


def _accelerator(mixed_precision: str, grad_accum: int):
    from accelerate import Accelerator

    mp = mixed_precision
    if mp == "auto":
        mp = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return Accelerator(mixed_precision=mp, gradient_accumulation_steps=grad_accum)


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


class Engine:
    def __init__(self, out_dir: str | Path, *, mixed_precision: str = "auto", grad_accum: int = 1,
                 checkpoint_every: int = 0, log_name: str = "train_log.jsonl"):
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.acc = _accelerator(mixed_precision, grad_accum)
        self.checkpoint_every = checkpoint_every
        self.log_path = self.out / log_name
        self.last_good: int | None = None

    @property
    def device(self) -> torch.device:
        return self.acc.device

    def prepare(self, *objs):
        return self.acc.prepare(*objs)

    def backward(self, loss: torch.Tensor) -> None:
        self.acc.backward(loss)

    def log(self, step: int, row: dict) -> None:
        """Append the step's numbers; a non-finite loss stops training, keeping the last checkpoint."""
        bad = {k: v for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)}
        if bad:
            where = (f"the last good checkpoint (step {self.last_good}) is in {self.out / CKPT}"
                     if self.last_good is not None else "no checkpoint was written yet")
            raise DivergedError(f"step {step}: {', '.join(f'{k}={v}' for k, v in bad.items())}; "
                                f"{where}; lower the learning rate")
        if self.acc.is_main_process:
            append_jsonl(self.log_path, [{"step": step, **row}])

    def save(self, step: int, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer],
             extra: dict | None = None) -> None:
        """Trainable weights + optimizer state + RNG, as safetensors + JSON, swapped in atomically."""
        if not self.acc.is_main_process:
            return
        tensors, meta = {}, {"step": step, "extra": extra or {}, "optimizers": {}}
        for name, mod in modules.items():
            for pname, p in trainable(self.acc.unwrap_model(mod)):
                tensors[f"{name}::{pname}"] = p.detach().cpu().contiguous()
        for name, opt in optimizers.items():
            t, m = _flatten_optimizer(opt, f"opt::{name}")
            tensors.update(t)
            meta["optimizers"][name] = m
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

    def maybe_checkpoint(self, step: int, total: int, modules, optimizers, extra=None) -> None:
        if self.checkpoint_every and (step % self.checkpoint_every == 0) and step < total:
            self.save(step, modules, optimizers, extra)

    def resume(self, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer]) -> tuple[int, dict]:
        """Load the last checkpoint, if any: (step it was taken at, extra), else (0, {})."""
        final = self.out / CKPT
        if not (final / "meta.json").exists():
            old = self.out / (CKPT + ".old")  # crash between the two renames
            if (old / "meta.json").exists():
                old.rename(final)
            else:
                return 0, {}
        meta = json.loads((final / "meta.json").read_text())
        tensors = load_file(str(final / "state.safetensors"))
        for name, mod in modules.items():
            params = dict(self.acc.unwrap_model(mod).named_parameters())
            with torch.no_grad():
                for key, t in tensors.items():
                    if key.startswith(name + "::"):
                        params[key.split("::", 1)[1]].copy_(t)
        for name, opt in optimizers.items():
            _unflatten_optimizer(opt, f"opt::{name}", tensors, meta["optimizers"][name])
        torch.set_rng_state(tensors["rng::torch"])
        self.last_good = meta["step"]
        if self.log_path.exists():  # drop log lines past the checkpoint: they will be re-logged
            lines = [ln for ln in self.log_path.read_text().splitlines()
                     if ln.strip() and json.loads(ln).get("step", 0) <= meta["step"]]
            self.log_path.write_text("".join(ln + "\n" for ln in lines))
        return meta["step"], meta["extra"]
