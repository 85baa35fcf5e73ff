"""The one loader (training/checkpoints/loader.py): a t5x checkpoint starts a run, one identity
check for every source, damaged steps refused, and tools.convert with t5x and its targets."""

import json
import os
import re
import types

import jax
import numpy as np
import pytest
from transformers import T5ForConditionalGeneration

import partitioning
from model_zoo.interop import hf
from model_zoo import preset
from model_zoo.config import ByteEncoderConfig
from model_zoo.model_def import split_params
from training.checkpoints import loader
from runner import gin_flags
from training.checkpoints.model_json import read_model_json
from runner.initial_params import initial_params
from tests.hf_reference import CONFIGS, hf_logits, hf_loss, make_hf_t5
from tests.test_t5x import t5x_params, write_legacy
from tests.train_helpers import copy_batch, make_trainer
from tools import convert
from training.checkpoints.verify import DamagedCheckpoint

GIN_MODEL = """model_zoo.model.preset_name = 't5_1_1_tiny'
model_zoo.model.vocab_size = 96
model_zoo.model.d_model = 32
model_zoo.model.d_ff = 48
model_zoo.model.num_heads = 4
model_zoo.model.d_kv = 12
model_zoo.model.num_encoder_layers = 2
model_zoo.model.num_decoder_layers = 3
model_zoo.model.relative_attention_num_buckets = 16
model_zoo.model.relative_attention_max_distance = 24
model_zoo.model.dropout_rate = 0.0
"""  # tests.hf_reference's gated_untied T5 1.1


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The same tiny T5 1.1 as transformers model, HF directory and t5x checkpoint (legacy)."""
    root = tmp_path_factory.mktemp("sources")
    ref = make_hf_t5("gated_untied", seed=3)
    ref.save_pretrained(root / "hf")
    state = {k: v.detach().numpy().copy() for k, v in ref.state_dict().items()}
    write_legacy(str(root / "t5x" / "checkpoint_7"), t5x_params(state))
    (root / "model.gin").write_text(GIN_MODEL)
    cfg = hf.read_config(str(root / "hf"))
    return types.SimpleNamespace(ref=ref, hf=str(root / "hf"), cfg=cfg, gin=str(root / "model.gin"),
                                 t5x=str(root / "t5x" / "checkpoint_7"))


def _run(model, path):
    return types.SimpleNamespace(model=model, initial_checkpoint_path=path,
                                 byte_encoder_checkpoint_path=None)


def test_t5x_checkpoint_as_initial_checkpoint_gives_its_weights(sources):
    trainer = make_trainer({"data": 2}, model_cfg=sources.cfg)
    params = jax.device_get(initial_params(_run(sources.cfg, sources.t5x), trainer))
    _, want = split_params(hf.load(sources.hf))
    jax.tree.map(np.testing.assert_array_equal, params, jax.device_get(want))
    # and the trainer's loss on them is transformers' loss of the same weights
    batch = copy_batch(8, vocab=sources.cfg.vocab_size, seed=1)
    sums = jax.device_get(trainer.eval_step(params, batch))
    want_loss = hf_loss(sources.ref, batch["encoder_input_tokens"],
                        batch["decoder_input_tokens"], batch["decoder_target_tokens"],
                        (batch["encoder_input_tokens"] > 0).astype(np.int64))
    assert (sums["loss"] - sums["z_loss"]) / sums["weight"] == pytest.approx(want_loss, abs=2e-5)


def test_hybrid_parts_from_t5x_checkpoints(sources, tmp_path):
    byt5 = make_hf_t5("byt5", seed=1)
    state = {k: v.detach().numpy().copy() for k, v in byt5.state_dict().items()}
    write_legacy(str(tmp_path / "byt5" / "checkpoint_1"), t5x_params(state))
    b = CONFIGS["byt5"]
    cfg = sources.cfg.replace(byte_encoder=ByteEncoderConfig(
        d_model=b["d_model"], d_ff=b["d_ff"], num_heads=b["num_heads"], d_kv=b["d_kv"],
        num_layers=b["num_layers"], relative_attention_num_buckets=8))
    run = types.SimpleNamespace(model=cfg, initial_checkpoint_path=sources.t5x,
                                byte_encoder_checkpoint_path=str(tmp_path / "byt5"))
    parts = jax.device_get(initial_params(run, make_trainer(model_cfg=cfg)))
    _, t5 = split_params(hf.load(sources.hf))
    byt5.save_pretrained(tmp_path / "byt5_hf")
    _, byte = split_params(hf.load(str(tmp_path / "byt5_hf")))
    for got, want in [(parts["decoder"], t5["decoder"]), (parts["lm_head"], t5["lm_head"]),
                      (parts["byte_encoder"], byte["encoder"]),
                      (parts["byte_shared"], byte["shared"])]:
        jax.tree.map(np.testing.assert_array_equal, got, jax.device_get(want))


def test_one_identity_check_for_every_source(sources, tmp_path):
    other = preset("t5_1_1_tiny", vocab_size=64, d_model=32, d_ff=64, num_heads=4, d_kv=8)
    trainer = make_trainer(model_cfg=other)
    convert.convert(sources.hf, str(tmp_path / "t5pod"))
    messages = {}
    for kind, path in (("hf", sources.hf), ("t5pod", str(tmp_path / "t5pod")),
                       ("t5x", sources.t5x)):
        with pytest.raises(ValueError, match="holds a different model than this run") as e:
            initial_params(_run(other, path), trainer)
        messages[kind] = str(e.value).replace(path, "PATH")
    assert len(set(messages.values())) == 1, messages
    assert ("INITIAL_CHECKPOINT_PATH=PATH holds a different model than this run (vocab_size: "
            "checkpoint 96, run 64; d_ff: checkpoint 48, run 64; d_kv: checkpoint 12, run 8; "
            "num_decoder_layers: checkpoint 3, run 2") in messages["hf"]
    # a damaged step of a t5pod model_dir is refused, naming the file
    data = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "t5pod/checkpoints/0/state")
            for f in fs if "/d/" in os.path.join(d, f)]
    target = max(data, key=os.path.getsize)
    with open(target, "r+b") as f:
        f.seek(os.path.getsize(target) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(DamagedCheckpoint, match=re.escape(target) + ".*step 0 is damaged"):
        initial_params(_run(sources.cfg, str(tmp_path / "t5pod")),
                       make_trainer(model_cfg=sources.cfg))


def _snapshot(directory):
    return {os.path.relpath(os.path.join(d, f), directory): open(os.path.join(d, f), "rb").read()
            for d, _, fs in os.walk(directory) for f in fs}


def test_convert_refuses_a_non_empty_target_unless_overwrite(sources, tmp_path):
    other_hf = tmp_path / "other_hf"
    make_hf_t5("relu_tied").save_pretrained(other_hf)
    (other_hf / "tokenizer_config.json").write_text("{}")
    other_dir = tmp_path / "other_dir"
    other_dir.mkdir()
    (other_dir / "notes.txt").write_text("mine")
    for args, target in ((["--t5x_checkpoint", sources.t5x, "--gin_file", sources.gin,
                           "--to_hf_dir"], other_hf),
                         (["--hf_dir", sources.hf, "--to_model_dir"], other_dir)):
        before = _snapshot(target)
        with pytest.raises(FileExistsError, match=f"{target} is not empty"):
            convert.main(args + [str(target)])
        assert _snapshot(target) == before
    convert.main(["--hf_dir", sources.hf, "--to_model_dir", str(other_dir), "--overwrite"])
    assert read_model_json(str(other_dir))[0] == sources.cfg
    assert (other_dir / "notes.txt").read_text() == "mine"
    # t5x -> HF directory, over another model's: transformers reads the t5x weights
    convert.main(["--t5x_checkpoint", sources.t5x, "--gin_file", sources.gin,
                  "--to_hf_dir", str(other_hf), "--overwrite"])
    assert (other_hf / "tokenizer_config.json").exists()
    converted = T5ForConditionalGeneration.from_pretrained(other_hf).eval()
    enc = np.array([[5, 6, 7, 8, 1, 0], [9, 10, 11, 1, 0, 0]])
    dec = np.array([[0, 3, 4, 5], [0, 6, 7, 8]])
    mask = (enc > 0).astype(np.int64)
    np.testing.assert_allclose(hf_logits(converted, enc, dec, mask),
                               hf_logits(sources.ref, enc, dec, mask), atol=1e-5, rtol=0)


def test_t5x_to_model_dir_and_inference_loading(sources, tmp_path):
    convert.main(["--t5x_checkpoint", sources.t5x, "--gin_file", sources.gin,
                  "--to_model_dir", str(tmp_path / "m")])
    with open(tmp_path / "m" / "checkpoints" / "0" / "identity" / "metadata") as f:
        assert json.load(f)["d_kv"] == 12
    mesh = partitioning.make_mesh(partitioning.MeshConfig(ici={"data": 2}),
                                  devices=jax.devices()[:2])
    model = gin_flags.model_from_gin_for(sources.t5x, [sources.gin], [])
    assert model == sources.cfg
    assert gin_flags.model_from_gin_for(sources.hf, [sources.gin], []) is None
    want = jax.device_get(loader.load(sources.hf, mesh)[1])
    for path, kwargs in ((sources.t5x, {"model": model}), (str(tmp_path / "m"), {}),
                         (str(tmp_path / "m" / "checkpoints" / "0"), {})):
        got = jax.device_get(loader.load(path, mesh, **kwargs)[1])
        jax.tree.map(np.testing.assert_array_equal, got, want)
    # a read-only mount (os.access says no writes) still loads, and nothing is written there
    before = sorted(str(p) for p in (tmp_path / "m").rglob("*"))
    real_access = os.access
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "access", lambda p, mode, **kw: mode != os.W_OK and real_access(p, mode))
        got = jax.device_get(loader.load(str(tmp_path / "m"), mesh)[1])
    jax.tree.map(np.testing.assert_array_equal, got, want)
    assert sorted(str(p) for p in (tmp_path / "m").rglob("*")) == before
