"""MMLU and GSM8K few-shot prompts: the exact text for k shots, written out by hand, and the
suites draw their shots from the few-shot / training data, never from the split they score."""
import pytest

from tamperlab.data import get_split
from tamperlab.evaluation.config import EvalConfig
from tamperlab.evaluation.suites import SuiteContext
from tamperlab.evaluation.suites import gsm8k as gsm8k_suite
from tamperlab.evaluation.suites import mmlu as mmlu_suite
from tamperlab.evaluation.suites.gsm8k import gsm8k_prompt
from tamperlab.evaluation.suites.mmlu import mmlu_prompt

ROW = {"subject": "astronomy", "question": " Which planet is the largest?",  # MMLU questions may lead with a space
       "choices": ["Mars", "Jupiter", "Venus", "Earth"], "answer": "B"}
SHOTS = [{"subject": "astronomy", "question": "What orbits the Earth?",
          "choices": ["The Moon", "Mars", "The Sun", "Venus"], "answer": "A"},
         {"subject": "astronomy", "question": "How many planets are there?",
          "choices": ["7", "8", "9", "10"], "answer": "B"}]
HEAD = ("The following are multiple choice questions (with answers) about astronomy. "
        "Answer with the letter of the correct option.\n\n")


def test_mmlu_prompt_zero_one_and_two_shots():
    question = "Which planet is the largest?\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth\nAnswer:"
    shot1 = "What orbits the Earth?\nA. The Moon\nB. Mars\nC. The Sun\nD. Venus\nAnswer: A\n\n"
    shot2 = "How many planets are there?\nA. 7\nB. 8\nC. 9\nD. 10\nAnswer: B\n\n"
    assert mmlu_prompt(ROW, []) == HEAD + question
    assert mmlu_prompt(ROW, SHOTS[:1]) == HEAD + shot1 + question
    assert mmlu_prompt(ROW, SHOTS) == (
        "The following are multiple choice questions (with answers) about astronomy. Answer with the letter "
        "of the correct option.\n\n"
        "What orbits the Earth?\nA. The Moon\nB. Mars\nC. The Sun\nD. Venus\nAnswer: A\n\n"
        "How many planets are there?\nA. 7\nB. 8\nC. 9\nD. 10\nAnswer: B\n\n"
        "Which planet is the largest?\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth\nAnswer:")
    assert shot2 in mmlu_prompt(ROW, SHOTS)


GSM_SHOTS = [{"question": "Tom has 2 apples and buys 3 more. How many apples does he have?",
              "solution": "He has 2+3=<<2+3=5>>5 apples.\n#### 5", "answer": "5"},
             {"question": "A box holds 4 pens. How many pens are in 3 boxes?",
              "solution": "3 boxes hold 3*4=<<3*4=12>>12 pens.\n#### 12", "answer": "12"}]
INSTR = "Solve the following math problem step by step. End with a final line of the form 'The answer is N'."


def test_gsm8k_prompt_zero_one_and_two_shots():
    q = "Ann has 7 cats and gives away 2. How many are left?"
    assert gsm8k_prompt(q, []) == INSTR + "\n\n" + q  # zero-shot: the bare question after the instruction
    assert gsm8k_prompt(q, GSM_SHOTS[:1]) == (
        INSTR + "\n\n"
        "Question: Tom has 2 apples and buys 3 more. How many apples does he have?\n"
        "Answer: He has 2+3=<<2+3=5>>5 apples.\nThe answer is 5.\n\n"
        "Question: Ann has 7 cats and gives away 2. How many are left?\nAnswer:")
    assert gsm8k_prompt(q, GSM_SHOTS) == (
        INSTR + "\n\n"
        "Question: Tom has 2 apples and buys 3 more. How many apples does he have?\n"
        "Answer: He has 2+3=<<2+3=5>>5 apples.\nThe answer is 5.\n\n"
        "Question: A box holds 4 pens. How many pens are in 3 boxes?\n"
        "Answer: 3 boxes hold 3*4=<<3*4=12>>12 pens.\nThe answer is 12.\n\n"
        "Question: Ann has 7 cats and gives away 2. How many are left?\nAnswer:")


def _recording(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def rec(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, rec)
    return calls


@pytest.mark.parametrize("shots", [1, 2])
def test_mmlu_suite_takes_same_subject_shots_from_the_fewshot_pool_only(tiny, monkeypatch, shots):
    import tamperlab.generation as generation

    calls = _recording(monkeypatch, mmlu_suite, "mmlu_prompt")
    scored = _recording(monkeypatch, generation, "score_next_token")
    cfg = EvalConfig(suite=["mmlu"], limit=4, mmlu_shots=shots, batch_size=4)
    metrics, samples = mmlu_suite.MMLUSuite().run(SuiteContext(tiny, cfg, cache=None))
    eval_ids = {r["id"] for r in get_split("mmlu/eval")}
    fewshot = get_split("mmlu/fewshot")
    assert [r["id"] for r, _ in calls] == [r["id"] for r in get_split("mmlu/eval")[:4]] == [s["id"] for s in samples]
    for row, used in calls:
        assert [s["id"] for s in used] == [s["id"] for s in fewshot if s["subject"] == row["subject"]][:shots]
        assert not {s["id"] for s in used} & eval_ids
    prompts = scored[0][1]
    assert [p.count("\nAnswer:") for p in prompts] == [shots + 1] * 4
    assert metrics["shots"] == shots and metrics["n"] == 4


@pytest.mark.parametrize("shots", [1, 2])
def test_gsm8k_suite_takes_shots_from_training_data_never_the_eval_split(tiny, monkeypatch, shots):
    from tamperlab.evaluation.suites import base

    calls = _recording(monkeypatch, gsm8k_suite, "gsm8k_prompt")
    generated = _recording(monkeypatch, base, "generate")
    cfg = EvalConfig(suite=["gsm8k"], limit=3, gsm8k_shots=shots, gsm8k_max_new_tokens=2, batch_size=4)
    metrics, _ = gsm8k_suite.GSM8KSuite().run(SuiteContext(tiny, cfg, cache=None))
    eval_rows = get_split("gsm8k/eval")
    assert [q for q, _ in calls] == [r["question"] for r in eval_rows[:3]]
    used = calls[0][1]
    assert all(shots_ == used for _, shots_ in calls)  # one fixed set of worked examples
    assert [s["id"] for s in used] == [r["id"] for r in get_split("gsm8k/defense-train")[:shots]]
    assert all(s["id"].startswith("gsm8k-train-") for s in used)
    eval_ids = {r["id"] for r in eval_rows}
    eval_questions = {r["question"] for r in eval_rows}
    assert not {s["id"] for s in used} & eval_ids and not {s["question"] for s in used} & eval_questions
    prompts = generated[0][1]
    assert [p.count("\nThe answer is ") for p in prompts] == [shots] * 3
    assert metrics["shots"] == shots
