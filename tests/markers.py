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

# The slowest files, measured (2026-12-06, this 2-core CI-like machine, -n 2 --dist loadfile,
# seconds per file, setup included): test_runs 218 (CLI trainings killed and resumed),
# test_object_stores 202 (moto and fake-gcs servers), test_studies 157, test_bench 156,
# test_tree_training 111, test_kl_norm 86 (a sweep), test_sweep 78, test_wikispell_pretrained
# 59, test_cache 56 (Beam), test_tree_meshes 50, test_run_guards 49. Next below, in
# `make test-fast`: test_train_meshes 44, test_disk_full 15-39, test_precision 36.
SLOW = frozenset({
    "test_runs.py", "test_object_stores.py", "test_studies.py", "test_bench.py",
    "test_tree_training.py", "test_kl_norm.py", "test_sweep.py", "test_wikispell_pretrained.py",
    "test_cache.py", "test_tree_meshes.py", "test_run_guards.py",
})

MARKERS = {"parity": PARITY, "multihost": MULTIHOST, "slow": SLOW}
