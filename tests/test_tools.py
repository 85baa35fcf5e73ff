"""tools.convert, tools.infer, tools.eval and partial restore for fine-tuning."""

import json

import jax
import numpy as np
import pytest

import partitioning
from model_zoo.interop import hf
from tests.hf_reference import make_hf_t5
from training.checkpoints import loader as restore
from runner.initial_params import whole_model
from tools import convert, infer
from tools import eval as eval_tool
from tools import train as train_tool
from tests.train_helpers import make_trainer


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf")
    make_hf_t5("gated_untied", seed=7).save_pretrained(path)
    return path


def test_hf_to_t5pod_to_hf_round_trip(hf_dir, tmp_path):
    convert.main(["--hf_dir", str(hf_dir), "--to_model_dir", str(tmp_path / "m")])
    convert.main(["--model_dir", str(tmp_path / "m"), "--to_hf_dir", str(tmp_path / "back")])
    a = hf.read_safetensors(str(hf_dir))
    b = hf.read_safetensors(str(tmp_path / "back"))
    for name, tensor in a.items():
        np.testing.assert_array_equal(b[name], tensor, err_msg=name)
    with pytest.raises(FileExistsError, match="is not empty"):
        convert.convert(str(hf_dir), str(tmp_path / "m"))


def test_initial_checkpoint_loads_params_only(hf_dir, tmp_path):
    convert.convert(str(hf_dir), str(tmp_path / "m"))
    mesh = partitioning.make_mesh(partitioning.MeshConfig(ici={"data": 2, "tensor": 4}))
    mdef, params, cfg, _ = restore.load(str(tmp_path / "m"), mesh, "tensor")
    from_hf = restore.load(str(hf_dir), mesh, "tensor")[1]
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 params, from_hf)
    assert params["lm_head"].sharding.spec[1] == "tensor"
    # a trainer of the same model picks them up as its initial params
    trainer = make_trainer({"data": 2}, vocab_size=cfg.vocab_size, model_cfg=cfg)
    loaded = whole_model(str(tmp_path / "m"), cfg, trainer)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 loaded, from_hf)


def test_infer_prompts_and_jsonl(tmp_path):
    model_dir = tmp_path / "run"
    train_tool.main([f"--model_dir={model_dir}", "--gin_file=runs/demo_pretrain.gin",
                     "--gin.TRAIN_STEPS=4", "--gin.CHECKPOINT_EVERY=4", "--gin.EVAL_EVERY=0",
                     "--gin.training.ScheduleConfig.warmup_steps=1", "--gin.BATCH_SIZE=8",
                     "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 16}",
                     "--no-progress"])
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "The for <extra_id_0> is"}) + "\n"
                                       + json.dumps({"text": "A second prompt"}) + "\n")
    infer.main(["--model_dir", str(model_dir), "--input", str(tmp_path / "in.jsonl"),
                "--field", "text", "--output", str(tmp_path / "out.jsonl"),
                "--mesh", "data=2", "--gin_file=runs/infer.gin",
                "--gin.model_zoo.DecodeConfig.max_decode_length=5"])
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [o["text"] for o in out] == ["The for <extra_id_0> is", "A second prompt"]
    assert all(isinstance(o["prediction"], str) for o in out)
    results = eval_tool.main(["--model_dir", str(model_dir), "--examples", "4",
                              "--inputs_length", "64", "--targets_length", "16"])
    assert results["demo_span_corruption"]["examples"] == 4
    assert 0.0 <= results["demo_span_corruption"]["exact_match"] <= 100.0


def test_restore_from_a_non_model_dir_is_refused(tmp_path):
    mesh = partitioning.make_mesh(partitioning.MeshConfig(ici={"data": 8}))
    with pytest.raises(FileNotFoundError, match="model_dir=.*is no checkpoint t5pod reads"):
        restore.load(str(tmp_path), mesh)


def test_initial_checkpoint_of_another_model_is_refused(hf_dir, tmp_path):
    from model_zoo import preset

    trainer = make_trainer({"data": 2})
    other = preset("t5_1_1_tiny")
    with pytest.raises(ValueError, match="holds a different model than this run.*d_model"):
        whole_model(str(hf_dir), other, trainer)
