"""A CLI's first screen: TensorFlow's C++ start-up lines hidden (tasks/tf_setup.py), an import
error still said, and t5pod's own log lines shown (tools/cli.py). A stand-in `tensorflow`
writes TensorFlow's lines to file descriptor 2, so no test here waits for the real import."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# what a real import writes, even at TF_CPP_MIN_LOG_LEVEL=3
NOISE = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
         "oneDNN custom operations are on", "Could not find cuda drivers on your machine")

FAKE_TF = """import os
for line in {noise!r}:
    os.write(2, (line + "\\n").encode())
{fail}
class config:
    @staticmethod
    def set_visible_devices(devices, kind):
        os.write(2, b"failed call to cuInit\\n")
"""

# tf_setup loaded by its path: the `tasks` package (seqio, ...) is not imported
LOAD = """import importlib.util, logging, sys
from tools import cli
spec = importlib.util.spec_from_file_location("tf_setup", "tasks/tf_setup.py")
spec.loader.exec_module(importlib.util.module_from_spec(spec))
logging.getLogger("training.loop").info("step 1/2: loss 8.1")
logging.getLogger("absl").warning("Using an uncached FunctionDataset for training is not "
                                  "recommended since ...")
print('{"step": 2}')
"""


def _run(tmp_path, fail: str = "", **env):
    """LOAD in a fresh Python with the stand-in tensorflow (raising `fail`, if given)."""
    (tmp_path / "tensorflow").mkdir(exist_ok=True)
    (tmp_path / "tensorflow" / "__init__.py").write_text(FAKE_TF.format(noise=NOISE, fail=fail))
    base = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env = {**base, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", **env}
    return subprocess.run([sys.executable, "-c", LOAD], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_first_screen_is_the_log_lines_and_the_result(tmp_path):
    out = _run(tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == ["step 1/2: loss 8.1"]  # no TF lines, no seqio advice
    assert out.stdout.splitlines() == ['{"step": 2}']


def test_an_import_error_still_says_why(tmp_path):
    out = _run(tmp_path, fail='raise ImportError("libcudart.so.99: cannot open shared object")')
    assert out.returncode != 0
    assert "ImportError: libcudart.so.99: cannot open shared object" in out.stderr
    assert not any(n in out.stderr for n in NOISE)


def test_all_of_tensorflow_when_asked(tmp_path):
    out = _run(tmp_path, TF_CPP_MIN_LOG_LEVEL="0")
    assert out.returncode == 0 and all(n in out.stderr for n in NOISE), out.stderr
    assert _run(tmp_path, TF_CPP_MIN_LOG_LEVEL="1").stderr.splitlines() == ["step 1/2: loss 8.1"]


def test_help_and_flag_errors_come_before_the_libraries():
    """`--help` (and a flag error) of the daily CLIs answers without importing TensorFlow,
    seqio or the task registry: the libraries load after the flags are read."""
    code = """import sys
from tools import eval, infer, train
for cli in (train, eval, infer):
    try:
        cli.main(["--help"])
    except SystemExit:
        pass
print(sorted({"tensorflow", "seqio", "tasks"} & set(sys.modules)))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-2000:]
