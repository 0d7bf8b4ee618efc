"""``tamperlab attack`` and ``tamperlab defend`` end to end on a tiny model."""
import json

from click.testing import CliRunner

from tamperlab.cli import main


def test_attack_cli_trains_evaluates_and_saves_checkpoints(tmp_path):
    out = tmp_path / "atk"
    r = CliRunner().invoke(main, ["attack", "tiny-llama", "--out", str(out), *_sets(
        steps=4, batch_size=2, checkpoint_steps="0,2,4", scheduler="cosine-warmup", warmup_steps=1, data_limit=8),
        "--set", "eval.limit=3", "--eval-config", str(_eval_yaml(tmp_path)), "--set", "eval.max_new_tokens=6",
        "--merge"])
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
    # attack defaults < --eval-config YAML < --set eval.*; format and seed follow the attack's
    assert (ecfg["suite"], ecfg["limit"], ecfg["batch_size"], ecfg["max_new_tokens"]) == (["harm"], 3, 4, 6)
    assert (ecfg["format"], ecfg["seed"]) == (cfg["format"], cfg["seed"])


def _sets(**kv) -> list[str]:
    return [a for k, v in kv.items() for a in ("--set", f"{k}={v}")]


def _eval_yaml(tmp_path):
    p = tmp_path / "eval.yaml"
    p.write_text("max_new_tokens: 8\nbatch_size: 4\n")
    return p


def test_attack_cli_bad_values_are_named(tmp_path):
    def run(*args):
        return CliRunner().invoke(main, ["attack", "tiny-llama", "--out", str(tmp_path), *args])

    r = run("--set", "scheduler=wobbly")
    assert r.exit_code == 2 and "scheduler" in r.output
    r = run(*_sets(steps=5, checkpoint_steps="0,10"))
    assert r.exit_code == 2 and "checkpoint_steps" in r.output
    r = run("--set", "data=poetry")
    assert r.exit_code == 2 and "'data'" in r.output
    r = run("--set", "eval.judge=oracle")
    assert r.exit_code == 2 and "'judge'" in r.output and "oracle" in r.output
    r = run("--set", "eval=harm")
    assert r.exit_code == 2 and "eval.limit" in r.output
    r = run("--kind", "telepathy")
    assert r.exit_code == 2 and "unknown attack 'telepathy'" in r.output
    r = run("--steps", "4")  # one override style: the generated flags are gone
    assert r.exit_code == 2 and "No such option '--steps'" in r.output


def test_attacks_lists_the_registry_and_an_attacks_settings():
    r = CliRunner(env={"COLUMNS": "200"}).invoke(main, ["attacks"])
    assert r.exit_code == 0 and "finetune" in r.output
    r = CliRunner(env={"COLUMNS": "200"}).invoke(main, ["attacks", "finetune"])
    assert r.exit_code == 0 and "checkpoint_steps" in r.output and "data_file" in r.output


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
