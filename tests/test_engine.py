"""The one training engine: accumulation that really accumulates, clipping on unscaled fp16
gradients, a NaN guard that stops before the bad update, one schedule per name, and LoRA on the
shared base whose reference (adapter disabled) equals a deep-copied original."""
import copy
import json

import pytest
import torch

from tamperlab.training import SFTExample
from tamperlab.training.engine import DivergedError, Engine
from tamperlab.training.sft import TrainConfig
from tamperlab.training.supervised import SupervisedBatches, nll_terms, token_weight

POOL = [SFTExample(str(i), f"What is {i} plus {i}?", f"It is {2 * i}" + " indeed" * (i % 4) + ".")
        for i in range(8)]


def _one_update(tiny, tmp_path, batch_size, grad_accum):
    """One optimizer step of a LoRA adapter over 4 examples of unequal length, cut 1×4, 4×1 or 2×2."""
    from tamperlab.training.adapters import lora_on

    cfg = TrainConfig(method="lora", lora_targets=["q_proj", "v_proj"], lora_rank=2, seed=0)
    eng = Engine(tmp_path / f"{batch_size}x{grad_accum}", grad_accum=grad_accum)
    with lora_on(tiny.model, cfg) as model:
        # plain SGD: the update is lr × the accumulated gradient, so equal updates <=> equal gradients
        player = eng.add_player("m", model, lr=1.0, total_steps=1, max_grad_norm=1e9, optimizer=torch.optim.SGD)
        before = [p.detach().clone() for p in player.params]
        data = SupervisedBatches(tiny, POOL[:4], steps=1, batch_size=batch_size, grad_accum=grad_accum, seed=0,
                                 fmt="chat", max_length=64, device=eng.device)
        row = eng.optimize(player, data.step(0), lambda b: nll_terms(model, b), token_weight)
        delta = [p.detach() - b for p, b in zip(player.params, before)]
    return delta, row


def test_one_by_k_and_k_by_one_micro_batches_give_the_same_update(tiny, tmp_path):
    whole, r1 = _one_update(tiny, tmp_path, batch_size=4, grad_accum=1)
    split, r4 = _one_update(tiny, tmp_path, batch_size=1, grad_accum=4)
    assert any(d.abs().max() > 0 for d in whole)
    for a, b in zip(whole, split):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    assert r1["loss"] == pytest.approx(r4["loss"], rel=1e-5)  # the logged loss is the step's token mean
    # the optimizer stepped once, not four times: the accumulated gradient is the whole batch's
    half, _ = _one_update(tiny, tmp_path, batch_size=2, grad_accum=2)
    for a, b in zip(whole, half):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_fp16_clipping_measures_the_unscaled_gradient(tmp_path, monkeypatch):
    """The logic of Accelerate's fp16 path on CPU: a GradScaler multiplies the loss by 2**10;
    the engine's clip must unscale first, so the norm it reports (and clips to) is the true one."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 1, bias=False)
    x = torch.randn(8, 4)
    ref = copy.deepcopy(lin)
    (ref(x).pow(2).mean()).backward()
    true_norm = float(ref.weight.grad.norm())

    eng = Engine(tmp_path)
    # what Accelerator(mixed_precision="fp16") sets up on a GPU (its state is one per process, so
    # the test sets the same three things by hand on CPU)
    monkeypatch.setattr(type(eng.acc), "mixed_precision", property(lambda self: "fp16"))
    eng.acc.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    eng.acc.native_amp = True
    player = eng.add_player("m", lin, lr=1e-3, total_steps=1, max_grad_norm=true_norm / 2)
    before = lin.weight.detach().clone()
    row = eng.optimize(player, [x], lambda b: (lin(b).pow(2).mean(), {}))
    assert row["grad_norm"] == pytest.approx(true_norm, rel=1e-2)  # not 1024 × it (forward ran in fp16 autocast)
    assert not torch.equal(before, lin.weight)  # the (unscaled, finite) step was taken


def test_nan_loss_stops_before_the_update(tmp_path):
    eng = Engine(tmp_path)
    lin = torch.nn.Linear(2, 1)
    player = eng.add_player("m", lin, lr=1.0, total_steps=1)
    before = [p.detach().clone() for p in lin.parameters()]
    with pytest.raises(DivergedError, match="m loss=nan.*no checkpoint was written yet"):
        eng.optimize(player, [torch.ones(1, 2)], lambda b: (lin(b).sum() * float("nan"), {}))
    assert all(torch.equal(a, b) for a, b in zip(before, lin.parameters()))


def test_one_schedule_per_name_on_both_training_paths(tiny, tmp_path):
    """The engine's cosine-warmup equals the HF Trainer's (the attack path) step by step."""
    from tamperlab.training.sft import train_sft

    cfg = TrainConfig(method="lora", steps=5, batch_size=2, lr=1e-2, scheduler="cosine-warmup", warmup_steps=2,
                      lora_targets=["q_proj"], max_length=64)
    train_sft(tiny, POOL, cfg, log_path=tmp_path / "trainer.jsonl")
    # both log the learning rate the step used
    trainer_lrs = [json.loads(x)["learning_rate"] for x in (tmp_path / "trainer.jsonl").read_text().splitlines()]

    eng = Engine(tmp_path / "e")
    lin = torch.nn.Linear(2, 1)
    p = eng.add_player("m", lin, lr=1e-2, total_steps=5, scheduler="cosine-warmup", warmup_steps=2)
    used = [eng.optimize(p, [torch.ones(1, 2)], lambda b: (lin(b).sum(), {}))["lr"] for _ in range(5)]
    assert used == pytest.approx(trainer_lrs)
    assert used == pytest.approx([0.0, 5e-3, 1e-2, 7.5e-3, 2.5e-3])  # by hand: warmup i/2, then cos


def test_checkpoint_resume_restores_the_schedule(tmp_path):
    def make():
        eng = Engine(tmp_path, checkpoint_every=2)
        torch.manual_seed(0)
        lin = torch.nn.Linear(2, 1)
        return eng, lin, eng.add_player("m", lin, lr=1e-2, total_steps=4, scheduler="linear", warmup_steps=1)

    eng, lin, p = make()
    eng.run(2, lambda s: (eng.optimize(p, [torch.ones(1, 2)], lambda b: (lin(b).sum(), {})), 1)[1])
    eng.save(2)
    eng2, lin2, p2 = make()
    assert eng2.resume()[0] == 2
    assert p2.lr == pytest.approx(p.lr) and p2.lr != pytest.approx(1e-2 / 1)
    assert all(torch.equal(a, b) for a, b in zip(lin.parameters(), lin2.parameters()))


def test_adapter_disabled_reference_equals_a_deep_copied_original(tiny):
    from tamperlab.training.adapters import lora_on
    from tamperlab.training.losses import sequence_logps
    from tamperlab.training.data import build_features, collate

    copied = copy.deepcopy(tiny.model)
    batch = collate(build_features(tiny.tokenizer, POOL[:3], "chat", 64), tiny.pad_id)
    want = sequence_logps(copied, batch)
    cfg = TrainConfig(method="lora", lora_targets=["q_proj", "v_proj"], seed=0)
    with lora_on(tiny.model, cfg) as model:
        with torch.no_grad():  # move the adapter off zero, so "disabled" is tested, not "still zero"
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.add_(0.5)
        assert not torch.allclose(sequence_logps(model, batch), want)
        with model.disable_adapter():
            got = sequence_logps(model, batch)
    torch.testing.assert_close(got, want)
    from tamperlab.models.loading import weights_fingerprint

    assert weights_fingerprint(tiny.model) == tiny.fingerprint and not hasattr(tiny.model, "peft_config")


def test_merged_save_equals_merge_and_unload_of_a_copy(tiny, tmp_path):
    from tamperlab.models import load_model
    from tamperlab.training.adapters import lora_on, save_defended

    cfg = TrainConfig(method="lora", lora_targets=["q_proj", "down_proj"], seed=0)
    with lora_on(tiny.model, cfg) as model:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_()
        want = copy.deepcopy(model).merge_and_unload().state_dict()
        save_defended(model, tiny.tokenizer, tmp_path / "m")
    got = load_model(str(tmp_path / "m")).model.state_dict()
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k])
    assert (tmp_path / "m" / "adapter" / "adapter_model.safetensors").exists()


def test_the_adding_a_defense_example_in_the_docs_runs(tiny, tmp_path):
    """docs/defenses.md's worked example, executed as written, then run through `defend`."""
    import re
    from pathlib import Path

    from tamperlab.defenses import DEFENSES, defend

    text = (Path(__file__).parents[1] / "docs" / "defenses.md").read_text()
    section = text[text.index("### Adding a defense"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    try:
        exec(compile(code, "docs/defenses.md", "exec"), {})
        out = defend(tiny, "refusal-only", overrides={"steps": 2, "batch_size": 2, "max_length": 64,
                                                      "lora_targets": ["q_proj"]}, out_dir=tmp_path / "d")
    finally:
        DEFENSES._entries.pop("refusal-only", None)
    info = json.loads((out / "defense.json").read_text())
    assert info["method"] == "refusal-only" and info["examples"] > 0
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(r["loss"] > 0 for r in log)
    assert (out / "model.safetensors").exists() and (out / "adapter" / "adapter_model.safetensors").exists()
