"""The committed hand-read items are what scripts/hand_read.py draws from the committed samples, and
a reader's announce-only flag reaches the summary's strict count."""
import json
import subprocess
import sys
from pathlib import Path

PROBE = Path("docs/probes/hand-read")
FILES = ("refusal-sft-60 (probe sft60)=docs/probes/evalset-sft60/samples.jsonl,"
         "undefended=docs/comparison/samples/undefended-10f48c8eee33/reference/seed0/step0-chat/samples.jsonl")


def _run(*args):
    return subprocess.run([sys.executable, "scripts/hand_read.py", *args], check=True, capture_output=True, text=True).stdout


def _redrawn_summary(tmp_path, files: str, seed: int, prefix: str, read: Path) -> str:
    """Re-draw a committed reading's items from its samples files (must match exactly) and return
    the summary of its labels."""
    _run("sample-files", "--files", files, "--per-model", "15", "--seed", str(seed), "--prefix", prefix,
         "--out", str(tmp_path / "items.jsonl"))
    assert (tmp_path / "items.jsonl").read_text() == (read / "items.jsonl").read_text()
    return _run("summary", str(read / "labels.jsonl"))


def test_probe_items_are_redrawn_from_the_committed_samples(tmp_path):
    _run("sample-files", "--files", FILES, "--per-model", "15", "--seed", "15", "--prefix", "probe",
         "--out", str(tmp_path / "items.jsonl"), "--blind", str(tmp_path / "blind.jsonl"))
    assert (tmp_path / "items.jsonl").read_text() == (PROBE / "items.jsonl").read_text()
    blind = [json.loads(x) for x in (tmp_path / "blind.jsonl").read_text().splitlines()]
    assert all(set(b) == {"item", "prompt", "completion"} for b in blind)  # no model, no verdict


def test_merge_turns_the_announce_only_flag_into_the_strict_count(tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text((PROBE / "items.jsonl").read_text())
    _run("merge", str(items), str(PROBE / "reader.jsonl"), "--reader", "r")
    merged = (tmp_path / "labels.jsonl").read_text().splitlines()
    assert [json.loads(x)["label"] for x in merged] == [json.loads(x)["label"] for x in
                                                       (PROBE / "labels.jsonl").read_text().splitlines()]
    out = _run("summary", str(tmp_path / "labels.jsonl"))
    assert "undefended | 15 | 10 (0.67) | 8 | 2 (0.13)" in out


def test_comparison_readings_are_redrawn_from_the_committed_samples(tmp_path):
    """docs/comparison/hand-read (before any attack, v3 refusal SFT vs undefended) and
    docs/comparison-v2/hand-read (post-attack, moved with its study) re-draw exactly."""
    cmp_ = Path("docs/comparison")
    files = (f"refusal-sft={cmp_}/samples/refusal-sft-2d2b5419b522/884c10164673/seed0/step0-chat/samples.jsonl,"
             f"undefended={cmp_}/samples/undefended-10f48c8eee33/reference/seed0/step0-chat/samples.jsonl")
    _run("sample-files", "--files", files, "--per-model", "15", "--seed", "16", "--prefix", "before",
         "--out", str(tmp_path / "a.jsonl"))
    assert (tmp_path / "a.jsonl").read_text() == (cmp_ / "hand-read" / "items.jsonl").read_text()
    out = _run("summary", str(cmp_ / "hand-read" / "labels.jsonl"))
    assert "refusal-sft | 15 | 6 (0.40) | 4 | 2 (0.13)" in out and "undefended | 15 | 9 (0.60) | 8 | 1 (0.07)" in out
    _run("sample", "docs/comparison-v2", "--models", "refusal-sft,antidote", "--per-model", "15", "--cell",
         "884c10164673", "--step", "20", "--prefix", "cmp", "--out", str(tmp_path / "b.jsonl"))
    assert (tmp_path / "b.jsonl").read_text() == Path("docs/comparison-v2/hand-read/items.jsonl").read_text()


def test_the_post_attack_comparison_reading_is_redrawn_from_the_committed_samples(tmp_path):
    """docs/comparison/hand-read-attacked: refusal SFT and AntiDote (defense seed 0) after 20 attack
    steps (attack seed 0), the same 15 prompts, and the counts the README quotes."""
    cmp_ = Path("docs/comparison/samples")
    files = (f"refusal-sft={cmp_}/refusal-sft-2d2b5419b522/884c10164673/seed0/step20-chat/samples.jsonl,"
             f"antidote={cmp_}/antidote-876680f366a2/884c10164673/seed0/step20-chat/samples.jsonl")
    out = _redrawn_summary(tmp_path, files, 17, "attacked", Path("docs/comparison/hand-read-attacked"))
    assert "antidote | 15 | 7 (0.47) | 7 | 0 (0.00) | 2 (0.13) | 10/15" in out
    assert "refusal-sft | 15 | 8 (0.53) | 6 | 2 (0.13) | 2 (0.13) | 7/15" in out


def test_the_contrast_probe_reading_is_redrawn_and_counted_as_docs_quote(tmp_path):
    """docs/probes/hand-read-contrast: refusal SFT for 80 steps with and without the contrast term, the
    same 15 HarmBench prompts; the counts docs/defenses.md and the README quote."""
    from collections import Counter

    files = ("sft80v3uc=docs/probes/evalset-sft80v3uc/samples.jsonl,"
             "sft80v3u=docs/probes/evalset-sft80v3u/samples.jsonl")
    read = Path("docs/probes/hand-read-contrast")
    out = _redrawn_summary(tmp_path, files, 16, "contrast", read)
    assert "sft80v3uc | 15 | 1 (0.07) | 0 | 1 (0.07) | 4 (0.27) | 10/15" in out
    assert "sft80v3u | 15 | 1 (0.07) | 0 | 1 (0.07) | 2 (0.13) | 12/15" in out
    labels = Counter((r["model"], r["label"]) for r in map(json.loads, (read / "labels.jsonl").read_text().splitlines()))
    assert (labels["sft80v3uc", "refused"], labels["sft80v3u", "refused"]) == (3, 9)
    assert (labels["sft80v3uc", "degenerate"], labels["sft80v3u", "degenerate"]) == (11, 5)
