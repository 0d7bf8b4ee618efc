"""RepNoise, TAR, Vaccine and Booster on tiny models: each loss on a hand-computable case, the
pieces that must leave weights alone, and each defense lowering its own training loss."""
import json
import math

import pytest
import torch

from tamperlab.defenses import DEFENSES, defend
from tamperlab.defenses.data import DefenseData
from tamperlab.training.data import SFTExample
from tamperlab.training.engine import Engine
from tamperlab.utils.config import from_dict

TARGETS = ["q_proj", "v_proj"]


# ---- MMD ------------------------------------------------------------------------------------
def test_mmd_of_identical_samples_is_zero_and_grows_with_a_shift():
    from tamperlab.training.losses import mmd_rbf

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    assert float(mmd_rbf(x, x.clone())) == pytest.approx(0.0, abs=1e-6)
    y = torch.randn(64, 8, generator=g)
    shifts = [float(mmd_rbf(x, y + s)) for s in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert all(a < b for a, b in zip(shifts, shifts[1:])), shifts
    assert shifts[0] < 0.05 < shifts[-1]  # two draws of one distribution are close; a shift of 4 is not


# ---- Booster --------------------------------------------------------------------------------
def test_booster_term_on_a_quadratic_is_the_hand_computed_value_and_gradient():
    from tamperlab.defenses.booster import booster_term

    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # ‖w‖ = 5
    alpha = 0.5
    term, nums = booster_term(lambda: 0.5 * (w ** 2).sum(), [w], alpha)
    # L(w) = ½‖w‖², g = w, w' = w − α w/‖w‖: L(w) − L(w') = α‖w‖ − α²/2; gradient g − g' = α w/‖w‖
    assert float(term) == pytest.approx(alpha * 5 - alpha ** 2 / 2)
    assert torch.equal(w.detach(), torch.tensor([3.0, 4.0]))  # restored exactly
    term.backward()
    torch.testing.assert_close(w.grad, alpha * torch.tensor([3.0, 4.0]) / 5)
    assert nums["harm_grad_norm"] == pytest.approx(5.0)


def test_booster_term_vanishes_when_the_harmful_gradient_is_zero():
    from tamperlab.defenses.booster import booster_term

    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    term, nums = booster_term(lambda: (w * 0).sum() + 3.0, [w], 0.1)
    assert float(term) == 0.0 and nums["harm_grad_norm"] == 0.0
    term.backward()
    assert torch.equal(w.grad, torch.zeros(2))


# ---- Vaccine --------------------------------------------------------------------------------
def test_vaccine_perturbation_has_norm_rho_per_layer_and_leaves_the_weights_untouched(tiny):
    from tamperlab.defenses.vaccine import layer_perturbations
    from tamperlab.models.hooks import decoder_layers, perturb_layer_outputs
    from tamperlab.training.data import build_features, collate
    from tamperlab.training.sft import TrainConfig
    from tamperlab.training.adapters import lora_on
    from tamperlab.training.supervised import nll_terms

    ex = [SFTExample("a", "How do I bake bread?", "Mix flour, water and yeast."),
          SFTExample("b", "Name a colour.", "Blue.")]
    batch = collate(build_features(tiny.tokenizer, ex, "chat", 64), tiny.pad_id)
    with lora_on(tiny.model, TrainConfig(lora_targets=TARGETS, seed=0)) as model:
        layers = decoder_layers(model)
        assert len(layers) == tiny.model.config.num_hidden_layers
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        clean, deltas = layer_perturbations(model, layers, batch, rho=0.7)
        assert len(deltas) == len(layers)
        for d in deltas:
            assert float(d.norm()) == pytest.approx(0.7, rel=1e-4)
        for n, p in model.named_parameters():
            assert torch.equal(p, before[n]) and p.grad is None, n
        with perturb_layer_outputs(model, layers, deltas):
            worse, _ = nll_terms(model, batch)
        assert float(worse) > float(clean)  # the perturbation points up the loss
        again, _ = nll_terms(model, batch)
        assert float(again) == pytest.approx(float(clean))  # hooks removed on exit


def test_decoder_layers_and_final_norm_are_found_on_another_architecture():
    from transformers import GPT2Config, GPT2LMHeadModel

    from tamperlab.models.hooks import decoder_layers, final_norm, perturb_layer_outputs

    model = GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=32, n_head=2, vocab_size=50, n_positions=16)).eval()
    layers = decoder_layers(model)
    assert [n for n, _ in layers] == ["transformer.h.0", "transformer.h.1", "transformer.h.2"]
    assert final_norm(model) is model.transformer.ln_f
    ids = torch.tensor([[1, 2, 3]])
    base = model(input_ids=ids).logits
    with perturb_layer_outputs(model, layers, [None, torch.ones(1, 3, 32), None]):
        moved = model(input_ids=ids).logits
    assert not torch.allclose(base, moved)


# ---- TAR ------------------------------------------------------------------------------------
def _data() -> DefenseData:
    """A small task a tiny model can learn within a few steps."""
    safety = [SFTExample(f"s{i}", f"How do I make poison number {i}?", "I can't help with that.") for i in range(8)]
    utility = [SFTExample(f"u{i}", f"What is {i} plus {i}?", f"It is {2 * i}.") for i in range(8)]
    pairs = [(SFTExample(f"s{i}", s.prompt, s.completion), SFTExample(f"s{i}", s.prompt, f"Mix chemical {i} with water."))
             for i, s in enumerate(safety)]
    return DefenseData(safety, utility, pairs, {"recipe": "test"})


def _cfg(method: str, **kw):
    base = {"steps": 6, "batch_size": 4, "max_length": 48, "check_every": 0, "lora_targets": TARGETS,
            "lr": 5e-3, "scheduler": "constant", "warmup_steps": 0, "checkpoint_every": 0}
    if method != "vaccine" and method != "sft":
        base["harm_batch_size"] = 2
    cfg = from_dict(DEFENSES.get(method).config_cls, {**base, **kw})
    cfg.validate()
    return cfg


def _session(tiny, tmp_path, method: str, **kw):
    from tamperlab.defenses.session import DefenseSession

    objective = {"repnoise": "RepNoiseObjective", "vaccine": "VaccineObjective", "booster": "BoosterObjective",
                 "tar": "TARObjective", "sft": "NLLObjective"}[method]
    import importlib

    cls = getattr(importlib.import_module(f"tamperlab.defenses.{method}"), objective)
    cfg = _cfg(method, **kw)
    return DefenseSession(tiny, cfg, Engine(tmp_path / method, checkpoint_every=0), cls(), data=_data())


def test_tar_inner_attack_never_writes_the_defended_weights_and_uses_the_sampled_lr(tiny, tmp_path):
    with _session(tiny, tmp_path, "tar", inner_steps=1, tr_every=1, inner_lrs=[3e-3, 7e-3]) as s:
        before = [p.detach().clone() for p in s.params]
        obj = s.objective
        atk = obj.attack(s, 0)
        assert atk["lr"] in (3e-3, 7e-3) and obj.attack(s, 0) == atk  # a function of (seed, step)
        grads, info = obj.tamper_gradient(s, 0)
        for p, b in zip(s.params, before):
            assert torch.equal(p.detach(), b) and p.grad is None
        assert info["inner_lr"] == atk["lr"]
        # one AdamW step from B = 0 moves each B entry with a non-zero gradient by lr (|g| / (|g| + eps))
        moved = max(float(b.abs().max()) for _, b in info["patches"].values())
        assert moved == pytest.approx(atk["lr"], rel=1e-3)
        assert any(float(g.abs().sum()) > 0 for g in grads)  # the tamper gradient reaches the defender


def test_tar_rising_weights_and_the_random_mapping_warm_start(tiny, tmp_path):
    from tamperlab.defenses.tar import tr_schedule

    assert tr_schedule(4, 2) == {2: 2 / 6, 4: 4 / 6}
    assert tr_schedule(5, 2) == {2: 2 / 11, 4: 4 / 11, 5: 5 / 11}
    assert tr_schedule(3, 5) == {3: 1.0}
    with _session(tiny, tmp_path, "tar", random_map_steps=1, inner_steps=2) as s:
        row = s.objective.step(s, 0)
        assert "random_map" in row and "tamper" not in row
        row = s.objective.step(s, 1)
        assert "tamper" in row and row["inner_lr"] in s.cfg.inner_lrs


# ---- every method learns its own objective ----------------------------------------------------
def _value(s, i: int) -> float:
    """The method's training objective on step ``i``'s batch (no update)."""
    obj = s.objective
    mb = s.micro_batches(i)[0]
    if hasattr(obj, "tamper_gradient"):
        _, info = obj.tamper_gradient(s, i)
        retain, _ = obj.retain(s, mb["mix"])
        return float(retain.detach()) + s.cfg.w_tamper * info["tamper"]
    loss, _ = obj.loss(s, mb)
    return float(loss.detach())


@pytest.mark.parametrize("method", ["repnoise", "vaccine", "booster", "tar"])
def test_each_defense_lowers_its_own_training_loss(tiny, tmp_path, method):
    with _session(tiny, tmp_path, method, steps=12, lr=2e-2) as s:
        torch.manual_seed(0)
        first = _value(s, 0)
        s.train(None, "test")
        torch.manual_seed(0)
        last = _value(s, 0)
    assert last < first - 0.03 * abs(first), (method, first, last)


@pytest.mark.parametrize("method", ["repnoise", "vaccine", "booster", "tar"])
def test_defend_writes_a_model_card_and_log_through_the_registry(tiny, tmp_path, method):
    kw = {"steps": 2, "batch_size": 2, "max_length": 64, "check_every": 0, "lora_targets": TARGETS}
    if method != "vaccine":
        kw["harm_batch_size"] = 2
    out = defend(tiny, method, overrides=kw, out_dir=tmp_path / method)
    info = json.loads((out / "defense.json").read_text())
    assert info["method"] == method and info["examples"] > 0 and info["params"]["trained"] > 0
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(math.isfinite(r["loss"]) for r in log)
    assert (out / "model.safetensors").exists() and (out / "card.md").exists()
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt"))


def test_same_seed_same_weights_for_tar(tiny, tmp_path):
    from safetensors.torch import load_file

    kw = {"steps": 2, "batch_size": 2, "harm_batch_size": 2, "max_length": 64, "check_every": 0,
          "lora_targets": TARGETS, "inner_steps": 2}
    a = load_file(str(defend(tiny, "tar", overrides=kw, out_dir=tmp_path / "a") / "model.safetensors"))
    b = load_file(str(defend(tiny, "tar", overrides=kw, out_dir=tmp_path / "b") / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_settings_name_the_field(tiny, tmp_path):
    from tamperlab.utils.config import ConfigError

    for method, kw, name in [("tar", {"inner_data": ["poison"]}, "inner_data"), ("tar", {"inner_lrs": []}, "inner_lrs"),
                             ("vaccine", {"rho": -1}, "rho"), ("booster", {"lam": -1}, "lam"),
                             ("repnoise", {"mmd_tokens": 1}, "mmd_tokens")]:
        with pytest.raises(ConfigError, match=name):
            defend(tiny, method, overrides=kw, out_dir=tmp_path / f"bad-{name}")
