"""What pre-0.1.0 t5pod wrote still reads as today's (fields/old_formats.py), each old file
through the reader that opens it, and the module is gone by the version its docstring says."""

import dataclasses
import json
import os
import re
import tomllib

import jax
import numpy as np
import pytest

from fields import old_formats
from model_zoo import preset
from model_zoo.identity import identity_of
from model_zoo.interop import hf
from tests.train_helpers import make_trainer
from training.checkpoints import host_state
from training.checkpoints.manager import Checkpointer
from training.checkpoints.model_json import read_model_json
from training.checkpoints.verify import MANIFEST, DamagedCheckpoint, verify_step
from training.loss_scale import LossScaleConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(vocab_size=64, d_model=32, d_ff=64, num_heads=4, d_kv=8, num_encoder_layers=1,
             num_decoder_layers=1)


def test_the_module_goes_at_the_version_it_names():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    have = tuple(int(x) for x in re.findall(r"\d+", version)[:2])
    assert have < old_formats.REMOVE_AT, (
        f"t5pod {version}: delete fields/old_formats.py, its callers' old branches and this "
        "test (see the module docstring)")


def _json(cfg) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _read(tmp_path, model: dict):
    (tmp_path / "model.json").write_text(json.dumps({"model": model, "task": "t"}))
    return read_model_json(str(tmp_path))


def test_model_json_with_feed_forward_proj_and_freeze_encoder(tmp_path):
    cfg = preset("t5_1_1_silu_tiny", **SMALL).replace(frozen=("encoder",))
    old = {k: v for k, v in _json(cfg).items() if k not in ("mlp_activations", "frozen")}
    old.update(feed_forward_proj="gated-silu", freeze_encoder=True)
    assert _read(tmp_path, old) == (cfg, "t")


def test_model_json_of_a_hybrid_with_a_frozen_byte_encoder(tmp_path):
    cfg = preset("hybrid_tiny")
    cfg = cfg.replace(frozen=("byte_shared", "byte_encoder"))
    old = {k: v for k, v in _json(cfg).items() if k != "frozen"}
    byte = {k: v for k, v in old["byte_encoder"].items() if k != "mlp_activations"}
    old["byte_encoder"] = {**byte, "feed_forward_proj": "gated-gelu", "frozen": True}
    assert _read(tmp_path, old)[0] == cfg


def _moe(bpr: bool):
    cfg = preset("switch_tiny")
    return cfg.replace(moe=dataclasses.replace(cfg.moe, encoder_batch_prioritized_routing=bpr,
                                               router_loss_reduction="stacks_sum"))


def _old_moe(moe: dict) -> dict:
    """MoE fields before 7118a1b: encoder-only BPR under its old name, no loss reduction
    (those runs summed the stacks' router losses)."""
    out = {k: v for k, v in moe.items() if k not in ("encoder_batch_prioritized_routing",
                                                     "router_loss_reduction")}
    return {**out, "batch_prioritized_routing": moe["encoder_batch_prioritized_routing"]}


def test_model_json_of_an_moe_before_per_stack_flags(tmp_path):
    cfg = _moe(bpr=True)
    old = _json(cfg)
    old["moe"] = _old_moe(old["moe"])
    assert _read(tmp_path, old)[0] == cfg


def test_hf_export_of_an_moe_before_per_stack_flags():
    cfg = _moe(bpr=False)  # HF's Switch has no batch-prioritized routing
    exported = hf.config_to_hf(cfg)
    exported["t5pod_moe"] = _old_moe(exported["t5pod_moe"])
    assert hf.config_from_hf(exported).moe == cfg.moe


def test_a_stored_identity_with_feed_forward_proj():
    cfg = preset("t5_1_1_silu_tiny", **SMALL)
    stored = json.loads(json.dumps(identity_of(cfg)))
    stored["feed_forward_proj"] = stored.pop("mlp_activations") and "gated-silu"
    assert old_formats.identity(stored) == identity_of(cfg)
    with pytest.raises(ValueError, match="feed_forward_proj='gated-swish'"):
        old_formats.identity({**stored, "feed_forward_proj": "gated-swish"})


def test_a_step_without_the_loss_scale_streak_restores_with_a_streak_of_0(tmp_path):
    trainer = make_trainer(dtype="float16", optimizer="adamw",
                           loss_scale=LossScaleConfig(dynamic=True, initial_scale=8.0))
    state = trainer.init_state()
    old = dataclasses.replace(
        state, loss_scale=old_formats.LossScaleWithoutStreak.of(state.loss_scale))
    ckpt = Checkpointer(str(tmp_path), async_save=False)
    ckpt.save(8, old)
    ckpt.wait()
    restored, _ = Checkpointer(str(tmp_path), async_save=False).restore(trainer.abstract_state())
    assert int(restored.loss_scale.skipped_in_a_row) == 0
    assert float(restored.loss_scale.scale) == 8.0
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.params),
                 jax.device_get(state.params))


def test_a_feed_state_in_orbax_json_and_one_saved_before_caches(tmp_path):
    (tmp_path / "metadata").write_text(json.dumps({"position": 5}))
    assert host_state.read(str(tmp_path), 1, 2) == {"position": 5}
    (tmp_path / host_state.file_name(0, 2)).write_text(json.dumps({"position": 6}))
    assert host_state.read(str(tmp_path), 1, 2) == {"position": 6}  # host 0's, not orbax's
    assert old_formats.feed_state({"position": 5}) == {"cache": None, "position": 5}
    assert old_formats.feed_state({"position": 5, "cache": "c"})["cache"] == "c"


def test_a_step_without_a_manifest_restores_unverified(tmp_path):
    trainer = make_trainer()
    ckpt = Checkpointer(str(tmp_path), async_save=False)
    ckpt.save(1, trainer.init_state())
    ckpt.wait()
    step = tmp_path / "1"
    os.remove(step / MANIFEST)
    assert verify_step(str(step)) is False
    (step / "state" / "_METADATA").write_text("{not json")
    with pytest.raises(DamagedCheckpoint, match="_METADATA"):
        verify_step(str(step))
    os.remove(step / "state" / "_METADATA")
    with pytest.raises(DamagedCheckpoint, match="state/_METADATA: missing"):
        verify_step(str(step))
