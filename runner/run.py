"""A run as a value: model, mesh, trainer, feeds, loop and initial checkpoint, checked together.

Each part validates its own fields; `Run` checks the rules between them at construction, so
a run that could not train fails before any device, file or dataset is touched beyond the
task registry: batch sizes agree, the task's vocabulary fits the model's, the lengths give
a hybrid model its bytes (and only a hybrid one), checkpoint paths suit the model, a tree
model has one task per branch (`branch_feed`) and a plain model none.
"""

from __future__ import annotations

import dataclasses

from fields.integers import require_int
from fields.paths import user_path
from model_zoo.config import ModelConfig
from partitioning.mesh import MeshConfig
from inference.seqio_evaluator import InferenceEvalConfig
from tasks.feeding.branch_feed import BranchFeedConfig
from tasks.feed_config import FeedConfig
from tasks.task_lookup import lookup
from tasks.hybrid_features import mismatch
from training.loop import LoopConfig
from training.trainer import TrainConfig


@dataclasses.dataclass(frozen=True)
class Run:
    model: ModelConfig
    mesh: MeshConfig
    trainer: TrainConfig
    loop: LoopConfig
    feed: FeedConfig
    eval_feed: FeedConfig | None = None
    eval_batches: int = 8
    initial_checkpoint_path: str | None = None
    byte_encoder_checkpoint_path: str | None = None   # hybrid: ByT5 dir for the byte encoder
    heldout_mixture: str | None = None   # decoded zero-shot after training (tools.sweep)
    inference_eval: InferenceEvalConfig | None = None   # seqio.Evaluator at the eval steps
    branch_feed: BranchFeedConfig | None = None   # a tree model: each branch's task and rate

    def __post_init__(self):
        for name, cls in (("model", ModelConfig), ("mesh", MeshConfig), ("trainer", TrainConfig),
                          ("loop", LoopConfig), ("feed", FeedConfig)):
            if not isinstance(getattr(self, name), cls):
                raise TypeError(f"Run.{name}={getattr(self, name)!r} must be a {cls.__name__}")
        if self.eval_feed is not None and not isinstance(self.eval_feed, FeedConfig):
            raise TypeError(f"Run.eval_feed={self.eval_feed!r} must be None or a FeedConfig")
        require_int("run.train", "eval_batches", self.eval_batches, 1)
        for name, flag in (("initial_checkpoint_path", "INITIAL_CHECKPOINT_PATH"), (
                "byte_encoder_checkpoint_path", "run.train.byte_encoder_checkpoint_path")):
            given = getattr(self, name) or None  # None / '' : no checkpoint
            object.__setattr__(self, name, given and user_path(given, flag))
        object.__setattr__(self, "heldout_mixture", self.heldout_mixture or None)
        if self.trainer.batch_size != self.feed.batch_size:
            raise ValueError(f"training.TrainConfig.batch_size={self.trainer.batch_size} differs "
                             f"from tasks.FeedConfig.batch_size={self.feed.batch_size}; bind "
                             "both to %BATCH_SIZE")
        if self.byte_encoder_checkpoint_path and self.model.byte_encoder is None:
            raise ValueError("run.train.byte_encoder_checkpoint_path="
                             f"{self.byte_encoder_checkpoint_path!r} needs a hybrid model "
                             "(ModelConfig.byte_encoder set)")
        self._check_tree()
        for feed in (self.feed, self.eval_feed):
            if feed is not None:
                for one in self.feeds_of(feed).values():
                    self._check_feed(one)
        if self.heldout_mixture:
            lookup(self.heldout_mixture)
        if self.inference_eval is not None:
            self._check_inference_eval(self.inference_eval)

    def _check_tree(self) -> None:
        tree = self.model.tree
        if tree is None:
            if self.branch_feed is not None:
                raise ValueError("run.train.branch_feed is set but the model has no tree "
                                 "(ModelConfig.tree is None): set model_zoo.model.tree or drop "
                                 "branch_feed")
            return
        if self.branch_feed is None:
            raise ValueError(f"the model is a tree with branches {list(tree.branches)}: name each "
                             "branch's task with run.train.branch_feed = "
                             "@tasks.BranchFeedConfig()")
        if not isinstance(self.branch_feed, BranchFeedConfig):
            raise TypeError(f"Run.branch_feed={self.branch_feed!r} must be None or a "
                            "tasks.BranchFeedConfig")
        self.branch_feed.check_branches(tree.branches)
        if self.inference_eval is not None:
            raise ValueError("run.train.inference_eval is not supported for a tree model: "
                             "decode a branch with tools.eval --branch=NAME")

    def feeds_of(self, feed: FeedConfig) -> dict[str, FeedConfig]:
        """{branch: its FeedConfig} of a tree run ({None: feed} otherwise): `feed` with each
        branch's task."""
        if self.branch_feed is None:
            return {None: feed}
        return {b: self.branch_feed.feed_of(feed, b) for b in self.model.tree.branches}

    def _check_inference_eval(self, config) -> None:
        if not isinstance(config, InferenceEvalConfig):
            raise TypeError(f"Run.inference_eval={config!r} must be None or a "
                            "run.inference_eval (InferenceEvalConfig)")
        provider = lookup(config.mixture_or_task_name)
        problem = mismatch(config.mixture_or_task_name, provider,
                           byte_encoder=self.model.byte_encoder is not None)
        if problem:
            raise ValueError(f"run.inference_eval.mixture_or_task_name: {problem}")
        ours = lookup(self.feed.mixture_or_task_name).output_features["targets"].vocabulary
        theirs = provider.output_features["targets"].vocabulary
        if theirs != ours:
            raise ValueError(f"run.inference_eval.mixture_or_task_name="
                             f"{config.mixture_or_task_name!r} uses {type(theirs).__name__} "
                             f"({theirs.vocab_size} ids) but the run trains on "
                             f"{type(ours).__name__} ({ours.vocab_size} ids); pick the variant "
                             "of the training vocabulary (e.g. a '_byte' task)")

    def _check_feed(self, feed: FeedConfig) -> None:
        name = feed.mixture_or_task_name
        provider = lookup(name)
        vocab = provider.output_features["targets"].vocabulary.vocab_size
        if vocab > self.model.vocab_size:
            raise ValueError(f"task {name!r} has {vocab} ids but the model's vocab_size is "
                             f"{self.model.vocab_size}; use a model with vocab_size >= {vocab}")
        problem = mismatch(name, provider, byte_encoder=self.model.byte_encoder is not None,
                           lengths=feed.task_feature_lengths)
        if problem:
            raise ValueError(problem)

    @property
    def lengths(self) -> dict:
        return dict(self.feed.task_feature_lengths)
