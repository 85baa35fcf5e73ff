"""Which test files carry which marker (pyproject.toml's [tool.pytest.ini_options] markers
say what each means); conftest.py marks every test of a file from these sets, so no test
file names its own. tests/test_markers.py keeps PARITY and MULTIHOST equal to what the files
import and start, and every name here an existing file.

`make test` runs every file; `make test-fast` leaves out all three sets.
"""

# Import torch or transformers (directly or through tests/hf_reference.py): HF reference
# models, and the files cannot even be collected without them.
PARITY = frozenset({
    "test_benchmarks.py", "test_byt5.py", "test_checkpoint_sources.py", "test_config.py",
    "test_decoding.py", "test_ffn_activations.py", "test_fp16_guards.py", "test_hf_eras.py",
    "test_hf_parity.py", "test_hybrid.py", "test_inference_eval.py", "test_moe_hf.py",
    "test_object_stores.py", "test_relative_position.py", "test_sharded_inference.py",
    "test_t5x.py", "test_tools.py", "test_tree_export.py",
})

# Start a real multi-process JAX run (tests/multihost_worker.py: jax.distributed over gloo).
MULTIHOST = frozenset({"test_multihost.py", "test_multihost_files.py",
                       "test_sharded_inference.py"})

# The slowest files, by what they do: CLI trainings in subprocesses, object-store servers,
# Beam pipelines, sweeps and studies of several trainings, WikiSpell runs.
SLOW = frozenset({
    "test_runs.py", "test_run_guards.py", "test_disk_full.py", "test_object_stores.py",
    "test_studies.py", "test_sweep.py", "test_treednn_study.py", "test_wikispell.py",
    "test_wikispell_pretrained.py", "test_cache.py", "test_feed_resume.py",
})

MARKERS = {"parity": PARITY, "multihost": MULTIHOST, "slow": SLOW}
