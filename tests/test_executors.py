"""Executors return rows and the driver owns the store: a run is a pure task (payload -> rows), the
first failure cancels queued work and the error names the run; the "Adding an executor" example of
docs/durability.md runs as written."""
import json
import sqlite3
import time
from pathlib import Path

import pytest
import yaml

from docs_examples import load_section
from tamperlab.attacks import ATTACKS, AttackSpec, register_attack
from tamperlab.durability import EXECUTORS, ResultStore, load_study, run_study
from tamperlab.durability.executors import TaskFailed
from tamperlab.durability.runner import execute_run, plan

STUDY = {
    "name": "small",
    "models": [{"name": "undefended", "model": "tiny-llama", "attack": False},
               {"name": "attacked", "model": "tiny-llama"}],
    "attack": {"data": "harmful", "batch_size": 2, "data_limit": 4, "max_length": 64, "method": "lora", "lr": 1e-3},
    "seeds": 1,
    "steps": [0, 1],
    "formats": ["chat"],
    "eval": {"suite": ["harm"], "limit": 2, "max_new_tokens": 4, "batch_size": 2},
}


def _cfg(tmp_path, study=STUDY):
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(study))
    return load_study(p)


def test_a_run_is_a_pure_task_that_returns_its_rows(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    payloads = plan(cfg, {(m.name, None): m.model for m in cfg.models})
    assert payloads and all("db" not in p for p in payloads)
    json.dumps(payloads)  # plain data: any executor can ship it

    def no_sqlite(*a, **k):
        raise AssertionError("a task opened SQLite")

    monkeypatch.setattr(sqlite3, "connect", no_sqlite)
    attacked = next(p for p in payloads if p["model"] == "attacked")
    result = execute_run(attacked)
    assert set(result) == {"rows", "artefacts", "seconds"}
    asr = [r for r in result["rows"] if r["metric"] == "asr"]
    assert sorted(r["step"] for r in asr) == [0, 1]
    assert {(r["model"], r["cell"], r["suite"], r["n"]) for r in result["rows"]} == {
        ("attacked", attacked["cell"], "harm", 2)}
    json.dumps(result)


def test_the_driver_writes_what_the_executor_returns(tmp_path):
    seen: list[tuple[dict, dict]] = []

    @EXECUTORS.register("recording-test", help="local, recording every result")
    def recording(payloads, job, workers, on_done):
        for p in payloads:
            r = job(p)
            seen.append((p, r))
            on_done(p, r)

    try:
        summary = run_study(_cfg(tmp_path), tmp_path / "out", executor="recording-test", report=False)
    finally:
        EXECUTORS._entries.pop("recording-test")
    assert summary["runs_executed"] == 2
    returned = sorted((r for _, res in seen for r in res["rows"]), key=lambda r: (r["model"], r["step"]))
    with ResultStore(tmp_path / "out" / "results.sqlite") as s:
        stored = sorted(s.rows(), key=lambda r: (r["model"], r["step"]))
        assert len(s.done_runs()) == 2
    assert stored == returned


def toy_job(p: dict) -> dict:
    """Fails on payload 1; every other payload sleeps a little and leaves a file saying it ran."""
    if p["i"] == 1:
        raise ValueError("toy failure")
    time.sleep(p["sleep"])
    Path(p["dir"], f"ran-{p['i']}").write_text("")
    return {"i": p["i"]}


@pytest.mark.parametrize("executor, workers", [("local", 1), ("process", 2)])
def test_the_first_failure_cancels_queued_work(tmp_path, executor, workers):
    n = 12
    payloads = [{"i": i, "dir": str(tmp_path), "sleep": 0.0 if executor == "local" else 1.0} for i in range(n)]
    handed_back: list[int] = []
    with pytest.raises(TaskFailed) as e:
        EXECUTORS.get(executor).obj(payloads, toy_job, workers, lambda p, r: handed_back.append(r["i"]))
    assert e.value.payload["i"] == 1 and isinstance(e.value.__cause__, ValueError)
    ran = sorted(int(f.name.removeprefix("ran-")) for f in tmp_path.glob("ran-*"))
    assert sorted(handed_back) == ran  # what ran was handed back (a driver stores it)
    if executor == "local":
        assert ran == [0]
    else:  # what was running beside it and the few already handed to the pool's call queue; not the rest
        assert len(ran) <= 6 and not set(ran) & set(range(8, n)), ran


def _boom(lm, cfg, on_checkpoint):
    on_checkpoint(0, lm)
    raise ValueError("the attack blew up")


def test_a_failing_run_is_named_and_finished_runs_are_kept(tmp_path):
    from tamperlab.attacks.finetune import AttackConfig

    register_attack("boom-test", AttackConfig, AttackSpec(run=_boom, describe=lambda cfgs, steps: "boom"))
    try:
        cfg = _cfg(tmp_path, {**STUDY, "attack": {**STUDY["attack"], "kind": "boom-test"}})
        with pytest.raises(RuntimeError) as e:
            run_study(cfg, tmp_path / "out")
    finally:
        ATTACKS._entries.pop("boom-test")
    assert e.value.payload["model"] == "attacked" and e.value.payload["seed"] == 0
    msg = str(e.value)
    assert "run of model 'attacked', cell 'boom-test" in msg and "seed 0 failed: ValueError: the attack blew up" in msg
    with ResultStore(tmp_path / "out" / "results.sqlite") as s:
        assert {r["model"] for r in s.rows()} == {"undefended"}  # the reference ran first and is stored
        assert len(s.done_runs()) == 1


def _in_place(lm, cfg, on_checkpoint):
    import torch

    on_checkpoint(0, lm)
    with torch.no_grad():
        next(lm.model.parameters()).add_(1.0)
    on_checkpoint(1, lm)


def test_an_attack_that_changes_the_shared_model_is_stopped(tmp_path):
    import torch

    from tamperlab.attacks.finetune import AttackConfig
    from tamperlab.models import load_model
    from tamperlab.models.loading import weights_fingerprint

    lm = load_model("tiny-llama")  # the process's shared copy, which the bad attack damages
    first = next(lm.model.parameters())
    saved = first.detach().clone()
    register_attack("in-place-test", AttackConfig, AttackSpec(run=_in_place, describe=lambda cfgs, steps: "x"))
    try:
        cfg = _cfg(tmp_path, {**STUDY, "attack": {**STUDY["attack"], "kind": "in-place-test"}})
        with pytest.raises(RuntimeError, match="changed the weights of the model it was given"):
            run_study(cfg, tmp_path / "out")
    finally:
        ATTACKS._entries.pop("in-place-test")
        with torch.no_grad():
            first.copy_(saved)  # bit-exact repair: later tests share this object
    assert lm.fingerprint == weights_fingerprint(lm.model)


def test_the_docs_subprocess_executor_gives_the_local_rows(tmp_path):
    load_section("durability.md", "Adding an executor", "docs_subprocess_executor")
    try:
        cfg = _cfg(tmp_path)
        run_study(cfg, tmp_path / "local", report=False)
        summary = run_study(cfg, tmp_path / "sub", executor="subprocess", report=False)
    finally:
        EXECUTORS._entries.pop("subprocess")
    assert summary["runs_executed"] == 2
    rows = [ResultStore(tmp_path / d / "results.sqlite").rows() for d in ("local", "sub")]
    assert rows[0] == rows[1] and len([r for r in rows[0] if r["metric"] == "asr"]) == 1 + 2
