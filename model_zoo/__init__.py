"""t5pod model zoo: T5-family modules, configs, losses and HF interop (no TensorFlow)."""

from model_zoo.config import ModelConfig
from model_zoo.presets import PRESETS, preset
from model_zoo.t5 import EncoderDecoder

__all__ = ["ModelConfig", "PRESETS", "preset", "EncoderDecoder"]
