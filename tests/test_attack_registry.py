"""The ATTACKS registry: the fine-tuning attack is one entry, and a toy attack registered from a test
(the "Adding an attack" example of docs/durability.md, run as written) goes through a study."""
import pytest
import yaml

from docs_examples import load_section
from tamperlab.attacks import ATTACKS, AttackConfig, AttackSpec, register_attack
from tamperlab.durability import ResultStore, load_study, run_study
from tamperlab.utils.config import ConfigError


@pytest.fixture(scope="module")
def noise():
    mod = load_section("durability.md", "Adding an attack", "docs_noise_attack")
    yield mod
    ATTACKS._entries.pop("noise", None)


def test_finetune_is_an_entry_with_its_config_class():
    e = ATTACKS.get("finetune")
    assert e.config_cls is AttackConfig and e.obj.step_unit == "optimizer step"


def test_a_config_class_without_seed_or_checkpoint_steps_is_refused():
    from dataclasses import dataclass

    @dataclass
    class Bad:
        scale: float = 1.0

    with pytest.raises(TypeError, match="seed, checkpoint_steps"):
        register_attack("bad", Bad, AttackSpec(run=print, describe=str))
    assert "bad" not in ATTACKS


STUDY = {
    "name": "noise-study",
    "models": [{"name": "base", "model": "tiny-llama"}],
    "attack": {"kind": "noise"},
    "grid": {"scale": [0.5, 2.0]},
    "seeds": 2,
    "steps": [0, 1, 2],
    "formats": ["chat"],
    "eval": {"suite": ["harm"], "limit": 4, "max_new_tokens": 8, "batch_size": 4},
}


def test_a_registered_toy_attack_runs_through_a_study_and_its_report(noise, tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    cfg = load_study(path)
    cells = cfg.cells_expanded()
    assert [(c.kind, c.attack.scale, c.attack.steps, c.label) for c in cells] == [
        ("noise", 0.5, 2, "noise 0.5"), ("noise", 2.0, 2, "noise 2")]
    summary = run_study(cfg, tmp_path / "out", raw_config=STUDY)
    assert summary["runs_executed"] == 4
    with ResultStore(tmp_path / "out" / "results.sqlite") as s:
        rows = s.rows()
        kinds = {r[0] for r in s.con.execute("SELECT json_extract(attack, '$.kind') FROM runs")}
    asr = [r for r in rows if (r["suite"], r["metric"]) == ("harm", "asr")]
    assert len(asr) == 2 * 2 * 3 and {r["cell_label"] for r in rows} == {"noise 0.5", "noise 2"}
    assert kinds == {"noise"}
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Gaussian weight noise (scale 0.5, 2 per step), up to 2 increments, prompt formats: chat, 2 seeds" in md
    assert "Nothing is claimed for longer attacks, other noise scales or attack types." in md
    assert "noise increment" in md


def test_unknown_attack_kind_and_bad_settings_are_named(noise, tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**STUDY, "attack": {"kind": "telepathy"}}))
    with pytest.raises(ConfigError, match=r"attack\.kind.*telepathy.*known: .*finetune"):
        load_study(path)
    path.write_text(yaml.safe_dump({**STUDY, "grid": {"scale": [-1.0]}}))
    with pytest.raises(ConfigError, match=r"'scale'.*noise attack settings are NoiseConfig keys"):
        load_study(path)
    path.write_text(yaml.safe_dump({**STUDY, "grid": {"lr": [1e-3]}}))  # a fine-tuning key on the noise attack
    with pytest.raises(ConfigError, match=r"lr"):
        load_study(path)
