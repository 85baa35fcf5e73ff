"""ModelConfig: the frozen, validated description of a T5-family encoder-decoder."""

from __future__ import annotations

import dataclasses
import difflib
import re

import jax.numpy as jnp

from fields.choices import require_choice
from fields.integers import require_int
from model_zoo.ffn import check_activations

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
GATED_GELU = ("gelu", "linear")  # T5 1.1
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch", "save_attention_out")
ATTENTION_IMPLS = ("einsum", "xla", "cudnn")
ROUTINGS = ("tokens_choose", "experts_choose")
DISPATCHES = ("einsum", "index", "dropless")
ROUTER_LOSS_REDUCTIONS = ("layers_mean", "stacks_sum")
ROUTER_LOSS_PADDINGS = ("excluded", "flaxformer")
NORMS = ("rms", "kl")
BRANCH_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def _fail(field: str, value, expected: str):
    raise ValueError(f"ModelConfig.{field}={value!r} is invalid: expected {expected}")


@dataclasses.dataclass(frozen=True)
class UniversalConfig:
    """Universal Transformer recurrence (Dehghani et al. 2019) over a shared block.

    The encoder's (decoder's) `num_*_layers` layers form ONE shared block applied `steps`
    times, with a sinusoidal timestep signal added before every step. With `act`, each
    token halts once its cumulative halting probability passes `act_threshold` (Graves
    2016), `steps` being the maximum; `ponder_tau` weighs the ponder cost in the loss.
    """

    steps: int = 6
    act: bool = False
    act_threshold: float = 0.99
    ponder_tau: float = 0.01

    def __post_init__(self):
        require_int("UniversalConfig", "steps", self.steps, 1,
                    meaning="the recurrence count T, or ACT's max steps")
        if not 0.0 < self.act_threshold <= 1.0:
            raise ValueError(f"UniversalConfig.act_threshold={self.act_threshold} is invalid: "
                             "expected a float in (0, 1] (1 - epsilon)")
        if self.ponder_tau < 0:
            raise ValueError(f"UniversalConfig.ponder_tau={self.ponder_tau} must be >= 0")


@dataclasses.dataclass(frozen=True)
class MoEConfig:
    """Mixture-of-experts feed-forward layers (Switch Transformer, Fedus et al. 2021; ST-MoE,
    Zoph et al. 2022).

    Every `*_sparse_step`-th feed-forward layer of a stack is an MoE layer (0: none), laid
    out as in HF SwitchTransformers: layers 1, 1+N, 1+2N, ... (every layer when N = 1).

    Routing groups. With `group_size` set, flaxformer's MoeLayer rule (its
    `max_group_size`): the batch is padded (rows or positions, whichever adds fewer tokens)
    until its tokens divide by num_experts x expert replicas (replicas: the mesh's devices
    over its expert and model shards), then cut into G groups of consecutive tokens, G the
    smallest count >= max(tokens // group_size, experts x replicas) that divides the tokens
    and is a multiple of experts x replicas (and of the batch's shard count, so no group
    spans devices); `strict_group_size` refuses groups of any other size than `group_size`. The
    capacity is round(factor x tokens_per_group / num_experts) (Python's round, as
    flaxformer), at least `min_expert_capacity`. With `group_size=None` each sequence is a
    group (HF SwitchTransformers) and the capacity is ceil(factor x S / E). The train factor
    applies when dropout is on (`deterministic=False`), the eval factor otherwise; a fixed
    `expert_capacity` (HF's config field) overrides the factors. A decoding step (one
    position) routes each row alone, so decoding never drops.

    Routing. `ignore_padding_tokens` keeps padding (token id 0 outside a packed segment, and
    the rows the layer pads) out of routing, where it takes no capacity (False routes it, as
    HF and flaxformer's t5x configs do). Tokens-choose routing (k = `num_selected_experts`:
    1 is Switch, 2 GShard/ST-MoE) drops overflow tokens to the residual by position, or by
    router probability with `encoder_batch_prioritized_routing` (Riquelme et al. 2021;
    flaxformer's t5x configs set it in the encoder; the decoder has no such flag, since
    ranking by probability lets later tokens decide which earlier ones drop); experts-choose
    routing (Zhou et al. 2022) is encoder-only. The router runs in float32, its kernel drawn
    from normal(`router_init_stddev`) (flaxformer's 0.02); `init_scale` scales the experts'
    init variance (Switch 2.4: 0.1).

    Router losses (`load_balancing_loss_weight` x Switch's balancing loss +
    `router_z_loss_weight` x ST-MoE's z-loss). `router_loss_reduction`: "layers_mean" (t5x:
    the mean over every MoE layer of both stacks) or "stacks_sum" (HF: each stack's mean,
    summed, so both stacks' losses weigh twice). `router_loss_padding`: "excluded" (t5pod:
    means over real tokens, and over the groups that hold any) or "flaxformer" (padding's
    router logits and probabilities zeroed, every mean over all tokens of a group).

    `dispatch` moves tokens to their experts: "einsum" multiplies one-hot [G, S, E, C]
    masks (flaxformer's way, the reference); "index" gathers each expert slot's token and
    gathers the outputs back, from the same routing decisions (no mask is multiplied);
    "dropless" sorts tokens by expert and runs the experts as one grouped matmul
    (`jax.lax.ragged_dot`) with no capacity, so nothing drops (tokens-choose routing
    only, no fixed `expert_capacity`, no batch-prioritised routing, no expert parallelism).
    """

    num_experts: int = 8
    num_selected_experts: int = 1
    encoder_sparse_step: int = 2
    decoder_sparse_step: int = 2
    train_capacity_factor: float = 1.25
    eval_capacity_factor: float = 2.0
    min_expert_capacity: int = 4
    expert_capacity: int | None = None
    group_size: int | None = None
    strict_group_size: bool = False
    ignore_padding_tokens: bool = True
    encoder_routing: str = "tokens_choose"
    decoder_routing: str = "tokens_choose"
    encoder_batch_prioritized_routing: bool = False
    router_jitter_noise: float = 0.0
    load_balancing_loss_weight: float = 0.01
    router_z_loss_weight: float = 0.001
    router_loss_reduction: str = "layers_mean"
    router_loss_padding: str = "excluded"
    expert_dropout_rate: float | None = None
    router_init_stddev: float = 0.02
    init_scale: float = 0.1
    dispatch: str = "einsum"

    def __post_init__(self):
        require_int("MoEConfig", "num_experts", self.num_experts, 1)
        require_int("MoEConfig", "min_expert_capacity", self.min_expert_capacity, 1)
        require_int("MoEConfig", "encoder_sparse_step", self.encoder_sparse_step, 0)
        require_int("MoEConfig", "decoder_sparse_step", self.decoder_sparse_step, 0)
        require_int("MoEConfig", "num_selected_experts", self.num_selected_experts, 1,
                    self.num_experts, meaning="at most num_experts")
        for name in ("train_capacity_factor", "eval_capacity_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"MoEConfig.{name}={value!r} is invalid: expected a float > 0 "
                                 "(expert capacity = factor x tokens per group / experts)")
        if self.expert_capacity is not None:
            require_int("MoEConfig", "expert_capacity", self.expert_capacity, 1)
        if self.group_size is not None:
            require_int("MoEConfig", "group_size", self.group_size, 1,
                        meaning="the most tokens per group, e.g. 4096; None makes each "
                        "sequence a routing group")
        for name in ("strict_group_size", "ignore_padding_tokens",
                     "encoder_batch_prioritized_routing"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"MoEConfig.{name}={getattr(self, name)!r} is invalid: "
                                 "expected a bool")
        if self.strict_group_size and self.group_size is None:
            raise ValueError("MoEConfig.strict_group_size=True is invalid with group_size=None "
                             "(a sequence per group): give the group_size it enforces")
        for name in ("encoder_routing", "decoder_routing"):
            require_choice("MoEConfig", name, getattr(self, name), ROUTINGS)
        if self.decoder_routing == "experts_choose":
            raise ValueError("MoEConfig.decoder_routing='experts_choose' is invalid: experts "
                             "choosing among a sequence's tokens sees future tokens, so it is "
                             "encoder-only; use 'tokens_choose' in the decoder")
        choices = {"router_loss_reduction": ROUTER_LOSS_REDUCTIONS,
                   "router_loss_padding": ROUTER_LOSS_PADDINGS}
        for name, valid in choices.items():
            require_choice("MoEConfig", name, getattr(self, name), valid)
        rates = {"router_jitter_noise": self.router_jitter_noise,
                 "expert_dropout_rate": self.expert_dropout_rate}
        for name, value in rates.items():
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"MoEConfig.{name}={value!r} is invalid: expected [0, 1)")
        for name in ("load_balancing_loss_weight", "router_z_loss_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"MoEConfig.{name}={getattr(self, name)!r} must be >= 0")
        for name in ("init_scale", "router_init_stddev"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"MoEConfig.{name}={value!r} is invalid: expected a float > 0")
        self._check_dispatch()

    def _check_dispatch(self) -> None:
        require_choice("MoEConfig", "dispatch", self.dispatch, DISPATCHES)
        if self.dispatch != "dropless":
            return
        refused = []
        if self.encoder_routing == "experts_choose":
            refused.append("encoder_routing='experts_choose' (each expert takes a fixed count)")
        if self.encoder_batch_prioritized_routing:
            refused.append("encoder_batch_prioritized_routing=True (it only decides which "
                           "tokens drop)")
        if self.expert_capacity is not None:
            refused.append(f"expert_capacity={self.expert_capacity!r} (a fixed capacity)")
        if refused:
            raise ValueError("MoEConfig.dispatch='dropless' has no expert capacity, so it "
                             f"cannot serve {'; '.join(refused)}; use dispatch='index' or "
                             "'einsum' for it")

    def sparse_step(self, side: str) -> int:
        return self.encoder_sparse_step if side == "encoder" else self.decoder_sparse_step

    def routing(self, side: str) -> str:
        return self.encoder_routing if side == "encoder" else self.decoder_routing

    def batch_prioritized(self, side: str) -> bool:
        return side == "encoder" and self.encoder_batch_prioritized_routing


@dataclasses.dataclass(frozen=True)
class ByteEncoderConfig:
    """A character-aware encoder beside the token encoder (a hybrid model).

    Its outputs (projected to the decoder's d_model when the widths differ) are
    concatenated to the token encoder's along the sequence axis, masks likewise, and the
    decoder cross-attends to both, as in the character-aware text-rendering work (Liu et
    al. 2022: a T5 encoder next to a ByT5-small one). Defaults are ByT5-small's encoder.
    To keep it fixed: `ModelConfig.frozen = ("byte_shared", "byte_encoder")`.
    """

    d_model: int = 1472
    d_ff: int = 3584
    num_heads: int = 6
    d_kv: int = 64
    num_layers: int = 12
    vocab_size: int = 384
    mlp_activations: tuple[str, ...] = GATED_GELU
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128

    def __post_init__(self):
        for name in ("d_model", "d_ff", "num_heads", "d_kv", "num_layers", "vocab_size"):
            require_int("ByteEncoderConfig", name, getattr(self, name), 1)
        object.__setattr__(self, "mlp_activations", check_activations(
            self.mlp_activations, "ByteEncoderConfig.mlp_activations"))

    def encoder_config(self, parent: "ModelConfig") -> "ModelConfig":
        """The ModelConfig its Encoder is built from: these dimensions, the parent's numerics."""
        return ModelConfig(
            vocab_size=self.vocab_size, d_model=self.d_model, d_ff=self.d_ff,
            num_heads=self.num_heads, d_kv=self.d_kv, num_encoder_layers=self.num_layers,
            num_decoder_layers=1, mlp_activations=self.mlp_activations,
            relative_attention_num_buckets=self.relative_attention_num_buckets,
            relative_attention_max_distance=self.relative_attention_max_distance,
            dropout_rate=parent.dropout_rate, layer_norm_epsilon=parent.layer_norm_epsilon,
            dtype=parent.dtype, scan_layers=parent.scan_layers,
            remat_policy=parent.remat_policy, attention_impl=parent.attention_impl)


@dataclasses.dataclass(frozen=True)
class TreeConfig:
    """TreeDNN (Singh et al. 2022): a shared trunk and one branch per dataset.

    The first `encoder_split` encoder layers and the first `decoder_split` decoder layers
    (with the embeddings and relative-position biases) are the trunk, shared by every
    branch; the layers above each split and the final norm above them are one copy per
    branch in `branches`, and with `branch_head` the output layer too (an untied head). A
    split equal to its stack's depth leaves that stack wholly shared (its final norm
    too), so splits at the top with a shared head give the shared model; splits at 0
    give separate models that share embeddings. Per-branch params lead with a logical
    `branch` axis, and the model takes a branch index (model_zoo/tree.py).
    """

    branches: tuple[str, ...]
    encoder_split: int
    decoder_split: int
    branch_head: bool = False

    def __post_init__(self):
        if isinstance(self.branches, str) or not isinstance(self.branches, (tuple, list)):
            raise ValueError(f"TreeConfig.branches={self.branches!r} is invalid: expected a "
                             "tuple of branch names, e.g. ('spelling', 'nli')")
        object.__setattr__(self, "branches", tuple(self.branches))
        if not self.branches:
            raise ValueError("TreeConfig.branches=() is invalid: expected at least one name")
        for name in self.branches:
            if not isinstance(name, str) or not BRANCH_NAME.fullmatch(name):
                raise ValueError(f"TreeConfig.branches: {name!r} is invalid: expected names "
                                 "of letters, digits and '_', starting with a letter")
        repeated = sorted({n for n in self.branches if self.branches.count(n) > 1})
        if repeated:
            raise ValueError(f"TreeConfig.branches={self.branches!r} names {repeated} twice: "
                             "expected distinct names")
        for name in ("encoder_split", "decoder_split"):
            require_int("TreeConfig", name, getattr(self, name), 0,
                        meaning="how many layers of the stack the trunk holds")
        if not isinstance(self.branch_head, bool):
            raise ValueError(f"TreeConfig.branch_head={self.branch_head!r} is invalid: "
                             "expected a bool")

    def index(self, name: str) -> int:
        """The branch index of `name`, or an error naming the branches (did you mean)."""
        if name in self.branches:
            return self.branches.index(name)
        close = difflib.get_close_matches(str(name), self.branches, n=3, cutoff=0.5)
        raise ValueError(f"unknown branch {name!r}; this tree's branches are "
                         f"{list(self.branches)}" + (f"; did you mean {close[0]!r}?" if close
                                                     else ""))

    def split(self, side: str) -> int:
        return self.encoder_split if side == "encoder" else self.decoder_split


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Dimensions and numerics of a T5 encoder-decoder (names as in the T5 paper/t5x).

    `dtype` is the compute dtype; params are always stored in `param_dtype` (fp32).
    Softmax, norms and logits are computed in float32 whatever `dtype` is.
    `frozen` names top-level params the optimizer leaves unchanged (e.g. "encoder", or
    "byte_shared" and "byte_encoder"); no gradient flows into a frozen encoder.
    `norm`: every layer norm is T5's RMSNorm ("rms") or KL-Norm ("kl", model_zoo/kl_norm.py:
    a Gaussian sample in training, its mean when deterministic), whose KL to N(0, I) per
    token, summed over the norms, enters the loss weighted by `kl_norm_weight`.
    `mlp_activations`: one activation per MLP input projection, multiplied (model_zoo/ffn.py):
    ("relu",) T5 1.0, ("gelu", "linear") T5 1.1's gated-GELU, ("silu", "linear") gated-SiLU.
    """

    vocab_size: int
    d_model: int
    d_ff: int
    num_heads: int
    d_kv: int
    num_encoder_layers: int
    num_decoder_layers: int
    mlp_activations: tuple[str, ...] = ("relu",)
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    tie_word_embeddings: bool = True
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    dtype: str = "float32"
    param_dtype: str = "float32"
    scan_layers: bool = True
    remat_policy: str = "none"
    attention_impl: str = "einsum"
    universal: UniversalConfig | None = None
    byte_encoder: ByteEncoderConfig | None = None   # set: a hybrid token+byte encoder
    frozen: tuple[str, ...] = ()   # top-level params kept fixed (see the docstring)
    moe: MoEConfig | None = None
    norm: str = "rms"
    kl_norm_weight: float = 1e-3
    kl_norm_init_log_variance: float = -4.0
    tree: TreeConfig | None = None   # set: a TreeDNN trunk and branches (model_zoo/tree.py)

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "d_ff", "num_heads", "d_kv",
                     "num_encoder_layers", "num_decoder_layers",
                     "relative_attention_num_buckets", "relative_attention_max_distance"):
            require_int("ModelConfig", name, getattr(self, name), 1)
        object.__setattr__(self, "mlp_activations", check_activations(self.mlp_activations))
        if self.relative_attention_num_buckets < 2:
            _fail("relative_attention_num_buckets", self.relative_attention_num_buckets, ">= 2")
        if self.relative_attention_max_distance <= self.relative_attention_num_buckets // 4:
            quarter = self.relative_attention_num_buckets // 4
            _fail("relative_attention_max_distance", self.relative_attention_max_distance,
                  f"> relative_attention_num_buckets // 4 = {quarter}"
                  " (the log-spaced buckets start there)")
        if not isinstance(self.tie_word_embeddings, bool):
            _fail("tie_word_embeddings", self.tie_word_embeddings, "a bool")
        if not isinstance(self.dropout_rate, (int, float)) or not 0.0 <= self.dropout_rate < 1.0:
            _fail("dropout_rate", self.dropout_rate, "a float in [0, 1)")
        if not isinstance(self.layer_norm_epsilon, (int, float)) or self.layer_norm_epsilon <= 0:
            _fail("layer_norm_epsilon", self.layer_norm_epsilon, "a positive float")
        require_choice("ModelConfig", "dtype", self.dtype, tuple(DTYPES))
        if self.param_dtype != "float32":
            _fail("param_dtype", self.param_dtype, "'float32' (master weights stay fp32)")
        require_choice("ModelConfig", "remat_policy", self.remat_policy, REMAT_POLICIES)
        require_choice("ModelConfig", "attention_impl", self.attention_impl, ATTENTION_IMPLS)
        if isinstance(self.universal, dict):  # from JSON / gin dicts
            object.__setattr__(self, "universal", UniversalConfig(**self.universal))
        if self.universal is not None and not isinstance(self.universal, UniversalConfig):
            _fail("universal", self.universal, "None or a UniversalConfig")
        if isinstance(self.byte_encoder, dict):
            object.__setattr__(self, "byte_encoder", ByteEncoderConfig(**self.byte_encoder))
        if self.byte_encoder is not None and not isinstance(self.byte_encoder, ByteEncoderConfig):
            _fail("byte_encoder", self.byte_encoder, "None or a ByteEncoderConfig")
        object.__setattr__(self, "frozen", tuple(self.frozen))
        parts = self.top_level_params
        if any(name not in parts for name in self.frozen):
            _fail("frozen", self.frozen, f"names among this model's top-level params {parts}")
        self._check_moe()
        self._check_norm()
        self._check_tree()

    def _check_tree(self):
        if isinstance(self.tree, dict):  # from JSON / gin dicts
            object.__setattr__(self, "tree", TreeConfig(**self.tree))
        if self.tree is None:
            return
        if not isinstance(self.tree, TreeConfig):
            _fail("tree", self.tree, "None or a TreeConfig")
        for side, layers in (("encoder", self.num_encoder_layers),
                             ("decoder", self.num_decoder_layers)):
            if self.tree.split(side) > layers:
                _fail(f"tree.{side}_split", self.tree.split(side),
                      f"at most num_{side}_layers={layers} (the trunk holds that many layers)")
        others = {"universal": self.universal, "moe": self.moe,
                  "byte_encoder": self.byte_encoder}
        for name, value in others.items():
            if value is not None:
                _fail("tree", self.tree, f"None when {name} is set (trees of dense T5 stacks "
                      "only)")
        if self.tree.branch_head and self.tie_word_embeddings:
            _fail("tree.branch_head", True, "False with tie_word_embeddings=True (a branch's "
                  "own output layer needs an untied head)")

    def _check_norm(self):
        require_choice("ModelConfig", "norm", self.norm, NORMS, meaning="T5's RMSNorm, or KL-Norm")
        for name in ("kl_norm_weight", "kl_norm_init_log_variance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or value != value or abs(value) == float("inf"):
                _fail(name, value, "a finite float")
        if self.kl_norm_weight < 0:
            _fail("kl_norm_weight", self.kl_norm_weight, "a float >= 0 (the KL term's weight)")
        if self.norm == "kl" and self.byte_encoder is not None:
            _fail("norm", self.norm, "'rms' with a byte_encoder (KL-Norm in a hybrid model "
                  "is not supported)")

    def _check_moe(self):
        if isinstance(self.moe, dict):  # from JSON / gin dicts
            object.__setattr__(self, "moe", MoEConfig(**self.moe))
        if self.moe is None:
            return
        if not isinstance(self.moe, MoEConfig):
            _fail("moe", self.moe, "None or a MoEConfig")
        if self.universal is not None:
            _fail("moe", self.moe, "None when universal is set (MoE Universal Transformers "
                  "are not supported)")
        for side, layers in (("encoder", self.num_encoder_layers),
                             ("decoder", self.num_decoder_layers)):
            step = self.moe.sparse_step(side)
            if step and layers % step:
                _fail(f"num_{side}_layers", layers, f"a multiple of moe.{side}_sparse_step="
                      f"{step} (layers are scanned in blocks of that many, one of them MoE)")

    @property
    def recurrence(self) -> int:
        """How many times each layer stack is applied (1 for dense T5)."""
        return self.universal.steps if self.universal else 1

    @property
    def top_level_params(self) -> tuple[str, ...]:
        """The names `frozen` may hold (the model's top-level param groups)."""
        names = ("shared", "encoder", "decoder") + (() if self.tie_word_embeddings
                                                     else ("lm_head",))
        if self.byte_encoder is not None:
            names += ("byte_shared", "byte_encoder") + (
                ("byte_projection",) if self.byte_encoder.d_model != self.d_model else ())
        return names

    @property
    def compute_dtype(self):
        return DTYPES[self.dtype]

    def replace(self, **changes) -> "ModelConfig":
        """A copy with `changes` applied and validated again."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"ModelConfig has no field(s) {sorted(unknown)}; "
                             f"valid fields: {[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)
