"""Import TensorFlow for the input pipeline only: hide GPUs from it, keep it quiet."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

# TF must never grab accelerator memory that JAX needs.
tf.config.set_visible_devices([], "GPU")
