"""The peer in `tools.bench --vs hf`: HF transformers T5 trained on the same shapes.

PyTorch with bf16 (or fp16 + GradScaler) autocast, torch.compile, and fused AdamW on CUDA:
the setup the HF peer figures in docs/performance.md use. Random init, synthetic batches.
T5 and ByT5 presets run HF's T5, Switch presets HF's SwitchTransformers (whose loss adds the
router losses).
"""

from __future__ import annotations

import time

from model_zoo.config import ModelConfig
from model_zoo.interop.hf import config_to_hf


def available() -> str | None:
    """None when torch and transformers import, else why not."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        return f"HF peer skipped: {e}"
    return None


def bench_hf(cfg: ModelConfig, batch: dict, dtype: str, steps: int, warmup: int,
             compile_model: bool = True) -> dict:
    import torch
    import transformers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    # Switch-* presets map to HF SwitchTransformers, the rest (T5, ByT5) to HF T5
    family = "SwitchTransformers" if cfg.moe is not None else "T5"
    fields = {k: v for k, v in config_to_hf(cfg).items()
              if k not in ("architectures", "model_type", "t5pod_moe")}
    hf_cfg = getattr(transformers, f"{family}Config")(**fields)
    hf_cfg.tie_word_embeddings = cfg.tie_word_embeddings
    hf_cfg.dropout_rate = 0.0
    torch.manual_seed(0)
    model = getattr(transformers, f"{family}ForConditionalGeneration")(hf_cfg)
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    amp = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
    scaler = torch.amp.GradScaler(device, enabled=dtype == "float16")
    forward = torch.compile(model) if compile_model else model
    inputs = torch.tensor(batch["encoder_input_tokens"], dtype=torch.long, device=device)
    labels = torch.tensor(batch["decoder_target_tokens"], dtype=torch.long, device=device)

    def step():
        with torch.autocast(device, dtype=amp or torch.float32, enabled=amp is not None):
            loss = forward(input_ids=inputs, labels=labels).loss
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        return loss

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    loss = step()
    sync()
    compile_s = time.perf_counter() - t0
    for _ in range(warmup):
        step()
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync()
    step_s = (time.perf_counter() - t0) / steps
    tokens = inputs.numel() + labels.numel()
    return {"impl": "hf", "device_kind": torch.cuda.get_device_name() if device == "cuda"
            else "cpu", "hf_model": type(model).__name__, "torch": torch.__version__,
            "compiled": compile_model,
            "step_time_s": round(step_s, 5), "tokens_per_s": round(tokens / step_s, 1),
            "compile_s": round(compile_s, 2), "final_loss": float(loss.detach()),
            "peak_bytes_in_use": torch.cuda.max_memory_allocated() if device == "cuda"
            else None}
