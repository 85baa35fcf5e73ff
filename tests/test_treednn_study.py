"""The TreeDNN study without training: a tree's per-branch evals (logged apart at one step)
read back as one record, its analysis of separate models, a shared model and trees (one row
per arm, parameters from the configs, steps matched or said not to be), and the offline
classification dataset it uses."""

import json

import numpy as np
import pytest

from experiments.studies import lookup
from experiments.studies.treednn import analyse
from experiments.study_run import Curve, read_curves
from model_zoo.config import TreeConfig
from model_zoo.flops import param_counts
from tests.train_helpers import TINY

TASKS = {"spell": "flan_wikispell", "words": "flan_demo_first_words",
         "frequency": "flan_wikispell_frequency"}


def _tree(encoder_split, decoder_split, head=True):
    return TINY.replace(tree=TreeConfig(tuple(TASKS), encoder_split=encoder_split,
                                        decoder_split=decoder_split, branch_head=head))


def _curve(name, model, steps, seconds, evals, tasks):
    train = {"step": np.array([steps / 2, steps]), "seconds": np.array([seconds / 2, seconds])}
    return Curve(name, {}, model, 0, 0.0, train, {"step": np.array([steps]), **{
        k: np.array([v]) for k, v in evals.items()}}, tasks)


def _study(separate_steps=100):
    separate = [_curve(f"sep_{b}", TINY, separate_steps, 10.0 + i,
                       {"eval/accuracy": 0.1 * (i + 1), "eval/loss": 3.0 - i}, {"": task})
                for i, (b, task) in enumerate(TASKS.items())]
    trees = [_curve(f"tree_{e}{d}", _tree(e, d, head), 300, 40.0,
                    {f"eval/{b}/{m}": v + 0.01 * e for b in TASKS
                     for m, v in (("accuracy", 0.5), ("loss", 2.0))}, TASKS)
             for e, d, head in ((2, 2, False), (0, 0, True), (1, 1, True))]
    return separate + trees


def test_one_row_per_arm_with_each_datasets_metrics_and_the_params_of_the_configs():
    report = analyse(_study())
    assert [r["arm"] for r in report.rows] == ["separate", "shared", "tree_split_1+1",
                                              "tree_split_0+0"]
    separate, shared, mid, bottom = report.rows
    assert separate["steps"] == 300 and separate["train_seconds"] == pytest.approx(33.0)
    assert [separate[f"accuracy_{b}"] for b in TASKS] == pytest.approx([0.1, 0.2, 0.3])
    assert separate["mean_accuracy"] == pytest.approx(0.2)
    assert separate["params_stored"] == 3 * param_counts(TINY)["stored"]
    assert separate["params_served"] == shared["params_stored"] == shared["params_served"]
    assert mid["params_served"] == separate["params_served"]  # a branch is a whole T5
    assert shared["params_stored"] < mid["params_stored"] < bottom["params_stored"]
    assert bottom["params_stored"] < separate["params_stored"]  # embeddings stay shared
    assert mid["accuracy_words"] == pytest.approx(0.51) and mid["loss_spell"] == pytest.approx(2.01)
    assert "every arm trains 300 steps in all" in " ".join(report.notes)


def test_unmatched_steps_and_missing_separate_models_are_said():
    assert "NOT matched" in " ".join(analyse(_study(separate_steps=300)).notes)
    with pytest.raises(ValueError, match="one separate model per dataset.*flan_wikispell"):
        analyse(_study()[1:])


def test_per_branch_evals_logged_apart_read_as_one_record(tmp_path):
    records = [{"step": 10, "loss": 3.0, "seconds_per_step": 1.0},
               {"step": 20, "loss": 2.0, "seconds_per_step": 0.5},
               {"step": 20, "eval/spell/loss": 1.5, "eval/spell/accuracy": 0.4},
               {"step": 20, "eval/words/loss": 2.5, "eval/words/accuracy": 0.2}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    train, evals = read_curves(str(tmp_path))
    assert list(evals["step"]) == [20] and "loss" not in evals
    assert evals["eval/spell/accuracy"][-1] == 0.4 and evals["eval/words/loss"][-1] == 2.5
    assert list(train["seconds"]) == [5.0, 10.0]  # the first interval compiled: the median
    assert lookup("treednn").sweep == "studies/treednn.gin"


def test_the_frequency_classification_is_balanced_and_labelled_by_bucket():
    from tasks.instruction_tuning import instruction_sources
    from tasks import wikispell

    rows = instruction_sources.wikispell_frequency_rows("validation")
    labels = [r["frequency"] for r in rows]
    assert labels[:4] == ["rare", "common", "rare", "common"]
    assert labels.count("rare") == labels.count("common") > 0
    rare = {r["inputs"] for r in wikispell.examples("validation", bucket="bottom_50")}
    assert all((r["word"] in rare) == (r["frequency"] == "rare") for r in rows)
