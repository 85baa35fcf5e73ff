"""TreeDNN in the zoo (model_zoo/tree.py): the config's checks, the branch axis, a branch as
a plain T5, and the shared/per-branch param counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model_zoo import flops, preset, tree
from model_zoo.config import TreeConfig
from model_zoo.identity import identity_of
from model_zoo.model_def import model_def, split_params
from model_zoo.t5 import EncoderDecoder
from tests.train_helpers import TINY, copy_batch

TREE = TINY.replace(num_encoder_layers=3, num_decoder_layers=2,
                    tree=TreeConfig(("spell", "nli", "qa"), encoder_split=1, decoder_split=2,
                                    branch_head=True))


@pytest.mark.parametrize("fields, message", [
    (dict(branches=()), "at least one name"),
    (dict(branches="ab"), "tuple of branch names"),
    (dict(branches=("a", "a")), "names ['a'] twice"),
    (dict(branches=("a", "1b")), "'1b' is invalid"),
    (dict(encoder_split=-1), "TreeConfig.encoder_split"),
])
def test_tree_config_refuses_bad_fields(fields, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        TreeConfig(**{"branches": ("a", "b"), "encoder_split": 1, "decoder_split": 1, **fields})


def test_model_config_refuses_a_tree_it_cannot_build():
    with pytest.raises(ValueError, match=r"tree.encoder_split=4 .* at most num_encoder_layers=3"):
        TINY.replace(num_encoder_layers=3, tree=TreeConfig(("a", "b"), 4, 1))
    with pytest.raises(ValueError, match="tree.branch_head=True .* untied head"):
        TINY.replace(tie_word_embeddings=True, tree=TreeConfig(("a",), 1, 1, branch_head=True))
    with pytest.raises(ValueError, match="when moe is set"):
        preset("switch_tiny").replace(tree=TreeConfig(("a",), 1, 1))
    with pytest.raises(ValueError, match="unknown branch 'spel'.*did you mean 'spell'"):
        TREE.tree.index("spel")
    assert TINY.replace(tree={"branches": ["a"], "encoder_split": 0,
                              "decoder_split": 0}).tree == TreeConfig(("a",), 0, 0)


def test_branch_params_lead_with_the_branch_axis():
    axes = model_def(lambda r: EncoderDecoder(TREE, rngs=r)).logical_axes()
    names = lambda a: tuple(a.names)  # noqa: E731
    assert names(axes["encoder"]["layers"]["branches"]["stack"]["layer"]["attention"]["query"]) \
        == ("branch", "layers", "embed", "heads", "kv")
    assert names(axes["encoder"]["layers"]["trunk"]["layer"]["attention"]["query"]) \
        == ("layers", "embed", "heads", "kv")
    assert names(axes["encoder"]["final_norm"]["stack"]["scale"]) == ("branch", "embed")
    assert names(axes["decoder"]["final_norm"]["scale"]) == ("embed",)  # split at the top
    assert "branches" not in axes["decoder"]["layers"]
    assert names(axes["lm_head"]) == ("branch", "embed", "vocab")


def test_each_branch_computes_as_its_plain_t5():
    model = EncoderDecoder(TREE, rngs=nnx.Rngs(0))
    _, params = split_params(model)
    plain = model_def(lambda r: EncoderDecoder(tree.plain_config(TREE), rngs=r))
    batch = copy_batch(2)
    features = {k: batch[k] for k in ("encoder_input_tokens", "decoder_input_tokens")}
    logits = [model(**features, branch=jnp.int32(b)) for b in range(3)]
    for b, name in enumerate(TREE.tree.branches):
        np.testing.assert_array_equal(plain.bind(tree.branch_params(params, TREE, name))(
            **features), logits[b])
    assert float(jnp.abs(logits[0] - logits[1]).max()) > 1e-3  # the branches differ
    regrown = tree.grow(tree.branch_params(params, TREE, "nli"), TREE)
    assert jax.tree.map(np.shape, regrown) == jax.tree.map(np.shape, params)
    grown = model_def(lambda r: EncoderDecoder(TREE, rngs=r)).bind(regrown)
    np.testing.assert_array_equal(grown(**features, branch=2), logits[1])  # every branch is nli
    with pytest.raises(ValueError, match="call it with branch=INDEX"):
        model(**features)
    with pytest.raises(ValueError, match="call it with branch=INDEX"):
        model.encode(features["encoder_input_tokens"])


@pytest.mark.parametrize("cfg", [TREE, TINY, TREE.replace(tree=TreeConfig(("a", "b"), 0, 0))])
def test_param_counts_match_the_models_params(cfg):
    mdef = model_def(lambda r: EncoderDecoder(cfg, rngs=r))
    shapes = jax.tree.map(lambda a: tuple(a.shape), mdef.abstract_params())
    axes = jax.tree.leaves(mdef.logical_axes(), is_leaf=lambda x: hasattr(x, "names"))
    sizes = [int(np.prod(s)) for s in jax.tree.leaves(shapes, is_leaf=lambda x: isinstance(
        x, tuple))]
    stored = sum(sizes)
    branched = sum(n for n, a in zip(sizes, axes, strict=True) if tuple(a.names)[:1] == ("branch",))
    count = 1 if cfg.tree is None else len(cfg.tree.branches)
    counts = flops.param_counts(cfg)
    assert counts["stored"] == stored
    assert counts["per_branch"] == branched // count
    assert counts["served"] == stored - branched + branched // count
    if cfg.tree is not None:
        plain = model_def(lambda r: EncoderDecoder(tree.plain_config(cfg), rngs=r))
        assert counts["served"] == sum(int(np.prod(a.shape)) for a in jax.tree.leaves(
            plain.abstract_params()))


def test_identity_names_the_tree_and_leaves_plain_models_as_they_were():
    assert "tree" not in identity_of(TINY)
    assert identity_of(TREE)["tree"] == {"branches": ["spell", "nli", "qa"], "encoder_split": 1,
                                         "decoder_split": 2, "branch_head": True}
