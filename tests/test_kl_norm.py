"""KL-Norm (model_zoo/kl_norm.py): forward and gradient against the formula written out here
in numpy / plain jnp, the deterministic path, its KL reaching the loss, refused configs, and
the low-resource comparison sweep (gin/sweeps/klnorm_lowresource.gin) on its smallest setting."""

import csv
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model_zoo import ModelConfig
from model_zoo.interop.hf import config_to_hf
from model_zoo.identity import differences, identity_of
from model_zoo.kl_norm import KLNorm
from model_zoo.model_def import model_def
from model_zoo.presets import preset
from model_zoo.t5 import EncoderDecoder
from training.metrics_log import read_records

D, EPS = 8, 1e-6


def _norm_with_params(seed=0):
    norm = KLNorm(D, EPS, jnp.float32, -4.0, nnx.Rngs(0))
    r = np.random.default_rng(seed)
    values = {"scale": 1 + 0.3 * r.standard_normal(D), "bias": 0.2 * r.standard_normal(D),
              "log_variance_scale": 0.5 * r.standard_normal(D),
              "log_variance_bias": -1 + 0.5 * r.standard_normal(D)}
    for name, v in values.items():
        getattr(norm, name).set_value(jnp.asarray(v, jnp.float32))
    return norm, values


def _reference(x, p, eps):
    """The paper's KL-Norm on T5's RMS normalisation, written out: a sample of N(mu, sigma^2)
    and KL(N(mu, sigma^2) || N(0, 1)) summed over the features. Works on numpy or jnp."""
    xp = jnp if isinstance(x, jax.Array) else np
    x_hat = x / xp.sqrt(xp.mean(x * x, axis=-1, keepdims=True) + EPS)
    mu = p["scale"] * x_hat + p["bias"]
    log_var = p["log_variance_scale"] * x_hat + p["log_variance_bias"]
    var = xp.exp(log_var)
    kl = 0.5 * xp.sum(mu * mu + var - log_var - 1.0, axis=-1)
    return mu, mu + xp.sqrt(var) * eps, kl


def test_forward_matches_the_formula():
    norm, p = _norm_with_params()
    x = np.random.default_rng(1).standard_normal((2, 5, D)).astype(np.float32) * 3
    key = jax.random.key(7)
    eps = np.asarray(jax.random.normal(key, x.shape, jnp.float32), np.float64)
    mu, sample, kl = _reference(x.astype(np.float64), p, eps)
    y_det, kl_det = norm.forward(jnp.asarray(x), deterministic=True)
    y, kl_train = norm.forward(jnp.asarray(x), rng=key, deterministic=False)
    np.testing.assert_allclose(y_det, mu, rtol=1e-5, atol=1e-5)     # deterministic: the mean
    np.testing.assert_allclose(y, sample, rtol=1e-5, atol=1e-5)     # training: mu + sigma eps
    np.testing.assert_allclose(kl_det, kl, rtol=1e-5)
    np.testing.assert_allclose(kl_train, kl, rtol=1e-5)
    assert kl.shape == (2, 5) and np.all(kl > 0)
    with pytest.raises(ValueError, match="needs an rng"):
        norm.forward(jnp.asarray(x), deterministic=False)


def test_gradient_matches_the_formula():
    norm, p = _norm_with_params(3)
    r = np.random.default_rng(4)
    x = jnp.asarray(r.standard_normal((3, 4, D)), jnp.float32)
    w = jnp.asarray(r.standard_normal((3, 4, D)), jnp.float32)
    key = jax.random.key(11)
    eps = jax.random.normal(key, x.shape, jnp.float32)
    graphdef, state = nnx.split(norm)

    def ours(state, x):
        y, kl = nnx.merge(graphdef, state).forward(x, rng=key, deterministic=False)
        return jnp.sum(y * w) + 0.1 * jnp.sum(kl)

    def reference(params, x):
        _, y, kl = _reference(x, params, eps)
        return jnp.sum(y * w) + 0.1 * jnp.sum(kl)

    g_state, g_x = jax.grad(ours, argnums=(0, 1))(state, x)
    ref_params = {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}
    g_ref, g_ref_x = jax.grad(reference, argnums=(0, 1))(ref_params, x)
    for name in p:
        np.testing.assert_allclose(g_state[name].get_value(), g_ref[name], rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(g_x, g_ref_x, rtol=2e-4, atol=1e-5)


def _tiny(**kw):
    return preset("t5_1_1_tiny", vocab_size=64, d_model=16, d_ff=16, num_heads=2, d_kv=8,
                  **kw)


# KL-Norm's init (model_zoo/kl_norm.py); every other param is random here
_NORM_INIT = {"scale": 1.0, "bias": 0.0, "log_variance_scale": 0.0, "log_variance_bias": -4.0}


def _model(cfg: ModelConfig, seed: int = 0):
    """(apply, params, bind): numpy params (jit-compiling the init costs more than the test),
    the norms' at their init; apply(params, enc, dec, rng=None) -> (logits, aux), jitted,
    deterministic without rng."""
    mdef = model_def(lambda r: EncoderDecoder(cfg, rngs=r))
    r = np.random.default_rng(seed)

    def fill(tree):
        return {k: fill(v) if isinstance(v, dict) else jnp.asarray(
            np.full(v.shape, _NORM_INIT[k]) if k in _NORM_INIT
            else 0.3 * r.standard_normal(v.shape), jnp.float32) for k, v in tree.items()}
    params = fill(mdef.abstract_params())

    @jax.jit
    def run(params, enc, dec, rng):
        return mdef.bind(params)(enc, dec, deterministic=rng is None, dropout_rng=rng,
                                 return_aux=True)
    return lambda params, enc, dec, rng=None: run(params, enc, dec, rng), params, mdef.bind


def _batch():
    enc = jnp.array([[5, 6, 7, 8, 0], [9, 10, 0, 0, 0]])
    dec = jnp.array([[0, 5, 6, 7], [0, 9, 10, 0]])
    return enc, dec


def test_deterministic_path_is_rmsnorm_at_init_and_kl_reaches_aux_loss():
    run_rms, rms_params, _ = _model(_tiny(), 0)
    kl_cfg = _tiny(norm="kl", kl_norm_weight=0.01)
    run_kl, kl_params, bind = _model(kl_cfg, 1)

    def merge(dst, src):  # the RMS model's params into the KL model's; KL-Norm's own stay
        return {k: merge(v, src[k]) if isinstance(v, dict) else src.get(k, v)
                for k, v in dst.items()}
    kl_params = merge(kl_params, rms_params)
    enc, dec = _batch()
    with pytest.raises(ValueError, match="needs a dropout_rng"):
        bind(kl_params)(enc, dec, deterministic=False)
    want, rms_aux = run_rms(rms_params, enc, dec)
    got, aux = run_kl(kl_params, enc, dec)                    # deterministic: the means
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # training samples: another rng, other logits
    a, train_aux = run_kl(kl_params, enc, dec, jax.random.key(0))
    b, _ = run_kl(kl_params, enc, dec, jax.random.key(1))
    assert not np.allclose(a, b) and not np.allclose(a, got)
    np.testing.assert_allclose(train_aux["loss"], aux["loss"], rtol=1e-5)  # KL of mu, sigma
    # the KL per token at init: mu = x_hat (mean square 1) and log sigma^2 = -4 in every
    # feature, so each norm gives 1/2 d (1 + e^-4 + 4 - 1); 5 encoder norms (2 layers x 2 +
    # the final one) and 7 decoder norms (2 x 3 + 1)
    d = kl_cfg.d_model
    per_norm = 0.5 * d * (1.0 + np.exp(-4.0) + 4.0 - 1.0)
    np.testing.assert_allclose(aux["encoder_kl_norm"], 5 * per_norm, rtol=1e-4)
    np.testing.assert_allclose(aux["decoder_kl_norm"], 7 * per_norm, rtol=1e-4)
    np.testing.assert_allclose(aux["loss"], 0.01 * 12 * per_norm, rtol=1e-4)
    assert list(rms_aux) == ["loss"] and float(rms_aux["loss"]) == 0.0


@pytest.mark.parametrize("name", ["switch_tiny", "universal_tiny"])
def test_moe_and_universal_stacks_carry_the_kl(name):
    cfg = preset(name, vocab_size=64, norm="kl")
    cfg = cfg.replace(d_model=16, d_ff=16, num_heads=2, d_kv=8)
    run, params, _ = _model(cfg)
    _, aux = run(params, *_batch())
    layers = cfg.num_encoder_layers * cfg.recurrence
    d = cfg.d_model
    per_norm = 0.5 * d * (np.exp(-4.0) + 4.0)
    np.testing.assert_allclose(aux["encoder_kl_norm"], (2 * layers + 1) * per_norm, rtol=1e-4)
    assert np.isfinite(aux["loss"]) and aux["loss"] > aux["kl_norm_loss"] * 0.999


def test_bad_norm_refused_and_kl_models_stay_out_of_hf_and_identity():
    with pytest.raises(ValueError, match=r"ModelConfig.norm='layer'.*\('rms', 'kl'\)"):
        _tiny(norm="layer")
    with pytest.raises(ValueError, match="kl_norm_weight"):
        _tiny(norm="kl", kl_norm_weight=-1.0)
    with pytest.raises(ValueError, match="byte_encoder"):
        preset("hybrid_tiny", norm="kl")
    kl_cfg = _tiny(norm="kl")
    with pytest.raises(ValueError, match="HF transformers' T5 has only RMS"):
        config_to_hf(kl_cfg)
    assert "norm" not in identity_of(_tiny())       # RMS identities as they were
    assert differences(identity_of(_tiny()), identity_of(kl_cfg)) == {"norm": (None, "kl")}
    assert ModelConfig(**{**kl_cfg.__dict__}) == kl_cfg   # model.json round trip


def test_lowresource_sweep_writes_table_csv_and_plot(tmp_path):
    from tools import sweep

    small = tmp_path / "small.gin"
    small.write_text("include 'gin/sweeps/klnorm_lowresource.gin'\n"
                     "sweep.SweepConfig.grid = {'model_zoo.model.norm': ['rms', 'kl']}\n")
    tiny = {"TRAIN_STEPS": 2, "CHECKPOINT_EVERY": 2, "EVAL_EVERY": 2, "BATCH_SIZE": 8,
            "training.ScheduleConfig.warmup_steps": 1, "run.train.eval_batches": 1,
            "model_zoo.model.d_model": 32, "model_zoo.model.d_ff": 32,
            "model_zoo.model.num_heads": 2, "model_zoo.model.d_kv": 16,
            "model_zoo.model.num_encoder_layers": 1, "model_zoo.model.scan_layers": False,
            "partitioning.mesh.ici": {"data": 8}, "RULES": "data_parallel",
            "tasks.wikispell.train_size": 100, "tasks.wikispell.eval_per_bucket": 10}
    out = tmp_path / "out"
    results = sweep.main([f"--sweep={small}", f"--out={out}"]
                         + [f"--gin.{k}={v!r}" for k, v in tiny.items()])
    assert [r["bindings"]["model_zoo.model.norm"] for r in results] == ["rms", "kl"]
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model_zoo.model.norm"] for r in rows] == ["rms", "kl"]
    assert all(float(r["eval/accuracy"]) >= 0 and float(r["eval/loss"]) > 0 for r in rows)
    table = (out / "results.md").read_text()
    assert table.startswith("| member | model_zoo.model.norm |") and "| kl |" in table
    assert (out / "results.png").stat().st_size > 1000
    # the KL term reached the objective through aux["loss"] in the KL member only
    logs = {}
    for name in ("norm=rms", "norm=kl"):
        logs[name] = [r for r in read_records(os.path.join(out, name)) if "loss" in r]
    assert all(r["aux_loss"] == 0.0 and "kl_norm_loss" not in r for r in logs["norm=rms"])
    assert all(r["kl_norm_loss"] > 0 and r["aux_loss"] == pytest.approx(r["kl_norm_loss"])
               for r in logs["norm=kl"])
