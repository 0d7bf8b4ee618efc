"""AntiDote on one scale: per-token preference losses (hand-computed), per-example patches from
each example's own activations, and a bounded patch."""
import math

import pytest
import torch

from tamperlab.defenses.hypernetwork import PatchHypernetwork, patch_norms
from tamperlab.models.hooks import Site, low_rank_patch
from tamperlab.training.losses import preference_loss, sequence_logps


class _FixedLogits(torch.nn.Module):
    """A stand-in LM whose next-token logits are given: log-probs are then known by hand."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, input_ids, attention_mask=None):
        return type("Out", (), {"logits": self.logits})()


def test_per_token_dpo_on_a_hand_computed_case():
    # vocab 2, uniform logits: every token has log-prob ln(1/2)
    logits = torch.zeros(2, 4, 2)
    labels = torch.tensor([[-100, 0, 1, 1],  # 3 completion tokens
                           [-100, -100, 0, -100]])  # 1 completion token
    m = _FixedLogits(logits)
    batch = {"input_ids": torch.zeros(2, 4, dtype=torch.long), "attention_mask": torch.ones(2, 4), "labels": labels}
    ln_half = math.log(0.5)
    assert sequence_logps(m, batch).tolist() == pytest.approx([3 * ln_half, ln_half])
    assert sequence_logps(m, batch, average=True).tolist() == pytest.approx([ln_half, ln_half])  # length-free
    # margin = (pi_c - ref_c) - (pi_r - ref_r) = (-1 + 1.5) - (-2 + 1.5) = 1; beta 2 -> -log σ(2)
    got = preference_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5]),
                          beta=2.0)
    assert float(got) == pytest.approx(math.log1p(math.exp(-2.0)), rel=1e-6)  # 0.126928


def _net(**kw):
    sites = [Site("layers.0.q_proj", 0, "q_proj", 6, 5), Site("layers.1.q_proj", 1, "q_proj", 6, 5)]
    torch.manual_seed(0)
    net = PatchHypernetwork(sites, rank=2, hidden=8, **kw)
    for head in net.head_v.values():  # move V off its zero init so patches are not all zero
        torch.nn.init.normal_(head.weight)
    return net, sites


def test_per_example_patches_differ_for_different_inputs():
    net, sites = _net()
    acts = {s.name: torch.randn(3, 4, 6) for s in sites}
    acts = {k: torch.cat([v[:2], v[:1]]) for k, v in acts.items()}  # example 2 repeats example 0
    patches = net(acts, torch.ones(3, 4))
    u, v = patches["layers.0.q_proj"]
    assert u.shape == (3, 2, 6) and v.shape == (3, 5, 2)
    dw = v @ u  # (3, out, in)
    assert not torch.allclose(dw[0], dw[1])  # different inputs, different patches
    torch.testing.assert_close(dw[0], dw[2])  # the same input, the same patch
    pooled, _ = _net(per_example=False)
    u1, v1 = pooled(acts, torch.ones(3, 4))["layers.0.q_proj"]
    assert u1.shape == (2, 6) and v1.shape == (5, 2)  # one patch for the batch


def test_batched_patch_applies_each_examples_own_weight():
    lin = torch.nn.Linear(6, 5, bias=False)
    model = torch.nn.ModuleDict({"layers": torch.nn.ModuleList([torch.nn.ModuleDict({"q_proj": lin})])})
    x = torch.randn(2, 3, 6)
    u, v = torch.randn(2, 2, 6), torch.randn(2, 5, 2)
    with low_rank_patch(model, {"layers.0.q_proj": (u, v)}):
        y = lin(x)
    for b in range(2):
        torch.testing.assert_close(y[b], x[b] @ (lin.weight + v[b] @ u[b]).T)


def test_patch_norm_is_bounded_and_computed_without_the_product():
    u, v = torch.randn(3, 2, 6), torch.randn(3, 5, 2)
    torch.testing.assert_close(patch_norms(u, v), torch.linalg.matrix_norm(v @ u))
    names = ["layers.0.q_proj", "layers.1.q_proj"]
    net, sites = _net(max_norm={n: 0.05 for n in names})
    acts = {s.name: 10 * torch.randn(2, 4, 6) for s in sites}
    for (u, v) in net(acts, torch.ones(2, 4)).values():
        assert torch.all(patch_norms(u, v) <= 0.05 + 1e-6)
    free, _ = _net()
    assert any(torch.any(patch_norms(u, v) > 0.05) for u, v in free(acts, torch.ones(2, 4)).values())


def test_zero_patch_under_a_bound_has_finite_gradients():
    """V starts at zero; the bound's rescale must not turn that into NaN gradients."""
    sites = [Site("layers.0.q_proj", 0, "q_proj", 6, 5)]
    net = PatchHypernetwork(sites, rank=2, hidden=8, max_norm={"layers.0.q_proj": 0.1})
    u, v = net({"layers.0.q_proj": torch.randn(2, 4, 6)}, torch.ones(2, 4))["layers.0.q_proj"]
    (v @ u).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_antidote_defaults_patch_every_projection_an_attack_touches_at_its_rank():
    from tamperlab.attacks.finetune import AttackConfig
    from tamperlab.defenses.antidote import AntiDoteConfig

    a, atk = AntiDoteConfig(), AttackConfig()
    assert set(atk.lora_targets) <= set(a.adv_targets) and a.adv_rank >= atk.lora_rank
    assert a.preference_norm == "token" and a.w_anchor > 0 and a.adv_per_example and a.adv_max_rel_norm > 0
