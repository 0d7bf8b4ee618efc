"""``tamperlab attack`` and ``tamperlab defend`` end to end on a tiny model."""
import json

from click.testing import CliRunner

from tamperlab.cli import main


def test_attack_cli_trains_evaluates_and_saves_checkpoints(tmp_path):
    out = tmp_path / "atk"
    r = CliRunner().invoke(main, ["attack", "tiny-llama", "--out", str(out), "--steps", "4", "--batch-size", "2",
                                  "--checkpoint-steps", "0,2,4", "--scheduler", "cosine-warmup",
                                  "--warmup-steps", "1", "--data-limit", "8", "--eval-limit", "3",
                                  "--eval-config", str(_eval_yaml(tmp_path)), "--eval-max-new-tokens", "6", "--merge"])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary, key=int) == ["0", "2", "4"]
    assert summary["4"]["harm"]["n"] == 3
    cfg = json.loads((out / "attack_config.json").read_text())
    assert cfg["scheduler"] == "cosine-warmup" and cfg["checkpoint_steps"] == [0, 2, 4]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log if "loss" in row] == [1, 2, 3, 4]
    assert (out / "checkpoints" / "step-4" / "model.safetensors").exists()  # merged LoRA
    ecfg = json.loads((out / "step-2" / "metrics.json").read_text())["config"]
    # attack defaults < --eval-config YAML < --eval-* flags; format and seed follow the attack's
    assert (ecfg["suite"], ecfg["limit"], ecfg["batch_size"], ecfg["max_new_tokens"]) == (["harm"], 3, 4, 6)
    assert (ecfg["format"], ecfg["seed"]) == (cfg["format"], cfg["seed"])


def test_attack_eval_flags_cannot_shadow_attack_fields():
    """`attack` tells its --eval-* options from AttackConfig's by the prefix, so none may share it."""
    from dataclasses import fields

    from tamperlab.attacks.finetune import AttackConfig

    assert not [f.name for f in fields(AttackConfig) if f.name.startswith("eval_")]


def _eval_yaml(tmp_path):
    p = tmp_path / "eval.yaml"
    p.write_text("max_new_tokens: 8\nbatch_size: 4\n")
    return p


def test_attack_cli_bad_values_are_named(tmp_path):
    r = CliRunner().invoke(main, ["attack", "tiny-llama", "--out", str(tmp_path), "--scheduler", "wobbly"])
    assert r.exit_code == 2 and "scheduler" in r.output
    r = CliRunner().invoke(main, ["attack", "tiny-llama", "--out", str(tmp_path), "--steps", "5",
                                  "--checkpoint-steps", "0,10"])
    assert r.exit_code == 2 and "checkpoint_steps" in r.output
    r = CliRunner().invoke(main, ["attack", "tiny-llama", "--out", str(tmp_path), "--data", "poetry"])
    assert r.exit_code == 2 and "'data'" in r.output


def test_defend_cli_writes_a_loadable_model_and_reuses_it(tmp_path):
    out = tmp_path / "def"
    args = ["defend", "tiny-llama", "--method", "sft", "--out", str(out), "--set", "steps=2",
            "--set", "batch_size=2", "--set", "n_safety=4", "--set", "warmup_steps=0"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    info = json.loads((out / "defense.json").read_text())
    assert info["method"] == "sft" and info["config"]["steps"] == 2
    assert (out / "model.safetensors").exists() and (out / "adapter" / "adapter_model.safetensors").exists()
    mtime = (out / "model.safetensors").stat().st_mtime
    assert CliRunner().invoke(main, args).exit_code == 0  # finished: reused, not retrained
    assert (out / "model.safetensors").stat().st_mtime == mtime
    r = CliRunner().invoke(main, args[:-2] + ["--set", "warmup_steps=1"])  # other config, same dir
    assert r.exit_code == 2 and "different defended model" in r.output
    r = CliRunner().invoke(main, ["defend", "tiny-llama", "--method", "nope", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "nope" in r.output
