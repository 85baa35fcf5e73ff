"""T5 span corruption: statistics, exact reconstruction, determinism, sentinel order."""

import numpy as np
import pytest
import seqio

import tasks  # noqa: F401  (registers tasks)
from tasks.pretraining.span_corruption import (chunk_length_for, random_spans_noise_mask,
                                   span_corruption)
from tasks.tf_setup import tf
from tasks.vocabularies import byte_vocabulary


@pytest.mark.parametrize("mean_span", [3.0, 20.0])
def test_noise_fraction_and_mean_span_length(mean_span):
    noise, spans, total = 0, 0, 0
    for seed in range(200):
        mask = np.asarray(random_spans_noise_mask(
            512, 0.15, mean_span, tf.constant([[seed, 1], [seed, 2]])))
        noise += mask.sum()
        spans += np.sum(mask[1:] & ~mask[:-1]) + mask[0]
        total += mask.size
        assert not mask[0]  # T5 starts with a non-noise span
    assert abs(noise / total - 0.15) < 0.002
    assert abs(noise / spans - mean_span) < 0.05 * mean_span


def reconstruct(inputs, targets, first_extra_id):
    """Put each target span back where its sentinel (id >= first_extra_id) stands."""
    spans, current = {}, None
    for t in targets:
        if t >= first_extra_id:
            current = t
            spans[current] = []
        else:
            spans[current].append(t)
    out = []
    for t in inputs:
        out.extend(spans[t] if t >= first_extra_id else [t])
    return out


def corrupt(stream, seed, lengths, mean_span=3.0):
    vocab = byte_vocabulary()
    features = {"inputs": seqio.Feature(vocab), "targets": seqio.Feature(vocab)}
    ds = tf.data.Dataset.from_tensor_slices({"targets": tf.constant(stream)}).batch(50)
    with seqio.utils.map_seed_manager(seed):
        out = span_corruption(ds, lengths, features, mean_noise_span_length=mean_span)
        return [(ex["inputs"].tolist(), ex["targets"].tolist()) for ex in out.as_numpy_iterator()]


def test_inputs_and_targets_reconstruct_the_original_exactly():
    rng = np.random.default_rng(0)
    stream = rng.integers(3, 259, 5000).astype(np.int32)
    lengths = {"inputs": 64, "targets": 32}
    chunks = corrupt(stream, 7, lengths)
    chunk, _ = chunk_length_for(64, 0.15, 3.0)
    rebuilt = []
    for inputs, targets in chunks:
        assert len(inputs) + 1 <= 64 and len(targets) + 1 <= 32  # EOS still fits
        assert targets[0] == 383  # first sentinel is the top of the padded byte vocab
        sentinels = [t for t in inputs if t >= 259]
        assert sentinels == list(range(383, 383 - len(sentinels), -1))  # T5 order
        rebuilt.extend(reconstruct(inputs, targets, 259))
    assert rebuilt == stream[:len(rebuilt)].tolist()
    assert len(rebuilt) >= len(stream) - chunk


def test_same_seed_same_output_other_seed_differs():
    stream = np.arange(3, 2003, dtype=np.int32) % 250 + 3
    lengths = {"inputs": 64, "targets": 32}
    assert corrupt(stream, 1, lengths) == corrupt(stream, 1, lengths)
    assert corrupt(stream, 1, lengths) != corrupt(stream, 2, lengths)


def test_lengths_too_short_are_refused():
    with pytest.raises(ValueError, match="inputs length 2 is too short"):
        chunk_length_for(2, 0.15, 3.0)
    with pytest.raises(ValueError, match="targets length 4 is too short"):
        corrupt(np.arange(3, 300, dtype=np.int32), 0, {"inputs": 64, "targets": 4})


def test_chunk_length_matches_t5():
    assert chunk_length_for(512, 0.15, 3.0) == (568, 114)


@pytest.mark.parametrize("inputs_length", [172, 316, 352, 604, 640, 512, 114])
def test_planned_lengths_equal_the_real_ones(inputs_length):
    """The chunk size planned in Python gives exactly the targets length TF produces."""
    chunk, targets = chunk_length_for(inputs_length, 0.15, 3.0)
    mask = np.asarray(random_spans_noise_mask(chunk, 0.15, 3.0, tf.constant([[1, 2], [3, 4]])))
    spans = int(np.sum(mask[1:] & ~mask[:-1]))
    assert int(mask.sum()) + spans + 1 == targets
    assert chunk - int(mask.sum()) + spans + 1 <= inputs_length
