"""Every shipped gin file parses and builds its model abstractly; bad gin input fails clearly."""

import glob
import os

import gin
import jax
import numpy as np
import pytest

from model_zoo import EncoderDecoder
from runner import configurables, gin_args, gin_flags
from tools import train as train_tool

GIN = gin_flags.GIN_ROOT
MODELS = sorted(glob.glob(os.path.join(GIN, "models", "*", "*.gin")))
MESHES = sorted(glob.glob(os.path.join(GIN, "mesh", "*.gin")))
# base.gin is the wiring the training runs include; eval/infer configure decoding (and the
# benchmarks' data directories) only.
DECODING = ("eval.gin", "infer.gin", "eval_mmlu.gin", "eval_bbh.gin")
RUNS = sorted(p for p in glob.glob(os.path.join(GIN, "runs", "*.gin"))
              if not p.endswith(("base.gin",) + DECODING))

configurables.register_tasks_configurables()


@pytest.fixture(autouse=True)
def clean_gin():
    yield
    gin.clear_config()


@pytest.mark.parametrize("path", MODELS, ids=lambda p: os.path.relpath(p, GIN))
def test_model_gin_builds_abstractly(path):
    gin_flags.parse([path], [])
    cfg = configurables.model()
    params = jax.eval_shape(lambda: __import__("model_zoo.model_def").model_def.init_params(
        lambda r: EncoderDecoder(cfg, rngs=r), 0))
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) > 0


DEVICES = {"cpu8": (8, 1), "single": (1, 1), "gpu_node": (8, 1), "gpu_cluster": (16, 2),
           "tpu_v4_pod": (256, 4)}


@pytest.mark.parametrize("path", MESHES, ids=lambda p: os.path.relpath(p, GIN))
def test_mesh_gin_resolves_for_its_machine(path):
    gin_flags.parse([path], [])
    devices, slices = DEVICES[os.path.basename(path)[:-4]]
    shape = configurables.mesh().shape(devices, slices)
    assert int(np.prod(list(shape.values()))) == devices
    gpu = os.path.basename(path).startswith("gpu")
    model = configurables.model(preset_name="t5_1_1_tiny")
    assert (model.attention_impl == "cudnn") == gpu  # GPU meshes pick the fused kernel


@pytest.mark.parametrize("path", RUNS, ids=lambda p: os.path.relpath(p, GIN))
def test_run_gin_builds_a_complete_run(path):
    with open(path) as f:  # a run naming its own task keeps it (its model fits that task)
        text = f.read()
    own_task = any(line.startswith("MIXTURE_OR_TASK_NAME") for line in text.splitlines())
    fine_tunes = any(name in path or f"runs/{name}.gin'" in text
                     for name in ("finetune", "instruction_tune"))
    gin_flags.parse(["models/t5_1_1/small.gin", "mesh/cpu8.gin", path],
                    ([] if own_task else ["MIXTURE_OR_TASK_NAME = 'demo_span_corruption'"])
                    + (["INITIAL_CHECKPOINT_PATH = '/ckpt'"] if fine_tunes else []))
    gin_flags.require_macros(gin_flags.REQUIRED_MACROS)
    run = configurables.train()
    assert run.trainer.batch_size == run.feed.batch_size
    assert run.loop.train_steps >= 1


SWEEPS = sorted(glob.glob(os.path.join(GIN, "sweeps", "*.gin")))


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: os.path.relpath(p, GIN))
def test_sweep_gin_expands_to_complete_runs(path):
    from experiments import sweep_config

    cfg = sweep_config.read(path)
    members = cfg.expand()
    assert len(members) >= 3 and len({m.name for m in members}) == len(members)
    for member in members:  # every member's bindings parse and build a run (nothing trains)
        gin_flags.parse(list(cfg.gin_files), member.gin_bindings(cfg.bindings)
                        + ["INITIAL_CHECKPOINT_PATH = '/ckpt'"])
        run = configurables.train()
        assert run.trainer.batch_size == run.feed.batch_size
        for key, value in member.bindings:
            assert gin.query_parameter(key if "." in key else f"%{key}") == value


@pytest.mark.parametrize("name", DECODING)
def test_decoding_gin_builds_a_decode_config(name):
    gin_flags.parse([f"runs/{name}"], [])
    cfg = configurables.decode_config()
    assert cfg.method in ("greedy", "beam") and cfg.max_decode_length >= 8


def test_bare_words_need_no_quotes():
    assert gin_args.as_gin_value("demo_span_corruption") == "'demo_span_corruption'"
    assert gin_args.as_gin_value("3") == "3" and gin_args.as_gin_value("%X") == "%X"
    assert gin_args.as_gin_value("{'inputs': 8}") == "{'inputs': 8}"


def test_unknown_parameter_suggests_the_closest():
    with pytest.raises(ValueError, match=r"did you mean \['train_steps'\]"):
        gin_flags.parse(["runs/demo_pretrain.gin"], ["training.LoopConfig.train_stepz = 3"])


def test_unknown_configurable_suggests_the_closest():
    with pytest.raises(ValueError, match=r"did you mean \['training.LoopConfig'"):
        gin_flags.parse(["runs/demo_pretrain.gin"], ["trainig.LoopConfig.train_steps = 3"])


def test_finetune_requires_an_initial_checkpoint():
    gin_flags.parse(["models/t5_1_1/tiny.gin", "mesh/cpu8.gin", "runs/finetune.gin"],
                    ["MIXTURE_OR_TASK_NAME = 'demo_span_corruption'"])
    with pytest.raises(ValueError, match="required macro INITIAL_CHECKPOINT_PATH"):
        gin_flags.require_macros(gin_flags.REQUIRED_MACROS)


def test_missing_required_macro():
    gin_flags.parse(["models/t5_1_1/tiny.gin", "mesh/cpu8.gin", "runs/pretrain.gin"], [])
    with pytest.raises(ValueError, match="required macro MIXTURE_OR_TASK_NAME is not set"):
        gin_flags.require_macros(gin_flags.REQUIRED_MACROS)


def test_unknown_gin_file_suggests_shipped_ones():
    with pytest.raises(FileNotFoundError, match="did you mean"):
        gin_flags.parse(["runs/quickstrat.gin"], [])


def test_missing_initial_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="INITIAL_CHECKPOINT_PATH=.*does not exist"):
        train_tool.main([f"--model_dir={tmp_path}", "--gin_file=runs/demo_pretrain.gin",
                         f"--gin.INITIAL_CHECKPOINT_PATH={tmp_path}/nothing_here"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="INITIAL_CHECKPOINT_PATH=.*expected an HF dir"):
        train_tool.main([f"--model_dir={tmp_path}/run", "--gin_file=runs/demo_pretrain.gin",
                         f"--gin.INITIAL_CHECKPOINT_PATH={empty}"])


def test_unwritable_model_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(OSError):
        train_tool.main([f"--model_dir={blocker}/run", "--gin_file=runs/demo_pretrain.gin"])


def test_vocab_smaller_than_the_task_is_refused(tmp_path):
    with pytest.raises(ValueError, match="2100 ids but the model's vocab_size is 512"):
        train_tool.main([f"--model_dir={tmp_path}", "--gin_file=runs/demo_pretrain.gin",
                         "--gin.model_zoo.model.vocab_size=512"])


def test_a_run_feeds_from_its_own_values_after_gin_is_cleared():
    """run_from_gin leaves gin empty; the task settings the gin file sets travel in the Run."""
    from tasks.feeding.host_feed import HostFeed

    run, records = gin_flags.run_from_gin(["runs/flan_cpu_tiny.gin"], ["BATCH_SIZE = 2",
                                          "TASK_FEATURE_LENGTHS = {'inputs': 64, 'targets': 16}"])
    assert gin.config_str() == ""
    settings = run.feed.task_settings
    assert settings.wikispell.train_size == 2000 and settings.instruction_format.num_shots == 1
    assert run.eval_feed.task_settings == settings
    assert "wikispell.train_size = 2000" in records["operative_config.gin"]
    gin.clear_config()
    batch = next(HostFeed(run.feed, 0, 1))
    assert batch["encoder_input_tokens"].shape == (2, 64)


def test_the_corpus_gin_names_is_read_after_gin_is_cleared(tmp_path):
    from tasks.feeding.host_feed import HostFeed
    from tasks.task_lookup import lookup

    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"the quokka number {i} eats leaves at night\n" for i in range(50)))
    files = ["runs/demo_pretrain.gin"]
    small = ["MIXTURE_OR_TASK_NAME = 'text_span_corruption'", "BATCH_SIZE = 2",
             "TASK_FEATURE_LENGTHS = {'inputs': 64, 'targets': 16}"]
    run, _ = gin_flags.run_from_gin(files, small + [f"tasks.text_corpus.train = '{path}'"])
    gin.clear_config()
    batch = next(HostFeed(run.feed, 0, 1))
    vocab = lookup("text_span_corruption").output_features["inputs"].vocabulary
    assert "quokka" in vocab.decode(batch["encoder_input_tokens"][0].tolist())
    run, _ = gin_flags.run_from_gin(files, small + ["tasks.text_corpus.train = '/no/*.txt'"])
    with pytest.raises(FileNotFoundError, match="matches no file"):
        HostFeed(run.feed, 0, 1)


def test_every_task_setting_is_known_and_a_misspelled_one_is_refused():
    from tasks import settings

    known = configurables.known_configurables()
    assert {f.name for f in __import__("dataclasses").fields(settings.TaskSettings)} == set(
        settings.BUILDERS)
    for name in ("mmlu", "bbh", "flan2022", "wikispell", "text_corpus", "zipf_corpus",
                 "instruction_format", "instruction_jsonl", "instruction_mixing"):
        assert known[f"tasks.{name}"], name
    assert "data_dir" in known["tasks.mmlu"] and "train_size" in known["tasks.wikispell"]
    with pytest.raises(ValueError, match=r"tasks.mmlu has no parameter 'data_dri'; did you "
                                         r"mean \['data_dir'\]"):
        gin_flags.run_from_gin(["runs/demo_pretrain.gin"], ["tasks.mmlu.data_dri = '/x'"])
    with pytest.raises(ValueError, match=r"unknown configurable 'tasks.wikispel'; did you mean "
                                         r"\['tasks.wikispell'"):
        gin_flags.run_from_gin(["runs/demo_pretrain.gin"], ["tasks.wikispel.train_size = 5"])
    with pytest.raises(ValueError, match=r"task_settings is not bound itself: bind each "
                                         r"setting.*'tasks.bbh'"):
        gin_flags.run_from_gin(["runs/demo_pretrain.gin"],
                               ["train/tasks.FeedConfig.task_settings = {}"])
