"""seqio.Evaluator through t5pod's callbacks: a task's predict metrics see the generations HF
transformers makes with the same weights, its score metrics the log-likelihoods HF gives;
the train loop's periodic inference eval lands in metrics.jsonl."""

import json

import numpy as np
import pytest
import seqio
import torch

from model_zoo.decoding import DecodeConfig
from inference.seqio_evaluator import InferenceEvalConfig, InferenceEvaluator
from inference.predictor import Predictor
from tasks.metrics import accuracy
from tasks.tf_setup import tf
from tasks.vocabularies import byte_vocabulary
from tests.hf_reference import make_hf_t5
from tests.test_benchmarks import hf_log_likelihood, write_mmlu

ROWS = [("copy: ab", "ab"), ("copy: hello there", "he"), ("reverse: xyz", "zyx")]
TASK = "test_both_metric_kinds_byte"


def _rows(split, shuffle_files=False, seed=None):
    return tf.data.Dataset.from_tensor_slices({"inputs": [r[0] for r in ROWS],
                                               "targets": [r[1] for r in ROWS]})


def mean_score(targets, scores):
    return {"mean_log_likelihood": float(np.mean(scores))}


def generations(targets, predictions):
    return {"predictions": list(predictions)}


@pytest.fixture(scope="module")
def registered():
    if TASK not in seqio.TaskRegistry.names():
        vocab = byte_vocabulary()
        seqio.TaskRegistry.add(
            TASK, source=seqio.FunctionDataSource(_rows, splits=("validation",)),
            preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
            output_features={k: seqio.Feature(vocab, add_eos=True)
                             for k in ("inputs", "targets")},
            metric_fns=[accuracy, mean_score, generations])
    return TASK


def test_evaluator_runs_predict_and_score_metrics_through_t5pod(registered, tmp_path):
    model = make_hf_t5("byt5", seed=5)
    model.save_pretrained(tmp_path)
    predictor = Predictor(str(tmp_path), "data=2", byte=True, decode_config=DecodeConfig(5))
    evaluator = InferenceEvaluator(InferenceEvalConfig(TASK, batch_size=2))  # a short batch
    metrics = evaluator.evaluate(predictor, step=3)[TASK]
    with torch.no_grad():  # HF greedy decoding of the same inputs (start id 0, EOS 1)
        hf_predictions = []
        for text, _ in ROWS:
            ids = model.generate(torch.tensor([[b + 3 for b in text.encode()] + [1]]),
                                 max_new_tokens=5, do_sample=False, num_beams=1,
                                 decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)
            hf_predictions.append(byte_vocabulary().decode(ids[0, 1:].tolist()))
    assert metrics["predictions"] == hf_predictions
    assert metrics["accuracy"] == pytest.approx(
        100 * np.mean([p == t for p, (_, t) in zip(hf_predictions, ROWS, strict=True)]))
    expected = np.mean([hf_log_likelihood(model, x, y) for x, y in ROWS])
    assert metrics["mean_log_likelihood"] == pytest.approx(expected, rel=1e-4)


def test_train_loop_writes_inference_eval_metrics(tmp_path, capsys):
    from tests.test_run_guards import FLAGS
    from tools import train as train_tool

    root = write_mmlu(tmp_path / "mmlu")
    model_dir = tmp_path / "run"
    flags = [
        f"--model_dir={model_dir}", *FLAGS, "--gin.TRAIN_STEPS=2", "--gin.EVAL_EVERY=1",
        "--gin.run.train.eval_feed=None",
        "--gin.run.train.inference_eval=@run.inference_eval()",
        "--gin.run.inference_eval.mixture_or_task_name=mmlu_zero_shot",
        "--gin.run.inference_eval.split=test", "--gin.run.inference_eval.batch_size=8",
        "--gin.run.inference_eval.decode=@model_zoo.DecodeConfig()",
        "--gin.model_zoo.DecodeConfig.max_decode_length=2",
        f"--gin.tasks.mmlu.data_dir='{root}'"]
    summary = train_tool.main(flags)
    metrics = model_dir / "metrics.jsonl"
    records = [json.loads(x) for x in metrics.read_text().splitlines()]
    evals = [r for r in records if any(k.startswith("infer_eval/") for k in r)]
    assert [r["step"] for r in evals] == [1, 2]
    keys = {"infer_eval/mmlu_zero_shot_letter/accuracy", "infer_eval/mmlu_zero_shot_rank/accuracy",
            "infer_eval/mmlu_zero_shot_rank/accuracy_length_normalized"}
    assert keys <= set(evals[-1])
    assert all(0.0 <= evals[-1][k] <= 100.0 for k in keys)
    assert summary["infer_eval/mmlu_zero_shot_rank/accuracy"] == evals[-1][
        "infer_eval/mmlu_zero_shot_rank/accuracy"]

    # A kill during the final inference eval: the rerun at TRAIN_STEPS runs it, and only it.
    final = evals[-1]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records if r is not final))
    capsys.readouterr()
    again = train_tool.main(flags)
    assert "its final infer_eval/ metrics are missing" in capsys.readouterr().err
    rerun = [json.loads(x) for x in metrics.read_text().splitlines()][-1]
    assert rerun == final and again["step"] == 2
    train_tool.main(flags)  # complete: nothing is evaluated again
    assert "missing" not in capsys.readouterr().err
