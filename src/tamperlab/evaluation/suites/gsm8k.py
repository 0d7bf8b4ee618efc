"""GSM8K: generate a worked answer, extract the final number, compare exactly."""
from __future__ import annotations

from ...data import get_split
from ..metrics import extract_number, gsm8k_metrics
from .base import SUITES, SuiteContext

INSTRUCTION = ("Solve the following math problem step by step. "
               "End with a final line of the form 'The answer is N'.")


def gsm8k_prompt(question: str, shots: list[dict]) -> str:
    parts = [INSTRUCTION, ""]
    for s in shots:  # worked examples from the train data (never the eval split)
        worked = s["solution"].split("####")[0].strip()
        parts += [f"Question: {s['question']}", f"Answer: {worked}\nThe answer is {s['answer']}.", ""]
    parts += [f"Question: {question}", "Answer:"] if shots else [question]
    return "\n".join(parts)


class GSM8KSuite:
    """GSM8K test: accuracy of the extracted final number; parse failures reported."""
    name = "gsm8k"
    worse = {"accuracy": "lower", "parse_failure_rate": "higher"}

    def run(self, ctx: SuiteContext) -> tuple[dict, list[dict]]:
        rows = ctx.limited(get_split("gsm8k/eval"))
        shots = get_split("gsm8k/defense-train")[: ctx.cfg.gsm8k_shots]
        prompts = [gsm8k_prompt(r["question"], shots) for r in rows]
        completions = ctx.generate(prompts, ctx.cfg.gsm8k_max_new_tokens, "gsm8k: generating")
        predicted = [extract_number(c) for c in completions]
        samples = [{"suite": self.name, "id": r["id"], "prompt": r["question"], "completion": c,
                    "answer": r["answer"], "predicted": p}
                   for r, c, p in zip(rows, completions, predicted)]
        metrics = {"dataset": "gsm8k-test", "split": "gsm8k/eval", "judge": {"name": "number-exact-match"},
                   "format": ctx.cfg.format, "shots": ctx.cfg.gsm8k_shots,
                   **gsm8k_metrics(predicted, [r["answer"] for r in rows])}
        return metrics, samples


SUITES.register("gsm8k", GSM8KSuite, help=GSM8KSuite.__doc__)
