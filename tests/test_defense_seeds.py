"""Defense seeds: a defended model is trained once per defense seed, its rows carry the defense seed
and the attack seed, every spread covers both, and a model outside its defense budget is marked.
Seed 0 keeps the identity a study had before defense seeds existed (its resume state still works)."""
import csv
import json
import sqlite3

import pytest
import yaml

from tamperlab.durability import ResultStore, load_study, run_study
from tamperlab.durability.aggregate import aggregate, verdicts
from tamperlab.durability.report import read_rows_csv, write_rows_csv
from tamperlab.durability.runner import defense_dir, defense_payloads, plan
from tamperlab.utils.config import ConfigError

DEFENSE = {"method": "sft", "steps": 2, "batch_size": 2, "max_length": 64, "lora_targets": ["q_proj"],
           "data_recipe": "v1", "check_every": 0}
STUDY = {
    "name": "dseeds",
    "models": [{"name": "undefended", "model": "tiny-llama", "attack": False},
               {"name": "sft", "model": "tiny-llama", "defense": DEFENSE}],
    "attack": {"data": "harmful", "batch_size": 2, "data_limit": 4, "max_length": 64, "method": "lora", "lr": 1e-3},
    "seeds": 2,
    "defense_seeds": 2,
    "steps": [0, 1],
    "formats": ["chat"],
    "eval": {"suite": ["harm"], "limit": 2, "max_new_tokens": 4, "batch_size": 2, "judge": "refusal-keyword",
             "harm_judge": "none"},
}


def _cfg(tmp_path, **changes):
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump({**STUDY, **changes}))
    return load_study(p)


def test_each_defense_seed_is_its_own_model_and_seed_0_keeps_the_old_key(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.validate()
    spec = cfg.models[1]
    assert spec.key(0) == spec.key() and spec.key(1) != spec.key(0)
    old = _cfg(tmp_path, defense_seeds=1)
    old.validate()
    assert old.models[1].key() == spec.key(0)  # a study without defense seeds: same model, same directory
    d = defense_payloads(cfg, tmp_path)
    assert [(p["defense_seed"], p["config"]["seed"]) for p in d] == [(0, 0), (1, 1)]
    assert len({p["out_dir"] for p in d}) == 2
    paths = {(s.name, ds): s.model for s, ds in cfg.trained_models()}
    runs = plan(cfg, paths)
    attacked = [(p["defense_seed"], p["seed"]) for p in runs if p["model"] == "sft"]
    assert sorted(attacked) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [p["defense_seed"] for p in runs if p["model"] == "undefended"] == [None]


@pytest.mark.parametrize("changes, needle", [
    ({"defense_seeds": 0}, "field 'defense_seeds': must be >= 1"),
    ({"defense_seeds": [0, 0]}, "field 'defense_seeds': seeds repeat"),
    ({"defense_seeds": "three"}, "field 'defense_seeds'"),
    ({"models": [{"name": "sft", "model": "tiny-llama", "defense": {**DEFENSE, "seed": 3}}]},
     "field 'models\\[sft\\].defense.seed': set defense seeds with the top-level 'defense_seeds'"),
])
def test_bad_defense_seeds_name_the_field(tmp_path, changes, needle):
    import re

    with pytest.raises(ConfigError) as e:
        _cfg(tmp_path, **changes).validate()
    assert re.search(needle, str(e.value)), str(e.value)


def test_aggregate_spreads_over_defense_and_attack_seeds():
    rows = [{"model": "m", "cell": "c", "cell_label": "c", "step": 1, "format": "chat", "suite": "harm",
             "metric": "asr", "judge": "j", "split": "s", "n": 2, "seed": s, "defense_seed": ds, "value": v,
             "model_key": f"k{ds}"}
            for (ds, s), v in {(0, 0): 0.1, (0, 1): 0.2, (1, 0): 0.9, (1, 1): 0.4}.items()]
    (a,) = aggregate(rows)
    assert a["values"] == [0.1, 0.2, 0.9, 0.4] and a["defense_seeds"] == [0, 0, 1, 1] and a["seeds"] == [0, 1, 0, 1]
    assert a["min"] == 0.1 and a["max"] == 0.9 and a["mean"] == pytest.approx(0.4)


def test_rows_carry_both_seeds_and_a_model_outside_its_budget_is_marked(tmp_path):
    cfg = _cfg(tmp_path)
    out = tmp_path / "study"
    summary = run_study(cfg, out)
    assert summary["runs_total"] == 1 + 2 * 2  # the reference once; sft: 2 defense seeds × 2 attack seeds
    with ResultStore(out / "results.sqlite") as store:
        rows = store.rows()
    got = {(r["model"], r["defense_seed"], r["seed"]) for r in rows}
    assert got == {("undefended", None, 0), ("sft", 0, 0), ("sft", 0, 1), ("sft", 1, 0), ("sft", 1, 1)}
    assert len({r["model_key"] for r in rows if r["model"] == "sft"}) == 2
    with open(out / "results.csv", newline="") as f:
        assert {r["defense_seed"] for r in csv.DictReader(f)} == {"", "0", "1"}
    agg = aggregate(rows)
    a = next(a for a in agg if a["model"] == "sft" and a["metric"] == "asr" and a["step"] == 1)
    assert len(a["values"]) == 4 and sorted(set(a["defense_seeds"])) == [0, 1]
    assert "2 defense seeds × 2 attack seeds" in (out / "report.md").read_text()
    assert not verdicts(cfg, agg, out)[1]["outside_budget"]  # check_every 0: no budget was set, none missed
    # a defense seed whose training never got within budget (as defense.json records it) is marked
    info = defense_dir(out, cfg.models[1], 1) / "defense.json"
    d = json.loads(info.read_text())
    base = {"step": 0, "overrefusal": 0.1, "utility_nll": 2.0}
    info.write_text(json.dumps({**d, "within_budget": False, "selected_step": 2,
                                "checks": [base, {"step": 2, "overrefusal": 0.9, "utility_nll": 2.0}],
                                "budget": {"overrefusal": "<= 0.100 + 0.1", "utility_nll": "<= 2.0000 x (1 + 0.05)"}}))
    v = verdicts(cfg, agg, out)[1]
    assert v["outside_budget"] == [1] and "OUTSIDE THE DEFENSE BUDGET for defense seed 1" in v["text"]
    run_study(cfg, out)  # resumes (nothing left to run) and rebuilds the report
    report = (out / "report.md").read_text()
    assert "Defense budget (matched utility)" in report and "NO: outside the budget" in report


def test_a_database_and_csv_from_before_defense_seeds_still_read(tmp_path):
    db = tmp_path / "old.sqlite"
    con = sqlite3.connect(db)
    con.executescript("""
        CREATE TABLE results (model TEXT NOT NULL, model_key TEXT NOT NULL, cell TEXT NOT NULL,
            cell_label TEXT NOT NULL, eval_key TEXT NOT NULL, seed INTEGER NOT NULL, step INTEGER NOT NULL,
            format TEXT NOT NULL, suite TEXT NOT NULL, metric TEXT NOT NULL, judge TEXT NOT NULL,
            split TEXT NOT NULL, n INTEGER NOT NULL, value REAL, created REAL NOT NULL,
            PRIMARY KEY (model_key, cell, eval_key, seed, step, format, suite, metric));
        INSERT INTO results VALUES ('m','k','c','c','e',0,0,'chat','harm','asr','j','s',2,0.5,0);""")
    con.commit()
    con.close()
    with ResultStore(db) as store:
        (row,) = store.rows()
    assert row["defense_seed"] is None and row["value"] == 0.5
    path = tmp_path / "results.csv"
    write_rows_csv([row], path)
    (back,) = read_rows_csv(path)
    assert back == row
    legacy = tmp_path / "legacy.csv"  # a committed results.csv without the column
    header = [k for k in row if k != "defense_seed"]
    legacy.write_text(",".join(header) + "\n" + ",".join(str(row[k]) for k in header) + "\n")
    (old,) = read_rows_csv(legacy)
    assert old["defense_seed"] is None and old["seed"] == 0 and old["value"] == 0.5


def test_the_interval_counts_defense_seeds_not_runs():
    """3 defense seeds × 2 attack seeds are 6 values but 3 independent draws: no bootstrap interval;
    5 defense seeds are enough."""
    def rows(n_def, n_att):
        return [{"model": "m", "cell": "c", "cell_label": "c", "step": 1, "format": "chat", "suite": "harm",
                 "metric": "asr", "judge": "j", "split": "s", "n": 2, "seed": s, "defense_seed": d,
                 "value": 0.1 * d + 0.01 * s} for d in range(n_def) for s in range(n_att)]

    assert aggregate(rows(3, 2))[0]["ci_supported"] is False
    assert aggregate(rows(5, 1))[0]["ci_supported"] is True


def test_a_defended_model_with_attack_false_is_trained_per_seed_and_evaluated_before_attack_only(tmp_path):
    """The self-play study trains a defender it does not attack: one step-0 run per defense seed,
    no attack runs, and the report still builds."""
    models = STUDY["models"] + [{"name": "sft-ref", "model": "tiny-llama", "attack": False,
                                 "defense": {**DEFENSE, "steps": 1}}]
    cfg = _cfg(tmp_path, models=models, seeds=1)
    out = tmp_path / "study"
    summary = run_study(cfg, out)
    assert summary["runs_total"] == 1 + 2 + 2  # undefended once; sft 2 defense seeds x 1 attack seed; sft-ref 2
    with ResultStore(out / "results.sqlite") as store:
        rows = store.rows()
    ref = [r for r in rows if r["model"] == "sft-ref"]
    assert {r["defense_seed"] for r in ref} == {0, 1} and {r["step"] for r in ref} == {0}
    assert "sft-ref" in (out / "report.md").read_text()


def test_budget_table_shows_the_contrast_check_only_when_a_model_had_one():
    from tamperlab.durability.report import budget_blocks

    base = {"step": 0, "overrefusal": 0.04, "utility_nll": 2.3}
    plain = {"within_budget": True, "selected_step": 10, "checks": [base, {**base, "step": 10, "overrefusal": 0.1}],
             "budget": {"overrefusal": "<= 0.040 + 0.1", "utility_nll": "<= 2.3000 x (1 + 0.05)"}}
    ((_, _), (_, _), (_, table)) = budget_blocks({("sft", 0): plain})
    assert table[0] == ["model", "defense seed", "kept step", "budget", "dev over-refusal", "dev utility NLL", "met"]
    checked = {**plain, "checks": [{**base, "overrefusal_contrast": 0.03},
                                   {**base, "step": 10, "overrefusal": 0.1, "overrefusal_contrast": 0.12}],
               "budget": {**plain["budget"], "overrefusal_contrast": "<= 0.030 + 0.1"}}
    ((_, _), (_, text), (_, table)) = budget_blocks({("sft", 0): checked, ("antidote", 0): plain, ("vaccine", 0): None})
    assert table[0][5] == "contrast over-refusal (contrast/dev)" and "borderline/dev and contrast/dev" in text
    assert table[1][3] == ("over-refusal <= 0.040 + 0.1; contrast over-refusal <= 0.030 + 0.1; "
                           "NLL <= 2.3000 x (1 + 0.05)")
    assert table[1][5] == "0.120 (undefended 0.030)" and table[2][5] == "not checked"
    assert len({len(r) for r in table}) == 1  # every row as wide as the header, the missing model too
