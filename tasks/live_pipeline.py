"""The live input pipeline: a task or mixture's converted examples for one host's shard, as
seqio builds them (ShardInfo from the process index and count, packing by the feature
converter)."""

from __future__ import annotations

import seqio

from tasks import settings_scope
from tasks.feed_config import FeedConfig
from tasks.hybrid_features import converter, mismatch
from tasks.task_lookup import lookup, require_prepared


def dataset(config: FeedConfig, process_index: int = 0, process_count: int = 1):
    """The unbatched, converted tf.data for this host's shard."""
    provider = lookup(config.mixture_or_task_name)
    if config.tfds_data_dir:
        seqio.set_tfds_data_dir_override(config.tfds_data_dir)
    require_prepared(provider, config.tfds_data_dir)
    problem = mismatch(config.mixture_or_task_name, provider,
                       lengths=config.task_feature_lengths)
    if problem:
        raise ValueError(problem)
    with settings_scope.active(config.task_settings):
        return seqio.get_dataset(
            provider, task_feature_lengths=dict(config.task_feature_lengths),
            feature_converter=converter(provider, config.pack),
            dataset_split=config.split, shuffle=config.shuffle, num_epochs=config.num_epochs,
            shard_info=(seqio.ShardInfo(process_index, process_count) if process_count > 1
                        else None), seed=config.seed,
            verbose=False)
