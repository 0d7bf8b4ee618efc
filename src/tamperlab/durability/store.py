"""Results of a study in an embedded SQLite database (WAL), owned by the driver alone: executors
return rows, and the driver stores a finished run (its rows and its done-mark) in one transaction,
so a crash (even ``kill -9``) loses at most the runs in flight and never leaves a half run.

A run not marked done is recomputed on resume; rows are inserted idempotently (the primary key stops
duplicates, and a recomputed value that differs from the stored one is counted, not hidden)."""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    model TEXT NOT NULL, model_key TEXT NOT NULL, cell TEXT NOT NULL, cell_label TEXT NOT NULL,
    eval_key TEXT NOT NULL, seed INTEGER NOT NULL, step INTEGER NOT NULL, format TEXT NOT NULL,
    suite TEXT NOT NULL, metric TEXT NOT NULL, judge TEXT NOT NULL, split TEXT NOT NULL,
    n INTEGER NOT NULL, value REAL, created REAL NOT NULL, defense_seed INTEGER,
    PRIMARY KEY (model_key, cell, eval_key, seed, step, format, suite, metric));
CREATE TABLE IF NOT EXISTS runs (
    model_key TEXT NOT NULL, cell TEXT NOT NULL, eval_key TEXT NOT NULL, seed INTEGER NOT NULL,
    model TEXT NOT NULL, cell_label TEXT NOT NULL, attack TEXT NOT NULL, seconds REAL, finished REAL,
    defense_seed INTEGER,
    PRIMARY KEY (model_key, cell, eval_key, seed));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
ROW_FIELDS = ("model", "model_key", "cell", "cell_label", "eval_key", "seed", "step", "format", "suite",
              "metric", "judge", "split", "n", "value", "defense_seed")
# The defense seed (NULL for a model without a defense, and in rows of a database written before
# studies had defense seeds: those defenses were trained once, with seed 0). The model key already
# tells defense seeds apart, so the primary keys are unchanged.
ADDED_COLUMNS = {"results": ("defense_seed", "INTEGER"), "runs": ("defense_seed", "INTEGER")}


class ResultStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.mismatches = 0
        self.con = sqlite3.connect(self.path, timeout=60, isolation_level=None)  # explicit transactions
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=FULL")
        self.con.execute("PRAGMA busy_timeout=60000")  # parallel workers wait, never fail
        self.con.executescript(SCHEMA)
        for table, (column, kind) in ADDED_COLUMNS.items():  # an older database gains the column
            if column not in {r[1] for r in self.con.execute(f"PRAGMA table_info({table})")}:
                self.con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def close(self) -> None:
        self.con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _insert(self, row: dict) -> bool:
        vals = tuple(row.get(f) for f in ROW_FIELDS)
        key = (row["model_key"], row["cell"], row["eval_key"], row["seed"], row["step"], row["format"],
               row["suite"], row["metric"])
        old = self.con.execute(
            "SELECT value FROM results WHERE model_key=? AND cell=? AND eval_key=? AND seed=? AND step=? "
            "AND format=? AND suite=? AND metric=?", key).fetchone()
        if old is None:
            self.con.execute(f"INSERT INTO results ({', '.join(ROW_FIELDS)}, created) VALUES "
                             f"({', '.join('?' * len(ROW_FIELDS))}, ?)", vals + (time.time(),))
        elif old[0] != row["value"]:
            self.mismatches += 1
        return old is None

    def _mark(self, run: dict, seconds: float) -> None:
        self.con.execute("INSERT OR REPLACE INTO runs (model_key, cell, eval_key, seed, model, cell_label, attack, "
                         "seconds, finished, defense_seed) VALUES (?,?,?,?,?,?,?,?,?,?)",
                         (run["model_key"], run["cell"], run["eval_key"], run["seed"], run["model"],
                          run["cell_label"], json.dumps(run["attack"], sort_keys=True), seconds, time.time(),
                          run.get("defense_seed")))

    def _transaction(self, fn):
        self.con.execute("BEGIN IMMEDIATE")
        try:
            out = fn()
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        return out

    def add_result(self, row: dict) -> bool:
        """Insert one result in its own transaction; False if it was already there."""
        return self._transaction(lambda: self._insert(row))

    def mark_done(self, run: dict, seconds: float) -> None:
        self._transaction(lambda: self._mark(run, seconds))

    def add_run(self, run: dict, rows: list[dict], seconds: float) -> int:
        """A finished run: its rows and its done-mark in one transaction. Returns rows newly stored."""
        return self._transaction(lambda: sum(self._insert(r) for r in rows) + (self._mark(run, seconds) or 0))

    def done_runs(self) -> set[tuple]:
        return {tuple(r) for r in self.con.execute("SELECT model_key, cell, eval_key, seed FROM runs")}

    def rows(self, eval_key: str | None = None) -> list[dict]:
        q = f"SELECT {', '.join(ROW_FIELDS)} FROM results"
        args: tuple = ()
        if eval_key is not None:
            q += " WHERE eval_key=?"
            args = (eval_key,)
        q += " ORDER BY model, cell, seed, step, format, suite, metric"
        return [dict(zip(ROW_FIELDS, r)) for r in self.con.execute(q, args)]

    def set_meta(self, key: str, value) -> None:
        self.con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default=None):
        r = self.con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(r[0]) if r else default
