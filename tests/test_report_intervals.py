"""Durability reports show a bootstrap interval only where the number of seeds supports one (a
percentile bootstrap over 3 seeds is exactly [min, max]), and the committed docs reports are
rebuilt from their committed config.yaml and results.csv, without training anything."""
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tamperlab.cli import main
from tamperlab.durability.aggregate import INTERVAL_LABEL, MIN_SEEDS_FOR_INTERVAL, aggregate, bootstrap_ci
from tamperlab.durability.report import read_rows_csv

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_a_bootstrap_over_three_seeds_is_min_max_and_over_five_it_is_inside():
    for vals in ([0.2, 0.5, 0.9], [0.0, 0.1, 1.0], [0.3, 0.31, 0.7]):
        assert bootstrap_ci(vals) == pytest.approx((min(vals), max(vals)), abs=1e-12)
    five = [0.2, 0.4, 0.5, 0.6, 0.9]
    lo, hi = bootstrap_ci(five)
    assert min(five) < lo < hi < max(five)


def _rows(n_seeds: int) -> list[dict]:
    return [{"model": "m", "model_key": "k", "cell": "c", "cell_label": "lbl", "eval_key": "e", "seed": s,
             "step": 10, "format": "chat", "suite": "harm", "metric": "asr", "judge": "j", "split": "sp", "n": 50,
             "value": 0.1 * s} for s in range(n_seeds)]


@pytest.mark.parametrize("n", [1, 3, 4, 5, 8])
def test_an_interval_is_supported_only_from_five_seeds(n):
    (a,) = aggregate(_rows(n))
    assert a["ci_supported"] is (n >= MIN_SEEDS_FOR_INTERVAL)


@pytest.mark.parametrize("study", ["durability-quick", "comparison-v1", "demo", "comparison"])
def test_committed_reports_rebuild_from_their_results_without_training(study, tmp_path):
    out = tmp_path / study
    shutil.copytree(DOCS / study, out)
    (out / "report.md").unlink()
    r = CliRunner().invoke(main, ["report", str(out)])
    assert r.exit_code == 0, r.output
    md = (out / "report.md").read_text()
    assert md == (DOCS / study / "report.md").read_text()  # the committed report is this code's output
    assert "95% CI" not in md and INTERVAL_LABEL not in md  # 2-3 seeds: min and max, no interval
    assert "No interval is given for fewer than 5 seeds" in md
    assert (out / "results.csv").read_text() == (DOCS / study / "results.csv").read_text()


def test_a_five_seed_study_shows_the_labelled_interval(tmp_path):
    from tamperlab.durability.report import build_blocks, render_markdown

    import yaml

    from tamperlab.durability.config import DurabilityConfig
    from tamperlab.utils.config import from_dict

    out = tmp_path / "five"
    shutil.copytree(DOCS / "demo", out)
    raw = yaml.safe_load((out / "config.yaml").read_text())
    raw["seeds"] = 5
    cfg = from_dict(DurabilityConfig, raw)
    # rows as from models without a defense seed: 5 attack seeds are then 5 independent draws (with
    # defense seeds the count is of defense seeds, tests/test_defense_seeds.py)
    rows = [{**r, "defense_seed": None} for r in read_rows_csv(out / "results.csv")]
    attacked = [r for r in rows if r["cell"] not in ("reference", "baseline")]
    rows += [{**r, "seed": r["seed"] + 2 * k, "value": min(1.0, r["value"] + 0.01 * k)}
             for k in (1, 2) for r in attacked if r["seed"] < 2 and r["seed"] + 2 * k < 5]
    md = render_markdown(build_blocks(cfg, rows, out, raw))
    assert f"| {INTERVAL_LABEL} |" in md and "– (< 5 seeds)" in md  # 5-seed cells get one; the 1-seed reference not
    assert "at least 5 seeds a bootstrap 95% interval over seeds" in md
