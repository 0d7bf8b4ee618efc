"""Study configs are validated up front; every error names the key (and the file)."""
import pytest

from tamperlab.durability import load_study
from tamperlab.utils.config import ConfigError

BASE = """
name: t
models:
  - {name: base, model: tiny-llama}
attack: {data: harmful, batch_size: 2}
seeds: 2
steps: [0, 4]
eval: {suite: [harm], limit: 2}
"""


def _load(tmp_path, text):
    p = tmp_path / "study.yaml"
    p.write_text(text)
    return load_study(p)


def test_shipped_configs_validate():
    from pathlib import Path

    paths = sorted(p for d in ("durability", "comparison", "selfplay") for p in Path("configs", d).glob("*.yaml"))
    assert len(paths) >= 7
    for path in paths:
        cfg = load_study(str(path))
        cfg.validate()
        assert cfg.cells_expanded()


def test_the_packaged_demo_study_validates():
    from importlib.resources import files

    cfg = load_study(str(files("tamperlab.durability") / "presets" / "demo.yaml"))
    assert {m.name for m in cfg.models} == {"undefended", "refusal-sft", "antidote"}


def test_comparison_trains_its_own_defenses_on_recipe_v3_and_shares_the_demos_undefended_model():
    """The demo's defenses (20 and 10 steps, recipe v2) fit its 20 minutes; the comparison's train on
    recipe v3 under the contrast check (refusal SFT 60 steps, AntiDote 20), so only the undefended
    rows match: its evaluations are the demo's."""
    from importlib.resources import files

    demo = load_study(str(files("tamperlab.durability") / "presets" / "demo.yaml"))
    comp = load_study("configs/comparison/smollm2.yaml")
    demo.validate()
    comp.validate()
    assert comp.defense_seed_list() == [0, 1, 2] and len(comp.seed_list()) >= 2
    demo_keys, comp_keys = {m.name: m.key() for m in demo.models}, {m.name: m.key(0) for m in comp.models}
    assert demo_keys["undefended"] == comp_keys["undefended"]
    assert demo_keys["refusal-sft"] != comp_keys["refusal-sft"] and demo_keys["antidote"] != comp_keys["antidote"]
    d = {m.name: m.defense for m in comp.models if m.defense}
    assert (d["refusal-sft"]["data_recipe"], d["refusal-sft"]["check_contrast_n"], d["refusal-sft"]["steps"]) == ("v3", 60, 60)
    assert (d["antidote"]["data_recipe"], d["antidote"]["check_contrast_n"], d["antidote"]["steps"]) == ("v3", 60, 20)
    # both under the same dev checks, so "within the budget" means the same thing for both
    assert {k: d["antidote"][k] for k in ("check_every", "check_overrefusal_n")} == {"check_every": 5, "check_overrefusal_n": 96}
    assert d["refusal-sft"]["check_overrefusal_n"] == 96


def test_the_first_comparison_reuses_the_quick_studys_refusal_sft_runs():
    quick, comp = load_study("configs/durability/smollm2-quick.yaml"), load_study("configs/comparison/smollm2-v1.yaml")
    assert quick.eval_key() == comp.eval_key()
    assert [c.key for c in quick.cells_expanded()] == [c.key for c in comp.cells_expanded()]
    assert {m.name: m.key() for m in quick.models}["refusal-sft"] == {m.name: m.key() for m in comp.models}["refusal-sft"]


def test_grid_is_a_cross_product_and_mappings_set_keys_together(tmp_path):
    cfg = _load(tmp_path, BASE + """
grid:
  method: [{method: lora, lr: 1.0e-3}, {method: full, lr: 1.0e-5}]
  scheduler: [constant, cosine-warmup]
cells:
  - {data: benign, method: lora, lr: 1.0e-3}
""")
    cells = cfg.cells_expanded()
    assert len(cells) == 5
    combos = {(c.attack.method, c.attack.lr, c.attack.scheduler, c.attack.data) for c in cells}
    assert ("full", 1e-5, "cosine-warmup", "harmful") in combos
    assert ("lora", 1e-3, "constant", "benign") in combos
    assert all(c.attack.steps == 4 and c.attack.checkpoint_steps == [0, 4] for c in cells)
    assert len({c.key for c in cells}) == 5


@pytest.mark.parametrize("extra, needle", [
    ("bogus: 1\n", "bogus"),
    ("grid: {lr: [fast]}\n", "'lr'"),
    ("grid: {method: [sideways]}\n", "'method'"),
    ("grid: {scheduler: [wobbly]}\n", "'scheduler'"),
    ("grid: {colour: [red]}\n", "colour"),
    ("grid: {lr: []}\n", "grid.lr"),
    ("formats: [klingon]\n", "'format'"),
    ("metric: mmlu/accuracy\n", "'metric'"),
    ("metric: asr\n", "'metric'"),
])
def test_bad_values_are_named(tmp_path, extra, needle):
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, BASE + extra)
    assert needle in str(e.value)
    assert "study.yaml" in str(e.value)


def test_model_and_seed_errors(tmp_path):
    with pytest.raises(ConfigError, match="models\\[0\\]"):
        _load(tmp_path, BASE.replace("{name: base, model: tiny-llama}", "{name: base}"))
    with pytest.raises(ConfigError, match="seeds"):
        _load(tmp_path, BASE.replace("seeds: 2", "seeds: 0"))
    with pytest.raises(ConfigError, match="attack.seed"):
        _load(tmp_path, BASE.replace("batch_size: 2}", "batch_size: 2, seed: 3}"))
    with pytest.raises(ConfigError, match="defense.*lr|lr.*defense"):
        _load(tmp_path, BASE.replace("model: tiny-llama}", "model: tiny-llama, defense: {method: sft, lr: -1}}"))
    with pytest.raises(KeyError, match="defense 'nope'"):
        _load(tmp_path, BASE.replace("model: tiny-llama}", "model: tiny-llama, defense: {method: nope}}"))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_study(tmp_path / "missing.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("models: [\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_study(p)
