"""T5 span corruption (Raffel et al. 2020, sec. 3.1.4), written for tf.data.

A chunk of tokens is split into alternating non-noise and noise spans (noise density
0.15, mean noise span 3; ByT5 uses 20). Inputs keep the non-noise tokens with each noise
span replaced by one sentinel; targets hold each sentinel followed by the span it hides.
Sentinels count down from the top of the vocabulary (T5's extra_id_0 = vocab_size - 1).
Randomness is stateless and seeded per example, so a seed fixes the output.
"""

from __future__ import annotations

import seqio

from tasks.tf_setup import tf


def noise_counts(length: int, noise_density: float, mean_noise_span_length: float):
    """(noise tokens, noise spans) for a chunk of `length` tokens (python ints)."""
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
    return num_noise, num_spans


def corrupted_lengths(length: int, noise_density: float, mean_noise_span_length: float):
    """(inputs, targets) lengths, EOS included, of a corrupted chunk of `length` tokens."""
    num_noise, num_spans = noise_counts(length, noise_density, mean_noise_span_length)
    return length - num_noise + num_spans + 1, num_noise + num_spans + 1


def chunk_length_for(inputs_length: int, noise_density: float,
                     mean_noise_span_length: float) -> tuple[int, int]:
    """The longest raw chunk whose corrupted inputs fit `inputs_length`, and its targets length."""
    if inputs_length < 3:
        raise ValueError(f"inputs length {inputs_length} is too short for span corruption: "
                         "need at least 3 (one token, one sentinel, EOS)")
    length = 2
    while corrupted_lengths(length + 1, noise_density, mean_noise_span_length)[0] <= inputs_length:
        length += 1
    return length, corrupted_lengths(length, noise_density, mean_noise_span_length)[1]


def _segment_lengths(num_items, num_segments, seed):
    """Split `num_items` into `num_segments` non-empty segments at random; their lengths."""
    first = tf.cast(tf.range(num_items - 1) < num_segments - 1, tf.int32)
    first = tf.random.experimental.stateless_shuffle(first, seed=seed)
    segment_id = tf.cumsum(tf.pad(first, [[1, 0]]))
    return tf.math.segment_sum(tf.ones_like(segment_id), segment_id)


def random_spans_noise_mask(length, noise_density: float, mean_noise_span_length: float,
                            seeds) -> tf.Tensor:
    """Boolean [length]: True on noise. Starts with non-noise; exact counts of noise_counts."""
    # float64, like the Python counts that size the chunks (float32 rounds differently)
    length = tf.cast(length, tf.int32)
    num_noise = tf.cast(tf.round(tf.cast(length, tf.float64) * noise_density), tf.int32)
    num_noise = tf.clip_by_value(num_noise, 1, length - 1)
    num_spans = tf.maximum(
        tf.cast(tf.round(tf.cast(num_noise, tf.float64) / mean_noise_span_length), tf.int32), 1)
    noise = _segment_lengths(num_noise, num_spans, seeds[0])
    nonnoise = _segment_lengths(length - num_noise, num_spans, seeds[1])
    interleaved = tf.reshape(tf.stack([nonnoise, noise], axis=1), [-1])
    starts = tf.cumsum(interleaved)[:-1]
    indicator = tf.scatter_nd(starts[:, None], tf.ones_like(starts), [length])
    return tf.equal(tf.math.floormod(tf.cumsum(indicator), 2), 1)


def replace_spans_with_sentinels(tokens, mask, vocab_size: int):
    """Each run of True in `mask` becomes one sentinel: vocab_size-1, vocab_size-2, ..."""
    previous = tf.pad(mask[:-1], [[1, 0]])
    first = tf.logical_and(mask, tf.logical_not(previous))
    later = tf.logical_and(mask, previous)
    sentinels = vocab_size - tf.cumsum(tf.cast(first, tokens.dtype))
    return tf.boolean_mask(tf.where(first, sentinels, tokens), tf.logical_not(later))


def split_into_chunks(dataset, key: str, length: int):
    """Concatenate the `key` tokens of all examples and cut them into `length`-token chunks."""
    tokens = dataset.map(lambda ex: ex[key], num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    return tokens.batch(length).map(lambda t: {key: t})


def span_corruption(dataset, sequence_length, output_features, noise_density: float = 0.15,
                    mean_noise_span_length: float = 3.0):
    """Tokenized `targets` text -> {'inputs', 'targets'} span-corrupted chunks (no EOS yet)."""
    chunk, targets_len = chunk_length_for(sequence_length["inputs"], noise_density,
                                          mean_noise_span_length)
    if sequence_length.get("targets") is not None and targets_len > sequence_length["targets"]:
        raise ValueError(f"targets length {sequence_length['targets']} is too short: span "
                         f"corruption of {chunk}-token chunks (inputs length "
                         f"{sequence_length['inputs']}) makes {targets_len}-token targets")
    vocab_size = output_features["targets"].vocabulary.vocab_size

    @seqio.map_over_dataset(num_seeds=2)
    def corrupt(example, seeds):
        tokens = example["targets"]
        mask = random_spans_noise_mask(tf.size(tokens), noise_density, mean_noise_span_length,
                                       seeds)
        return {"inputs": replace_spans_with_sentinels(tokens, mask, vocab_size),
                "targets": replace_spans_with_sentinels(tokens, tf.logical_not(mask), vocab_size)}

    dataset = split_into_chunks(dataset, "targets", chunk)
    dataset = dataset.filter(lambda ex: tf.size(ex["targets"]) >= 2)
    return corrupt(dataset)


def prefix_lm(dataset, sequence_length, output_features):
    """Chunks split at a random point: the prefix is the input, the rest the target."""
    chunk = sequence_length["inputs"] - 1 + sequence_length["targets"] - 1
    if sequence_length["inputs"] < 2 or sequence_length["targets"] < 2:
        raise ValueError(f"prefix LM needs inputs and targets lengths >= 2, got {sequence_length}")

    @seqio.map_over_dataset(num_seeds=1)
    def split(example, seed):
        tokens = example["targets"]
        n = tf.size(tokens)
        low = tf.maximum(1, n - (sequence_length["targets"] - 1))
        high = tf.minimum(n - 1, sequence_length["inputs"] - 1)
        cut = tf.random.stateless_uniform([], seed, minval=low, maxval=high + 1, dtype=tf.int32)
        return {"inputs": tokens[:cut], "targets": tokens[cut:]}

    dataset = split_into_chunks(dataset, "targets", chunk)
    return split(dataset.filter(lambda ex: tf.size(ex["targets"]) >= 2))
