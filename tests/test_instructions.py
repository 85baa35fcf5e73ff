"""Flan-style instruction formatting and mixtures: pure Python and tf.data, no JAX compiles."""

import collections
import json
import math
from unittest import mock

import pytest
import seqio
import tensorflow_datasets as tfds

import tasks  # noqa: F401
from tasks.instruction_tuning import flan_tasks
from tasks import settings, settings_scope
from tasks.instruction_tuning import instruction_sources as sources
from tasks.feed_config import FeedConfig
from tasks.feeding.host_feed import HostFeed
from tasks.instruction_tuning.flan_mixtures import SubMixture, add_mixture, mixture_rates
from tasks.instruction_tuning.instructions import (COT_PROMPT, InstructionFormat, InstructionTask,
                                                   Template, answer_of, render_split)
from tasks.tf_setup import tf
from tasks.vocabularies import byte_vocabulary

QA = InstructionTask("test_qa", (Template("Question: {q}"), Template("{q} Answer briefly."),
                                 Template("Answer this: {q}")),
                     fields=("q", "answer"), options=("yes", "no"))
ROWS = [{"q": f"<q{i}>", "answer": f"a{i}"} for i in range(300)]
ROWS[1] = dict(ROWS[0])  # a duplicate: never an exemplar for its twin either


def render(rows=ROWS, split="train", **kwargs):
    return render_split(QA, rows, split, InstructionFormat(**kwargs), ROWS, split == "train")


def test_rendering_is_deterministic_for_a_seed():
    first, again = render(seed=3), render(seed=3)
    assert first == again
    other = render(seed=4)
    assert sum(a != b for a, b in zip(first, other, strict=True)) > len(first) // 2
    assert {r["template"] for r in first} == {0, 1, 2}
    # an example renders the same whatever else is in its split (seeded by its index)
    assert render(ROWS[:50], seed=3) == first[:50]


def test_few_shot_exemplars_never_contain_the_target_example():
    rendered = render(few_shot_fraction=1.0, num_shots=3)
    for i, r in enumerate(rendered):
        assert r["format"].startswith("few_shot")
        assert r["inputs"].count(ROWS[i]["q"]) == 1, r["inputs"]  # only the question itself
        assert r["inputs"].rstrip().split("\n\n\n")[-1].count(ROWS[i]["q"]) == 1
        assert r["inputs"].count("<q") == 4 and r["targets"] == ROWS[i]["answer"]
    # exemplars come from the train pool; a validation example is never in it either
    held = [{"q": "<held>", "answer": "x"}]
    assert "<held>" in render(held, split="validation", few_shot_fraction=1.0)[0]["inputs"]


def _within(count, n, p, sigmas=4.0):
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


def test_zero_shot_few_shot_and_options_at_their_proportions():
    rows = [{"q": f"<q{i}>", "answer": "yes"} for i in range(3000)]
    rendered = render_split(QA, rows, "train", InstructionFormat(
        few_shot_fraction=0.3, options_fraction=0.6, num_shots=1), rows, True)
    kinds = collections.Counter(r["format"] for r in rendered)
    few = sum(v for k, v in kinds.items() if k.startswith("few_shot"))
    options = sum(v for k, v in kinds.items() if "+options" in k)
    assert _within(few, len(rows), 0.3) and _within(options, len(rows), 0.6)
    with_options = next(r for r in rendered if r["format"] == "zero_shot+options")
    assert with_options["inputs"].endswith("OPTIONS:\n- yes\n- no")


def test_chain_of_thought_format_and_answer_extraction():
    cot = InstructionTask("test_cot", (Template("Q: {question}"),),
                          fields=("question", "why", "answer"), rationale="why")
    rows = [{"question": "2+3?", "why": "Two plus three is five.", "answer": "5"}]
    r = render_split(cot, rows, "validation", InstructionFormat(cot_fraction=1.0), rows,
                     False)[0]
    assert r["inputs"] == f"Q: 2+3?\n\n{COT_PROMPT}" and r["format"] == "zero_shot+cot"
    assert r["targets"] == "Two plus three is five. So the answer is 5."
    assert answer_of(r["targets"].encode()) == "5" and answer_of("yes") == "yes"
    plain = render_split(cot, rows, "validation", InstructionFormat(cot_fraction=0.0), rows,
                         False)[0]
    assert plain["targets"] == "5" and COT_PROMPT not in plain["inputs"]


def test_template_with_an_absent_field_is_refused():
    with pytest.raises(ValueError, match=r"template 1 of instruction task 'bad' refers to "
                                         r"field\(s\) \['pasage'\]"):
        InstructionTask("bad", (Template("{passage}"), Template("{pasage}?")),
                        fields=("passage", "answer"))
    with pytest.raises(ValueError, match="few_shot_fraction=1.5 must be in"):
        InstructionFormat(few_shot_fraction=1.5)


def test_mixture_rates_are_examples_proportional_capped_and_weighted():
    groups = {"a": SubMixture(("big", "small"), 3.0), "b": SubMixture(("other",), 1.0)}
    rates = mixture_rates(groups, {"big": 10_000, "small": 100, "other": 5}, cap=1000)
    assert rates == pytest.approx({"big": 0.75 * 1000 / 1100, "small": 0.75 * 100 / 1100,
                                   "other": 0.25})
    with pytest.raises(ValueError, match="'big' is in sub-mixtures 'a' and 'c'"):
        mixture_rates({**groups, "c": SubMixture(("big",))}, {"big": 1, "small": 1,
                                                             "other": 1}, 10)


def _constant_task(name):
    def fn(split, shuffle_files=False, seed=None):
        return tf.data.Dataset.from_tensor_slices(
            {"inputs": [name] * 4, "targets": [name] * 4}).repeat()
    if name not in seqio.TaskRegistry.names():
        seqio.TaskRegistry.add(
            name, source=seqio.FunctionDataSource(fn, splits=("train",)),
            preprocessors=[seqio.preprocessors.tokenize],
            output_features={k: seqio.Feature(byte_vocabulary()) for k in ("inputs",
                                                                           "targets")})


def test_mixture_rates_are_honoured_when_sampling():
    names = ("test_mix_x", "test_mix_y", "test_mix_z")
    for n in names:
        _constant_task(n)
    sizes = {"test_mix_x": 50_000, "test_mix_y": 2_000, "test_mix_z": 500}
    if "test_flan_mix" not in seqio.MixtureRegistry.names():
        add_mixture("test_flan_mix", {"test_xy": SubMixture(names[:2], 2.0),
                                      "test_z": SubMixture(names[2:], 1.0)},
                    cap=8_000, size_of=sizes.__getitem__)
    want = {"test_mix_x": 2 / 3 * 0.8, "test_mix_y": 2 / 3 * 0.2, "test_mix_z": 1 / 3}

    vocab = byte_vocabulary()

    def sample(n=3000):
        ds = seqio.get_mixture_or_task("test_flan_mix").get_dataset(
            {"inputs": 16, "targets": 16}, split="train", shuffle=False, seed=1)
        counts = collections.Counter(
            vocab.decode(ex["targets"].tolist()) for ex in ds.take(n).as_numpy_iterator())
        return counts, n

    counts, n = sample()
    for name, p in want.items():
        assert _within(counts[name], n, p), (name, counts)
    # a sub-mixture weight swept through the task settings changes the rates
    def weights(value):
        return settings_scope.active(settings.from_mapping(
            {"instruction_mixing": {"weights": value}}))

    with weights({"test_z": 3.0}):
        counts, n = sample()
    assert _within(counts["test_mix_z"], n, 0.6), counts
    with weights({"test_q": 3.0}), pytest.raises(ValueError,
                                                 match=r"unknown sub-mixture\(s\) \['test_q'\]"):
        sample(1)


def test_tfds_instruction_tasks_with_mock_data():
    sources.clear_caches()
    with tfds.testing.mock_data(num_examples=5), mock.patch.object(
            seqio.TfdsDataSource, "num_input_examples", return_value=None):
        for name in ("flan_boolq", "flan_rte", "flan_sst2", "flan_anli_r1", "flan_gsm8k"):
            train = flan_tasks.rendered(name, "train")
            spec = flan_tasks.spec_of(name)
            assert len(train) == 5
            for r in train:
                if spec.options:
                    assert answer_of(r["targets"]) in spec.options
                if spec.rationale:  # gsm8k: chain of thought by default
                    assert r["format"].endswith("+cot") and COT_PROMPT in r["inputs"]
            ex = next(seqio.get_mixture_or_task(name + "_zs").get_dataset(
                {"inputs": 256, "targets": 64}, split="validation",
                shuffle=False).as_numpy_iterator())
            assert ex["format"].decode().startswith("zero_shot")
    sources.clear_caches()


def _jsonl(path, fields):
    return settings.from_mapping({"instruction_jsonl": {
        "train": str(path), "fields": fields,
        "templates": [("Q: {question}", "{answer}"), ("{question} Answer:", "{answer}")]}})


def test_jsonl_instruction_task_packs_several_examples_per_row(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps({"q": f"what is {i} plus one", "a": str(i + 1)})
                              for i in range(40)))
    jsonl = _jsonl(path, {"question": "q", "answer": "a"})
    sources.clear_caches()
    try:
        with settings_scope.active(jsonl):
            rendered = flan_tasks.rendered("flan_jsonl", "train")
        assert rendered[7]["targets"] == "8" and "what is 7 plus one" in rendered[7]["inputs"]
        batch = next(HostFeed(FeedConfig("flan_jsonl", {"inputs": 128, "targets": 16}, 2,
                                         pack=True, task_settings=jsonl), 0, 1))
        # packed rows hold several examples, told apart by segment ids (tests/test_packing.py
        # shows the model masks attention across them)
        assert batch["encoder_segment_ids"].max() > 1
        assert batch["decoder_segment_ids"].max() > 1
    finally:
        sources.clear_caches()


def test_jsonl_missing_a_mapped_field_names_file_line_and_field(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"q": "x", "a": "y"}) + "\n" + json.dumps({"q": "z"}) + "\n")
    sources.clear_caches()
    try:
        with settings_scope.active(_jsonl(path, {"question": "q", "answer": "a"})):
            with pytest.raises(KeyError, match=r"qa.jsonl:2 has no field\(s\) \['a'\]"):
                flan_tasks.rendered("flan_jsonl", "train")
    finally:
        sources.clear_caches()


def test_unprepared_tfds_instruction_task_says_how_to_prepare(tmp_path):
    seqio.set_tfds_data_dir_override(str(tmp_path))
    try:
        with pytest.raises(FileNotFoundError, match=f"not prepared.*{tmp_path}.*tfds build "
                                                    "super_glue/boolq"):
            flan_tasks.rendered("flan_boolq", "train")
    finally:
        seqio.set_tfds_data_dir_override(None)
