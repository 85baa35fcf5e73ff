"""Per-host feeding, packing, resumable position, TFDS tasks (mocked) and the demo tasks."""

import collections
import dataclasses
import json
from unittest import mock

import numpy as np
import pytest
import seqio
import tensorflow_datasets as tfds

import tasks  # noqa: F401
from tasks.feed_config import FeedConfig
from tasks.feeding.host_feed import HostFeed
from tasks.live_pipeline import dataset
from tasks.task_lookup import lookup
from tasks.tf_setup import tf
from tasks.vocabularies import byte_vocabulary

LENGTHS = {"inputs": 64, "targets": 32}


def _numbered(split, shuffle_files=False, seed=None):
    texts = [f"example number {i} of the {split} split" for i in range(37)]
    return tf.data.Dataset.from_tensor_slices({"inputs": texts, "targets": texts})


if "test_numbered" not in seqio.TaskRegistry.names():
    seqio.TaskRegistry.add(
        "test_numbered", source=seqio.FunctionDataSource(_numbered, splits=("train",)),
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
        output_features={k: seqio.Feature(byte_vocabulary()) for k in ("inputs", "targets")})


def rows(ds, key="encoder_input_tokens"):
    return [tuple(ex[key][ex[key] > 0].tolist()) for ex in ds.as_numpy_iterator()]


def test_two_hosts_read_disjoint_shards_covering_the_split():
    config = FeedConfig("test_numbered", LENGTHS, batch_size=2, shuffle=False, num_epochs=1,
                        pack=False)
    whole = collections.Counter(rows(dataset(config)))
    host0 = collections.Counter(rows(dataset(config, 0, 2)))
    host1 = collections.Counter(rows(dataset(config, 1, 2)))
    assert sum(whole.values()) == 37 and len(whole) == 37
    assert not (host0 & host1) and host0 + host1 == whole
    assert abs(sum(host0.values()) - sum(host1.values())) <= 1


def test_packing_segment_ids_positions_and_no_token_lost():
    base = dict(mixture_or_task_name="test_numbered", batch_size=4, shuffle=False,
                num_epochs=1, task_feature_lengths={"inputs": 128, "targets": 128})
    packed = list(dataset(FeedConfig(**base, pack=True)).as_numpy_iterator())
    plain = list(dataset(FeedConfig(**base, pack=False)).as_numpy_iterator())
    assert len(packed) < len(plain)  # several examples share a row

    def segments(examples, key, seg_key, pos_key):
        out = []
        for ex in examples:
            tokens, seg, pos = ex[key], ex[seg_key], ex[pos_key]
            for s in range(1, seg.max() + 1):
                where = np.flatnonzero(seg == s)
                assert np.array_equal(pos[where], np.arange(len(where)))  # positions restart
                assert np.all(np.diff(where) == 1)  # a segment is contiguous
                out.append(tuple(tokens[where]))
            assert np.all(tokens[seg == 0] == 0)  # padding only outside segments
        return collections.Counter(out)

    for key, seg, pos in (("encoder_input_tokens", "encoder_segment_ids", "encoder_positions"),
                          ("decoder_target_tokens", "decoder_segment_ids", "decoder_positions")):
        unpacked = collections.Counter(tuple(ex[key][ex[key] > 0]) for ex in plain)
        assert segments(packed, key, seg, pos) == unpacked


def test_position_restore_gives_the_uninterrupted_batches():
    config = FeedConfig("demo_span_corruption", LENGTHS, batch_size=4, seed=5)
    feed = HostFeed(config, 0, 1)
    reference = [next(feed) for _ in range(6)]
    resumed_from = HostFeed(config, 0, 1)
    for _ in range(4):
        next(resumed_from)
    state = json.loads(json.dumps(resumed_from.state()))
    resumed = HostFeed.restore(config, state, process_index=0, process_count=1)
    for want in reference[4:]:
        got = next(resumed)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    other_seed = next(HostFeed(FeedConfig("demo_span_corruption", LENGTHS, 4, seed=6), 0, 1))
    assert not np.array_equal(other_seed["encoder_input_tokens"],
                              reference[0]["encoder_input_tokens"])


def test_demo_byte_task_uses_bytes_and_byt5_spans():
    ds = lookup("demo_span_corruption_byte").get_dataset(
        {"inputs": 256, "targets": 64}, split="validation", shuffle=False)
    ex = next(ds.as_numpy_iterator())
    vocab = byte_vocabulary()
    assert vocab.vocab_size == 384 and ex["targets"][0] == 383 and ex["inputs"][-1] == 1
    text = vocab.decode([t for t in ex["inputs"].tolist() if t < 259])
    assert len(text.split()) > 10  # real prose


@pytest.mark.parametrize("name,prefix,labels", [
    ("glue_sst2", "sst2 sentence: ", {"negative", "positive"}),
    ("super_glue_boolq", "boolq passage: ", {"False", "True"}),
])
def test_tfds_text_to_text_tasks_with_mock_data(name, prefix, labels):
    # mock_data knows no split sizes; seqio asks for them only to decide in-memory caching.
    with tfds.testing.mock_data(num_examples=6), mock.patch.object(
            seqio.TfdsDataSource, "num_input_examples", return_value=None):
        task = lookup(name)
        ds = task.get_dataset({"inputs": 128, "targets": 8}, split="train", shuffle=False)
        examples = list(ds.as_numpy_iterator())
        fed = next(HostFeed(FeedConfig(name, {"inputs": 128, "targets": 8}, 2), 0, 1))
    assert len(examples) == 6 and fed["encoder_input_tokens"].shape == (2, 128)
    for ex in examples:
        assert ex["inputs_pretokenized"].decode().startswith(prefix)
        assert ex["targets_pretokenized"].decode() in labels
    metric = task.metric_fns[0](["positive", "negative"], ["positive", "positive"])
    assert metric == {"accuracy": 50.0}


def test_user_text_files_from_the_feeds_task_settings(tmp_path):
    path = tmp_path / "corpus.jsonl"
    lines = [{"body": f"line {i} of a user's own corpus, long enough to corrupt."}
             for i in range(40)]
    path.write_text("\n".join(json.dumps(x) for x in lines))
    corpus = {"text_corpus": {"train": str(path), "field": "body"}}
    batch = next(HostFeed(FeedConfig("text_span_corruption", LENGTHS, 2,
                                     task_settings=corpus), 0, 1))
    assert batch["encoder_input_tokens"].shape == (2, 64)


@pytest.mark.parametrize("content,match", [
    (b"", "is empty"),
    (b"\xff\xfe\x00 not utf-8", "not UTF-8"),
    (b'{"other": "x"}\n', "has no field 'text'"),
])
def test_bad_corpus_files(tmp_path, content, match):
    path = tmp_path / ("bad.jsonl" if b"{" in content else "bad.txt")
    path.write_bytes(content)
    corpus = {"text_corpus": {"train": str(path)}}
    with pytest.raises((ValueError, KeyError), match=match):
        next(HostFeed(FeedConfig("text_span_corruption", LENGTHS, 2, task_settings=corpus),
                      0, 1))


def test_unbound_and_missing_corpus():
    with pytest.raises(ValueError, match="set tasks.text_corpus.train"):
        dataset(FeedConfig("text_span_corruption", LENGTHS, 2))
    corpus = {"text_corpus": {"train": "/nonexistent/*.txt"}}
    with pytest.raises(FileNotFoundError, match="matches no file"):
        dataset(FeedConfig("text_span_corruption", LENGTHS, 2, task_settings=corpus))


def test_misspelled_task_setting_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"tasks.text_corpus has no parameter 'feild'; did "
                                         r"you mean \['field'\]"):
        FeedConfig("text_span_corruption", LENGTHS, 2, task_settings={
            "text_corpus": {"feild": "body"}})
    with pytest.raises(ValueError, match=r"unknown task setting 'mmlu_dir'; did you mean "
                                         r"\['mmlu'\]"):
        FeedConfig("text_span_corruption", LENGTHS, 2, task_settings={"mmlu_dir": {}})


def test_unknown_name_lists_close_names():
    with pytest.raises(ValueError, match=r"did you mean \['demo_span_corruption'"):
        lookup("demo_span_corruptoin")


def test_unprepared_tfds_dataset_says_how_to_prepare(tmp_path):
    config = FeedConfig("c4_span_corruption", LENGTHS, 2, tfds_data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f"not prepared.*{tmp_path}.*tfds build c4"):
        dataset(config)


def test_bad_feature_lengths():
    with pytest.raises(ValueError, match="task_feature_lengths"):
        FeedConfig("demo_span_corruption", {"inputs": 0, "targets": 8}, 2)


def test_restoring_a_position_under_another_batch_size_is_refused():
    state = HostFeed(FeedConfig("demo_span_corruption", LENGTHS, 4), 0, 1).state()
    with pytest.raises(ValueError, match="batch_size=4, but this run has batch_size=8"):
        HostFeed.restore(FeedConfig("demo_span_corruption", LENGTHS, 8), state,
                         process_index=0, process_count=1)


def test_another_host_count_resumes_only_when_approximate_is_asked_for():
    config = FeedConfig("demo_span_corruption", LENGTHS, 8)
    feed = HostFeed(config, 1, 2)
    next(feed), next(feed)
    state = feed.state()
    with pytest.raises(ValueError, match="process_count=2, but this run has process_count=1.*"
                                         "resume='approximate'"):
        HostFeed.restore(config, state, process_index=0, process_count=1)
    loose = dataclasses.replace(config, resume="approximate")
    resumed = HostFeed.restore(loose, state, process_index=0, process_count=1)
    assert resumed.position == 2 and next(resumed)["encoder_input_tokens"].shape == (8, 64)
    # the global example count carries over: 2 batches of 8 are 4 of 4
    halved = HostFeed.restore(dataclasses.replace(loose, batch_size=4), state,
                              process_index=0, process_count=1)
    assert halved.position == 4
    # another task or seed is never approximated
    with pytest.raises(ValueError, match="seed=0, but this run has seed=1") as err:
        HostFeed.restore(dataclasses.replace(loose, seed=1), state, process_index=0,
                         process_count=1)
    assert "approximate" not in str(err.value)
    with pytest.raises(ValueError, match=r"resume='roughly' is invalid: expected one of "
                                         r"\('exact', 'approximate'\)"):
        dataclasses.replace(config, resume="roughly")
