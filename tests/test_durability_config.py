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
    for name in ("tiny", "smollm2-quick", "smollm2-full"):
        cfg = load_study(f"configs/durability/{name}.yaml")
        assert cfg.cells_expanded()


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
