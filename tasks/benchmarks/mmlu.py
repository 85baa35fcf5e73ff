"""MMLU (Hendrycks et al., 2021) prompted and scored as hendrycks/test's evaluate_flan.py does.

The questions come from any layout tasks/benchmarks/mmlu_files.py reads (hendrycks' CSV
files, the header CSV copies, cais/mmlu's Parquet); the prompts are
tasks/benchmarks/mmlu_prompts.py's, byte-equal to evaluate_flan.py's, zero-shot or 5-shot
from the subject's dev questions, the exemplars shortened until the prompt fits
`max_prompt_tokens` (2048) of the task's vocabulary.

Tasks (split "validation" or "test"; `_byte` ones use ByT5's bytes, `_hybrid` ones
SentencePiece ids plus the prompt's bytes, for a hybrid model):
  mmlu_{zero,five}_shot_letter  the generated answer's letter, exact match (predict metric)
  mmlu_{zero,five}_shot_rank    the most likely of the four answers (score metric), by
                                `tasks.mmlu.scoring`:
      'first_token' (default)  evaluate_flan.py's: the first decoder step's log-probability
                               of the first token of "A", "B", "C", "D" (no EOS)
      'sequence'               T5's rank classification: each answer's summed
                               log-likelihood, EOS included; the four letters, or the option
                               texts with `tasks.mmlu.rank_choices = 'options'`
  mmlu_{zero,five}_shot         both (a mixture)

Accuracy is over all questions of every subject together, as evaluate_flan.py's average.

    tasks.mmlu.data_dir = %MMLU_DIR      # gin/runs/eval_mmlu.gin
    tasks.mmlu.subjects = ['anatomy']    # default: every subject of the split
    tasks.mmlu.max_prompt_tokens = 2048  # None: never shorten
"""

from __future__ import annotations

import dataclasses
import functools
import re

import seqio

from fields import paths
from fields.choices import require_choice
from fields.integers import require_int
from tasks import hybrid_features
from tasks.benchmarks import mmlu_files
from tasks import settings_scope
from tasks.benchmarks import rank_classification as rank
from tasks.metrics import accuracy
from tasks.benchmarks.mmlu_files import LETTERS
from tasks.benchmarks.mmlu_prompts import fitted_prompt
from tasks.tf_setup import tf

SPLITS = ("validation", "test")
SHOTS = {"zero_shot": 0, "five_shot": 5}
RANK_CHOICES = ("letters", "options")
SCORING = ("first_token", "sequence")
MAX_PROMPT_TOKENS = 2048


@dataclasses.dataclass(frozen=True)
class MMLUConfig:
    data_dir: str | None = None
    subjects: tuple[str, ...] = ()
    rank_choices: str = "letters"
    scoring: str = "first_token"
    max_prompt_tokens: int | None = MAX_PROMPT_TOKENS

    def __post_init__(self):
        require_choice("tasks.mmlu", "rank_choices", self.rank_choices, RANK_CHOICES)
        require_choice("tasks.mmlu", "scoring", self.scoring, SCORING)
        if self.scoring == "first_token" and self.rank_choices == "options":
            raise ValueError("tasks.mmlu.rank_choices='options' needs tasks.mmlu.scoring="
                             "'sequence' (first-token scoring compares the letters A-D)")
        if self.max_prompt_tokens is not None:
            require_int("tasks.mmlu", "max_prompt_tokens", self.max_prompt_tokens, 1,
                        meaning=f"evaluate_flan.py: {MAX_PROMPT_TOKENS}; None: never shorten")


def mmlu(data_dir: str | None = None, subjects=(), rank_choices: str = "letters",
         scoring: str = "first_token",
         max_prompt_tokens: int | None = MAX_PROMPT_TOKENS) -> MMLUConfig:
    return MMLUConfig(data_dir, (subjects,) if isinstance(subjects, str) else tuple(subjects),
                      rank_choices, scoring, max_prompt_tokens)


def _config() -> MMLUConfig:
    config = settings_scope.get("mmlu", MMLUConfig)
    if not config.data_dir:
        raise ValueError("MMLU's data directory is not set: pass --gin.MMLU_DIR=/path/to/mmlu "
                         "(hendrycks' dev/, val/ and test/ CSV folders, or cais/mmlu's "
                         "Parquet files) with --gin_file=runs/eval_mmlu.gin, or bind "
                         "tasks.mmlu.data_dir")
    if not paths.isdir(paths.user_path(config.data_dir, "tasks.mmlu.data_dir")):
        raise FileNotFoundError(f"MMLU data directory {config.data_dir} does not exist "
                                "(tasks.mmlu.data_dir / MMLU_DIR)")
    return config


def _subjects(config: MMLUConfig, split: str, found: dict) -> list[str]:
    if config.subjects:
        missing = sorted(set(config.subjects) - set(found))
        if missing:
            raise ValueError(f"tasks.mmlu.subjects {missing} have no {split} questions in "
                             f"{config.data_dir}; found: {sorted(found)}")
        return list(config.subjects)
    return sorted(found)


def _shots(config: MMLUConfig, subjects: list[str], num_shots: int) -> dict[str, list]:
    if not num_shots:
        return {s: [] for s in subjects}
    dev = mmlu_files.load(config.data_dir, "dev")
    out = {}
    for subject in subjects:
        shots = dev.get(subject, [])[:num_shots]
        if len(shots) < num_shots:
            raise ValueError(f"MMLU subject {subject!r} has {len(shots)} dev questions in "
                             f"{config.data_dir}; {num_shots}-shot needs {num_shots}")
        out[subject] = shots
    return out


def examples(split: str, num_shots: int, vocabulary=None) -> list[dict]:
    """{inputs, options, answer, subject} per question of every subject (sorted), in file
    order; prompts shortened to `max_prompt_tokens` of `vocabulary` (None: not at all)."""
    config = _config()
    found = mmlu_files.load(config.data_dir, split)
    subjects = _subjects(config, split, found)
    shots = _shots(config, subjects, num_shots)
    count = None if vocabulary is None else (lambda text: len(vocabulary.encode(text)) + 1)
    rows = []
    for subject in subjects:
        for q in found[subject]:
            choices = LETTERS if config.rank_choices == "letters" else q.options
            text = fitted_prompt(subject, q, shots[subject], count, config.max_prompt_tokens)
            rows.append({"inputs": text, "options": list(choices), "answer": q.answer,
                         "targets": LETTERS[q.answer], "subject": subject})
    return rows


def _dataset(split: str, shuffle_files: bool = False, seed: int | None = None, *,
             num_shots: int, with_options: bool, vocabulary):
    rows = examples(split, num_shots, vocabulary)
    columns = {"inputs": [r["inputs"] for r in rows], "targets": [r["targets"] for r in rows],
               "subject": [r["subject"] for r in rows]}
    if with_options:
        columns.update(options=[r["options"] for r in rows],
                       answer=[r["answer"] for r in rows], idx=list(range(len(rows))))
        del columns["targets"]
    ds = tf.data.Dataset.from_tensor_slices(columns)
    return ds.shuffle(len(rows), seed=seed) if shuffle_files else ds


def scored_targets(dataset, sequence_length=None, output_features=None):
    """seqio preprocessor (in place of append_eos_after_trim): EOS after the inputs; the
    targets with EOS for 'sequence' scoring, only their first token for 'first_token'."""
    dataset = seqio.preprocessors.append_eos_after_trim(
        dataset, sequence_length=sequence_length, output_features=output_features)
    if settings_scope.get("mmlu", MMLUConfig).scoring != "first_token":
        return dataset
    return dataset.map(lambda ex: {**ex, "targets": ex["targets"][:1]},
                       num_parallel_calls=tf.data.AUTOTUNE)


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
                    functools.partial(_dataset, num_shots=num_shots, with_options=False,
                                      vocabulary=features["inputs"].vocabulary),
                    splits=SPLITS),
                preprocessors=to_bytes + [seqio.preprocessors.tokenize,
                                          seqio.preprocessors.append_eos_after_trim],
                output_features=features, postprocess_fn=letter_of,
                metric_fns=[accuracy])
            seqio.TaskRegistry.add(
                f"{name}_rank{suffix}",
                source=seqio.FunctionDataSource(
                    functools.partial(_dataset, num_shots=num_shots, with_options=True,
                                      vocabulary=features["inputs"].vocabulary),
                    splits=SPLITS),
                preprocessors=[rank.expand_options] + to_bytes + [
                    seqio.preprocessors.tokenize, scored_targets],
                output_features=features, postprocess_fn=rank.postprocess,
                metric_fns=rank.METRICS)
            seqio.MixtureRegistry.add(f"{name}{suffix}",
                                      [f"{name}_letter{suffix}", f"{name}_rank{suffix}"],
                                      default_rate=1.0)
