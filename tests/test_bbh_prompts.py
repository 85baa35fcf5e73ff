"""BBH prompts: answer-only (direct) exemplars are the cot-prompts' exemplars with their
reasoning removed, written out here by hand from a file in the published layout; the
'codex_outputs' option reads the prompts Suzgun et al. ran; mixtures report their tasks'
unweighted mean. Pure data: no model. With T5POD_BBH_DIR set to a checkout of
suzgunmirac/BIG-Bench-Hard, the published files themselves are checked too."""

import json
import os

import pytest
import seqio

import tasks  # noqa: F401  (registers the tasks)
from tasks.benchmarks import bbh, macro_average
from tasks import settings, settings_scope

# the published layout: canary, "-----", description (snarks has a second paragraph for the
# reasoning), then "Q: ...\nA: Let's think step by step.\n<reasoning> So the answer is X."
PROMPT = """A canary line.
-----
Pick the odd one out.

Some words on how to reason about odd ones out.

Q: Which is odd?
Options:
(A) cat
(B) dog
(C) car
A: Let's think step by step.
Cats and dogs are animals.
A car is not. So the answer is (C).

Q: Odd: 2, 4, 7?
A: Let's think step by step.
2 and 4 are even; 7 is not. So the answer is 7.

Q: List the odd words: red, blue, seven
A: Let's think step by step.
Two colours. So the answer is seven."""

DIRECT = """Pick the odd one out.

Q: Which is odd?
Options:
(A) cat
(B) dog
(C) car
A: (C)

Q: Odd: 2, 4, 7?
A: 7

Q: List the odd words: red, blue, seven
A: seven"""

EXAMPLES = {"examples": [{"input": "Odd: 1, 3, 4?", "target": "4"},
                         {"input": "Which is odd?\nOptions:\n(A) x\n(B) y", "target": "(A)"}]}
TASK = "snarks"


def write(root, prompt=PROMPT, outputs=None):
    (root / "bbh").mkdir(parents=True)
    (root / "cot-prompts").mkdir()
    (root / "bbh" / f"{TASK}.json").write_text(json.dumps(EXAMPLES))
    (root / "cot-prompts" / f"{TASK}.txt").write_text(prompt)
    if outputs is not None:
        path = root / bbh.CODEX_DIRECT.format(task=TASK)
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"canary": "x", "outputs": outputs}))
    return root


def active(root, **values):
    return settings_scope.active(settings.from_mapping({"bbh": {"data_dir": str(root),
                                                                **values}}))


def test_direct_prompts_are_the_exemplars_without_their_reasoning(tmp_path):
    with active(write(tmp_path)):
        direct = bbh.examples(TASK, "_direct")
        cot = bbh.examples(TASK, "_cot")
    assert [r["input"] for r in direct] == [f"{DIRECT}\n\nQ: {e['input']}\nA:"
                                            for e in EXAMPLES["examples"]]
    body = PROMPT.split("-----\n", 1)[1]
    assert [r["input"] for r in cot] == [f"{body}\n\nQ: {e['input']}\nA: Let's think step by "
                                         "step." for e in EXAMPLES["examples"]]
    assert [r["target"] for r in direct] == ["4", "(A)"]


def test_codex_outputs_give_the_prompts_suzgun_et_al_ran(tmp_path):
    ran = "Pick the odd one out.\n\nQ: Which is odd?\nA: (C)\n\nQ: Odd: 2, 4, 7?\nA: 7"
    outputs = [{"input": f"{ran}\n\nQ: {e['input']}\nA:", "target": e["target"]}
               for e in EXAMPLES["examples"]]
    root = write(tmp_path, outputs=outputs)
    with active(root, direct_prompts="codex_outputs"):
        assert [r["input"] for r in bbh.examples(TASK, "_direct")] == [
            o["input"] for o in outputs]
    outputs[1]["input"] = "Another prompt\n\nQ: x\nA:"
    (root / bbh.CODEX_DIRECT.format(task=TASK)).write_text(json.dumps({"outputs": outputs}))
    with active(root, direct_prompts="codex_outputs"), pytest.raises(
            ValueError, match=r"snarks_few_shot_template_0-255000.json: its inputs have 2 "
                              r"different prompts"):
        bbh.examples(TASK, "_direct")


@pytest.mark.parametrize("prompt,match", [
    ("c\n-----\nJust a description.", r"snarks.txt: no exemplar"),
    ("c\n-----\nD.\n\nQ: q?\nA: 7", r"snarks.txt: exemplar 1 \(Q: 'q\?'\) needs \"A: Let's"),
])
def test_a_malformed_cot_prompt_is_refused_naming_the_file(tmp_path, prompt, match):
    with active(write(tmp_path, prompt)), pytest.raises(ValueError, match=match):
        bbh.examples(TASK, "_direct")


def test_settings_are_checked():
    with pytest.raises(ValueError, match=r"direct_prompts='codex' is invalid: expected one of "
                                         r"\('cot_prompts', 'codex_outputs'\)"):
        settings.from_mapping({"bbh": {"direct_prompts": "codex"}})


def test_mixtures_report_the_unweighted_mean_of_their_tasks():
    for name in ("bbh", "bbh_direct", "bbh_cot", "bbh_direct_byte", "bbh_cot_hybrid"):
        tasks_ = [t.name for t in seqio.get_mixture_or_task(name).tasks]
        assert len(tasks_) == 27
        results = {t: {"exact_match": float(i)} for i, t in enumerate(tasks_)}
        assert macro_average.with_average(name, results)[name] == {"exact_match": 13.0}
    plain = {"mmlu_zero_shot_rank": {"accuracy": 50.0}}
    assert macro_average.with_average("mmlu_zero_shot", plain) == plain   # not registered
    with pytest.raises(ValueError, match=r"mixture 'bbh_cot': no 'exact_match' for"):
        macro_average.with_average("bbh_cot", {})


def test_by_task_gives_the_mixture_its_own_row():
    from inference.seqio_evaluator import InferenceEvalConfig, PREFIX, SeqioEvaluator

    class Data:
        config = InferenceEvalConfig("bbh_direct")
        examples = {"bbh_snarks_direct": 3, "bbh_navigate_direct": 5}

    metrics = {f"{PREFIX}bbh_snarks_direct/exact_match": 10.0,
               f"{PREFIX}bbh_navigate_direct/exact_match": 30.0,
               f"{PREFIX}bbh_direct/exact_match": 20.0}
    rows = SeqioEvaluator(Data(), None).by_task(metrics)
    assert rows["bbh_direct"] == {"examples": 8, "exact_match": 20.0}
    assert rows["bbh_snarks_direct"] == {"examples": 3, "exact_match": 10.0}


PUBLISHED = os.environ.get("T5POD_BBH_DIR")
# Suzgun et al.'s direct prompts differ from their cot-prompts here (an exemplar's option,
# a typo), and one snarks input of their outputs is longer than bbh/snarks.json's
DIRECT_DIFFERS = {"date_understanding", "tracking_shuffled_objects_three_objects"}


@pytest.mark.skipif(not PUBLISHED, reason="T5POD_BBH_DIR (a BIG-Bench-Hard checkout) not set")
@pytest.mark.parametrize("direct_prompts", ["cot_prompts", "codex_outputs"])
def test_published_prompts_are_those_suzgun_et_al_ran(direct_prompts):
    outputs = os.path.join(PUBLISHED, "code-davinci-002-outputs")
    for task in bbh.TASKS:
        for prompting, folder in (("_direct", "code-davinci-002-direct"),
                                  ("_cot", "code-davinci-002-cot")):
            if direct_prompts == "cot_prompts" and prompting == "_direct" and (
                    task in DIRECT_DIFFERS):
                continue
            path = os.path.join(outputs, folder, f"{task}_few_shot_template_0-255000.json")
            with open(path, encoding="utf-8") as f:
                ran = {o["input"] for o in json.load(f)["outputs"]}
            with active(PUBLISHED, direct_prompts=direct_prompts):
                ours = {r["input"] for r in bbh.examples(task, prompting)}
            assert len(ours - ran) <= (1 if task == "snarks" else 0), (task, prompting)
