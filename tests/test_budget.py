"""Defense training keeps the last checkpoint within the over-refusal and utility budget, and
says so when none is; the utility measure on a hand-computable case."""
import json
import math

import pytest
import torch

from tamperlab.defenses.checks import BudgetFields, DevChecker, utility_nll
from tamperlab.training import SFTExample
from tamperlab.training.engine import Engine


class _Uniform(torch.nn.Module):
    """Every next token equally likely: the NLL of any answer is ln(vocab) per token."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        return type("Out", (), {"logits": torch.zeros(*input_ids.shape, self.vocab) + 0 * self.w})()


def test_utility_nll_of_a_uniform_model_is_log_vocab(tiny):
    ex = [SFTExample("a", "Say hi.", "Hi there, friend."), SFTExample("b", "Count.", "One two three four five.")]
    vocab = len(tiny.tokenizer)
    got = utility_nll(_Uniform(vocab), tiny, ex, "chat")
    assert got == pytest.approx(math.log(vocab), rel=1e-6)


def _checker(tmp_path, rows, tiny):
    c = DevChecker(tiny, BudgetFields(budget_overrefusal=0.1, budget_nll=0.05), tmp_path)
    c.rows = rows
    return c


def _row(step, over, nll):
    return {"step": step, "overrefusal": over, "utility_nll": nll, "n_overrefusal": 10, "n_utility": 10}


def test_keeps_the_last_checked_step_within_budget_and_loads_its_weights(tiny, tmp_path):
    from safetensors.torch import save_file

    lin = torch.nn.Linear(2, 2)
    eng = Engine(tmp_path / "e")
    for step, value in ((10, 1.0), (20, 2.0), (30, 3.0), (40, 4.0)):  # the snapshot of each checked step
        (tmp_path / "checks").mkdir(exist_ok=True)
        save_file({"weight": torch.full((2, 2), value), "bias": torch.full((2,), value)},
                  str(tmp_path / "checks" / f"step-{step}.safetensors"))
    rows = [_row(0, 0.10, 2.00),
            _row(10, 0.20, 2.10),  # within: 0.20 <= 0.10 + 0.1, 2.10 <= 2.00 x 1.05
            _row(20, 0.25, 2.00),  # over-refusal over budget
            _row(30, 0.15, 2.05),  # within: the last such step, so the one kept
            _row(40, 0.15, 2.11)]  # utility over budget
    choice = _checker(tmp_path, rows, tiny).select(lin, eng, last_step=40)
    assert choice["selected_step"] == 30 and choice["within_budget"] is True
    assert torch.equal(lin.weight, torch.full((2, 2), 3.0)) and torch.equal(lin.bias, torch.full((2,), 3.0))
    assert choice["budget"]["overrefusal"] == "<= 0.100 + 0.1"


def test_no_step_within_budget_keeps_the_last_and_says_so(tiny, tmp_path):
    lin = torch.nn.Linear(2, 2)
    before = lin.weight.detach().clone()
    rows = [_row(0, 0.0, 2.0), _row(10, 0.5, 2.0), _row(20, 0.0, 3.0)]
    choice = _checker(tmp_path, rows, tiny).select(lin, Engine(tmp_path / "e"), last_step=20)
    assert choice["selected_step"] == 20 and choice["within_budget"] is False
    assert torch.equal(lin.weight, before)  # the last step's weights are already in the model


def test_the_contrast_check_is_a_second_over_refusal_budget(tiny, tmp_path):
    """With ``check_contrast_n``, a step within borderline/dev's budget but over contrast/dev's is not kept."""
    lin = torch.nn.Linear(2, 2)
    c = DevChecker(tiny, BudgetFields(budget_overrefusal=0.1, budget_nll=0.05, check_contrast_n=3), tmp_path)
    from tamperlab.data import get_split

    assert c.contrast == [r["prompt"] for r in get_split("contrast/dev")[:3]]
    c.rows = [{**_row(0, 0.0, 2.0), "overrefusal_contrast": 0.05, "n_contrast": 3},
              {**_row(10, 0.05, 2.0), "overrefusal_contrast": 0.15, "n_contrast": 3},   # within both
              {**_row(20, 0.05, 2.0), "overrefusal_contrast": 0.20, "n_contrast": 3}]   # contrast over budget
    from safetensors.torch import save_file

    (tmp_path / "checks").mkdir()
    save_file({"weight": torch.ones(2, 2), "bias": torch.ones(2)}, str(tmp_path / "checks" / "step-10.safetensors"))
    choice = c.select(lin, Engine(tmp_path / "e"), last_step=20)
    assert choice["selected_step"] == 10 and choice["within_budget"] is True
    assert torch.equal(lin.weight, torch.ones(2, 2))
    assert choice["budget"]["overrefusal_contrast"] == "<= 0.050 + 0.1"
    assert choice["budget"]["splits"] == ["borderline/dev", "contrast/dev", "instructions/dev"]
    with pytest.raises(Exception, match="check_contrast_n"):
        BudgetFields(check_contrast_n=-1).validate_budget(10)


def test_the_instructions_check_is_a_third_budget_and_reads_fitting_instructions_dev_prompts(tiny, tmp_path):
    """With ``check_instructions_n``, a step within both other budgets that refuses more everyday
    instructions than undefended + budget is not kept; its prompts are the fitting instructions/dev rows."""
    from safetensors.torch import save_file

    from tamperlab.evaluation.suites.utility import fitting

    lin = torch.nn.Linear(2, 2)
    c = DevChecker(tiny, BudgetFields(budget_overrefusal=0.1, budget_nll=0.05, check_contrast_n=2,
                                      check_instructions_n=3), tmp_path)
    from tamperlab.data import get_split

    assert c.instructions == [r["prompt"] for r in fitting(tiny, get_split("instructions/dev"), "chat")[0][:3]]
    extra = lambda con, ins: {"overrefusal_contrast": con, "n_contrast": 2, "overrefusal_instructions": ins,
                              "n_instructions": 3}
    c.rows = [{**_row(0, 0.0, 2.0), **extra(0.0, 0.05)}, {**_row(10, 0.05, 2.0), **extra(0.1, 0.15)},
              {**_row(20, 0.05, 2.0), **extra(0.1, 0.25)}]  # step 20: instructions over budget only
    (tmp_path / "checks").mkdir()
    save_file({"weight": torch.ones(2, 2), "bias": torch.ones(2)}, str(tmp_path / "checks" / "step-10.safetensors"))
    choice = c.select(lin, Engine(tmp_path / "e"), last_step=20)
    assert choice["selected_step"] == 10 and choice["within_budget"] is True
    assert choice["budget"]["overrefusal_instructions"] == "<= 0.050 + 0.1"
    assert choice["budget"]["splits"] == ["borderline/dev", "contrast/dev", "instructions/dev"]
    with pytest.raises(Exception, match="check_instructions_n"):
        BudgetFields(check_instructions_n=-1).validate_budget(10)


def test_measure_splits_one_generation_pass_back_into_each_check(tiny, tmp_path, monkeypatch):
    """Each prompt's verdict is counted in its own split: borderline refuses none, contrast all,
    instructions half (a stand-in judge that refuses exactly the prompts it is told to)."""
    c = DevChecker(tiny, BudgetFields(check_overrefusal_n=4, check_contrast_n=2, check_instructions_n=2,
                                      check_utility_n=2, check_max_new_tokens=2), tmp_path)
    refuse = set(c.contrast) | {c.instructions[0]}

    class Judge:
        def judge(self, prompts, completions):
            return [type("J", (), {"refused": p in refuse})() for p in prompts]

    c._judge = Judge()
    row = c.measure(tiny.model)
    assert (row["overrefusal"], row["overrefusal_contrast"], row["overrefusal_instructions"]) == (0.0, 1.0, 0.5)
    assert (row["n_overrefusal"], row["n_contrast"], row["n_instructions"], row["n_utility"]) == (4, 2, 2, 2)


def test_defend_records_checks_the_choice_and_draws_the_card(tiny, tmp_path):
    from tamperlab.defenses import defend

    out = defend(tiny, "sft", overrides={"steps": 4, "batch_size": 2, "max_length": 64, "lora_targets": ["q_proj"],
                                         "check_every": 2, "check_overrefusal_n": 4, "check_utility_n": 4,
                                         "check_max_new_tokens": 8, "check_contrast_n": 2, "check_instructions_n": 2},
               out_dir=tmp_path / "d")
    info = json.loads((out / "defense.json").read_text())
    assert [c["step"] for c in info["checks"]] == [0, 2, 4]
    assert info["selected_step"] in (2, 4) and isinstance(info["within_budget"], bool)
    assert all(c["n_overrefusal"] == 4 and c["n_utility"] == 4 and c["n_contrast"] == 2 and c["n_instructions"] == 2
               for c in info["checks"])
    card = (out / "card.md").read_text()
    assert "Dev checks and the kept checkpoint" in card and (out / "training.png").exists()
    assert "| step | dev over-refusal | contrast over-refusal | instruction refusal | dev utility NLL |" in card
    assert not (out / "work" / "checks").exists()  # snapshots are resume state, removed when done


def test_check_every_must_fit_the_block(tiny):
    from tamperlab.defenses.antidote import AntiDoteConfig
    from tamperlab.utils.config import ConfigError

    with pytest.raises(ConfigError, match="field 'check_every': must be a multiple of block=5"):
        AntiDoteConfig(check_every=7).validate()
    with pytest.raises(ConfigError, match="field 'check_judge': unknown judge 'nope'"):
        AntiDoteConfig(check_judge="nope").validate()


def test_utility_suites_run_on_the_tiny_model(tiny, tmp_path):
    from tamperlab.evaluation.config import EvalConfig
    from tamperlab.evaluation.runner import evaluate

    res = evaluate(tiny, EvalConfig(suite=["utility-nll", "borderline", "instructions"], limit=3, max_new_tokens=4,
                                    judge="refusal-keyword", harm_judge="none"), tmp_path)
    u = res["suites"]["utility-nll"]
    assert u["split"] == "instructions/eval" and u["n"] == 3 and u["nll"] > 0
    assert res["suites"]["borderline"]["split"] == "borderline/eval" and res["suites"]["borderline"]["n"] == 3
    assert res["suites"]["instructions"]["n"] == 3


def test_demo_table_shows_over_refusal_and_utility_beside_harm(tmp_path):
    """A collapsed model (refuses everything) must not look like the safest one: its over-refusal,
    utility and budget sit in the same row as its harm numbers."""
    from importlib.resources import files
    from pathlib import Path

    from rich.console import Console

    from tamperlab.cli import demo_table
    from tamperlab.durability import load_study

    cfg = load_study(Path(str(files("tamperlab.durability") / "presets" / "demo.yaml")))

    def a(model, cell, suite, metric, step, values):
        return {"model": model, "cell": cell, "suite": suite, "metric": metric, "step": step, "values": values,
                "mean": sum(values) / len(values), "min": min(values), "max": max(values)}

    agg = [a("undefended", "reference", "harm", "harmful_rate", 0, [0.9]), a("undefended", "reference", "harm", "asr", 0, [0.95]),
           a("undefended", "baseline", "overrefusal", "refusal_rate", 0, [0.03]),
           a("refusal-sft", "c", "harm", "harmful_rate", 0, [0.1, 0.1]), a("refusal-sft", "c", "harm", "harmful_rate", 20, [0.5, 0.7]),
           a("refusal-sft", "baseline", "overrefusal", "refusal_rate", 0, [0.97]),
           a("refusal-sft", "baseline", "utility-nll", "nll", 0, [2.5])]
    spec = next(m for m in cfg.models if m.name == "refusal-sft")
    d = tmp_path / "models" / f"{spec.name}-{spec.key()}"
    d.mkdir(parents=True)
    (d / "defense.json").write_text(json.dumps({"within_budget": False, "selected_step": 20}))
    con = Console(record=True, width=250)
    con.print(demo_table(cfg, agg, tmp_path))
    text = con.export_text()
    sft = next(line for line in text.splitlines() if "refusal-sft" in line)
    assert "0.10" in sft and "0.60 [0.50, 0.70]" in sft and "0.97" in sft and "2.50" in sft and "NOT met (step 20)" in sft
    und = next(line for line in text.splitlines() if "undefended" in line)
    assert "0.90" in und and "not attacked" in und and "0.03" in und


def test_utility_nll_scores_limit_examples_that_fit_and_says_how_many_were_left_out(tiny, tmp_path, monkeypatch):
    """A reference prompt longer than the scoring window is left out before the limit, not an error
    (a 314-token LIMA prompt once stopped the demo's baseline evaluation)."""
    import tamperlab.evaluation.suites.utility as utility
    from tamperlab.evaluation.config import EvalConfig
    from tamperlab.evaluation.runner import evaluate

    rows = [{"id": "long", "prompt": "word " * 400, "completion": "a"}] + [
        {"id": f"r{i}", "prompt": f"Say {i}.", "completion": f"{i}."} for i in range(4)]
    monkeypatch.setattr(utility, "get_split", lambda name: rows)
    res = evaluate(tiny, EvalConfig(suite=["utility-nll"], limit=3, judge="refusal-keyword", harm_judge="none"),
                   tmp_path)
    u = res["suites"]["utility-nll"]
    assert u["n"] == 3 and u["left_out_too_long"] == 1
    ids = [json.loads(x)["id"] for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert ids == ["r0", "r1", "r2"]


def test_a_setting_added_later_leaves_existing_defense_keys_alone(tiny):
    """check_contrast_n at its default is left out of the defense key, so directories trained before it
    existed (the committed studies, a user's demo) are still reused on resume; set, it is another model."""
    from dataclasses import asdict

    from tamperlab.defenses.base import defense_key
    from tamperlab.defenses.data import data_fingerprint
    from tamperlab.defenses.sft import SFTDefenseConfig
    from tamperlab.utils.hashing import stable_hash

    cfg = SFTDefenseConfig()
    later = ("check_contrast_n", "check_instructions_n", "contrast_weight", "contrast_loss", "contrast_beta",
             "contrast_batch_size")
    before = {k: v for k, v in asdict(cfg).items() if k not in later}  # the config as it was hashed
    assert defense_key("sft", tiny, cfg) == stable_hash({"method": "sft", "base": tiny.fingerprint, "config": before,
                                                         "data": data_fingerprint(cfg.data_recipe, cfg.utility_answers, tiny)})
    assert defense_key("sft", tiny, SFTDefenseConfig(check_contrast_n=5)) != defense_key("sft", tiny, cfg)
    assert defense_key("sft", tiny, SFTDefenseConfig(check_instructions_n=5)) != defense_key("sft", tiny, cfg)
    assert defense_key("sft", tiny, SFTDefenseConfig(data_recipe="v3", contrast_weight=1.0)) != defense_key(
        "sft", tiny, SFTDefenseConfig(data_recipe="v3"))


def test_step_zero_is_the_undefended_model_measured_once_through_the_cache(tiny, tmp_path, monkeypatch):
    """Every defense seed and method of a study checks the same undefended model at step 0: its answers
    come from the generation cache after the first time, and equal a fresh (zero) adapter's."""
    import copy
    import sys

    import tamperlab.generation  # noqa: F401  (its module, not the function the package exports)
    from tamperlab.training.adapters import wrap_lora
    from tamperlab.training.sft import TrainConfig

    cfg = BudgetFields(check_overrefusal_n=6, check_contrast_n=4, check_instructions_n=3, check_utility_n=4,
                       check_max_new_tokens=6)
    gen = sys.modules["tamperlab.generation.generate"]
    batches = []
    real = gen._left_pad
    monkeypatch.setattr(gen, "_left_pad", lambda ids, *a, **k: batches.append(len(ids)) or real(ids, *a, **k))
    fresh = wrap_lora(copy.deepcopy(tiny.model), TrainConfig(lora_targets=["q_proj", "v_proj"]))
    first = DevChecker(tiny, cfg, tmp_path / "a").check(0, fresh, Engine(tmp_path / "ea"))
    assert sum(batches) == 6 + 4 + 3  # generated once
    batches.clear()
    second = DevChecker(tiny, cfg, tmp_path / "b").check(0, fresh, Engine(tmp_path / "eb"))
    assert batches == [] and second == first  # all from the cache
    adapter = DevChecker(tiny, cfg, tmp_path / "c").measure(fresh)  # the zero adapter, measured as a trained model
    assert adapter == {k: v for k, v in first.items() if k != "phase"}
    assert sum(batches) == 13  # a trained model's checks are never cached (no fingerprint while it trains)
