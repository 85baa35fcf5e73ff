"""Relative position buckets equal HF T5's at every distance, both directions."""

import numpy as np
import pytest
import torch
from transformers.models.t5.modeling_t5 import T5Attention

from model_zoo.relative_position import relative_position_bucket


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("buckets,max_distance", [(32, 128), (8, 20)])
def test_buckets_match_hf(bidirectional, buckets, max_distance):
    rel = np.arange(-600, 601)
    want = T5Attention._relative_position_bucket(torch.tensor(rel), bidirectional=bidirectional,
                                                 num_buckets=buckets, max_distance=max_distance)
    got = relative_position_bucket(np.asarray(rel, np.int32), bidirectional, buckets,
                                   max_distance)
    np.testing.assert_array_equal(np.asarray(got), want.numpy())
