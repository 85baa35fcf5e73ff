"""BIG-Bench Hard (Suzgun et al., 2022) from its published files, scored as its paper does.

The data directory is the BBH repository's layout: bbh/{task}.json ({"examples": [{"input",
"target"}, ...]}) and cot-prompts/{task}.txt (a canary line, a line "-----", the task's
description, then three worked examples "Q: ...\nA: Let's think step by step.\n... So the
answer is X."). Tasks (split "test": BBH has one; `_byte` ones use ByT5's bytes, `_hybrid`
ones SentencePiece ids plus the input's bytes), exact match after taking the text after the
last "So the answer is":
  bbh_{task}_direct  Suzgun et al.'s answer-only prompting: the description and the same
                     three exemplars answered without their reasoning ("A: X"), then
                     "Q: {input}\nA:" (what Flan reports as "BBH direct")
  bbh_{task}_cot     3-shot chain of thought: the prompt file's text after "-----",
                     "Q: {input}", then "A: Let's think step by step." ("BBH CoT")
  bbh_{task}         zero-shot, the input as given (no published number uses it)
  bbh_direct, bbh_cot, bbh   mixtures of the 27 tasks; each also reports the unweighted mean
                     of its tasks' exact match (tasks/benchmarks/macro_average.py), the
                     average Suzgun et al. and Flan report

    tasks.bbh.data_dir = %BBH_DIR      # gin/runs/eval_bbh.gin
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import seqio

from fields import paths
from fields.choices import require_choice

from tasks import hybrid_features
from tasks.benchmarks import macro_average
from tasks import settings_scope
from tasks.instruction_tuning.instructions import COT_ANSWER, COT_PROMPT, answer_of
from tasks.metrics import exact_match
from tasks.benchmarks.rank_classification import features
from tasks.tf_setup import tf

TASKS = (
    "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa",
    "dyck_languages", "formal_fallacies", "geometric_shapes", "hyperbaton",
    "logical_deduction_five_objects", "logical_deduction_seven_objects",
    "logical_deduction_three_objects", "movie_recommendation", "multistep_arithmetic_two",
    "navigate", "object_counting", "penguins_in_a_table", "reasoning_about_colored_objects",
    "ruin_names", "salient_translation_error_detection", "snarks", "sports_understanding",
    "temporal_sequences", "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects",
    "web_of_lies", "word_sorting")
PROMPT_SEPARATOR = "-----"
PROMPTINGS = ("", "_direct", "_cot")   # task name suffixes: zero-shot, answer-only, CoT


DIRECT_PROMPTS = ("cot_prompts", "codex_outputs")
CODEX_DIRECT = os.path.join("code-davinci-002-outputs", "code-davinci-002-direct",
                            "{task}_few_shot_template_0-255000.json")


@dataclasses.dataclass(frozen=True)
class BBHConfig:
    """`direct_prompts`: where the answer-only exemplars come from: 'cot_prompts' (the
    cot-prompts files without their reasoning) or 'codex_outputs' (the prompts Suzgun et al.
    ran, read from their code-davinci-002-direct outputs; two differ, see docs/benchmarks.md)."""
    data_dir: str | None = None
    direct_prompts: str = "cot_prompts"

    def __post_init__(self):
        require_choice("tasks.bbh", "direct_prompts", self.direct_prompts, DIRECT_PROMPTS)


def bbh(data_dir: str | None = None, direct_prompts: str = "cot_prompts") -> BBHConfig:
    return BBHConfig(data_dir, direct_prompts)


def _data_dir() -> str:
    data_dir = _config().data_dir
    if not data_dir:
        raise ValueError("BBH's data directory is not set: pass --gin.BBH_DIR=/path/to/"
                         "BIG-Bench-Hard (holding bbh/ and cot-prompts/) with "
                         "--gin_file=runs/eval_bbh.gin, or bind tasks.bbh.data_dir")
    data_dir = paths.user_path(data_dir, "tasks.bbh.data_dir")
    if not paths.isdir(data_dir):
        raise FileNotFoundError(f"BBH data directory {data_dir} does not exist "
                                "(tasks.bbh.data_dir / BBH_DIR)")
    return data_dir


def _config() -> BBHConfig:
    return settings_scope.get("bbh", BBHConfig)


def _json(path: str, what: str):
    if not paths.isfile(path):
        raise FileNotFoundError(f"BBH {what} {path} does not exist")
    text = paths.read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def read_examples(path: str) -> list[dict]:
    """[{input, target}] of one BBH task file; a malformed file fails naming file and line or
    example."""
    data = _json(path, "task file")
    examples = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(examples, list) or not examples:
        raise ValueError(f"{path}: expected an object with a non-empty list \"examples\"")
    for i, ex in enumerate(examples):
        if not (isinstance(ex, dict) and isinstance(ex.get("input"), str)
                and isinstance(ex.get("target"), str)):
            raise ValueError(f"{path}: examples[{i}] must be an object with string \"input\" "
                             f"and \"target\"; got {str(ex)[:80]!r}")
    return examples


def read_cot_prompt(path: str) -> str:
    """The worked examples of a cot-prompts file (what follows its "-----" line)."""
    if not paths.isfile(path):
        raise FileNotFoundError(f"BBH chain-of-thought prompt {path} does not exist")
    lines = paths.read_text(path).splitlines()
    if PROMPT_SEPARATOR in lines:
        lines = lines[lines.index(PROMPT_SEPARATOR) + 1:]
    text = "\n".join(lines).strip()
    if not text:
        raise ValueError(f"{path}: no prompt after its {PROMPT_SEPARATOR!r} line")
    return text


def cot_input(prompt: str, question: str) -> str:
    return f"{prompt}\n\nQ: {question}\nA: {COT_PROMPT}"


def direct_prompt(prompt: str, path: str = "cot-prompts file") -> str:
    """Answer-only exemplars from a chain-of-thought prompt (`read_cot_prompt`'s text): the
    description's first paragraph (snarks' second one explains sarcasm for the reasoning),
    and each "A: Let's think step by step. ... So the answer is X." as "A: X"."""
    description, *shots = prompt.split("\n\nQ: ")
    description = description.split("\n\n", 1)[0]
    if not shots:
        raise ValueError(f"{path}: no exemplar (a blank line, then \"Q: \") after the task's "
                         "description")
    out = [description]
    for i, shot in enumerate(shots):
        question, sep, worked = shot.partition(f"\nA: {COT_PROMPT}")
        if not sep or COT_ANSWER not in worked:
            raise ValueError(f"{path}: exemplar {i + 1} (Q: {shot.split(chr(10))[0][:40]!r}) "
                             f"needs \"A: "
                             f"{COT_PROMPT}\" and then {COT_ANSWER!r} X.")
        answer = worked.rsplit(COT_ANSWER, 1)[1].strip().removesuffix(".")
        out.append(f"Q: {question}\nA: {answer}")
    return "\n\n".join(out)


def read_codex_direct_prompt(path: str) -> str:
    """The answer-only exemplars Suzgun et al. ran: what precedes the last "\n\nQ: " of
    every input of their code-davinci-002-direct outputs file (the same in all)."""
    data = _json(path, "direct-prompting outputs file (tasks.bbh.direct_prompts="
                       "'codex_outputs')")
    outputs = data.get("outputs") if isinstance(data, dict) else None
    if not isinstance(outputs, list) or not outputs or not all(
            isinstance(o, dict) and isinstance(o.get("input"), str) for o in outputs):
        raise ValueError(f"{path}: expected an object with a non-empty list \"outputs\" of "
                         "objects with a string \"input\"")
    prompts = {o["input"].rsplit("\n\nQ: ", 1)[0] for o in outputs}
    if len(prompts) != 1:
        raise ValueError(f"{path}: its inputs have {len(prompts)} different prompts before "
                         "their last \"Q: \"; expected one")
    return prompts.pop()


def direct_input(prompt: str, question: str) -> str:
    return f"{prompt}\n\nQ: {question}\nA:"


def _prompt(data_dir: str, task: str, prompting: str) -> str:
    if prompting == "_direct" and _config().direct_prompts == "codex_outputs":
        return read_codex_direct_prompt(paths.join(data_dir, CODEX_DIRECT.format(task=task)))
    path = paths.join(data_dir, "cot-prompts", f"{task}.txt")
    prompt = read_cot_prompt(path)
    return direct_prompt(prompt, path) if prompting == "_direct" else prompt


def examples(task: str, prompting: str) -> list[dict]:
    """{input, target} of `task` prompted per `prompting` ('', '_direct' or '_cot')."""
    data_dir = _data_dir()
    rows = read_examples(paths.join(data_dir, "bbh", f"{task}.json"))
    if not prompting:
        return rows
    prompt = _prompt(data_dir, task, prompting)
    wrap = direct_input if prompting == "_direct" else cot_input
    return [{"input": wrap(prompt, r["input"]), "target": r["target"]} for r in rows]


def _dataset(split: str, shuffle_files: bool = False, seed: int | None = None, *, task: str,
             prompting: str):
    rows = examples(task, prompting)
    ds = tf.data.Dataset.from_tensor_slices({"inputs": [r["input"] for r in rows],
                                             "targets": [r["target"] for r in rows]})
    return ds.shuffle(len(rows), seed=seed) if shuffle_files else ds


def register(vocabularies: dict[str, seqio.Vocabulary],
             hybrid: dict[str, seqio.Vocabulary] | None = None) -> None:
    """Register BBH's tasks for each vocabulary (name suffix -> vocabulary), and for each of
    `hybrid` the same with `byte_inputs` (the input's bytes too, for a hybrid model)."""
    for suffix, output_features, to_bytes in hybrid_features.variants(vocabularies, hybrid,
                                                                      features):
        for prompting in PROMPTINGS:
            names = []
            for task in TASKS:
                name = f"bbh_{task}{prompting}{suffix}"
                seqio.TaskRegistry.add(
                    name, source=seqio.FunctionDataSource(
                        functools.partial(_dataset, task=task, prompting=prompting),
                        splits=("test",)),
                    preprocessors=to_bytes + [seqio.preprocessors.tokenize,
                                              seqio.preprocessors.append_eos_after_trim],
                    output_features=output_features, postprocess_fn=answer_of,
                    metric_fns=[exact_match])
                names.append(name)
            mixture = f"bbh{prompting}{suffix}"
            seqio.MixtureRegistry.add(mixture, names, default_rate=1.0)
            macro_average.register(mixture, "exact_match")
