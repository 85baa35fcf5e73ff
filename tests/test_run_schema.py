"""A Run checks the rules between its parts when it is built, before anything trains."""

import dataclasses

import pytest

import tasks  # noqa: F401  (registers the tasks)
from model_zoo import preset
from model_zoo.config import ByteEncoderConfig
from partitioning import MeshConfig
from runner.run import Run
from tasks.feed_config import FeedConfig
from training.loop import LoopConfig
from training.trainer import TrainConfig

LENGTHS = {"inputs": 32, "targets": 8}
FEED = FeedConfig("demo_span_corruption", LENGTHS, batch_size=8)
TINY = preset("t5_1_1_tiny")   # its vocabulary fits the demo SentencePiece task
BYTES = ByteEncoderConfig(d_model=16, d_ff=32, num_heads=2, d_kv=8, num_layers=1)


def run(**changes) -> Run:
    fields = dict(model=TINY, mesh=MeshConfig(), trainer=TrainConfig(batch_size=8),
                  loop=LoopConfig(train_steps=2), feed=FEED)
    return Run(**{**fields, **changes})


def test_a_consistent_run_builds():
    assert run().lengths == LENGTHS


@pytest.mark.parametrize("changes,match", [
    ({"trainer": TrainConfig(batch_size=16)},
     r"TrainConfig.batch_size=16 differs from tasks.FeedConfig.batch_size=8"),
    ({"model": TINY.replace(vocab_size=512)}, r"2100 ids but the model's vocab_size is 512"),
    ({"eval_feed": dataclasses.replace(FEED, mixture_or_task_name="wikispell_hybrid")},
     r"'wikispell_hybrid' (provides byte_inputs|has \d+ ids)"),
    ({"model": TINY.replace(byte_encoder=BYTES)},
     r"has no byte_inputs and task_feature_lengths=.* has no 'byte_inputs' length, but the "
     r"model reads them \(ModelConfig.byte_encoder set\); use .* instead with a 'byte_inputs' "
     r"length, or a model without a byte encoder"),
    ({"feed": dataclasses.replace(FEED, task_feature_lengths={**LENGTHS, "byte_inputs": 64})},
     r"has no byte_inputs and the model has no byte encoder \(ModelConfig.byte_encoder=None\), "
     r"but task_feature_lengths=.* gives 'byte_inputs'; drop 'byte_inputs' from "
     r"task_feature_lengths"),
    ({"byte_encoder_checkpoint_path": "/byt5"}, r"byte_encoder_checkpoint_path=.*needs a hybrid"),
    ({"feed": "demo_span_corruption"}, r"Run.feed=.*must be a FeedConfig"),
])
def test_cross_field_rules_fail_at_construction(changes, match):
    with pytest.raises((ValueError, TypeError), match=match):
        run(**changes)
