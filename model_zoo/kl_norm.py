"""KL-Norm: Kullback-Leibler regularised normalisation (Kumar, Narang and Lall, "KL Regularized
Normalization Framework for Low Resource Tasks", arXiv:2212.11275, ECML-PKDD 2023).

The paper's abstract (the only part of it we could read) says KL-Norm keeps the normalised
data "well behaved" with a KL regulariser in the loss and a negligible number of extra
parameters. What is implemented (the brief's reading of the method, with the T5 RMS
normalisation as the base): for a token's features x in R^d,

    x_hat       = x / sqrt(mean(x^2) + epsilon)                 (T5's RMS normalisation)
    mu          = scale * x_hat + bias                           (the mean, learned per feature)
    log(sigma^2) = log_variance_scale * x_hat + log_variance_bias (the log-variance, likewise)
    y           = mu + sigma * eps,  eps ~ N(0, I)   training (the reparameterisation trick)
    y           = mu                                 deterministic (eval, decoding)
    KL          = 1/2 * sum_d (mu^2 + sigma^2 - log(sigma^2) - 1)  = KL(N(mu, sigma^2) || N(0, I))

so the output is a sample of a diagonal Gaussian whose mean and variance are predicted from
the normalised input by elementwise affine maps (4d parameters instead of RMSNorm's d), and
the objective gains `ModelConfig.kl_norm_weight` x (each norm's KL per token, averaged over
the real tokens, summed over the model's norms). Initialised at scale 1, bias 0,
log_variance_scale 0 and log_variance_bias = `kl_norm_init_log_variance`, its mean path is
exactly RMSNorm. Statistics, parameters and the KL are float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from model_zoo.axes import param


class KLNorm(nnx.Module):
    def __init__(self, dim: int, epsilon: float, dtype, init_log_variance: float,
                 rngs: nnx.Rngs):
        init = jax.nn.initializers
        self.scale = param(rngs, init.ones, (dim,), ("embed",))
        self.bias = param(rngs, init.zeros, (dim,), ("embed",))
        self.log_variance_scale = param(rngs, init.zeros, (dim,), ("embed",))
        self.log_variance_bias = param(rngs, init.constant(init_log_variance), (dim,),
                                       ("embed",))
        self.epsilon = epsilon
        self.dtype = dtype

    def gaussian(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(mu, log sigma^2), float32, of the features `x` [..., dim]."""
        x32 = x.astype(jnp.float32)
        x_hat = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
                                    + self.epsilon)
        mu = x_hat * self.scale[...] + self.bias[...]
        log_var = x_hat * self.log_variance_scale[...] + self.log_variance_bias[...]
        return mu, log_var

    def forward(self, x: jax.Array, *, rng=None, deterministic: bool = True):
        """(outputs [..., dim] in the compute dtype, KL to N(0, I) per token [...], float32)."""
        mu, log_var = self.gaussian(x)
        kl = 0.5 * jnp.sum(jnp.square(mu) + jnp.exp(log_var) - log_var - 1.0, axis=-1)
        if deterministic:
            return mu.astype(self.dtype), kl
        if rng is None:
            raise ValueError("KLNorm with deterministic=False samples its output and needs an "
                             "rng (the dropout_rng)")
        y = mu + jnp.exp(0.5 * log_var) * jax.random.normal(rng, mu.shape, jnp.float32)
        return y.astype(self.dtype), kl

    def __call__(self, x: jax.Array, *, rng=None, deterministic: bool = True) -> jax.Array:
        return self.forward(x, rng=rng, deterministic=deterministic)[0]
