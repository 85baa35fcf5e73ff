"""seqio vocabularies, preprocessors, tasks and mixtures (the only place TensorFlow is imported).

Importing `tasks` registers every task and mixture with seqio.
"""

from tasks import tf_setup  # noqa: F401  (hide GPUs from TF first)
from tasks.registry import register

register()
