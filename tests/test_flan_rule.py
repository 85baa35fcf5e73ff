"""Flan 2022's mixing rule (tasks.flan2022.mixing = 'flan_rule') on an export of every example:
each (task, template type) group's rate written out per example from Flan's mixtures, and
cross-checked with seqio's nested-mixture rates as Flan registers them; the thinning that
reproduces the rates in one stream. Pure data: no model."""

import collections
import json

import pytest
import seqio

import tasks  # noqa: F401
from tasks.flan2022 import flan_collection as fc
from tasks.flan2022 import flan_rule
from tasks import settings, settings_scope

# (task_source, task_name, template_type, examples): an uncapped dump
GROUPS = [("Flan2021", "anli", "zs_opt", 30), ("Flan2021", "anli", "fs_opt", 8),
          ("Flan2021", "anli", "zs_noopt", 4), ("Flan2021", "anli", "fs_noopt", 3),
          ("Flan2021", "boolq", "zs_opt", 5), ("Flan2021", "boolq", "fs_opt", 12),
          ("Flan2021", "boolq", "zs_noopt", 6),
          ("CoT", "cot_gsm8k", "zs_opt", 12), ("CoT", "cot_gsm8k", "fs_opt", 4),
          ("CoT", "cot_gsm8k_ii", "zs_opt", 6), ("CoT", "cot_gsm8k_ii", "fs_opt", 2),
          ("CoT", "cot_esnli", "zs_opt", 3), ("CoT", "cot_esnli", "zs_noopt", 2)]
CAP = 10

# Flan's rate of each group, written out: flan2021_submix = 4 template types x 1/4 of
# (tasks at min(cap, n)); cot_submix = zs_opt, fs_opt x 1/2 of (CoT at 1, CoT-II at 0.3, each
# tasks at min(cap, n)); CoT has no NoOpt mixtures
EXPECTED = {
    "flan": {("anli", "zs_opt"): 0.25 * 10 / (10 + 5), ("boolq", "zs_opt"): 0.25 * 5 / 15,
             ("anli", "fs_opt"): 0.25 * 8 / (8 + 10), ("boolq", "fs_opt"): 0.25 * 10 / 18,
             ("anli", "zs_noopt"): 0.25 * 4 / (4 + 6), ("boolq", "zs_noopt"): 0.25 * 6 / 10,
             ("anli", "fs_noopt"): 0.25 * 3 / 3},
    "cot": {("cot_gsm8k", "zs_opt"): 0.5 * (1 / 1.3) * 10 / (10 + 3),
            ("cot_esnli", "zs_opt"): 0.5 * (1 / 1.3) * 3 / 13,
            ("cot_gsm8k_ii", "zs_opt"): 0.5 * (0.3 / 1.3) * 6 / 6,
            ("cot_gsm8k", "fs_opt"): 0.5 * (1 / 1.3) * 4 / 4,
            ("cot_gsm8k_ii", "fs_opt"): 0.5 * (0.3 / 1.3) * 2 / 2},
}


def counts(sub):
    source = {"flan": "Flan2021", "cot": "CoT"}[sub]
    return {(name, t): n for s, name, t, n in GROUPS if s == source}


@pytest.mark.parametrize("sub", ["flan", "cot"])
def test_each_groups_rate_is_flans(sub):
    got = flan_rule.rates(sub, counts(sub), CAP)
    assert got.keys() == EXPECTED[sub].keys()   # cot's zs_noopt group: weight 0
    for group, p in EXPECTED[sub].items():
        assert got[group] == pytest.approx(p), group
    assert sum(got.values()) == pytest.approx(1.0)


def test_cot_rates_match_seqios_nested_mixtures_as_flan_registers_them():
    def source(split, shuffle_files=False, seed=None):
        raise AssertionError("never read")

    def task(name):
        if name not in seqio.TaskRegistry.names():
            seqio.TaskRegistry.add(name, source=seqio.FunctionDataSource(
                source, splits=("train",)), preprocessors=[], output_features={})
        return name

    def mixture(name, members):
        if name not in seqio.MixtureRegistry.names():
            seqio.MixtureRegistry.add(name, members)
        return name

    prefix = "test_flanrule_cot"
    by_type = []
    for t in ("zs_opt", "fs_opt"):
        kinds = []
        for kind, rate in (("main", 1), ("ii", 0.3)):
            members = [(task(f"{prefix}_{name}_{t}"), min(CAP, n))
                       for (name, tt), n in counts("cot").items()
                       if tt == t and flan_rule.kind("cot", name) == kind]
            kinds.append((mixture(f"{prefix}_{kind}_{t}", members), rate))
        by_type.append((mixture(f"{prefix}_{t}", kinds), 1))
    top = seqio.get_mixture_or_task(mixture(prefix, by_type))
    got = flan_rule.rates("cot", counts("cot"), CAP)
    for (name, t), p in got.items():
        task_ = seqio.get_mixture_or_task(f"{prefix}_{name}_{t}")
        assert top.get_rate(task_) / top.total_rate == pytest.approx(p), (name, t)


@pytest.fixture
def dump(tmp_path):
    rows = [{"inputs": f"{name} {t} question {i}", "targets": f"answer {i}",
             "task_source": source, "task_name": name, "template_type": t}
            for source, name, t, n in GROUPS for i in range(n)]
    (tmp_path / "dump.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def use(**values):
    return settings_scope.active(settings.from_mapping({"flan2022": values}))


def test_thinning_keeps_each_group_at_its_rate_and_every_example_takes_turns(dump):
    with use(directory=str(dump), mixing="flan_rule", caps=CAP, validation_fraction=0.0):
        config = settings_scope.get("flan2022", fc.Flan2022)
        paths = fc.shards(config, "cot")
        keep = fc.keep_probabilities(config, "cot", paths)
        n = counts("cot")
        expected_share = {g: keep[g] * n[g] for g in keep}
        total = sum(expected_share.values())
        for g, p in EXPECTED["cot"].items():   # in expectation, exactly Flan's rates
            assert expected_share[g] / total == pytest.approx(p), g
        assert max(keep.values()) == 1.0
        epochs = 300
        seen, inputs = collections.Counter(), collections.defaultdict(set)
        for epoch in range(epochs):
            for e in fc.examples(config, "cot", "train", paths, epoch=epoch):
                seen[e["task_name"], e["template_type"]] += 1
                inputs[e["task_name"], e["template_type"]].add(e["inputs"])
    for g in EXPECTED["cot"]:
        mean, sd = epochs * keep[g] * n[g], (epochs * n[g] * keep[g] * (1 - keep[g])) ** 0.5
        assert abs(seen[g] - mean) <= 4 * sd + 1, (g, seen[g], mean)
        assert len(inputs[g]) == n[g]   # a capped group's examples all take turns
    assert ("cot_esnli", "zs_noopt") not in seen


def test_epochs_through_tf_data_draw_afresh_and_validation_stays_put(dump):
    with use(directory=str(dump), mixing="flan_rule", caps=CAP, validation_fraction=0.3):
        ds = fc._dataset_fn("flan")("train", shuffle_files=False, seed=1)
        rows = [x["inputs"] for x in ds.repeat(2).as_numpy_iterator()]
        config = settings_scope.get("flan2022", fc.Flan2022)
        paths = fc.shards(config, "flan")
        first = [e["inputs"].encode() for e in fc.examples(config, "flan", "train", paths, 0, 1)]
        second = [e["inputs"].encode() for e in fc.examples(config, "flan", "train", paths, 1, 1)]
        held = [list(fc.examples(config, "flan", "validation", paths, epoch)) for epoch in (0, 5)]
    assert rows == first + second and first != second
    assert held[0] == held[1] and held[0]
    assert not {e["inputs"].encode() for e in held[0]} & set(first + second)


def test_flan_rule_needs_template_types(tmp_path):
    row = {"inputs": "q", "targets": "a", "task_source": "CoT", "task_name": "cot_x"}
    (tmp_path / "x.jsonl").write_text(json.dumps({**row, "template_type": "zs_opt"}) + "\n"
                                      + json.dumps(row) + "\n")
    with use(directory=str(tmp_path), mixing="flan_rule", validation_fraction=0.0):
        config = settings_scope.get("flan2022", fc.Flan2022)
        with pytest.raises(ValueError, match=r"x.jsonl:2: the record has no template_type, so "
                                             r"tasks.flan2022.mixing='flan_rule' weights"):
            fc.keep_probabilities(config, "cot", fc.shards(config, "cot"))
