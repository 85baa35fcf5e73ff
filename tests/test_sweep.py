"""tools.sweep: a 3-member instruction-tuning sweep on a tiny model, resumption, the report,
fine-tuning from a member's checkpoint, and bad input refused before any member runs."""

import csv
import json
import os

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tools import sweep
from experiments.sweep_config import member_name
from training.metrics_log import read_records

# The smallest model and data that still exercise every part of a member.
TINY = {"TRAIN_STEPS": 3, "CHECKPOINT_EVERY": 3, "EVAL_EVERY": 0, "BATCH_SIZE": 8,
        "TASK_FEATURE_LENGTHS": {"inputs": 64, "targets": 16},
        "model_zoo.model.d_model": 32, "model_zoo.model.d_ff": 32,
        "model_zoo.model.num_heads": 2, "model_zoo.model.d_kv": 16,
        "model_zoo.model.num_encoder_layers": 1, "model_zoo.model.num_decoder_layers": 1,
        "model_zoo.model.dropout_rate": 0.0, "model_zoo.model.scan_layers": False,
        "model_zoo.model.mlp_activations": ("relu",),
        "partitioning.mesh.ici": {"data": 8}, "RULES": "data_parallel",
        "run.train.eval_batches": 1, "training.LoopConfig.log_every": 1,
        "tasks.instruction_format.num_shots": 1,
        "tasks.wikispell.train_size": 200, "tasks.wikispell.eval_per_bucket": 10}


def write_sweep(path, members=None, grid=None, bindings=None, heldout=1,
                gin_file="runs/flan_cpu_tiny.gin"):
    lines = [f"sweep.SweepConfig.gin_files = [{gin_file!r}]",
             f"sweep.SweepConfig.bindings = {({**TINY, **(bindings or {})})!r}",
             f"sweep.SweepConfig.heldout_examples = {heldout}"]
    lines.append(f"sweep.SweepConfig.members = {members!r}" if members is not None
                 else f"sweep.SweepConfig.grid = {grid!r}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_three_member_sweep_runs_resumes_and_reports(tmp_path, capsys, monkeypatch):
    import runner.train
    from runner.run import Run

    trained, real_train = [], runner.train.train
    monkeypatch.setattr(runner.train, "train", lambda run, model_dir, **kw: (
        trained.append(isinstance(run, Run)), real_train(run, model_dir, **kw))[1])
    out = tmp_path / "out"
    first = member_name({"tasks.instruction_mixing.weights": {"spelling": 1.0}})
    # Members 1-2 sweep the sub-mixture weights; member 3 fine-tunes from member 1's
    # checkpoint (params only) for 2 steps. All three compile the same programs once.
    members = [{"tasks.instruction_mixing.weights": {"spelling": 1.0}},
               {"tasks.instruction_mixing.weights": {"spelling": 4.0}},
               {"tasks.instruction_mixing.weights": {"spelling": 1.0}, "TRAIN_STEPS": 2,
                "INITIAL_CHECKPOINT_PATH": str(out / first)}]
    path = write_sweep(tmp_path / "s.gin", members=members)
    results = sweep.main([f"--sweep={path}", f"--out={out}"])
    assert len(results) == 3 and trained == [True] * 3   # each member: a Run, one entry point
    dirs = [out / r["member"] for r in results]
    assert dirs[0].name == first

    # Fine-tuning from a checkpoint: params from member 1, fresh optimizer, step 0.
    m1, m3 = read_records(dirs[0]), read_records(dirs[2])
    assert [r["step"] for r in m3 if "loss" in r] == [1, 2]
    # same first batch (same seed and mixture) but not the same params as a fresh start
    assert m3[0]["loss"] != pytest.approx(m1[0]["loss"], abs=1e-6)
    assert [p for p in os.listdir(dirs[2] / "checkpoints") if p.isdigit()] == ["2"]
    state = ocp.PyTreeCheckpointer().restore(str(dirs[2] / "checkpoints" / "2" / "state"))
    assert int(state["step"]) == 2 and int(state["opt_state"][0]["count"]) == 2
    with open(dirs[2] / "checkpoints" / "2" / "input" / "process_0-of-1.json") as f:
        assert json.load(f)["position"] == 2
    start = ocp.PyTreeCheckpointer().restore(str(dirs[0] / "checkpoints" / "3" / "state"))
    assert int(start["opt_state"][0]["count"]) == 3

    # results.csv, the Markdown table and the plot
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["member"] for r in rows] == [d.name for d in dirs]
    for r in rows:
        assert np.isfinite(float(r["eval/loss"])) and 0 <= float(r["heldout/accuracy"]) <= 1
    assert (out / "results.md").read_text().startswith("| member |")
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A second invocation trains nothing: every member is finished.
    lines = {d: len(read_records(d)) for d in dirs}
    capsys.readouterr()
    again = sweep.main([f"--sweep={path}", f"--out={out}"])
    shown = capsys.readouterr()
    assert shown.err.count("is finished; skipped") == 3
    # the CLI's result on stdout is the table it wrote; the library's lines go to stderr
    assert shown.out.strip().startswith((out / "results.md").read_text().strip())
    assert again == results and {d: len(read_records(d)) for d in dirs} == lines


def test_emit_writes_one_launch_script_per_member(tmp_path):
    path = write_sweep(tmp_path / "s.gin", grid={"tasks.instruction_format.seed": [0, 1]},
                       heldout=0)
    sweep.main([f"--sweep={path}", f"--out={tmp_path / 'out'}", "--emit"])
    scripts = sorted(os.listdir(tmp_path / "out" / "launch"))
    assert scripts == ["collect.sh", "seed=0.sh", "seed=1.sh"]
    body = (tmp_path / "out" / "launch" / "seed=1.sh").read_text()
    assert "-m tools.sweep" in body and "--only=seed=1" in body
    assert not (tmp_path / "out" / "seed=0").exists()   # nothing trained


def _jsonl(tmp_path, records):
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return str(path)


JSONL_RUN = {"MIXTURE_OR_TASK_NAME": "flan_jsonl", "HELDOUT_MIXTURE": None,
             "tasks.instruction_jsonl.fields": {"question": "q", "answer": "a"}}


@pytest.mark.parametrize("case,match", [
    ("unknown_parameter", r"has no parameter 'learning_rat'.*did you mean \['learning_rate'\]"),
    ("unknown_macro", r"binds 'BATCH_SIZ'.*did you mean \['BATCH_SIZE'"),
    ("jsonl_missing_field", r"qa.jsonl:2 has no field\(s\) \['a'\]"),
    ("template_absent_field", r"refers to field\(s\) \['questoin'\]"),
    ("extra_misspelled_macro", r"macro TRAIN_STEP is set but nothing reads it.*TRAIN_STEPS"),
    ("second_member_batch", r"member 'BATCH_SIZE=12.*not divisible by the data-parallel"),
])
def test_bad_sweep_input_fails_before_any_member_runs(tmp_path, case, match):
    good = _jsonl(tmp_path, [{"q": f"q{i}", "a": f"a{i}"} for i in range(4)])
    templates = [("Q: {question}", "{answer}")]
    grid = {"tasks.instruction_format.seed": [0, 1]}
    if case == "unknown_parameter":
        grid["training.ScheduleConfig.learning_rat"] = [0.1]
    if case == "unknown_macro":
        grid["BATCH_SIZ"] = [4]
    if case == "jsonl_missing_field":
        good = _jsonl(tmp_path, [{"q": "x", "a": "y"}, {"q": "z"}])
    if case == "template_absent_field":
        templates = [("Q: {question}", "{answer}"), ("{questoin}?", "{answer}")]
    if case == "second_member_batch":  # 12 rows cannot split over the 8 data shards
        grid = {"BATCH_SIZE": [8, 12]}
    extra = ["--gin.TRAIN_STEP=5"] if case == "extra_misspelled_macro" else []
    path = write_sweep(tmp_path / "s.gin", grid=grid, heldout=0, bindings={
        **JSONL_RUN, "tasks.instruction_jsonl.train": good,
        "tasks.instruction_jsonl.templates": templates})
    with pytest.raises((ValueError, KeyError), match=match):
        sweep.main([f"--sweep={path}", f"--out={tmp_path / 'out'}", *extra])
    assert sorted(os.listdir(tmp_path / "out")) == []   # no member started
