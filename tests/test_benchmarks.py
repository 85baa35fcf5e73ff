"""MMLU and BBH from tiny files in their published formats, written here: rank classification
agrees with per-option log-likelihoods from HF transformers on the same weights (with and
without length normalisation), generated letters and chains of thought are scored as
published, and malformed files fail naming the file and line or example."""

import csv
import json

import numpy as np
import pytest
import torch

from model_zoo import preset
from model_zoo.config import ByteEncoderConfig
from model_zoo.decoding import DecodeConfig
from runner import gin_flags
from inference.seqio_evaluator import InferenceEvalConfig, InferenceEvaluator
from inference.predictor import Predictor
from inference.seqio_callbacks import predict_fn, score_fn
from tasks.benchmarks import bbh, mmlu, mmlu_files
from tasks import settings_scope
from tasks.benchmarks import rank_classification as rank
from tasks.registry import default_sentencepiece
from tests.hf_reference import make_hf_t5

# subject -> (dev rows, test rows): question, A, B, C, D, answer; commas, quotes, a newline
SUBJECTS = {
    "college_biology": ([[f"Dev {i}?", "x", "yy", "zzz", "w", "ABCD"[i % 4]] for i in range(5)],
                        [["Which, of these, is \"alive\"?", "a cat", "rock", "an old chair",
                          "sea", "A"],
                         ["Cells\nhave?", "walls sometimes", "no", "DNA", "wheels", "C"]]),
    "astronomy": ([[f"Star {i}?", "s", "t", "u", "v", "ABCD"[(i + 1) % 4]] for i in range(5)],
                  [["Closest star?", "the Sun", "Vega", "Proxima Centauri b", "Sirius", "A"],
                   ["Planets?", "8", "nine", "ten or so", "7", "A"]]),
}


def gin_settings(files, bindings):
    """The task settings the gin files give, active while the data is read (as tools.eval)."""
    return settings_scope.active(gin_flags.task_settings_from_gin(files, bindings))


def write_mmlu(root, subjects=SUBJECTS):
    for split, pick in (("dev", 0), ("test", 1)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for subject, rows in subjects.items():
            with open(root / split / f"{subject}_{split}.csv", "w", newline="") as f:
                csv.writer(f).writerows(rows[pick])
    return root


def expected_prompt(subject, row, shots=()):
    def block(r):
        return f"{r[0]}\nA. {r[1]}\nB. {r[2]}\nC. {r[3]}\nD. {r[4]}\nAnswer:"
    head = ("The following are multiple choice questions (with answers) about  "
            f"{subject.replace('_', ' ')}.\n\n")   # two spaces, as evaluate_flan.py
    return head + "".join(f"{block(s)} {s[5]}\n\n" for s in shots) + block(row)


@pytest.fixture(scope="module")
def hf_model_and_predictor(tmp_path_factory):
    path = tmp_path_factory.mktemp("byt5")
    model = make_hf_t5("byt5", seed=3)
    model.save_pretrained(path)
    return model, Predictor(str(path), "data=1", byte=True, decode_config=DecodeConfig(4))


def hf_log_likelihoods(model, text: str, targets: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Summed log p(target | text) of each target from HF T5 over ByT5 ids (byte + 3,
    EOS = 1), in one batch; and each target's length in tokens."""
    enc = [b + 3 for b in text.encode()] + [1]
    labels = [[b + 3 for b in t.encode()] + [1] for t in targets]
    width = max(map(len, labels))
    padded = torch.tensor([row + [0] * (width - len(row)) for row in labels])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([enc] * len(targets)),
                       decoder_input_ids=torch.nn.functional.pad(padded, (1, 0))[:, :-1]).logits
    picked = torch.log_softmax(logits.double(), -1).gather(-1, padded[..., None])[..., 0]
    sums = torch.where(padded > 0, picked, 0.0).sum(-1).numpy()
    return sums, np.array([len(row) for row in labels])


def hf_first_step(model, text: str, targets: list[str]) -> np.ndarray:
    """log p(first token of each target) at HF T5's first decoder step (evaluate_flan.py's
    logits over "A".."D", normalised over the vocabulary)."""
    enc = torch.tensor([[b + 3 for b in text.encode()] + [1]])
    with torch.no_grad():
        logits = model(input_ids=enc, decoder_input_ids=torch.zeros((1, 1), dtype=torch.long)
                       ).logits[0, 0]
    log_probs = torch.log_softmax(logits.double(), -1)
    return np.array([float(log_probs[t.encode()[0] + 3]) for t in targets])


def hf_log_likelihood(model, text: str, target: str) -> float:
    return float(hf_log_likelihoods(model, text, [target])[0][0])


def run_task(name, predictor, split="test"):
    evaluator = InferenceEvaluator(InferenceEvalConfig(name, split, batch_size=8))
    metrics, outputs = evaluator.evaluator.evaluate(
        compute_metrics=True, predict_fn=predict_fn(predictor, 8),
        score_fn=score_fn(predictor, 8))
    task_ds = evaluator.evaluator.cached_task_datasets[name]
    return metrics.result()[name], outputs[name], list(task_ds.as_numpy_iterator())


@pytest.mark.parametrize("shots,choices,scoring", [("zero_shot", "options", "sequence"),
                                                    ("five_shot", "letters", "first_token")])
def test_mmlu_rank_classification_is_the_argmax_of_hf_log_likelihoods(
        hf_model_and_predictor, tmp_path, shots, choices, scoring):
    import seqio

    model, predictor = hf_model_and_predictor
    root = write_mmlu(tmp_path / "mmlu")
    name = f"mmlu_{shots}_rank_byte"
    with gin_settings(["runs/eval_mmlu.gin"],
                      [f"MMLU_DIR = '{root}'", f"tasks.mmlu.rank_choices = '{choices}'",
                       f"tasks.mmlu.scoring = '{scoring}'"]):
        metrics, outputs, rows = run_task(name, predictor)
    scores = outputs[seqio.metrics.ModelOutputType.SCORE]
    targets = [rank.postprocess(None, example=r, is_target=True) for r in rows]
    questions = [(s, r) for s in sorted(SUBJECTS) for r in SUBJECTS[s][1]]
    assert len(rows) == 4 * len(questions)
    first_subject, first = questions[0]
    shot_rows = SUBJECTS[first_subject][0] if shots == "five_shot" else ()
    assert rows[0]["inputs_pretokenized"].decode() == expected_prompt(first_subject, first,
                                                                      shot_rows)
    hf, hf_scores = {False: [], True: []}, []
    for subject, row in questions:
        text = expected_prompt(subject, row, SUBJECTS[subject][0] if shots == "five_shot"
                               else ())
        options = row[1:5] if choices == "options" else ["A", "B", "C", "D"]
        if scoring == "first_token":   # evaluate_flan.py: argmax of the first step's logits
            sums, lengths = hf_first_step(model, text, options), np.ones(4)
        else:
            sums, lengths = hf_log_likelihoods(model, text, options)
        hf_scores.extend(sums)
        hf[False].append(int(np.argmax(sums)))
        hf[True].append(int(np.argmax(sums / lengths)))
    np.testing.assert_allclose(scores, hf_scores, rtol=1e-4, atol=1e-3)
    answers = ["ABCD".index(r[5]) for _, r in questions]
    for normalize, key in ((False, "accuracy"), (True, "accuracy_length_normalized")):
        picked = rank.rank_predictions(targets, scores, normalize)
        assert [picked[i][0] for i in range(len(questions))] == hf[normalize]
        assert metrics[key] == pytest.approx(
            100 * np.mean(np.array(hf[normalize]) == answers))
    if choices == "options":  # the options differ in length, so normalising changes picks
        assert hf[False] != hf[True]


class AnswerFromInput:
    """A stand-in model: generates the text `answer(input text)` in ByT5 ids."""

    def __init__(self, answer):
        self.answer = answer

    def predict_tokens(self, encoder_input_tokens, byte_encoder_input_tokens=None):
        out = np.zeros((len(encoder_input_tokens), 300), np.int32)
        for i, row in enumerate(encoder_input_tokens):
            text = bytes(int(t) - 3 for t in row if t > 2).decode()
            ids = [b + 3 for b in self.answer(text).encode()] + [1] if text else [1]
            out[i, :len(ids)] = ids
        return out

    def score_tokens(self, *args):
        raise AssertionError("not a score task")


def test_mmlu_generated_letter_is_scored_by_its_letter(tmp_path):
    root = write_mmlu(tmp_path / "mmlu")
    # right on the questions that end in "?" with a space before the options' "A.", etc.
    replies = {"Closest star?": " A. the Sun", "Planets?": "(B)", "Cells\nhave?": "C",
               "Which, of these, is \"alive\"?": "Dunno"}

    def answer(text):
        question = text.rsplit("\n\n", 1)[-1].split("\nA. ")[0]
        return replies[question]

    with gin_settings(["runs/eval_mmlu.gin"], [f"MMLU_DIR = '{root}'"]):
        metrics, _, rows = run_task("mmlu_zero_shot_letter_byte", AnswerFromInput(answer))
    assert len(rows) == 4 and metrics == {"accuracy": 50.0}  # Sun and Cells right
    assert [mmlu.letter_of(t) for t in (" A. the Sun", "(B)", "C", "Dunno", "Bb")] == [
        "A", "B", "C", "Dunno", "Bb"]


BOOL = {"examples": [{"input": "not True is", "target": "False"},
                     {"input": "True and True is", "target": "True"},
                     {"input": "False or False is", "target": "False"}]}
COT = ("A canary line.\n-----\nEvaluate the result of a random Boolean expression.\n\n"
       "Q: True is\nA: Let's think step by step.\nIt is True. So the answer is True.")


def write_bbh(root, examples=BOOL, prompt=COT):
    (root / "bbh").mkdir(parents=True)
    (root / "cot-prompts").mkdir()
    (root / "bbh" / "boolean_expressions.json").write_text(
        examples if isinstance(examples, str) else json.dumps(examples, indent=1))
    (root / "cot-prompts" / "boolean_expressions.txt").write_text(prompt)
    return root


def test_bbh_exact_match_after_the_chain_of_thought_or_the_direct_answer(tmp_path):
    root = write_bbh(tmp_path / "bbh_data")
    replies = {"not True is": "not True = False. So the answer is False.",
               "True and True is": "Both hold. So the answer is True",
               "False or False is": "So the answer is True."}

    def answer(text):
        return replies[text.rsplit("Q: ", 1)[1].split("\nA:")[0]]

    with gin_settings(["runs/eval_bbh.gin"], [f"BBH_DIR = '{root}'"]):
        metrics, _, rows = run_task("bbh_boolean_expressions_cot_byte", AnswerFromInput(answer))
        direct, _, direct_rows = run_task("bbh_boolean_expressions_direct_byte",
                                          AnswerFromInput(lambda t: " False "))
        zero, _, zero_rows = run_task("bbh_boolean_expressions_byte",
                                      AnswerFromInput(lambda t: "False"))
    assert rows[0]["inputs_pretokenized"].decode() == (
        "Evaluate the result of a random Boolean expression.\n\n"
        "Q: True is\nA: Let's think step by step.\nIt is True. So the answer is True.\n\n"
        "Q: not True is\nA: Let's think step by step.")
    assert metrics["exact_match"] == pytest.approx(200 / 3)
    assert direct_rows[0]["inputs_pretokenized"].decode() == (
        "Evaluate the result of a random Boolean expression.\n\nQ: True is\nA: True\n\n"
        "Q: not True is\nA:")
    assert direct["exact_match"] == pytest.approx(200 / 3)
    assert zero_rows[1]["inputs_pretokenized"].decode() == "True and True is"
    assert zero["exact_match"] == pytest.approx(200 / 3)


@pytest.mark.parametrize("row,match", [
    (["Q?", "a", "b", "c", "D"], r"anatomy_test.csv:3: 5 columns, expected 6"),
    (["Q?", "a", "b", "c", "d", "E"], r"anatomy_test.csv:3: answer 'E' is not one of"),
])
def test_malformed_mmlu_csv_fails_naming_file_and_line(tmp_path, row, match):
    good = ["Fine?", "a", "b", "c", "d", "B"]
    root = write_mmlu(tmp_path / "mmlu", {"anatomy": ([good] * 5, [good, good, row])})
    with pytest.raises(ValueError, match=match):
        mmlu_files.read_csv(str(root / "test" / "anatomy_test.csv"))
    with gin_settings(["runs/eval_mmlu.gin"], [f"MMLU_DIR = '{root}'"]):
        with pytest.raises(ValueError, match=match):  # before any model is touched
            InferenceEvaluator(InferenceEvalConfig("mmlu_zero_shot_byte", "test"))


@pytest.mark.parametrize("text,match", [
    ('{"examples": [\n {"input": "a", "target": "b"},\n {"input": "c" "target": "d"}]}',
     r"boolean_expressions.json:3: not valid JSON"),
    ('{"examples": [{"input": "a", "target": "b"}, {"input": "c"}]}',
     r"boolean_expressions.json: examples\[1\] must be an object with string"),
    ('{"rows": []}', r'non-empty list "examples"'),
])
def test_malformed_bbh_json_fails_naming_file_and_line(tmp_path, text, match):
    root = write_bbh(tmp_path / "bbh_data", examples=text)
    with pytest.raises(ValueError, match=match):
        bbh.read_examples(str(root / "bbh" / "boolean_expressions.json"))


def test_unset_data_dirs_say_which_macro(tmp_path):
    with gin_settings(["runs/eval_mmlu.gin", "runs/eval_bbh.gin"], []):
        with pytest.raises(ValueError, match="MMLU_DIR"):
            InferenceEvaluator(InferenceEvalConfig("mmlu_zero_shot", "test"))
        with pytest.raises(ValueError, match="BBH_DIR"):
            InferenceEvaluator(InferenceEvalConfig("bbh_snarks", "test"))
        with pytest.raises(ValueError, match=r"split='validation' is invalid: expected one of "
                           r"\('test',\) \(the splits of task 'bbh_snarks'\)"):
            InferenceEvaluator(InferenceEvalConfig("bbh_snarks", "validation"))


HYBRID = preset("t5_1_1_tiny", vocab_size=2112, d_model=32, d_ff=64, num_heads=4, d_kv=8,
                dropout_rate=0.0, byte_encoder=ByteEncoderConfig(
                    d_model=24, d_ff=48, num_heads=2, d_kv=12, num_layers=1))


@pytest.fixture(scope="module")
def hybrid_model():
    """A random tiny hybrid model, as the train loop's inference eval sees it."""
    import jax

    import partitioning
    from model_zoo import EncoderDecoder
    from model_zoo.model_def import init_params, model_def
    from inference.core import Inference

    def make(rngs):
        return EncoderDecoder(HYBRID, rngs=rngs)

    mdef, params = model_def(make), jax.jit(lambda: init_params(make, 0))()
    mesh = partitioning.make_mesh(partitioning.MeshConfig(ici={"data": 1}),
                                  devices=jax.devices()[:1])
    return mdef, params, Inference(mdef, params, HYBRID, mesh,
                                   partitioning.rule_set("data_parallel"), DecodeConfig(2),
                                   vocab=default_sentencepiece())


def test_hybrid_mmlu_scores_each_option_on_the_prompts_tokens_and_bytes(hybrid_model, tmp_path):
    import jax
    import seqio

    from model_zoo.scoring import sequence_log_likelihood

    mdef, params, inference = hybrid_model
    root = write_mmlu(tmp_path / "mmlu")
    with gin_settings(["runs/eval_mmlu.gin"],
                         [f"MMLU_DIR = '{root}'", "tasks.mmlu.rank_choices = 'options'",
                          "tasks.mmlu.scoring = 'sequence'"]):
        metrics, outputs, rows = run_task("mmlu_zero_shot_rank_hybrid", inference)
    scores = outputs[seqio.metrics.ModelOutputType.SCORE]
    spm = default_sentencepiece()
    tokens, byte_ids, targets = [], [], []  # ids built here from the vocabularies, not by seqio
    for subject in sorted(SUBJECTS):
        for row in SUBJECTS[subject][1]:
            text = expected_prompt(subject, row)
            for option in row[1:5]:
                tokens.append(spm.encode(text) + [1])
                byte_ids.append([b + 3 for b in text.encode()] + [1])
                targets.append(spm.encode(option) + [1])

    def pad(rows):
        width = max(map(len, rows))
        return np.array([r + [0] * (width - len(r)) for r in rows], np.int32)

    score = jax.jit(lambda p, *ids: sequence_log_likelihood(mdef.bind(p), *ids))
    tokens, byte_ids, targets = pad(tokens), pad(byte_ids), pad(targets)
    expected = np.asarray(score(params, tokens, targets, byte_ids))
    # the bytes count: another text's give other scores
    other = np.asarray(score(params, tokens, targets, np.roll(byte_ids, 4, axis=0)))
    assert np.abs(other - expected).max() > 1e-4
    assert len(rows) == len(expected) == 16
    assert rows[0]["byte_inputs_pretokenized"].decode() == rows[0][
        "inputs_pretokenized"].decode()
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)
    assert set(metrics) == {"accuracy", "accuracy_length_normalized"}


def test_plain_benchmarks_are_refused_for_a_hybrid_model_naming_the_hybrid_variant(
        hybrid_model):
    import dataclasses

    import seqio

    from partitioning import MeshConfig
    from inference.task_evaluator import check_vocabulary
    from runner.run import Run
    from tasks.feed_config import FeedConfig
    from tasks.hybrid_features import with_bytes
    from tasks.registry import DEMO_SOURCE, features
    from training.loop import LoopConfig
    from training.trainer import TrainConfig

    _, _, inference = hybrid_model
    for name in ("mmlu_zero_shot", "mmlu_zero_shot_byte"):
        task = seqio.get_mixture_or_task(name).tasks[1]
        with pytest.raises(ValueError, match=r"'mmlu_zero_shot(_byte)?' has no byte_inputs, but "
                           r"the model reads them \(ModelConfig.byte_encoder set\); use "
                           r"'mmlu_zero_shot_hybrid' instead, or a model without a byte encoder"):
            check_vocabulary(task, inference, name)  # tools.eval
    with pytest.raises(ValueError, match=r"use 'bbh_cot_hybrid' instead"):
        InferenceEvaluator(InferenceEvalConfig("bbh_cot", "test"), hybrid_model=True)
    if "test_demo_hybrid" not in seqio.TaskRegistry.names():  # a hybrid run's training task
        seqio.TaskRegistry.add("test_demo_hybrid", source=DEMO_SOURCE, preprocessors=[],
                               output_features=with_bytes(features(default_sentencepiece())))
    lengths = {"inputs": 32, "byte_inputs": 64, "targets": 8}
    hybrid = Run(model=HYBRID, mesh=MeshConfig(), trainer=TrainConfig(batch_size=8),
                 loop=LoopConfig(train_steps=2), feed=FeedConfig("test_demo_hybrid", lengths, 8),
                 inference_eval=InferenceEvalConfig("mmlu_zero_shot_hybrid", "test"))
    with pytest.raises(ValueError, match=r"'mmlu_five_shot' has no byte_inputs.* use "
                       r"'mmlu_five_shot_hybrid' instead"):
        dataclasses.replace(hybrid, inference_eval=InferenceEvalConfig("mmlu_five_shot"))
    plain = HYBRID.replace(byte_encoder=None)
    with pytest.raises(ValueError, match=r"'bbh_hybrid' provides byte_inputs \(a hybrid task\), "
                       r"but the model has no byte encoder \(ModelConfig.byte_encoder=None\); "
                       r"use 'bbh' or 'bbh_byte' instead, or a model with a byte_encoder"):
        dataclasses.replace(hybrid, model=plain, feed=FeedConfig(
            "demo_span_corruption", {"inputs": 32, "targets": 8}, 8),
            inference_eval=InferenceEvalConfig("bbh_hybrid", "test"))
