"""Every config error is found before any work starts and is one line naming the field: types of
list and mapping fields, judge and suite names, files that must exist; at the CLI boundary an error
is `error: ...` and exit 2, and --debug shows the traceback instead."""
import pytest
import yaml
from click.testing import CliRunner

from tamperlab.cli import main
from tamperlab.durability import load_study
from tamperlab.utils.config import ConfigError, merge, parse_sets

BASE = {
    "name": "t",
    "models": [{"name": "base", "model": "tiny-llama", "defense": {"method": "sft", "steps": 2}}],
    "attack": {"data": "harmful", "batch_size": 2},
    "seeds": 2,
    "steps": [0, 4],
    "eval": {"suite": ["harm"], "limit": 2},
}


def _write(tmp_path, **changes):
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(merge(BASE, changes)))
    return p


@pytest.mark.parametrize("changes, needle", [
    ({"models": "foo"}, "field 'models' in .*study.yaml: expected a list, got 'foo'"),
    ({"grid": [1]}, "field 'grid' in .*study.yaml: expected a mapping"),
    ({"steps": 4}, "field 'steps' in .*study.yaml: expected a list, got 4"),
    ({"formats": "chat"}, "field 'formats' in .*study.yaml: expected a list"),
    ({"cells": {"lr": 1}}, "field 'cells' in .*study.yaml: expected a list"),
    ({"eval": ["harm"]}, "field 'eval' in .*study.yaml: expected a mapping"),
    ({"attack": "lora"}, "field 'attack' in .*study.yaml: expected a mapping"),
    ({"baseline_eval": 3}, "field 'baseline_eval' in .*study.yaml: expected a mapping"),
    ({"attack": {"checkpoint_steps_x": 1}}, "checkpoint_steps_x"),
    ({"attack": {"lora_targets": 7}}, "field 'lora_targets'.*expected a list"),
    ({"attack": {"lora_targets": [{"q": 1}]}}, "field 'lora_targets'.*expected a list of str"),
    ({"eval": {"judge": "oracle"}}, "field 'judge': unknown judge 'oracle'; known: .*refusal-classifier"),
    ({"baseline_eval": {"suite": ["mmlu"], "judge": "oracle"}}, "field 'judge': unknown judge 'oracle'.*baseline_eval"),
    ({"eval": {"suite": ["harm", "vibes"]}}, "field 'suite': unknown suite 'vibes'"),
    ({"baseline_eval": {"suite": ["vibes"]}}, "field 'suite': unknown suite 'vibes'.*baseline_eval"),
    ({"eval": {"prompts": "/no/such/prompts.csv"}}, "field 'prompts': file not found: /no/such/prompts.csv"),
    ({"attack": {"data_file": "/no/such/attack.jsonl"}}, "field 'data_file': file not found: /no/such/attack.jsonl"),
    ({"models": [{"name": "base", "model": "tiny-llama", "defense": "sft"}]}, "field 'defense' in models\\[0\\]"),
    ({"models": [{"name": "base", "model": "./no/such/model-dir"}]},
     "field 'models\\[0\\].model': model './no/such/model-dir' is neither a preset"),
    ({"models": [{"name": "base", "model": "tiny-lama"}]}, "field 'models\\[0\\].model': model 'tiny-lama'"),
])
def test_each_config_error_is_one_line_naming_the_field(tmp_path, changes, needle):
    with pytest.raises(ConfigError) as e:
        load_study(_write(tmp_path, **changes))
    assert "\n" not in str(e.value)
    assert pytest.importorskip("re").search(needle, str(e.value)), str(e.value)


def test_a_bad_judge_fails_before_the_defense_trains(tmp_path, monkeypatch):
    import tamperlab.durability.runner as runner

    trained = []
    monkeypatch.setattr(runner, "execute_defense", lambda p: trained.append(p) or {})
    cfg = load_study(_write(tmp_path))
    cfg.eval = {"suite": ["harm"], "judge": "oracle"}  # changed after loading: run_study validates again
    with pytest.raises(ConfigError, match="judge"):
        runner.run_study(cfg, tmp_path / "out")
    assert trained == [] and not (tmp_path / "out").exists()


def test_lora_targets_are_checked_against_the_model_before_any_defense_trains(tmp_path, monkeypatch):
    import tamperlab.durability.runner as runner

    trained = []
    monkeypatch.setattr(runner, "execute_defense", lambda p: trained.append(p) or {})
    cfg = load_study(_write(tmp_path, attack={"method": "lora", "lora_targets": ["q_proj", "query_key_value"]}))
    with pytest.raises(ConfigError) as e:
        runner.run_study(cfg, tmp_path / "out")
    assert "field 'lora_targets': ['query_key_value'] not in this model" in str(e.value)
    assert "on model 'base'" in str(e.value) and "\n" not in str(e.value)
    assert trained == []


def _cli(*args, **kw):
    return CliRunner(**kw).invoke(main, list(map(str, args)))


def test_cli_config_error_is_one_error_line_and_exit_2(tmp_path):
    r = _cli("durability", _write(tmp_path, steps=4), "--out", tmp_path / "out")
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: field 'steps'"), r.output
    r = _cli("--debug", "durability", _write(tmp_path, steps=4), "--out", tmp_path / "out")
    assert isinstance(r.exception, ConfigError)  # --debug: the error itself, with its traceback


def test_cli_boundary_catches_os_runtime_type_errors_with_a_hint_and_lets_bugs_through(tmp_path, monkeypatch):
    import tamperlab.durability as durability

    study = _write(tmp_path)
    for exc in (TypeError("bad operand"), RuntimeError("run failed"), PermissionError("read-only")):
        monkeypatch.setattr(durability, "run_study", lambda *a, _e=exc, **k: (_ for _ in ()).throw(_e))
        r = _cli("durability", study, "--out", tmp_path / "out")
        errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
        assert r.exit_code == 2 and len(errors) == 1 and errors[0].startswith(f"error: {type(exc).__name__}: ")
        assert errors[0].endswith("(--debug shows the traceback)")
        r = _cli("--debug", "durability", study, "--out", tmp_path / "out")
        assert r.exception is exc
    monkeypatch.setattr(durability, "run_study", lambda *a, **k: {}.missing)  # a genuine bug: not hidden
    r = _cli("durability", study, "--out", tmp_path / "out")
    assert isinstance(r.exception, AttributeError) and r.exit_code == 1


def test_durability_set_overrides_study_keys(tmp_path, monkeypatch):
    import tamperlab.durability as durability

    seen = {}

    def fake_run(cfg, out, **kw):
        seen.update(cfg=cfg, raw=kw["raw_config"])
        raise RuntimeError("stop here")

    monkeypatch.setattr(durability, "run_study", fake_run)
    r = _cli("durability", _write(tmp_path), "--out", tmp_path / "o", "--set", "seeds=[3]", "--set", "eval.limit=5")
    assert r.exit_code == 2 and "stop here" in r.output
    assert seen["cfg"].seed_list() == [3] and seen["cfg"].eval == {"suite": ["harm"], "limit": 5}
    assert seen["raw"]["eval"]["limit"] == 5  # the report's exact config is what ran
    r = _cli("durability", _write(tmp_path), "--out", tmp_path / "o", "--set", "eval.limit=lots")
    assert r.exit_code == 2 and "field 'limit'" in r.output and "--set" in r.output
    r = _cli("durability", _write(tmp_path), "--out", tmp_path / "o", "--set", "seeds")
    assert r.exit_code == 2 and "--set 'seeds': write key=value" in r.output


def test_parse_sets_and_merge():
    assert parse_sets(["lr=1e-4", "lora_targets=[q_proj, v_proj]", "eval.limit=3", "eval.judge=refusal-keyword",
                       "name=a=b"]) == {"lr": "1e-4", "lora_targets": ["q_proj", "v_proj"],
                                       "eval": {"limit": 3, "judge": "refusal-keyword"}, "name": "a=b"}
    assert merge({"eval": {"limit": 1, "suite": ["harm"]}, "seeds": 2}, {"eval": {"limit": 3}}) == {
        "eval": {"limit": 3, "suite": ["harm"]}, "seeds": 2}
    with pytest.raises(ConfigError, match="'eval' is set to a value"):
        parse_sets(["eval=1", "eval.limit=3"])


def test_plugin_registers_an_attack_that_the_attack_command_runs(tmp_path, monkeypatch):
    import json
    import sys

    from docs_examples import section_code
    from tamperlab.attacks import ATTACKS

    (tmp_path / "noise_plugin_for_test.py").write_text(section_code("durability.md", "Adding an attack"))
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "atk"
    try:
        r = _cli("--plugin", "noise_plugin_for_test", "attack", "tiny-llama", "--kind", "noise", "--out", out,
                 "--set", "steps=2", "--set", "checkpoint_steps=0,2", "--set", "scale=0.5",
                 "--set", "eval.limit=2", "--set", "eval.max_new_tokens=4", "--no-save-checkpoints")
    finally:
        ATTACKS._entries.pop("noise", None)
        sys.modules.pop("noise_plugin_for_test", None)
    assert r.exit_code == 0, r.output
    assert sorted(json.loads((out / "summary.json").read_text()), key=int) == ["0", "2"]
    cfg = json.loads((out / "attack_config.json").read_text())
    assert cfg["kind"] == "noise" and cfg["scale"] == 0.5
    r = _cli("--plugin", "no_such_plugin_module", "attacks")
    assert r.exit_code == 2 and "--plugin no_such_plugin_module" in r.output
