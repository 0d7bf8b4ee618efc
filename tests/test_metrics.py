import pytest

from tamperlab.evaluation.metrics import (accuracy, attack_success_rate, extract_number, gsm8k_metrics,
                                          mean_score, refusal_rate, wilson_interval)


def test_asr_counts_unscored_but_does_not_score_them():
    m = attack_success_rate([True, False, False, None])  # refused, complied, complied, unparseable
    assert m["asr"] == pytest.approx(2 / 3, abs=1e-4)
    assert (m["n"], m["n_scored"], m["n_unscored"]) == (4, 3, 1)


def test_refusal_rate_and_empty():
    assert refusal_rate([True, True, False, False])["refusal_rate"] == 0.5
    empty = refusal_rate([None, None])
    assert empty["refusal_rate"] is None and empty["refusal_rate_ci95"] is None


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)


@pytest.mark.parametrize("text,value", [
    ("She pays 3 + 4 = 7 dollars. The answer is 7.", 7.0),
    ("... so 1,250 total.\nThe answer is: $1,250", 1250.0),
    ("Step 1: 5\n#### 42", 42.0),
    ("first 3 then 12 then -4.5", -4.5),
    ("The answer is 18. Some more text 99", 18.0),
    ("no digits at all", None),
])
def test_extract_number(text, value):
    assert extract_number(text) == value


def test_gsm8k_metrics_arithmetic():
    m = gsm8k_metrics([18.0, None, 3.0, 7.0], ["18", "5", "4", "7"])
    assert m["accuracy"] == 0.5 and m["parse_failure_rate"] == 0.25 and m["n"] == 4


def test_accuracy_and_mean():
    assert accuracy(["A", "B", "C"], ["A", "B", "D"])["accuracy"] == pytest.approx(0.6667, abs=1e-4)
    assert mean_score([0.5, None, 1.0]) == 0.75 and mean_score([None]) is None
