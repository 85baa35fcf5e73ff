"""What gin files can configure: typed, validated config dataclasses and their builders.

Nothing here is bound through `__main__`: gin files name `model_zoo.model`,
`partitioning.mesh`, `training.TrainConfig`, `tasks.FeedConfig`, `run.train` and friends.
Gin is read here and in runner/gin_flags.py only; everything past them gets config objects.
"""

from __future__ import annotations

import dataclasses

import gin

from model_zoo.config import (ByteEncoderConfig, ModelConfig, MoEConfig, TreeConfig,
                              UniversalConfig)
from model_zoo.decoding import DecodeConfig
from model_zoo.presets import preset
from partitioning.mesh import MeshConfig
from training.loop import LoopConfig
from training.loss_scale import LossScaleConfig
from training.optimizers import OptimizerConfig
from training.trainer import TrainConfig
from training.schedules import ScheduleConfig
from training.step import LossConfig
from inference.seqio_evaluator import InferenceEvalConfig


@gin.configurable(module="model_zoo")
def model(preset_name: str = gin.REQUIRED, **overrides) -> ModelConfig:
    """A preset with ModelConfig fields replaced, e.g. `model_zoo.model.dtype = 'bfloat16'`."""
    return preset(preset_name, **overrides)


@gin.configurable(module="partitioning")
def mesh(ici: dict | None = None, dcn: dict | None = None) -> MeshConfig:
    return MeshConfig(ici=dict(ici or {"data": -1}), dcn=dict(dcn or {}))


# Called by tools.infer / tools.eval to build a DecodeConfig from gin bindings.
decode_config = gin.external_configurable(DecodeConfig, module="model_zoo")
gin.external_configurable(UniversalConfig, module="model_zoo")
gin.external_configurable(ByteEncoderConfig, module="model_zoo")
gin.external_configurable(MoEConfig, module="model_zoo")
gin.external_configurable(TreeConfig, module="model_zoo")

gin.external_configurable(InferenceEvalConfig, name="inference_eval", module="run")

for _cls in (TrainConfig, OptimizerConfig, ScheduleConfig, LossConfig, LossScaleConfig,
             LoopConfig):
    gin.external_configurable(_cls, module="training")


@gin.configurable(module="run")
def train(model=gin.REQUIRED, mesh=gin.REQUIRED, trainer=None, loop=gin.REQUIRED,
          feed=gin.REQUIRED, eval_feed=None, eval_batches: int = 8,
          initial_checkpoint_path: str | None = None,
          byte_encoder_checkpoint_path: str | None = None,
          heldout_mixture: str | None = None, inference_eval=None, branch_feed=None):
    """The Run a gin file describes (`run.train.trainer = @training.TrainConfig()`)."""
    from runner.run import Run

    if trainer is None:
        raise ValueError("bind run.train.trainer (a training.TrainConfig)")
    settings = task_settings()
    feed, eval_feed = (f if f is None else dataclasses.replace(f, task_settings=settings)
                       for f in (feed, eval_feed))
    return Run(model, mesh, trainer, loop, feed, eval_feed, eval_batches,
               initial_checkpoint_path, byte_encoder_checkpoint_path, heldout_mixture,
               inference_eval, branch_feed)


def known_configurables() -> dict[str, list[str]]:
    """t5pod's configurable names and their parameters (for error suggestions)."""
    import inspect

    def params(obj):
        if dataclasses.is_dataclass(obj):
            return [f.name for f in dataclasses.fields(obj)]
        return [p for p in inspect.signature(obj).parameters if p != "overrides"]

    known = {"model_zoo.model": params(ModelConfig) + ["preset_name"],
             "partitioning.mesh": params(mesh.__wrapped__ if hasattr(mesh, "__wrapped__")
                                         else mesh),
             "run.train": params(train), "model_zoo.DecodeConfig": params(DecodeConfig),
             "model_zoo.UniversalConfig": params(UniversalConfig),
             "model_zoo.MoEConfig": params(MoEConfig),
             "model_zoo.TreeConfig": params(TreeConfig),
             "run.inference_eval": params(InferenceEvalConfig)}
    for cls in (TrainConfig, OptimizerConfig, ScheduleConfig, LossConfig, LossScaleConfig,
                LoopConfig):
        known[f"training.{cls.__name__}"] = params(cls)
    try:
        from tasks import settings
        from tasks.feed_config import FeedConfig

        known["tasks.FeedConfig"] = [p for p in params(FeedConfig) if p != "task_settings"]
        from tasks.feeding.branch_feed import BranchFeedConfig

        known["tasks.BranchFeedConfig"] = params(BranchFeedConfig)
        known.update(settings.parameters())
    except ImportError:  # no TensorFlow on this machine
        pass
    return known


def register_tasks_configurables() -> None:
    """FeedConfig and the task settings (`tasks.mmlu`, `tasks.flan2022`, ... : every builder
    of tasks.settings.BUILDERS) live in tasks/ (TensorFlow); registered only by tools that
    read data. A feed's task_settings come from those, never bound on FeedConfig itself."""
    from tasks import settings
    from tasks.feed_config import FeedConfig

    if not _registered:
        from tasks.feeding.branch_feed import BranchFeedConfig

        gin.external_configurable(FeedConfig, module="tasks", denylist=["task_settings"])
        gin.external_configurable(BranchFeedConfig, module="tasks")
        for name, builder in settings.BUILDERS.items():
            _registered[name] = gin.external_configurable(builder, name=name, module="tasks")


_registered: dict = {}   # setting name -> its gin configurable


def task_settings():
    """The TaskSettings gin binds (`tasks.mmlu.data_dir = ...`), every setting's defaults
    where nothing is bound; call with gin parsed."""
    from tasks.settings import TaskSettings

    register_tasks_configurables()
    return TaskSettings(**{name: make() for name, make in _registered.items()})
