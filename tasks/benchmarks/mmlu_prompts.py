"""MMLU prompts as hendrycks/test's evaluate_flan.py writes them, byte for byte.

    The following are multiple choice questions (with answers) about  college biology.

    {exemplar question}
    A. ...
    B. ...
    C. ...
    D. ...
    Answer: {letter}

    {question}
    A. ...
    ...
    Answer:

Two spaces after "about": evaluate_flan.py puts a space before every word of the subject.
With exemplars, the prompt drops its last exemplar until it is at most `max_tokens` tokens
(EOS included, as a HF tokenizer counts), as evaluate_flan.py shortens k below 2048.
"""

from __future__ import annotations

from typing import Callable, Sequence

from tasks.benchmarks.mmlu_files import LETTERS, Question

INTRO = "The following are multiple choice questions (with answers) about"


def subject_text(subject: str) -> str:
    """'college_biology' -> ' college biology' (each word after a space)."""
    return "".join(" " + word for word in subject.split("_"))


def example_text(question: Question, with_answer: bool) -> str:
    text = question.question + "".join(
        f"\n{letter}. {option}" for letter, option in zip(LETTERS, question.options,
                                                          strict=True)) + "\nAnswer:"
    return text + f" {LETTERS[question.answer]}\n\n" if with_answer else text


def prompt(subject: str, question: Question, shots: Sequence[Question]) -> str:
    head = f"{INTRO} {subject_text(subject)}.\n\n"
    return head + "".join(example_text(s, True) for s in shots) + example_text(question, False)


def fitted_prompt(subject: str, question: Question, shots: Sequence[Question],
                  count_tokens: Callable[[str], int] | None, max_tokens: int | None) -> str:
    """`prompt` with the first k of `shots`, k as large as fits `max_tokens` (counted by
    `count_tokens`, EOS included); none fitting, the zero-shot prompt (evaluate_flan.py
    would loop forever there)."""
    k = len(shots)
    text = prompt(subject, question, shots)
    if count_tokens is None or max_tokens is None:
        return text
    while k > 0 and count_tokens(text) > max_tokens:
        k -= 1
        text = prompt(subject, question, shots[:k])
    return text
