"""BIG-Bench Hard (Suzgun et al., 2022) from its published files, scored as its paper does.

The data directory is the BBH repository's layout: bbh/{task}.json ({"examples": [{"input",
"target"}, ...]}) and cot-prompts/{task}.txt (a header, a line "-----", then three worked
examples ending "So the answer is X."). Tasks (split "test": BBH has one; `_byte` ones use
ByT5's bytes, `_hybrid` ones SentencePiece ids plus the input's bytes), exact match after
taking the text after the last "So the answer is":
  bbh_{task}       zero-shot, the input as given
  bbh_{task}_cot   3-shot chain of thought: the prompt file, "Q: {input}", then
                   "A: Let's think step by step."
  bbh, bbh_cot     mixtures of the 27 tasks

    tasks.bbh.data_dir = %BBH_DIR      # gin/runs/eval_bbh.gin
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import seqio

from tasks import hybrid_features, settings_scope
from tasks.instructions import COT_PROMPT, answer_of
from tasks.metrics import exact_match
from tasks.rank_classification import features
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


@dataclasses.dataclass(frozen=True)
class BBHConfig:
    data_dir: str | None = None


def bbh(data_dir: str | None = None) -> BBHConfig:
    return BBHConfig(data_dir)


def _data_dir() -> str:
    data_dir = settings_scope.get("bbh", BBHConfig).data_dir
    if not data_dir:
        raise ValueError("BBH's data directory is not set: pass --gin.BBH_DIR=/path/to/"
                         "BIG-Bench-Hard (holding bbh/ and cot-prompts/) with "
                         "--gin_file=runs/eval_bbh.gin, or bind tasks.bbh.data_dir")
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"BBH data directory {data_dir} does not exist "
                                "(tasks.bbh.data_dir / BBH_DIR)")
    return data_dir


def read_examples(path: str) -> list[dict]:
    """[{input, target}] of one BBH task file; a malformed file fails naming file and line or
    example."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"BBH task file {path} does not exist")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
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
    if not os.path.isfile(path):
        raise FileNotFoundError(f"BBH chain-of-thought prompt {path} does not exist")
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if PROMPT_SEPARATOR in lines:
        lines = lines[lines.index(PROMPT_SEPARATOR) + 1:]
    text = "\n".join(lines).strip()
    if not text:
        raise ValueError(f"{path}: no prompt after its {PROMPT_SEPARATOR!r} line")
    return text


def cot_input(prompt: str, question: str) -> str:
    return f"{prompt}\n\nQ: {question}\nA: {COT_PROMPT}"


def examples(task: str, cot: bool) -> list[dict]:
    data_dir = _data_dir()
    rows = read_examples(os.path.join(data_dir, "bbh", f"{task}.json"))
    if not cot:
        return rows
    prompt = read_cot_prompt(os.path.join(data_dir, "cot-prompts", f"{task}.txt"))
    return [{"input": cot_input(prompt, r["input"]), "target": r["target"]} for r in rows]


def _dataset(split: str, shuffle_files: bool = False, seed: int | None = None, *, task: str,
             cot: bool):
    rows = examples(task, cot)
    ds = tf.data.Dataset.from_tensor_slices({"inputs": [r["input"] for r in rows],
                                             "targets": [r["target"] for r in rows]})
    return ds.shuffle(len(rows), seed=seed) if shuffle_files else ds


def register(vocabularies: dict[str, seqio.Vocabulary],
             hybrid: dict[str, seqio.Vocabulary] | None = None) -> None:
    """Register BBH's tasks for each vocabulary (name suffix -> vocabulary), and for each of
    `hybrid` the same with `byte_inputs` (the input's bytes too, for a hybrid model)."""
    for suffix, output_features, to_bytes in hybrid_features.variants(vocabularies, hybrid,
                                                                      features):
        for cot in (False, True):
            names = []
            for task in TASKS:
                name = f"bbh_{task}" + ("_cot" if cot else "") + suffix
                seqio.TaskRegistry.add(
                    name, source=seqio.FunctionDataSource(
                        functools.partial(_dataset, task=task, cot=cot), splits=("test",)),
                    preprocessors=to_bytes + [seqio.preprocessors.tokenize,
                                              seqio.preprocessors.append_eos_after_trim],
                    output_features=output_features, postprocess_fn=answer_of,
                    metric_fns=[exact_match])
                names.append(name)
            seqio.MixtureRegistry.add("bbh" + ("_cot" if cot else "") + suffix, names,
                                      default_rate=1.0)
