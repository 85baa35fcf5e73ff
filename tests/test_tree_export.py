"""Serving one branch of a TreeDNN tree: tools.convert --branch writes its trunk and branch as
a plain T5 that HF transformers loads with the tree's logits; loaders refuse a tree read as
a plain T5 and --branch on a plain one, before anything is written."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from transformers import T5ForConditionalGeneration

import partitioning
from model_zoo.config import TreeConfig
from model_zoo.identity import identity_of
from model_zoo.model_def import split_params
from model_zoo.t5 import EncoderDecoder
from tests.batches import padded_batch
from tests.hf_reference import hf_logits
from tests.train_helpers import TINY
from tools.convert import convert
from training.checkpoints import loader
from training.checkpoints.manager import Checkpointer
from training.checkpoints.model_json import write_model_json

TOL = 2e-4
TREE = TINY.replace(num_encoder_layers=3, num_decoder_layers=2,
                    tree=TreeConfig(("spell", "nli"), encoder_split=1, decoder_split=1,
                                    branch_head=True))


@pytest.fixture(scope="module")
def tree_dir(tmp_path_factory):
    """A tree model_dir: random params (each branch its own), model.json with branch tasks."""
    model = EncoderDecoder(TREE, rngs=nnx.Rngs(3))
    _, params = split_params(model)
    path = str(tmp_path_factory.mktemp("tree"))
    ckpt = Checkpointer(os.path.join(path, "checkpoints"), async_save=False,
                        identity=identity_of(TREE))
    ckpt.save(0, {"params": params}, {})
    ckpt.close()
    write_model_json(path, TREE, "task_spell", {"inputs": 16, "targets": 8},
                     {"spell": "task_spell", "nli": "task_nli"})
    return path, model


def test_an_exported_branch_loads_in_hf_with_the_trees_logits(tree_dir, tmp_path):
    path, model = tree_dir
    enc, dec, tgt = padded_batch(TREE.vocab_size, batch=3, input_len=14, target_len=9)
    mask = (enc > 0).astype(np.int64)
    valid = tgt > 0
    for index, name in enumerate(TREE.tree.branches):
        out = str(tmp_path / name)
        convert(path, out, "to_hf_dir", branch=name, what="--model_dir")
        exported = T5ForConditionalGeneration.from_pretrained(out).eval()
        assert exported.config.num_layers == 3 and exported.config.num_decoder_layers == 2
        want = np.asarray(model(encoder_input_tokens=enc, decoder_input_tokens=dec,
                                branch=jnp.int32(index)))
        np.testing.assert_allclose(hf_logits(exported, enc, dec, mask)[valid], want[valid],
                                   atol=TOL, rtol=0)
    spell = T5ForConditionalGeneration.from_pretrained(str(tmp_path / "spell"))
    nli = T5ForConditionalGeneration.from_pretrained(str(tmp_path / "nli"))
    shared = "encoder.block.0.layer.0.SelfAttention.q.weight"  # the trunk
    above = "encoder.block.1.layer.0.SelfAttention.q.weight"   # a branch
    assert (spell.state_dict()[shared] == nli.state_dict()[shared]).all()
    assert not (spell.state_dict()[above] == nli.state_dict()[above]).all()


def test_a_branch_converts_to_a_plain_model_dir_and_loads_for_eval(tree_dir, tmp_path):
    path, model = tree_dir
    out = str(tmp_path / "nli_dir")
    convert(path, out, "to_model_dir", branch="nli", what="--model_dir")
    with open(os.path.join(out, "model.json")) as f:
        meta = json.load(f)
    assert meta["model"]["tree"] is None and meta["task"] == "task_nli"
    mesh = partitioning.make_mesh(partitioning.MeshConfig(ici={"data": 1}),
                                  devices=jax.devices()[:1])
    enc, dec, _ = padded_batch(TREE.vocab_size, batch=2, input_len=10, target_len=6, seed=2)
    want = model(encoder_input_tokens=enc, decoder_input_tokens=dec, branch=1)
    for source, branch in ((out, None), (path, "nli")):  # the converted dir; the tree's branch
        mdef, params, cfg, task = loader.load(source, mesh, branch=branch)
        assert cfg.tree is None and task == "task_nli"
        np.testing.assert_allclose(mdef.bind(params)(encoder_input_tokens=enc,
                                                     decoder_input_tokens=dec), want, atol=1e-6)


def test_trees_and_branches_are_refused_clearly_before_anything_is_written(tree_dir, tmp_path):
    path, _ = tree_dir
    mesh = partitioning.make_mesh(partitioning.MeshConfig(ici={"data": 1}),
                                  devices=jax.devices()[:1])
    target = tmp_path / "out"
    with pytest.raises(ValueError, match="unknown branch 'nil'.*did you mean 'nli'"):
        convert(path, str(target), "to_hf_dir", branch="nil", what="--model_dir")
    with pytest.raises(ValueError, match="convert one with --branch=NAME"):
        convert(path, str(target), "to_hf_dir", what="--model_dir")
    with pytest.raises(ValueError, match="load one with --branch=NAME"):
        loader.load(path, mesh)
    assert not target.exists()
    plain = str(tmp_path / "plain")
    convert(path, plain, "to_model_dir", branch="spell", what="--model_dir")
    with pytest.raises(ValueError, match="holds a plain T5 .*drop --branch=spell"):
        loader.load(plain, mesh, branch="spell")
    ckpt = loader.open_checkpoint(path, "INITIAL_CHECKPOINT_PATH")
    with pytest.raises(ValueError, match="different model.*tree: checkpoint"):
        loader.check_model(ckpt, TREE.replace(tree=None))  # a tree read as a plain T5
    with pytest.raises(ValueError, match="different model.*tree: checkpoint None"):
        loader.check_model(loader.open_checkpoint(plain), TREE)  # and the reverse
