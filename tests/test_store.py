"""The results database: idempotent inserts, done-marks, recomputed values checked."""
from tamperlab.durability import ResultStore


def _row(value=0.5, step=0):
    return {"model": "m", "model_key": "k", "cell": "c", "cell_label": "l", "eval_key": "e", "seed": 0,
            "step": step, "format": "chat", "suite": "harm", "metric": "asr", "judge": "j", "split": "s",
            "n": 4, "value": value}


def test_insert_is_idempotent_and_mismatch_is_counted(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as s:
        assert s.add_result(_row()) is True
        assert s.add_result(_row()) is False
        assert s.mismatches == 0
        assert s.add_result(_row(value=0.75)) is False  # the stored value wins, the difference is counted
        assert s.mismatches == 1
        s.add_result(_row(step=5))
        assert [r["step"] for r in s.rows()] == [0, 5]
        assert s.rows()[0]["value"] == 0.5


def test_done_runs_survive_reopen_and_wal_is_on(tmp_path):
    p = tmp_path / "r.sqlite"
    with ResultStore(p) as s:
        s.mark_done({"model_key": "k", "cell": "c", "eval_key": "e", "seed": 1, "model": "m", "cell_label": "l",
                     "attack": {"lr": 1e-4}}, 3.0)
        assert s.con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with ResultStore(p) as s:
        assert s.done_runs() == {("k", "c", "e", 1)}
