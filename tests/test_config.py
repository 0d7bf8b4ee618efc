import pytest

from tamperlab.evaluation import EvalConfig
from tamperlab.utils.config import ConfigError, load_config


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("suite: [harm, mmlu]\nlimit: 5\nformat: plain\n")
    cfg = load_config(EvalConfig, p, {"limit": 7, "seed": None})
    assert cfg.suite == ["harm", "mmlu"] and cfg.limit == 7 and cfg.format == "plain" and cfg.seed == 0


@pytest.mark.parametrize("yaml_text,match", [
    ("limt: 5\n", r"unknown config key\(s\) in .*c\.yaml: limt"),
    ("limit: five\n", r"field 'limit' in .*c\.yaml: expected int, got 'five'"),
    ("suite: harm,bogus\n", r"field 'suite': unknown suite 'bogus'"),
    ("limit: 0\n", r"field 'limit': must be >= 1"),
    ("format: fancy\n", r"field 'format': unknown prompt format 'fancy'"),
    ("do_sample: maybe\n", r"field 'do_sample' .*expected bool"),
    ("- a\n- b\n", r"top level must be a mapping"),
])
def test_bad_config_names_the_field(tmp_path, yaml_text, match):
    p = tmp_path / "c.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError, match=match):
        load_config(EvalConfig, p)
