"""tools.study: each study on its smallest setting (two members, a few steps) writes its
table, CSV and plot with the fits; the power-law fit against numpy.polyfit; bad names."""

import csv
import math
import os

import numpy as np
import pytest

from experiments.power_law import fit_power_law
from experiments.studies.switch_vs_dense import first_reach
from tools import study

# One eval (at the end): each eval rebuilds the eval feed.
SMALL = ["--gin.TRAIN_STEPS=3", "--gin.EVAL_EVERY=0", "--gin.WARMUP_STEPS=1",
         "--gin.training.LoopConfig.log_every=1", "--gin.BATCH_SIZE=8",
         "--gin.partitioning.mesh.ici={'data': 8}",  # the suite's 8 CPU devices
         "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}",
         "--gin.run.train.eval_batches=1", "--gin.model_zoo.model.scan_layers=False",
         "--gin.model_zoo.model.num_encoder_layers=1",
         "--gin.model_zoo.model.num_decoder_layers=1"]


def run_study(tmp_path, name, members, extra=()):
    out = tmp_path / name
    report = study.main([f"--study={name}", f"--out={out}", *SMALL, *extra]
                        + [f"--only={m}" for m in members])
    for f in ("study.md", "study.csv", "study.png"):
        assert os.path.getsize(out / f) > 0, f
    with open(out / "study.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["member"] for r in table] == [r["member"] for r in report.rows]
    assert len(table) == 2
    return report, table, (out / "study.md").read_text()


def test_switch_vs_dense(tmp_path):
    report, table, md = run_study(
        tmp_path, "switch_vs_dense", ["moe=None", "num_experts=2"],
        ["--gin.model_zoo.model.mlp_activations=('gelu', 'linear')",  # dense = t5_1_1_tiny
         "--gin.model_zoo.model.tie_word_embeddings=False",
         "--gin.model_zoo.MoEConfig.encoder_sparse_step=1",  # an MoE in the one layer
         "--gin.model_zoo.MoEConfig.decoder_sparse_step=1"])
    dense, switch = report.rows
    assert (dense["model"], switch["model"]) == ("dense", "switch-2")
    assert dense["speedup_steps"] == 1.0 and dense["speedup_seconds"] == 1.0
    assert switch["params"] > dense["params"]
    # top-1 routing: the FLOPs of the dense model's MLP plus the router's
    assert switch["train_GFLOPs_per_step"] == pytest.approx(dense["train_GFLOPs_per_step"],
                                                            rel=0.01)
    assert "speedup_steps" in table[0] and "Target" in md


def test_scaling_fits_a_power_law(tmp_path):
    widths = [(32, 64, 8), (64, 128, 16)]
    names = [f"preset_name=t5_1_1_tiny,d_model={d},d_ff={f},d_kv={k}" for d, f, k in widths]
    report, table, md = run_study(tmp_path, "scaling", names)
    fit = report.fits["dense"]["flops"]
    losses = [r["final_eval_loss"] for r in report.rows]
    flops = [r["train_FLOPs"] for r in report.rows]
    assert flops[1] > flops[0] and fit.points == 2
    assert fit(flops) == pytest.approx(losses, rel=1e-9)  # two points: the line through them
    assert f"{fit.b:.4f}" in md and math.isfinite(report.fits["dense"]["params"].b)


def test_precision_logs_the_loss_scale(tmp_path):
    report, table, _ = run_study(tmp_path, "precision", ["dtype=float32,dynamic=False",
                                                         "dtype=float16,dynamic=True"])
    fp32, fp16 = report.rows
    assert fp32["final_loss_scale"] == 1.0 and fp32["eval_loss_vs_fp32"] == 0.0
    # from 2^32 the first steps overflow: skipped, and the scale halves on each
    assert fp16["skipped_steps"] >= 1 and fp16["min_loss_scale"] < 2.0 ** 32
    assert fp16["final_loss_scale"] == fp16["min_loss_scale"]
    assert table[1]["dtype"] == "float16" and fp32["skipped_steps"] == 0


def test_power_law_matches_numpy_polyfit():
    rng = np.random.default_rng(0)
    c = np.geomspace(1e12, 1e18, 7)
    loss = 40.0 * c ** -0.07 * np.exp(rng.normal(0, 0.02, c.shape))
    slope, intercept = np.polyfit(np.log(c), np.log(loss), 1)
    fit = fit_power_law(c, loss)
    assert fit.b == pytest.approx(-slope, rel=1e-9)
    assert fit.a == pytest.approx(np.exp(intercept), rel=1e-9)
    assert 0.9 < fit.r2 <= 1.0 and abs(fit.b - 0.07) < 0.01
    with pytest.raises(ValueError, match="distinct"):
        fit_power_law([1.0, 1.0], [2.0, 3.0])
    with pytest.raises(ValueError, match="> 0"):
        fit_power_law([1.0, 2.0], [0.0, 3.0])


def test_steps_to_a_loss_interpolate_between_evals():
    steps, losses = np.array([10.0, 20.0, 30.0]), np.array([5.0, 4.0, 3.0])
    assert first_reach(steps, losses, 3.5) == pytest.approx(25.0)
    assert first_reach(steps, losses, 6.0) == 10.0
    assert math.isnan(first_reach(steps, losses, 2.0))


def test_unknown_study_lists_the_valid_ones(tmp_path):
    valid = r"\('precision', 'scaling', 'switch_vs_dense', 'treednn'\); did you mean 'scaling'"
    with pytest.raises(ValueError, match=r"'scalin'.*" + valid):
        study.main(["--study=scalin", f"--out={tmp_path}"])
    assert not os.listdir(tmp_path)
    with pytest.raises(ValueError, match="is not a member"):
        study.main(["--study=precision", f"--out={tmp_path / 'p'}", "--only=dtype=float8"])


@pytest.mark.parametrize("name", ["switch_vs_dense", "scaling", "precision", "treednn"])
def test_every_member_of_each_study_builds_a_run(name):
    """The full CPU default of every study parses into complete runs (nothing trains)."""
    import gin

    from runner import gin_flags
    from experiments.studies import STUDIES
    from experiments.sweep_config import read

    cfg = read(gin_flags.resolve_gin_file(STUDIES[name].sweep))
    members = cfg.expand()
    assert len(members) >= 3
    for member in members:
        run, records = gin_flags.run_from_gin(list(cfg.gin_files),
                                              member.gin_bindings(cfg.bindings))
        assert run.eval_feed is not None
        if name != "treednn":   # treednn compares the final evals only (eval_every 0: the end)
            assert run.loop.eval_every > 0
        gin.parse_config(records["config.gin"])   # the config the run was built from
        try:
            for key, value in member.bindings:
                assert gin.query_parameter(key if "." in key else f"%{key}") == value
        finally:
            gin.clear_config()
