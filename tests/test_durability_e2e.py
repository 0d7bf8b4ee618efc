"""The protocol end to end on configs/durability/tiny.yaml: every row stored, a report with
figures, a finished study not recomputed, and kill -9 + resume giving identical rows."""
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tamperlab.durability import ResultStore, load_study, run_study

TINY = Path(__file__).resolve().parents[1] / "configs" / "durability" / "tiny.yaml"
# reference: 1 run x 1 step x 2 formats; attacked: 2 cells x 2 seeds x 3 steps x 2 formats, each with
# harm/asr and harm/harmful_rate; baseline: 2 models x 2 formats x (overrefusal/refusal_rate,
# overrefusal/not_complied_rate, mmlu/accuracy)
EXPECTED_ROWS = (1 * 1 * 2 + 2 * 2 * 3 * 2) * 2 + 2 * 2 * 3
RUNS = 1 + 2 * 2 + 2


def _rows(out: Path) -> list[dict]:
    with ResultStore(out / "results.sqlite") as s:
        return s.rows()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("study-uninterrupted")
    summary = run_study(load_study(TINY), out, raw_config=yaml.safe_load(TINY.read_text()))
    return out, summary


def test_every_row_is_stored_once_with_its_provenance(finished):
    out, summary = finished
    rows = _rows(out)
    assert summary["runs_total"] == RUNS and summary["runs_executed"] == RUNS
    assert len(rows) == EXPECTED_ROWS
    keys = {(r["model"], r["cell"], r["seed"], r["step"], r["format"], r["suite"], r["metric"]) for r in rows}
    assert len(keys) == EXPECTED_ROWS
    harm = [r for r in rows if r["suite"] == "harm"]
    assert {r["judge"] for r in harm} == {"compliance"} and {r["metric"] for r in harm} == {"asr", "harmful_rate"}
    assert {r["split"] for r in harm} == {"harmful/eval"} and {r["n"] for r in harm} == {8}
    base = [r for r in rows if r["cell"] == "baseline"]
    assert {(r["suite"], r["metric"]) for r in base} == {("overrefusal", "refusal_rate"),
                                                         ("overrefusal", "not_complied_rate"), ("mmlu", "accuracy")}
    assert {r["step"] for r in base} == {0} and {r["n"] for r in base} == {4}
    attacked = [r for r in rows if r["model"] == "refusal-sft" and r["suite"] == "harm"]
    assert {r["step"] for r in attacked} == {0, 3, 6} and {r["seed"] for r in attacked} == {0, 1}
    assert all(0.0 <= r["value"] <= 1.0 for r in rows)


def test_report_has_verdicts_curves_worst_cases_and_the_config(finished):
    out, _ = finished
    md = (out / "report.md").read_text()
    for needle in ("## Verdicts", "## Durability curves", "## Worst case per model", "## Exact config",
                   "refusal-sft: the safeguard", "Tested threat model", "figures/harm-asr-chat.png",
                   "## Before any attack", "mmlu/accuracy (chat"):
        assert needle in md
    assert (out / "figures" / "harm-asr-plain.png").stat().st_size > 5000
    assert not (out / "figures" / "mmlu-accuracy-chat.png").exists()  # step-0-only metrics are a table
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html


def test_rerunning_a_finished_study_recomputes_nothing(finished):
    out, _ = finished
    before = _rows(out)
    summary = run_study(load_study(TINY), out, raw_config=yaml.safe_load(TINY.read_text()))
    assert summary["runs_executed"] == 0 and summary["runs_skipped"] == RUNS
    assert _rows(out) == before


def _count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0


def test_kill_9_mid_study_then_resume_gives_identical_rows(finished, tmp_path):
    out = tmp_path / "study-killed"
    proc = subprocess.Popen([sys.executable, "-m", "tamperlab.cli", "durability", str(TINY), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    db = out / "results.sqlite"
    deadline = time.time() + 300
    try:
        # 16 rows = both baselines and the reference; a run's rows land together, so >= 17 = after the
        # first attack run (28), with the others still to come
        while _count(db) < 17 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    partial = _count(db)
    assert 0 < partial < EXPECTED_ROWS, f"kill landed at {partial} rows; the test needs a partial study"
    summary = run_study(load_study(TINY), out, raw_config=yaml.safe_load(TINY.read_text()))
    assert summary["runs_skipped"] >= 1  # finished runs were not recomputed
    assert summary["mismatched_rows"] == 0  # recomputed rows of the killed run came out identical
    assert _rows(out) == _rows(finished[0])


def test_process_executor_runs_the_same_plan_in_workers(finished, tmp_path):
    """--workers 2: spawned processes share the database; the same runs and rows come out (values
    are not compared: worker threads differ from the serial run's, and so may float sums)."""
    out = tmp_path / "study-workers"
    summary = run_study(load_study(TINY), out, workers=2)
    assert summary["runs_executed"] == RUNS
    key = lambda r: (r["model"], r["cell"], r["seed"], r["step"], r["format"], r["metric"])  # noqa: E731
    assert sorted(map(key, _rows(out))) == sorted(map(key, _rows(finished[0])))


def test_a_narrower_config_in_the_same_directory_reuses_runs_and_reports_only_its_own(finished):
    from tamperlab.durability.runner import study_rows

    out, _ = finished
    raw = yaml.safe_load(TINY.read_text())
    raw["seeds"] = [1]  # a subset of the finished study
    cfg = load_study(_write(out.parent / "narrow.yaml", raw))
    summary = run_study(cfg, out, raw_config=raw)
    assert summary["runs_executed"] == 0
    rows = study_rows(cfg, out / "results.sqlite")
    assert {r["seed"] for r in rows if r["model"] == "refusal-sft" and r["cell"] != "baseline"} == {1}
    assert len(_rows(out)) == EXPECTED_ROWS  # nothing deleted
    assert "over 1 run: 1 defense seed × 1 attack seed" in (out / "report.md").read_text()
    run_study(load_study(TINY), out)  # leave the full report for the other tests


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


PINNED = Path(__file__).resolve().parent / "fixtures" / "pinned_tiny_study.json"


def test_rows_equal_the_pinned_rows_of_the_tiny_study(finished):
    """Every stored row (keys, labels, hashes and values) as pinned before the runner's refactor
    into an attack registry and executors that return rows: numbers move only where maths changed.
    Re-pinned once, for issue 15's evaluation defaults (judge compliance, harm_judge): the 34 rows
    pinned before it kept their values; their eval_key and judge name changed and 30 harmful_rate /
    not_complied_rate rows were added. Rows now also carry the defense seed (0 for the one training
    of the defended model, None for a model without a defense); every pinned field is unchanged."""
    import json

    rows = _rows(finished[0])
    assert {(r["model"], r.pop("defense_seed")) for r in rows} == {("undefended", None), ("refusal-sft", 0)}
    assert rows == json.loads(PINNED.read_text())


def test_every_evaluation_writes_its_samples_beside_the_study(tmp_path):
    """What was counted as harm or refusal can be read: each run's completions per step."""
    import json

    from tamperlab.durability import load_study, run_study

    cfg = load_study(Path(__file__).parents[1] / "configs" / "durability" / "tiny.yaml")
    run_study(cfg, tmp_path / "s", report=False)
    files = sorted((tmp_path / "s" / "samples").rglob("samples.jsonl"))
    assert files, "no samples written"
    steps = {f.parent.name.split("-")[0] for f in files}
    assert {f"step{s}" for s in cfg.steps} <= steps
    row = json.loads(files[0].read_text().splitlines()[0])
    assert {"prompt", "completion", "suite"} <= set(row)
