"""Numbers do not move where the maths did not change: tiny-model losses and weights of refusal
SFT, AntiDote and a fine-tuning attack, pinned from the code *before* the one-engine refactor
(tests/fixtures/pinned_training.json; regenerate only on a deliberate change, with
TAMPERLAB_REPIN=1, and say why in the commit)."""
import json
import os
from pathlib import Path

import pytest
import torch

FIXTURE = Path(__file__).parent / "fixtures" / "pinned_training.json"


def _log(path: Path, keys: tuple[str, ...]) -> list[dict]:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return [{k: r[k] for k in keys if k in r} for r in rows]


def _sft(tiny, tmp_path) -> dict:
    from tamperlab.defenses import defend
    from tamperlab.models import load_model

    out = defend(tiny, "sft", overrides={"steps": 3, "batch_size": 2, "max_length": 64, "warmup_steps": 1,
                                         "check_every": 0, "data_recipe": "v1",
                                         "lora_targets": ["q_proj", "v_proj"]}, out_dir=tmp_path / "sft")
    return {"log": _log(out / "train_log.jsonl", ("step", "loss")), "weights": _sums(load_model(str(out)).model)}


def _sums(model) -> dict:
    """Sum and mean |w| per tensor: equal up to float rounding where the maths is the same (a hash
    of the weights would flag a last-bit difference of a fused optimizer kernel)."""
    return {n: [float(p.double().sum()), float(p.double().abs().mean())] for n, p in model.state_dict().items()}


# AntiDote's settings when the pins were taken (its defaults moved on since: per-token preference
# losses, an NLL anchor, per-example bounded patches on every projection; those are new maths)
LEGACY_ANTIDOTE = {"preference_norm": "sum", "beta": 0.1, "w_anchor": 0.0, "adv_rank": 4,
                   "adv_targets": ["q_proj", "k_proj", "v_proj", "o_proj"], "adv_per_example": False,
                   "adv_max_rel_norm": 0.0}


def _antidote(tiny, tmp_path) -> dict:
    from tests.test_antidote import _trainer

    with _trainer(tiny, tmp_path / "ad", **LEGACY_ANTIDOTE) as t:
        t.train()
        keys = ("step", "phase", "adv_loss", "patch_norm", "loss", "safety", "lm", "kl", "lr")
        log = [{k: v for k, v in r.items() if r["phase"] == "adversary" or k != "patch_norm"}  # newly logged
               for r in _log(tmp_path / "ad" / "train_log.jsonl", keys)]
        return {"log": log,
                "defender_sum": float(sum(p.detach().double().sum() for p in t.def_params)),
                "adversary_sum": float(sum(p.detach().double().sum() for p in t.adversary.parameters()))}


def _attack(tiny, tmp_path) -> dict:
    from tamperlab.attacks.finetune import AttackConfig, run_attack

    seen = {}
    cfg = AttackConfig(steps=3, batch_size=2, data_limit=8, max_length=64, checkpoint_steps=[0, 3], lr=1e-3,
                       scheduler="cosine-warmup", warmup_steps=1, lora_targets=["q_proj", "v_proj"])
    run_attack(tiny, cfg, tmp_path / "atk", on_checkpoint=lambda s, v: seen.__setitem__(s, _sums(v.model)))
    return {"log": _log(tmp_path / "atk" / "train_log.jsonl", ("step", "loss", "learning_rate")),
            "weights": {str(k): v for k, v in sorted(seen.items())}}


def _close(a, b, path=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6), path
    else:
        assert a == b, path


@pytest.mark.parametrize("name", ["sft", "antidote", "attack"])
def test_pinned(name, tiny, tmp_path):
    torch.manual_seed(0)
    got = {"sft": _sft, "antidote": _antidote, "attack": _attack}[name](tiny, tmp_path)
    pins = json.loads(FIXTURE.read_text()) if FIXTURE.exists() else {}
    if os.environ.get("TAMPERLAB_REPIN"):
        pins[name] = got
        FIXTURE.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
    _close(pins[name], got, name)
