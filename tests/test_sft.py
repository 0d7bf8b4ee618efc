"""The training core on a tiny model: determinism by seed, checkpoints at exact steps, evaluation
that does not perturb training, LoRA vs full, saving as safetensors, divergence stops clearly."""
import pytest

from tamperlab.models import load_model
from tamperlab.training import SFTExample, TrainConfig, save_model_dir, train_sft
from tamperlab.training.sft import DivergedError

POOL = [SFTExample(str(i), f"What is {i} plus {i}?", f"It is {2 * i}.") for i in range(24)]


def _fingerprints(tiny, cfg, steps=(0, 2, 4), eval_fn=None):
    seen = {}

    def cb(step, view):
        seen[step] = view.fingerprint
        if eval_fn:
            eval_fn(view)
    train_sft(tiny, POOL, cfg, checkpoint_steps=list(steps), on_checkpoint=cb)
    return seen


def test_same_seed_same_weights_other_seed_other_weights(tiny):
    cfg = lambda seed: TrainConfig(method="lora", steps=4, batch_size=4, lr=1e-2, seed=seed)  # noqa: E731
    a, b, c = _fingerprints(tiny, cfg(0)), _fingerprints(tiny, cfg(0)), _fingerprints(tiny, cfg(1))
    assert sorted(a) == [0, 2, 4]
    assert a == b
    assert a[0] == c[0] == tiny.fingerprint  # step 0 is the untouched model
    assert a[4] != c[4]


def test_evaluating_at_checkpoints_does_not_change_training(tiny):
    from tamperlab.generation import GenerationConfig, generate

    cfg = TrainConfig(method="full", steps=4, batch_size=4, lr=1e-3, seed=3)
    plain = _fingerprints(tiny, cfg, steps=(4,))
    sampled = lambda view: generate(view, ["hello"], "chat", GenerationConfig(max_new_tokens=4, do_sample=True))  # noqa: E731
    with_eval = _fingerprints(tiny, cfg, steps=(2, 4), eval_fn=sampled)
    assert plain[4] == with_eval[4]


def test_the_base_model_is_never_modified(tiny):
    before = tiny.fingerprint
    train_sft(tiny, POOL, TrainConfig(method="full", steps=2, batch_size=4, lr=1e-2))
    from tamperlab.models.loading import weights_fingerprint

    assert weights_fingerprint(tiny.model) == before


def test_lora_saves_merged_and_adapter_safetensors(tiny, tmp_path):
    model = train_sft(tiny, POOL, TrainConfig(method="lora", steps=2, batch_size=4, lr=1e-2))
    merged = save_model_dir(model, tiny.tokenizer, tmp_path / "merged", merge=True)
    adapter = save_model_dir(model, tiny.tokenizer, tmp_path / "adapter", merge=False)
    assert (merged / "model.safetensors").exists() and (adapter / "adapter_model.safetensors").exists()
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.pt"))
    reloaded = load_model(str(merged))
    from tamperlab.models.loading import weights_fingerprint

    assert reloaded.fingerprint == weights_fingerprint(model.merge_and_unload())


def test_divergence_stops_with_a_clear_error(tiny):
    with pytest.raises(DivergedError, match="learning rate"):
        train_sft(tiny, POOL, TrainConfig(method="full", steps=6, batch_size=4, lr=1e12, max_grad_norm=1e12))


def test_weighted_loss_is_the_weighted_token_mean_and_weight_one_is_plain_sft(tiny):
    import torch

    from tamperlab.training.data import build_features, collate
    from tamperlab.training.losses import nll, token_logps
    from tamperlab.training.sft import _weighted_loss_trainer

    exs = [SFTExample("a", "Q1", "It is four.", weights=((3, 5, 7.0),)), SFTExample("b", "Q2", "No idea at all.")]
    batch = collate(build_features(tiny.tokenizer, exs, "chat"), tiny.pad_id)
    trainer = _weighted_loss_trainer().__new__(_weighted_loss_trainer())  # compute_loss needs no Trainer state
    with torch.no_grad():
        got = trainer.compute_loss(tiny.model, dict(batch))
        lp, mask = token_logps(tiny.model(input_ids=batch["input_ids"]).logits, batch["labels"])
        w = batch["loss_weights"][:, 1:] * mask
        assert 7.0 in w.tolist()[0]
        assert torch.allclose(got, -(lp * w).sum() / w.sum())
        ones = {**batch, "loss_weights": torch.ones_like(batch["loss_weights"])}
        assert torch.allclose(trainer.compute_loss(tiny.model, ones), nll(tiny.model, batch), atol=1e-5)


def test_weighted_examples_train_through_train_sft(tiny):
    pool = [SFTExample(str(i), f"What is {i} plus {i}?", f"It is {2 * i}.", group=str(i // 2),
                       weights=((6, 8, 5.0),)) for i in range(8)]
    model = train_sft(tiny, pool, TrainConfig(method="lora", steps=2, batch_size=4, lr=1e-2))
    assert hasattr(model, "peft_config")


def test_weighted_loss_is_divided_by_gradient_accumulation_steps(tiny, tmp_path):
    """One batch of 2 and two micro-batches of 1 see the same (identical) examples, so the first
    logged loss must agree; without the division by grad_accum the second would be twice as big."""
    import json

    ex = SFTExample("x", "What is 2 plus 2?", "It is 4.", weights=((3, 5, 9.0),))
    pool = [ex] * 4
    first = {}
    for name, bs, ga in (("batch", 2, 1), ("accum", 1, 2)):
        log = tmp_path / f"{name}.jsonl"
        train_sft(tiny, pool, TrainConfig(method="lora", steps=1, batch_size=bs, grad_accum=ga, lr=1e-3),
                  log_path=log)
        first[name] = json.loads(log.read_text().splitlines()[0])["loss"]
    assert first["accum"] == pytest.approx(first["batch"], rel=1e-4)
