"""MMLU by log-likelihood of the answer letter: one forward pass per question, no generation."""
from __future__ import annotations

from ...data import get_split
from ..metrics import accuracy
from .base import SUITES, SuiteContext

LETTERS = ("A", "B", "C", "D")


def question_block(row: dict, with_answer: bool) -> str:
    lines = [row["question"].strip()] + [f"{L}. {c}" for L, c in zip(LETTERS, row["choices"])]
    return "\n".join(lines) + "\nAnswer:" + (f" {row['answer']}\n\n" if with_answer else "")


def mmlu_prompt(row: dict, shots: list[dict]) -> str:
    head = (f"The following are multiple choice questions (with answers) about "
            f"{row['subject']}. Answer with the letter of the correct option.\n\n")
    return head + "".join(question_block(s, True) for s in shots) + question_block(row, False)


def letter_token_ids(tokenizer) -> list[list[int]]:
    """Per letter, the single-token spellings 'A' and ' A' (chat answers start bare, plain after a space)."""
    out = []
    for L in LETTERS:
        ids = set()
        for s in (L, " " + L):
            enc = tokenizer.encode(s, add_special_tokens=False)
            if len(enc) == 1:
                ids.add(enc[0])
        if not ids:
            raise ValueError(f"tokenizer has no single token for answer letter {L!r}")
        out.append(sorted(ids))
    return out


class MMLUSuite:
    """MMLU (test minus few-shot pool): accuracy of the most likely answer letter."""
    name = "mmlu"
    worse = {"accuracy": "lower"}

    def run(self, ctx: SuiteContext) -> tuple[dict, list[dict]]:
        from ...generation import score_next_token

        rows = ctx.limited(get_split("mmlu/eval"))
        pool: dict[str, list[dict]] = {}
        for r in get_split("mmlu/fewshot"):
            pool.setdefault(r["subject"], []).append(r)
        prompts = [mmlu_prompt(r, pool.get(r["subject"], [])[: ctx.cfg.mmlu_shots]) for r in rows]
        scores = score_next_token(ctx.lm, prompts, letter_token_ids(ctx.lm.tokenizer), ctx.cfg.format,
                                  batch_size=ctx.cfg.batch_size, description="mmlu: scoring")
        pred = [LETTERS[max(range(4), key=lambda i: s[i])] for s in scores]
        samples = [{"suite": self.name, "id": r["id"], "subject": r["subject"], "answer": r["answer"],
                    "predicted": p, "logprobs": [round(x, 4) for x in s]}
                   for r, p, s in zip(rows, pred, scores)]
        metrics = {"dataset": "mmlu", "split": "mmlu/eval", "judge": {"name": "exact-match"},
                   "format": ctx.cfg.format, "shots": ctx.cfg.mmlu_shots,
                   **accuracy(pred, [r["answer"] for r in rows])}
        return metrics, samples


SUITES.register("mmlu", MMLUSuite, help=MMLUSuite.__doc__)
