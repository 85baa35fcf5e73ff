"""The instruction tasks and mixtures t5pod registers (Flan-style formatting, tasks/instructions).

Every task `flan_X` renders per tasks.instruction_format (zero-/few-shot, options, CoT);
`flan_X_zs` is the same task always zero-shot, for held-out evaluation. Targets are scored
by exact match of the answer (the text after "So the answer is" for chain of thought).

TFDS (prepare them with `tfds build` first): flan_boolq, flan_rte, flan_sst2, flan_anli_r1,
flan_gsm8k (with rationales: chain of thought). Offline: flan_wikispell,
flan_wikispell_frequency (is a WikiSpell word common or rare: a classification),
flan_demo_first_words, flan_demo_last_word (the embedded demo corpus). A user's JSONL files:
flan_jsonl.

Mixtures: flan_tfds (held-out: flan_tfds_heldout) and flan_cpu (held-out: flan_cpu_heldout).
"""

from __future__ import annotations

import dataclasses

import seqio

from tasks.instruction_tuning import instruction_sources as src
from tasks import settings_scope
from tasks.instruction_tuning.flan_mixtures import SubMixture, add_mixture
from tasks.instruction_tuning.instructions import (InstructionFormat, InstructionTask, Template,
                                                   answer_of, render_split)
from tasks.metrics import accuracy
from tasks.tf_setup import tf

YES_NO = ("no", "yes")


def _t(*pairs) -> tuple[Template, ...]:
    return tuple(Template(*p) if isinstance(p, tuple) else Template(p) for p in pairs)


BOOLQ = InstructionTask("flan_boolq", _t(
    "{passage}\n\nCan we conclude that {question}?",
    "{passage}\n\nIs it true that {question}?",
    "Read the text and answer the question.\n\n{passage}\n\nQuestion: {question}?",
    "Based on the following passage, {question}?\n\n{passage}",
), fields=("passage", "question", "answer"), options=YES_NO)

RTE = InstructionTask("flan_rte", _t(
    "{premise}\n\nBased on the paragraph above can we conclude that \"{hypothesis}\"?",
    "{premise}\n\nDoes this next sentence follow, given the preceding text?\n{hypothesis}",
    "Premise: {premise}\nHypothesis: {hypothesis}\nDoes the premise entail the hypothesis?",
), fields=("premise", "hypothesis", "answer"), options=YES_NO)

SST2 = InstructionTask("flan_sst2", _t(
    "Review:\n{sentence}\nIs this movie review sentence negative or positive?",
    "Short movie review: {sentence}\nDid the critic think positively or negatively of "
    "the movie?",
    "Sentence from a movie review: {sentence}\nWas the movie seen positively or negatively "
    "based on the preceding review?",
), fields=("sentence", "answer"), options=("negative", "positive"))

ANLI_OPTIONS = ("yes", "it is not possible to tell", "no")
ANLI = InstructionTask("flan_anli_r1", _t(
    "{context}\n\nBased on the paragraph above can we conclude that \"{hypothesis}\"?",
    "{context}\n\nCan we draw the following conclusion?\n{hypothesis}",
    "Read the text and determine if the sentence is true:\n\n{context}\n\nSentence: "
    "{hypothesis}",
), fields=("context", "hypothesis", "answer"), options=ANLI_OPTIONS)

GSM8K = InstructionTask("flan_gsm8k", _t(
    "{question}",
    "Solve this math problem: {question}",
    "Q: {question}\nA:",
), fields=("question", "rationale", "answer"), rationale="rationale")

WIKISPELL = InstructionTask("flan_wikispell", _t(
    "Spell the word \"{word}\" letter by letter.",
    "How is {word} spelled? Separate the letters with spaces.",
    "Write out the letters of the word {word}.",
), fields=("word", "answer"))

WIKISPELL_FREQUENCY = InstructionTask("flan_wikispell_frequency", _t(
    ("Is \"{word}\" a common or a rare English word?", "{frequency}"),
    ("How frequent is the word {word} in English: common or rare?", "{frequency}"),
), fields=("word", "frequency"), options=("common", "rare"))

DEMO_FIRST = InstructionTask("flan_demo_first_words", _t(
    ("{text}\n\nWhat are the first three words of the text above?", "{first_words}"),
    ("Copy the first three words of this passage: {text}", "{first_words}"),
    ("Passage: {text}\nThe passage begins with which three words?", "{first_words}"),
), fields=("text", "first_words", "last_word"))

DEMO_LAST = InstructionTask("flan_demo_last_word", _t(
    ("{text}\n\nWhat is the last word of the text above?", "{last_word}"),
    ("Which word ends this passage? {text}", "{last_word}"),
), fields=("text", "first_words", "last_word"))


def _boolq(r):
    return {"passage": src.text(r["passage"]), "question": src.text(r["question"]),
            "answer": YES_NO[int(r["label"])]}


def _rte(r):  # label 0: entailment
    return {"premise": src.text(r["premise"]), "hypothesis": src.text(r["hypothesis"]),
            "answer": "yes" if int(r["label"]) == 0 else "no"}


def _sst2(r):
    return {"sentence": src.text(r["sentence"]), "answer": SST2.options[int(r["label"])]}


def _anli(r):  # labels e, n, c
    return {"context": src.text(r["context"]), "hypothesis": src.text(r["hypothesis"]),
            "answer": ANLI_OPTIONS[int(r["label"])]}


def _gsm8k(r):
    return {"question": src.text(r["question"]), "rationale": src.text(r["annotation"]),
            "answer": src.text(r["short_answer"]).strip()}


# name -> (spec or spec factory, rows(split))
SOURCES = {
    "flan_boolq": (BOOLQ, src.tfds_loader("super_glue/boolq:1.0.2", _boolq)),
    "flan_rte": (RTE, src.tfds_loader("super_glue/rte:1.0.2", _rte)),
    "flan_sst2": (SST2, src.tfds_loader("glue/sst2:2.0.0", _sst2)),
    "flan_anli_r1": (ANLI, src.tfds_loader("anli/r1:0.1.0", _anli)),
    "flan_gsm8k": (GSM8K, src.tfds_loader("gsm8k:1.0.0", _gsm8k, {"validation": "test"})),
    "flan_wikispell": (WIKISPELL, src.wikispell_rows),
    "flan_wikispell_frequency": (WIKISPELL_FREQUENCY, src.wikispell_frequency_rows),
    "flan_demo_first_words": (DEMO_FIRST, src.demo_rows),
    "flan_demo_last_word": (DEMO_LAST, src.demo_rows),
    "flan_jsonl": (src.jsonl_spec, src.jsonl_rows),
}


def spec_of(name: str) -> InstructionTask:
    spec = SOURCES[name][0]
    return spec if isinstance(spec, InstructionTask) else spec()


def rendered(name: str, split: str, zero_shot: bool = False) -> list[dict]:
    """The rendered examples of a split, per the current tasks.instruction_format."""
    spec, rows_of = spec_of(name), SOURCES[name][1]
    config = settings_scope.get("instruction_format", InstructionFormat)
    if zero_shot:
        config = dataclasses.replace(config, few_shot_fraction=0.0)
    rows = rows_of(split)
    pool = rows if split == "train" else rows_of("train")
    return render_split(spec, rows, split, config, pool, pool_is_split=split == "train")


def train_size(name: str) -> int:
    base = name[:-3] if name.endswith("_zs") else name
    return len(SOURCES[base][1]("train"))


def _dataset_fn(name: str, zero_shot: bool):
    def fn(split: str, shuffle_files: bool = False, seed: int | None = None):
        out = rendered(name, split, zero_shot)
        if not out:
            raise ValueError(f"instruction task {name!r} split {split!r} has no examples")
        ds = tf.data.Dataset.from_tensor_slices(
            {k: tf.constant([r[k] for r in out]) for k in ("inputs", "targets", "format")})
        return ds.shuffle(len(out), seed=seed) if shuffle_files else ds
    return fn


def register(vocabulary) -> None:
    features = {"inputs": seqio.Feature(vocabulary, add_eos=True),
                "targets": seqio.Feature(vocabulary, add_eos=True)}
    for name in SOURCES:
        for suffix, zero_shot in (("", False), ("_zs", True)):
            seqio.TaskRegistry.add(
                name + suffix,
                source=seqio.FunctionDataSource(_dataset_fn(name, zero_shot),
                                                splits=("train", "validation")),
                preprocessors=[seqio.preprocessors.tokenize,
                               seqio.preprocessors.append_eos_after_trim],
                output_features=features, postprocess_fn=answer_of, metric_fns=[accuracy])
    add_mixture("flan_tfds", {
        "qa": SubMixture(("flan_boolq",), 1.0),
        "nli": SubMixture(("flan_anli_r1",), 1.0),
        "sentiment": SubMixture(("flan_sst2",), 0.5),
        "cot": SubMixture(("flan_gsm8k",), 1.0),
    }, cap=30000, size_of=train_size)
    seqio.MixtureRegistry.add("flan_tfds_heldout", [("flan_rte_zs", 1.0)])
    add_mixture("flan_cpu", {
        "copying": SubMixture(("flan_demo_first_words",), 1.0),
        "spelling": SubMixture(("flan_wikispell",), 1.0),
    }, cap=3000, size_of=train_size)
    seqio.MixtureRegistry.add("flan_cpu_heldout", [("flan_demo_last_word_zs", 1.0)])
