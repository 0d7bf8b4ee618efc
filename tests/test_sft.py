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


def test_adapter_only_save_loads_on_its_base_with_the_same_logits(tiny, tmp_path):
    """save_model_dir(merge=False) writes the adapter alone; load_model on that folder puts it back
    on its base: the same logits as the in-memory PEFT model, not the base model's."""
    import torch

    model = train_sft(tiny, POOL, TrainConfig(method="lora", steps=2, batch_size=4, lr=1e-2))
    adapter = save_model_dir(model, tiny.tokenizer, tmp_path / "adapter", merge=False)
    assert not (adapter / "model.safetensors").exists()  # the adapter alone, not a full copy
    loaded = load_model(str(adapter))
    ids = torch.tensor([tiny.tokenizer("What is 3 plus 3? It is 6.")["input_ids"]])
    with torch.no_grad():
        want, got, base = model(input_ids=ids).logits, loaded.model(input_ids=ids).logits, tiny.model(input_ids=ids).logits
    assert (want - base).abs().max() > 1e-2  # the adapter changed the model...
    assert torch.allclose(got, want, atol=1e-5)  # ...and the loaded one is that model
    assert loaded.fingerprint != tiny.fingerprint
    assert not [n for n, _ in loaded.model.named_modules() if "lora" in n]  # merged: loads like any model
    assert loaded.tokenizer.chat_template == tiny.tokenizer.chat_template


def test_divergence_stops_with_a_clear_error(tiny):
    with pytest.raises(DivergedError, match="learning rate"):
        train_sft(tiny, POOL, TrainConfig(method="full", steps=6, batch_size=4, lr=1e12, max_grad_norm=1e12))


class _FixedLogits:
    """A "model" whose next-token distributions are set by hand (vocabulary of two tokens)."""

    def __init__(self, logits):
        self.logits = logits

    def __call__(self, input_ids, attention_mask=None):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.logits)


def test_weighted_loss_is_the_weighted_token_mean_and_weight_one_is_plain_sft():
    import math

    import torch

    from tamperlab.training.losses import nll
    from tamperlab.training.sft import _weighted_loss_trainer

    ln3 = math.log(3)
    # position t predicts token t+1; logits [ln 3, 0] give p(token 0) = 3/4, [0, 0] 1/2, [0, ln 3] 1/4
    logits = torch.tensor([[[ln3, 0.0], [0.0, 0.0], [0.0, ln3], [0.0, 0.0]],
                           [[0.0, 0.0], [ln3, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    batch = {"input_ids": torch.tensor([[0, 0, 1, 0], [0, 1, 1, 0]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
             "labels": torch.tensor([[-100, 0, 1, 0], [-100, -100, 1, -100]]),
             # the weight of the token at each position; a weight on an ignored label must not count
             "loss_weights": torch.tensor([[0.0, 1.0, 7.0, 2.0], [0.0, 0.0, 3.0, 5.0]])}
    # scored tokens: row 0: token 0 at p=3/4 (w 1), token 1 at p=1/2 (w 7), token 0 at p=1/4 (w 2);
    # row 1: token 1 at p=1/4 (w 3)
    want = (1 * math.log(4 / 3) + 7 * math.log(2) + 2 * math.log(4) + 3 * math.log(4)) / (1 + 7 + 2 + 3)
    assert want == pytest.approx(0.92855, abs=1e-5)
    model = _FixedLogits(logits)
    trainer = _weighted_loss_trainer().__new__(_weighted_loss_trainer())  # compute_loss needs no Trainer state
    assert trainer.compute_loss(model, dict(batch)).item() == pytest.approx(want, rel=1e-6)
    ones = {**batch, "loss_weights": torch.ones(2, 4)}
    plain = (math.log(4 / 3) + math.log(2) + math.log(4) + math.log(4)) / 4
    assert plain == pytest.approx(0.93835, abs=1e-5)
    assert trainer.compute_loss(model, ones).item() == pytest.approx(plain, rel=1e-6)
    assert nll(model, batch).item() == pytest.approx(plain, rel=1e-6)


def _span_nll(model, tokenizer, pad_id, examples):
    """Mean NLL of the weighted (w > 1) and of the other completion tokens of ``examples``."""
    import torch

    from tamperlab.training.data import build_features, collate
    from tamperlab.training.losses import token_logps

    batch = collate(build_features(tokenizer, examples, "chat"), pad_id)
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    lp, mask = token_logps(out.logits, batch["labels"])
    w = batch["loss_weights"][:, 1:]
    heavy, light = mask & (w > 1), mask & (w == 1)
    assert heavy.sum() == 16 and light.sum() == 40  # 2 digit tokens; "It", " is", " ", ".", EOS
    return (-(lp * heavy).sum() / heavy.sum()).item(), (-(lp * light).sum() / light.sum()).item()


def test_weighted_examples_train_the_weighted_tokens_more(tiny):
    """The answer digits carry weight 20: their NLL falls more than the other completion tokens'.
    Unweighted, on the same data, seed and steps, it is the other way round, so the weights are
    what makes the difference."""
    def pool(w):  # characters 6-8 of "It is 2x." are the two digits of the answer
        return [SFTExample(str(i), f"What is {i} plus {i}?", f"It is {2 * i}.", weights=((6, 8, w),))
                for i in range(10, 18)]
    cfg = TrainConfig(method="lora", steps=6, batch_size=4, lr=1e-2, seed=0)
    heavy0, light0 = _span_nll(tiny.model, tiny.tokenizer, tiny.pad_id, pool(20.0))
    drops = {}
    for w in (1.0, 20.0):
        model = train_sft(tiny, pool(w), cfg)
        heavy, light = _span_nll(model, tiny.tokenizer, tiny.pad_id, pool(20.0))
        drops[w] = (heavy0 - heavy, light0 - light)
    (h1, l1), (h20, l20) = drops[1.0], drops[20.0]
    assert h1 > 0 and l1 > 0 and h20 > 0 and l20 > 0  # both runs learn
    assert h1 < l1  # unweighted: the digits are learned less than the rest (measured: 0.28 vs 0.80 nats)
    assert h20 > 2 * l20  # weighted: the digits fall most (measured: 0.49 vs 0.12)
    assert h20 > 1.5 * h1


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
