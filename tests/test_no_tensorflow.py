"""model_zoo, partitioning and training import where `import tensorflow` fails (GPU images)."""

import subprocess
import sys

BLOCK_TF = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'seqio', 'tensorflow_datasets'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, _Block())
"""


def test_core_packages_import_without_tensorflow():
    code = BLOCK_TF + """
import model_zoo, model_zoo.interop.hf, model_zoo.losses, model_zoo.model_def
import partitioning
import training, training.loop, training.checkpoints.manager, training.trainer
import model_zoo.decoding, model_zoo.universal
import tools.bench
assert 'tensorflow' not in sys.modules and 'seqio' not in sys.modules
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_blocker_really_blocks():
    out = subprocess.run([sys.executable, "-c", BLOCK_TF + "import tensorflow"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "blocked" in out.stderr
