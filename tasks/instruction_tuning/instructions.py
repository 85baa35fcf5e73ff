"""Flan-style instruction formatting: templates, zero-/few-shot, answer options, chain of thought.

An `InstructionTask` names the string fields its examples carry and several natural-language
templates over them. Rendering an example picks, with a random generator seeded by
(seed, task, split, example index), so the same example renders the same way on every host
and every run:
  - one of the task's templates;
  - zero-shot, or few-shot with `num_shots` exemplars from the same task's train split
    (never the example itself, nor a duplicate of it), rendered with the same template;
  - for tasks with answer options, whether the options are listed after the prompt;
  - for tasks with a rationale field, whether the target is a chain of thought
    ("<rationale> So the answer is <answer>.") after a "Let's think step by step." prompt.

    tasks.instruction_format.seed = 0
    tasks.instruction_format.few_shot_fraction = 0.5
    tasks.instruction_format.num_shots = 2
    tasks.instruction_format.options_fraction = 0.5
    tasks.instruction_format.cot_fraction = 1.0
"""

from __future__ import annotations

import dataclasses
import string
import zlib
from typing import Sequence

import numpy as np

COT_PROMPT = "Let's think step by step."
COT_ANSWER = "So the answer is"


def template_fields(text: str) -> set[str]:
    """The `{name}` fields a template string refers to."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as e:
        raise ValueError(f"template {text!r} is not a valid format string: {e}") from None


@dataclasses.dataclass(frozen=True)
class Template:
    inputs: str                   # e.g. "{passage}\n\nCan we conclude that {question}?"
    targets: str = "{answer}"

    def fields(self) -> set[str]:
        return template_fields(self.inputs) | template_fields(self.targets)


@dataclasses.dataclass(frozen=True)
class InstructionTask:
    """What an instruction task's examples hold and how they may be phrased."""
    name: str
    templates: tuple[Template, ...]
    fields: tuple[str, ...]            # string fields every example provides
    options: tuple[str, ...] = ()      # the answer choices of a classification task
    rationale: str | None = None       # field holding a chain of thought (CoT tasks)

    def __post_init__(self):
        if not self.templates:
            raise ValueError(f"instruction task {self.name!r} has no templates")
        for i, template in enumerate(self.templates):
            absent = sorted(template.fields() - set(self.fields))
            if absent:
                raise ValueError(f"template {i} of instruction task {self.name!r} refers to "
                                 f"field(s) {absent} that its examples do not have; fields: "
                                 f"{list(self.fields)} (template: {template.inputs!r} -> "
                                 f"{template.targets!r})")
        if self.rationale is not None and self.rationale not in self.fields:
            raise ValueError(f"instruction task {self.name!r}: rationale field "
                             f"{self.rationale!r} is not one of its fields {list(self.fields)}")

    def check_example(self, example: dict, where: str) -> None:
        missing = [f for f in self.fields if f not in example]
        if missing:
            raise KeyError(f"{where}: example of instruction task {self.name!r} lacks field(s) "
                           f"{missing}; it has {sorted(example)}")


@dataclasses.dataclass(frozen=True)
class InstructionFormat:
    seed: int = 0
    few_shot_fraction: float = 0.5     # the rest are zero-shot
    num_shots: int = 2                 # exemplars in a few-shot prompt
    options_fraction: float = 0.5      # of examples of tasks with options, listed
    cot_fraction: float = 1.0          # of examples of tasks with rationales, CoT format

    def __post_init__(self):
        for name in ("few_shot_fraction", "options_fraction", "cot_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"InstructionFormat.{name}={value} must be in [0, 1]")
        if self.num_shots < 1:
            raise ValueError(f"InstructionFormat.num_shots={self.num_shots} must be >= 1")


def instruction_format(seed: int = 0, few_shot_fraction: float = 0.5, num_shots: int = 2,
                       options_fraction: float = 0.5,
                       cot_fraction: float = 1.0) -> InstructionFormat:
    return InstructionFormat(seed, few_shot_fraction, num_shots, options_fraction, cot_fraction)


def _fill(text: str, example: dict) -> str:
    return text.format(**example)


def _one(task: InstructionTask, template: Template, example: dict, options: bool,
         cot: bool) -> tuple[str, str]:
    """(prompt, target) of one example in one format."""
    prompt, answer = _fill(template.inputs, example), _fill(template.targets, example)
    if options:
        prompt += "\n\nOPTIONS:\n" + "\n".join(f"- {o}" for o in task.options)
    if cot:
        prompt += f"\n\n{COT_PROMPT}"
        answer = f"{example[task.rationale].strip()} {COT_ANSWER} {answer}."
    return prompt, answer


def _rng(config: InstructionFormat, task: str, split: str, index: int):
    return np.random.default_rng([config.seed, zlib.crc32(task.encode()),
                                  zlib.crc32(split.encode()), index])


def _exemplars(rng, pool: Sequence[dict], k: int, example: dict,
               index: int | None) -> list[dict]:
    """k distinct pool rows, none at `index` (the example's own row) nor equal to it."""
    order = rng.permutation(len(pool))
    out = []
    for j in order:
        if j != index and pool[j] != example:
            out.append(pool[j])
            if len(out) == k:
                break
    return out


def render(task: InstructionTask, example: dict, index: int, split: str,
           config: InstructionFormat, pool: Sequence[dict], pool_is_split: bool) -> dict:
    """{'inputs', 'targets', 'format', 'template'} of example `index` of `split`.

    `pool` holds the task's train rows; `pool_is_split` says the example is `pool[index]`.
    """
    rng = _rng(config, task.name, split, index)
    t = int(rng.integers(len(task.templates)))
    template = task.templates[t]
    options = bool(task.options) and rng.random() < config.options_fraction
    cot = task.rationale is not None and rng.random() < config.cot_fraction
    few = rng.random() < config.few_shot_fraction
    shots = (_exemplars(rng, pool, config.num_shots, example, index if pool_is_split else None)
             if few else [])
    prompt, target = _one(task, template, example, options, cot)
    if shots:
        demos = ["\n".join(_one(task, template, s, options, cot)) for s in shots]
        prompt = "\n\n\n".join(demos + [prompt])
    kind = ("few_shot" if shots else "zero_shot") + ("+options" if options else "") + (
        "+cot" if cot else "")
    return {"inputs": prompt, "targets": target, "format": kind, "template": t}


def render_split(task: InstructionTask, rows: Sequence[dict], split: str,
                 config: InstructionFormat, pool: Sequence[dict],
                 pool_is_split: bool) -> list[dict]:
    for i, row in enumerate(rows):
        task.check_example(row, f"{split} example {i}")
    return [render(task, row, i, split, config, pool, pool_is_split)
            for i, row in enumerate(rows)]


def answer_of(text, example=None, is_target: bool = False) -> str:
    """seqio postprocessor: the answer of a (possibly chain-of-thought) output."""
    text = text.decode() if isinstance(text, bytes) else str(text)
    if COT_ANSWER in text:
        text = text.rsplit(COT_ANSWER, 1)[1].strip().rstrip(".")
    return text.strip()
