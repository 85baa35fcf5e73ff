"""Inference on the training mesh: score mode against HF, sharded = 1 device, 2 processes = 1.

Score mode is checked against HF transformers' own forward pass (decoder inputs given
explicitly, log-softmax, summed over non-padding targets, EOS included). Predictions and
scores with fsdp/tensor-sharded params on 8 devices (and padded batches) must equal those
on one device; a real 2-process run (tests/multihost_worker.py `infer`) of a t5pod
model_dir must equal this process on the same global mesh.
"""

import json

import numpy as np
import pytest
import torch

from model_zoo.decoding import DecodeConfig
from inference.predictor import Predictor
from tests.batches import padded_batch
from tests.hf_reference import make_hf_t5
from tests.test_multihost import free_port, spawn, wait_all

GREEDY = DecodeConfig(8)
BEAM = DecodeConfig(8, method="beam", num_beams=3, length_penalty=0.6)
SHARDED = dict(mesh_spec="data=2,fsdp=2,tensor=2", rules="fsdp_tensor")


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    model = make_hf_t5("byt5", seed=1)
    path = tmp_path_factory.mktemp("hf")
    model.save_pretrained(path)
    return model, str(path)


@pytest.fixture(scope="module")
def batch():
    """5 rows (not a multiple of the data-parallel degree 4): padded inputs, ragged targets."""
    enc, _, tgt = padded_batch(384, 5, 12, 6, seed=3)
    return enc, tgt


def hf_summed_log_likelihood(model, enc, tgt) -> np.ndarray:
    """HF's own forward pass: decoder inputs = targets shifted right (start id 0)."""
    dec = np.pad(tgt, ((0, 0), (1, 0)))[:, :-1]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(enc, dtype=torch.long),
                       attention_mask=torch.tensor(enc > 0, dtype=torch.long),
                       decoder_input_ids=torch.tensor(dec, dtype=torch.long)).logits
    logp = torch.log_softmax(logits.double(), -1)
    picked = torch.gather(logp, -1, torch.tensor(tgt, dtype=torch.long)[..., None])[..., 0]
    return (picked * torch.tensor(tgt > 0)).sum(-1).numpy()


@pytest.fixture(scope="module")
def predictors(hf_model):
    _, path = hf_model
    # a ByT5-style model: the byte vocabulary (read lazily, not here: these tests pass ids)
    return {(mesh, method): Predictor(path, decode_config=cfg, byte=True, **kw)
            for mesh, kw in (("one", {}), ("sharded", SHARDED))
            for method, cfg in (("greedy", GREEDY), ("beam", BEAM))}


def test_score_mode_equals_hf_summed_target_log_likelihood(hf_model, batch, predictors):
    model, _ = hf_model
    enc, tgt = batch
    want = hf_summed_log_likelihood(model, enc, tgt)
    got = predictors["one", "greedy"].score_tokens(enc, tgt)
    assert got.shape == (5,) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-5)
    # Padding a row's targets or its inputs changes nothing; an empty target scores 0.
    wide = np.pad(tgt, ((0, 0), (0, 3)))
    np.testing.assert_allclose(predictors["one", "greedy"].score_tokens(
        np.pad(enc, ((0, 0), (0, 4))), wide), want, rtol=0, atol=5e-5)
    empty = predictors["one", "greedy"].score_tokens(enc[:2], np.zeros((2, 4), np.int32))
    np.testing.assert_array_equal(empty, [0.0, 0.0])
    print(f"max |score - HF| = {np.abs(got - want).max():.2e}")


def test_sharded_params_and_batch_give_the_one_device_results(batch, predictors):
    enc, tgt = batch
    one, sharded = predictors["one", "greedy"], predictors["sharded", "greedy"]
    assert (one.dp, sharded.dp) == (1, 4)
    kernel = sharded.params["decoder"]["layers"]["layer"]["mlp"]["wi_0"]
    assert tuple(kernel.sharding.spec) == (None, "fsdp", "tensor")
    np.testing.assert_array_equal(sharded.predict_tokens(enc), one.predict_tokens(enc))
    np.testing.assert_allclose(sharded.score_tokens(enc, tgt), one.score_tokens(enc, tgt),
                               rtol=1e-5, atol=1e-5)
    want = predictors["one", "beam"].predict_tokens(enc)
    got = predictors["sharded", "beam"].predict_tokens(enc)
    assert got.shape == (5, 8)
    np.testing.assert_array_equal(got, want)


def test_two_processes_equal_one(tmp_path, hf_model, batch, predictors):
    """The same model as a t5pod model_dir (orbax, restored by both hosts onto the global mesh:
    data across the hosts x fsdp x tensor inside each) against this process on that mesh."""
    from tools.convert import convert

    model_dir = str(tmp_path / "model")
    convert(hf_model[1], model_dir)
    enc, tgt = batch
    np.savez(tmp_path / "batch.npz", enc=enc, tgt=tgt)
    port = free_port()
    logs = [tmp_path / f"host{i}.log" for i in range(2)]
    procs = [spawn(logs[i], "infer", i, port, model_dir, tmp_path / "batch.npz",
                   tmp_path / f"host{i}.json") for i in range(2)]
    wait_all(procs, logs, timeout=180)
    greedy, beam = predictors["sharded", "greedy"], predictors["sharded", "beam"]
    for i in range(2):
        got = json.load(open(tmp_path / f"host{i}.json"))
        assert (got["process_index"], got["process_count"]) == (i, 2)
        assert got["rows"] == [4 * i, 4 * i + 4]  # this host placed only its own rows
        np.testing.assert_array_equal(got["greedy"], greedy.predict_tokens(enc))
        np.testing.assert_array_equal(got["beam"], beam.predict_tokens(enc))
        np.testing.assert_allclose(got["scores"], greedy.score_tokens(enc, tgt),
                                   rtol=1e-5, atol=1e-5)
    # tools.infer across the 2 processes: host 0 alone wrote the predictions
    lines = [json.loads(x) for x in open(tmp_path / "host0.jsonl")]
    assert [x["inputs"] for x in lines] == ["ab", "xyz"]
    assert all(isinstance(x["prediction"], str) for x in lines)
    assert not (tmp_path / "host1.jsonl").exists()
