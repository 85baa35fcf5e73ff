"""Import TensorFlow for the input pipeline only: hide GPUs from it, keep it quiet.

TensorFlow's C++ writes its start-up lines ("All log messages before absl::InitializeLog()",
"oneDNN custom operations are on", "Could not find cuda drivers") to file descriptor 2
before it reads TF_CPP_MIN_LOG_LEVEL, so the import runs with descriptor 2 on /dev/null; a
Python error raised by the import still surfaces, with its message, once stderr is back.
TF_CPP_MIN_LOG_LEVEL=0 shows everything (any other level hides them: jax sets 1 by default).
"""

import contextlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def _quiet_fd2(quiet: bool):
    """File descriptor 2 on /dev/null inside (when `quiet`), restored on the way out."""
    if not quiet:
        yield
        return
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


with _quiet_fd2(os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0"):
    import tensorflow as tf  # noqa: E402

    # TF must never grab accelerator memory that JAX needs.
    tf.config.set_visible_devices([], "GPU")
