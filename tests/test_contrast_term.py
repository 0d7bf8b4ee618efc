"""Refusal SFT's contrast term: per-token DPO preferring the helpful answer over a refusal on safe
prompts in XSTest's categories (contrast/defense-train). Pairs built right, the loss is log 2 where the
model is still the original, it moves the refusal down against the reference, and bad settings are named."""
import math
from collections import Counter

import pytest
import torch

from tamperlab.data import get_split
from tamperlab.defenses import data as ddata
from tamperlab.defenses.session import DefenseSession
from tamperlab.defenses.sft import NLLObjective, SFTDefenseConfig, contrast_term
from tamperlab.judges.harm import refusal_phrases
from tamperlab.judges.keyword import keyword_refused
from tamperlab.training.engine import Engine
from tamperlab.utils.config import ConfigError


def test_contrast_pairs_share_the_prompt_keep_the_helpful_answer_and_reject_a_generic_refusal():
    pairs = ddata.contrast_pairs()
    rows = {r["id"]: r for r in get_split("contrast/defense-train")}
    assert len(pairs) == len(rows) and {g.id for g, _ in pairs} == set(rows)
    openings = Counter(ddata._opening(e.completion) for e in ddata.varied_refusal_examples())
    for good, bad in pairs:
        assert good.prompt == bad.prompt == rows[good.id]["prompt"] and good.completion == rows[good.id]["completion"]
        assert keyword_refused(bad.completion) and refusal_phrases(bad.completion)[0] == 1.0, good.id
        assert refusal_phrases(good.completion)[0] == 0.0, good.id  # the chosen side opens with the answer
        assert openings[bad.completion] >= 2  # an opening shared by several refusals: no other prompt's topic
    assert len({b.completion for _, b in pairs}) >= 20  # many phrasings, not one template
    assert ddata.contrast_pairs() == pairs  # a function of the data alone (hash of the id, not the process)


def test_opening_is_the_first_sentence():
    assert ddata._opening("I'm sorry, but I can't. It is illegal.") == "I'm sorry, but I can't."
    assert ddata._opening("  No full stop here") == "No full stop here"
    assert ddata._opening("Dr. Who? Yes.") == "Dr."  # naive on abbreviations: refusal openings have none


@pytest.mark.parametrize("override,field", [
    ({"contrast_weight": 1.0, "data_recipe": "v2"}, "contrast_weight"),
    ({"contrast_weight": -0.5, "data_recipe": "v3"}, "contrast_weight"),
    ({"contrast_weight": 1.0, "data_recipe": "v3", "contrast_beta": 0.0}, "contrast_beta"),
    ({"contrast_weight": 1.0, "data_recipe": "v3", "contrast_loss": "kto"}, "contrast_loss"),
])
def test_bad_contrast_settings_are_named(override, field):
    with pytest.raises(ConfigError, match=field):
        SFTDefenseConfig(**override).validate()


def _session(tiny, tmp_path, **kw):
    cfg = SFTDefenseConfig(steps=6, batch_size=2, max_length=96, lora_targets=["q_proj", "v_proj"], lr=5e-3,
                           warmup_steps=0, scheduler="constant", check_every=0, data_recipe="v3",
                           contrast_weight=1.0, contrast_batch_size=4, **kw)
    cfg.validate()
    engine = Engine(tmp_path / "work", mixed_precision="no", grad_accum=1, checkpoint_every=0)
    return DefenseSession(tiny, cfg, engine, NLLObjective())


def _margin(s, chunk):
    """Per-token log-prob gain of the helpful answer over the refusal, against the reference."""
    good, bad = s.features([c[0] for c in chunk]), s.features([c[1] for c in chunk])
    from tamperlab.training.losses import sequence_logps

    with torch.no_grad():
        pol = sequence_logps(s.model, good, average=True) - sequence_logps(s.model, bad, average=True)
    ref = (s.reference_logps(good, [("contrast", c[0].id, 0) for c in chunk])
           - s.reference_logps(bad, [("contrast", c[1].id, 1) for c in chunk]))
    return float((pol - ref).mean())


def test_contrast_loss_is_log_two_on_the_original_model_and_training_moves_the_refusal_down(tiny, tmp_path):
    with _session(tiny, tmp_path) as s:
        chunk = s.objective.order[:4]
        assert float(contrast_term(s, chunk).detach()) == pytest.approx(math.log(2), abs=1e-5)  # LoRA B = 0: policy = reference
        assert _margin(s, chunk) == pytest.approx(0.0, abs=1e-5)
        rows = [s.objective.step(s, i) for i in range(s.steps)]
        assert all({"nll", "contrast", "loss"} <= set(r) for r in rows)
        assert rows[0]["loss"] == pytest.approx(rows[0]["nll"] + rows[0]["contrast"], rel=1e-5)
        assert _margin(s, chunk) > 0.05  # the answer gained on the refusal against the original model
        assert float(contrast_term(s, chunk).detach()) < math.log(2) - 0.01


def test_ipo_contrast_term_starts_at_its_target_margin_squared(tiny, tmp_path):
    with _session(tiny, tmp_path, contrast_loss="ipo", contrast_beta=2.0) as s:
        # IPO: (margin - 1/(2 beta))^2 with margin 0 at the original model
        assert float(contrast_term(s, s.objective.order[:4]).detach()) == pytest.approx(0.25 ** 2, abs=1e-6)


def test_contrast_batches_follow_the_seed(tiny, tmp_path):
    with _session(tiny, tmp_path) as s:
        a = [c[0].id for c in s.objective.order]
    with _session(tiny, tmp_path / "b") as s:
        assert [c[0].id for c in s.objective.order] == a
        assert len(a) == s.steps * 4
    with _session(tiny, tmp_path / "c", seed=1) as s:
        assert [c[0].id for c in s.objective.order] != a
