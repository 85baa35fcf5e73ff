"""MMLU (Hendrycks et al., 2021) from its published CSV files, prompted as Flan evaluates it.

The data directory holds dev/{subject}_dev.csv (5 exemplars each), val/{subject}_val.csv and
test/{subject}_test.csv: no header, one question per record: question, four options, answer
letter. The prompt (zero-shot, or 5-shot from the subject's dev file):

    The following are multiple choice questions (with answers) about {subject}.

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

Tasks (split "validation" reads val/, "test" reads test/; `_byte` ones use ByT5's bytes,
`_hybrid` ones SentencePiece ids plus the prompt's bytes, for a hybrid model):
  mmlu_{zero,five}_shot_letter  the generated answer's letter, exact match (predict metric)
  mmlu_{zero,five}_shot_rank    rank classification over the four letters, or the option
                                texts with `tasks.mmlu.rank_choices = 'options'` (score)
  mmlu_{zero,five}_shot         both (a mixture)

    tasks.mmlu.data_dir = %MMLU_DIR      # gin/runs/eval_mmlu.gin
    tasks.mmlu.subjects = ['anatomy']    # default: every subject in test/
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
import re

import seqio

from tasks import hybrid_features, settings_scope
from tasks import rank_classification as rank
from tasks.metrics import accuracy
from tasks.tf_setup import tf

LETTERS = ("A", "B", "C", "D")
SPLIT_DIRS = {"validation": "val", "test": "test"}
SHOTS = {"zero_shot": 0, "five_shot": 5}
RANK_CHOICES = ("letters", "options")


@dataclasses.dataclass(frozen=True)
class MMLUConfig:
    data_dir: str | None = None
    subjects: tuple[str, ...] = ()
    rank_choices: str = "letters"

    def __post_init__(self):
        if self.rank_choices not in RANK_CHOICES:
            raise ValueError(f"tasks.mmlu.rank_choices={self.rank_choices!r}; valid: "
                             f"{RANK_CHOICES}")


def mmlu(data_dir: str | None = None, subjects=(), rank_choices: str = "letters") -> MMLUConfig:
    return MMLUConfig(data_dir, (subjects,) if isinstance(subjects, str) else tuple(subjects),
                      rank_choices)


@dataclasses.dataclass(frozen=True)
class Question:
    question: str
    options: tuple[str, ...]
    answer: int    # index into LETTERS


def read_csv(path: str) -> list[Question]:
    """The questions of one MMLU CSV file; a malformed record fails naming file and line."""
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        for record in reader:
            where = f"{path}:{reader.line_num}"
            if not record or not any(field.strip() for field in record):
                continue
            if len(record) != 6:
                raise ValueError(f"{where}: {len(record)} columns, expected 6 (question, "
                                 "A, B, C, D, answer letter; no header)")
            letter = record[5].strip()
            if letter not in LETTERS:
                raise ValueError(f"{where}: answer {record[5]!r} is not one of {LETTERS}")
            out.append(Question(record[0], tuple(record[1:5]), LETTERS.index(letter)))
    if not out:
        raise ValueError(f"{path} holds no questions")
    return out


def subject_name(subject: str) -> str:
    return subject.replace("_", " ")


def render(question: Question, answer: bool = False) -> str:
    lines = [question.question] + [f"{letter}. {option}" for letter, option in
                                   zip(LETTERS, question.options, strict=True)]
    text = "\n".join(lines) + "\nAnswer:"
    return text + f" {LETTERS[question.answer]}\n\n" if answer else text


def prompt(subject: str, question: Question, shots: list[Question]) -> str:
    header = ("The following are multiple choice questions (with answers) about "
              f"{subject_name(subject)}.\n\n")
    return header + "".join(render(s, answer=True) for s in shots) + render(question)


def _config() -> MMLUConfig:
    config = settings_scope.get("mmlu", MMLUConfig)
    if not config.data_dir:
        raise ValueError("MMLU's data directory is not set: pass --gin.MMLU_DIR=/path/to/mmlu "
                         "(holding dev/, val/ and test/ with the published CSV files) with "
                         "--gin_file=runs/eval_mmlu.gin, or bind tasks.mmlu.data_dir")
    if not os.path.isdir(config.data_dir):
        raise FileNotFoundError(f"MMLU data directory {config.data_dir} does not exist "
                                "(tasks.mmlu.data_dir / MMLU_DIR)")
    return config


def subjects_in(config: MMLUConfig, split: str) -> list[str]:
    folder = os.path.join(config.data_dir, SPLIT_DIRS[split])
    suffix = f"_{SPLIT_DIRS[split]}.csv"
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"MMLU split {split!r}: no folder {folder}")
    found = sorted(f[: -len(suffix)] for f in os.listdir(folder) if f.endswith(suffix))
    if config.subjects:
        missing = sorted(set(config.subjects) - set(found))
        if missing:
            raise FileNotFoundError(f"MMLU subjects {missing} have no {folder}/<subject>{suffix}"
                                    f"; found: {found}")
        return list(config.subjects)
    if not found:
        raise FileNotFoundError(f"no MMLU files *{suffix} in {folder}")
    return found


def examples(split: str, num_shots: int) -> list[dict]:
    """{inputs, options, answer, subject} per question of every subject, in file order."""
    config = _config()
    rows = []
    for subject in subjects_in(config, split):
        shots = []
        if num_shots:
            dev = os.path.join(config.data_dir, "dev", f"{subject}_dev.csv")
            if not os.path.isfile(dev):
                raise FileNotFoundError(f"{num_shots}-shot MMLU needs {dev}")
            shots = read_csv(dev)[:num_shots]
            if len(shots) < num_shots:
                raise ValueError(f"{dev} has {len(shots)} questions; {num_shots}-shot needs "
                                 f"{num_shots}")
        folder = SPLIT_DIRS[split]
        path = os.path.join(config.data_dir, folder, f"{subject}_{folder}.csv")
        for q in read_csv(path):
            choices = LETTERS if config.rank_choices == "letters" else q.options
            rows.append({"inputs": prompt(subject, q, shots), "options": list(choices),
                         "answer": q.answer, "targets": LETTERS[q.answer], "subject": subject})
    return rows


def _dataset(split: str, shuffle_files: bool = False, seed: int | None = None, *,
             num_shots: int, with_options: bool):
    rows = examples(split, num_shots)
    columns = {"inputs": [r["inputs"] for r in rows], "targets": [r["targets"] for r in rows],
               "subject": [r["subject"] for r in rows]}
    if with_options:
        columns.update(options=[r["options"] for r in rows],
                       answer=[r["answer"] for r in rows], idx=list(range(len(rows))))
        del columns["targets"]
    ds = tf.data.Dataset.from_tensor_slices(columns)
    return ds.shuffle(len(rows), seed=seed) if shuffle_files else ds


_LETTER = re.compile(r"^\W*([A-D])\b")


def letter_of(text, example=None, is_target: bool = False) -> str:
    """seqio postprocessor: the answer letter a generation starts with ("B", " (C) ...",
    "D. 42"); anything else stays as generated (and counts as wrong)."""
    text = text.decode() if isinstance(text, bytes) else str(text)
    match = _LETTER.match(text)
    return match.group(1) if match else text.strip()


def register(vocabularies: dict[str, seqio.Vocabulary],
             hybrid: dict[str, seqio.Vocabulary] | None = None) -> None:
    """Register MMLU's tasks for each vocabulary (name suffix -> vocabulary), and for each of
    `hybrid` the same with `byte_inputs` (the prompt's bytes too, for a hybrid model)."""
    for suffix, features, to_bytes in hybrid_features.variants(vocabularies, hybrid,
                                                               rank.features):
        for shots_name, num_shots in SHOTS.items():
            name = f"mmlu_{shots_name}"
            seqio.TaskRegistry.add(
                f"{name}_letter{suffix}",
                source=seqio.FunctionDataSource(
                    functools.partial(_dataset, num_shots=num_shots, with_options=False),
                    splits=tuple(SPLIT_DIRS)),
                preprocessors=to_bytes + [seqio.preprocessors.tokenize,
                                          seqio.preprocessors.append_eos_after_trim],
                output_features=features, postprocess_fn=letter_of,
                metric_fns=[accuracy])
            seqio.TaskRegistry.add(
                f"{name}_rank{suffix}",
                source=seqio.FunctionDataSource(
                    functools.partial(_dataset, num_shots=num_shots, with_options=True),
                    splits=tuple(SPLIT_DIRS)),
                preprocessors=[rank.expand_options] + to_bytes + [
                    seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
                output_features=features, postprocess_fn=rank.postprocess,
                metric_fns=rank.METRICS)
            seqio.MixtureRegistry.add(f"{name}{suffix}",
                                      [f"{name}_letter{suffix}", f"{name}_rank{suffix}"],
                                      default_rate=1.0)
