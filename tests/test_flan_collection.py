"""The Flan 2022 collection read from exported JSONL/Parquet shards: rates, the validation
split, bad files. Flan's own mixing rule is tests/test_flan_rule.py."""

import collections
import gzip
import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import seqio

import tasks  # noqa: F401
from tasks.flan2022 import flan_collection as fc
from tasks import settings, settings_scope
from tasks.feed_config import FeedConfig
from tasks.feeding.host_feed import HostFeed

# (task_source spelling as the exports write it, task_name, examples, file kind)
FIXTURE = [("Flan2021", "flan_big", 40, "jsonl"), ("flan", "flan_small", 10, "jsonl"),
           ("P3", "t0_a", 30, "parquet"), ("NIv2", "niv2_big", 25, "parquet"),
           ("NIv2", "niv2_small", 5, "parquet"), ("CoT", "cot_a", 20, "jsonl.gz"),
           ("Dialog", "dialog_a", 20, "parquet")]
TYPES = ("zs_opt", "fs_opt", "zs_noopt", "fs_noopt")


def _rows(source, name, n):
    return [{"inputs": f"{name} question {i}", "targets": f"{name} answer {i}",
             "task_source": source, "task_name": name, "template_type": TYPES[i % 4],
             "_template_idx": i % 3} for i in range(n)]


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=16)
    else:
        text = "".join(json.dumps(r) + "\n" for r in rows)
        if path.suffix == ".gz":
            with gzip.open(path, "wt") as f:
                f.write(text)
        else:
            path.write_text(text)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = tmp_path_factory.mktemp("flan2022")
    for source, name, n, kind in FIXTURE:
        _write(root / source.lower() / f"{name}-00000-of-00001.{kind}", _rows(source, name, n))
    (root / "README.md").write_text("not a shard")
    return root


@pytest.fixture
def bind():
    """bind(name=value, ...): tasks.flan2022 settings, added to those given before, made
    active for datasets built directly; returns the TaskSettings (for a FeedConfig)."""
    given, scopes = {}, []

    def bind(**values):
        given.update(values)
        value = settings.from_mapping({"flan2022": dict(given)})
        scopes.append(settings_scope.active(value))
        scopes[-1].__enter__()
        return value
    yield bind
    for scope in reversed(scopes):
        scope.__exit__(None, None, None)


def _flan2022():
    return settings_scope.get("flan2022", fc.Flan2022)


def _task_names(name, split, n=None):
    provider = seqio.get_mixture_or_task(name)
    ds = provider.get_dataset(
        {"inputs": 32, "targets": 16}, split=split, shuffle=False, seed=3,
        num_epochs=None if n is not None else 1,
        **({"passthrough_features": ["task_name"]} if name == fc.MIXTURE else {}))
    if n is not None:
        ds = ds.take(n)
    return [ex["task_name"].decode() for ex in ds.as_numpy_iterator()]


def test_mixture_samples_sub_mixtures_at_their_rates(export, bind):
    bind(directory=str(export), validation_fraction=0.05)
    n = 1500
    counts = collections.Counter(name.split("_")[0] for name in _task_names("flan2022",
                                                                            "train", n))
    for sub, p in fc.RATES.items():
        assert abs(counts[sub] - n * p) <= 4 * math.sqrt(n * p * (1 - p)) + 1, (sub, counts)
    # rates are gin-configurable; a rate of 0 leaves a sub-mixture out (its files unread)
    bind(rates={"flan": 1.0, "t0": 0.0, "niv2": 0.0, "cot": 1.0, "dialog": 0.0})
    counts = collections.Counter(name.split("_")[0] for name in _task_names("flan2022",
                                                                            "train", 400))
    assert set(counts) == {"flan", "cot"} and abs(counts["flan"] - 200) < 50, counts


def test_an_export_is_used_as_it_is_and_validation_is_held_out_by_hash(export, bind, tmp_path):
    bind(directory=str(export), validation_fraction=0.2)
    cfg = _flan2022()
    paths = fc.shards(cfg, "flan")
    train = list(fc.examples(cfg, "flan", "train", paths))
    held = list(fc.examples(cfg, "flan", "validation", paths))
    # no second cap: every record is in exactly one split, once
    assert len(train) + len(held) == 50 and 0 < len(held) < 25
    assert not {e["inputs"] for e in held} & {e["inputs"] for e in train}
    assert collections.Counter(_task_names("flan2022_flan", "train")) == collections.Counter(
        e["task_name"] for e in train)
    # the split does not depend on the order or the files of the records
    rows = _rows("flan", "flan_small", 10) + _rows("Flan2021", "flan_big", 40)
    _write(tmp_path / "b.jsonl", rows[::-1][:20])
    _write(tmp_path / "a" / "rest.parquet", rows[::-1][20:])
    bind(directory=str(tmp_path))
    again = fc.examples(_flan2022(), "flan", "validation", fc.shards(_flan2022(), "flan"))
    assert sorted(e["inputs"] for e in again) == sorted(e["inputs"] for e in held)
    # template_type filter: only zero-shot with options
    bind(directory=str(export), template_types=["ZSOpt"], validation_fraction=0.0)
    kept = list(fc.examples(_flan2022(), "dialog", "train", fc.shards(cfg, "dialog")))
    assert len(kept) == 5 and {e["template_type"] for e in kept} == {"zs_opt"}


def test_prefixed_field_names_are_read(tmp_path, bind):
    rows = [{("_" + k if k in ("task_source", "task_name", "template_type") else k): v
             for k, v in r.items()} for r in _rows("CoT", "cot_a", 4)]
    _write(tmp_path / "cot.jsonl", rows)
    _write(tmp_path / "dialog.parquet", [{("_" + k if k != "inputs" and k != "targets" else k): v
                                          for k, v in r.items()}
                                         for r in _rows("Dialog", "dialog_a", 3)])
    bind(directory=str(tmp_path), validation_fraction=0.0)
    for sub, n, name in (("cot", 4, "cot_a"), ("dialog", 3, "dialog_a")):
        got = list(fc.examples(_flan2022(), sub, "train", fc.shards(_flan2022(), sub)))
        assert len(got) == n and {e["task_name"] for e in got} == {name}
        assert [e["template_type"] for e in got] == list(TYPES[:n])


def test_run_feed_packs_at_configured_lengths(export, bind):
    given = bind(directory=str(export), validation_fraction=0.05)
    batch = next(HostFeed(FeedConfig("flan2022", {"inputs": 64, "targets": 32}, 2,
                                     shuffle=False, task_settings=given), 0, 1))
    assert batch["encoder_input_tokens"].shape == (2, 64)
    assert batch["decoder_target_tokens"].shape == (2, 32)
    assert batch["encoder_segment_ids"].max() > 1    # several examples packed per row


def test_malformed_line_names_file_and_line(tmp_path, bind):
    rows = _rows("CoT", "cot_a", 4)
    del rows[2]["targets"]
    _write(tmp_path / "cot.jsonl", rows)
    for sub in ("t0", "niv2", "dialog", "flan"):
        _write(tmp_path / f"{sub}.parquet", _rows({"flan": "Flan2021"}.get(sub, sub), sub, 2))
    bind(directory=str(tmp_path), validation_fraction=0.0)
    with pytest.raises(Exception, match=r"cot.jsonl:3: field 'targets' is missing"):
        _task_names("flan2022_cot", "train")
    rows = _rows("NIv2", "niv2_a", 3)
    rows[1]["inputs"] = None
    _write(tmp_path / "niv2.parquet", rows)
    with pytest.raises(ValueError, match=r"niv2.parquet row 1: field 'inputs' is NoneType"):
        list(fc.examples(_flan2022(), "niv2", "train", [str(tmp_path / "niv2.parquet")]))


def test_bad_exports_fail_before_streaming(tmp_path, bind):
    def shards():
        return fc.shards(_flan2022(), "cot")

    with pytest.raises(ValueError, match="set --gin.FLAN2022_DIR"):
        HostFeed(FeedConfig("flan2022", {"inputs": 64, "targets": 32}, 2), 0, 1)
    bind(directory=str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="absent' does not exist"):
        shards()
    bind(directory=str(tmp_path))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"holds no \*.jsonl.*it has .*notes.txt"):
        shards()
    bad = _rows("CoT", "cot_a", 3)
    bad[1]["task_source"] = "Flan2023"
    _write(tmp_path / "a.parquet", bad)
    with pytest.raises(ValueError, match=r"a.parquet row 1: unknown task_source 'Flan2023'; "
                                         r"valid: Flan2021 \(or flan\), T0 \(or P3\)"):
        shards()
    _write(tmp_path / "a.parquet", [{**r, "targets": 7} for r in _rows("CoT", "c", 2)])
    with pytest.raises(ValueError, match="a.parquet: Parquet column 'targets' is int64"):
        shards()
    _write(tmp_path / "a.parquet", _rows("CoT", "cot_a", 2))
    with pytest.raises(ValueError, match=r"sub-mixture 't0' \(rate 0.32\) has no records.*"
                                         r"\['cot'\].*rates = \{'t0': 0\}"):
        fc.shards(_flan2022(), "t0")
    with pytest.raises(ValueError, match=r"unknown sub-mixture\(s\) \['niv3'\]; valid: "
                                         r"\['flan', 't0', 'niv2', 'cot', 'dialog'\]"):
        bind(rates={"niv3": 0.2})
    with pytest.raises(ValueError, match="unknown template_type 'zero_shot'"):
        bind(rates=None, template_types=["zero_shot"])
    with pytest.raises(ValueError, match=r"caps=\{'niv2': 10\} is read only with "
                                         r"tasks.flan2022.mixing='flan_rule'"):
        bind(template_types=None, caps={"niv2": 10})
    with pytest.raises(ValueError, match=r"mixing='flan' is invalid: expected one of "
                                         r"\('as_exported', 'flan_rule'"):
        bind(caps=None, mixing="flan")
    with pytest.raises(ValueError, match=r"did you mean \['validation_fraction'\]"):
        bind(mixing="as_exported", validation_examples=10)


def test_flan2022_gin_gives_the_papers_lengths_and_binds_the_directory():
    from runner import gin_flags

    run, _ = gin_flags.run_from_gin(
        ["models/t5_1_1/tiny.gin", "mesh/cpu8.gin", "runs/flan2022.gin"],
        ["FLAN2022_DIR = '/data/flan2022'", "INITIAL_CHECKPOINT_PATH = None"])
    assert run.feed.mixture_or_task_name == "flan2022" and run.feed.pack
    assert run.feed.task_feature_lengths == {"inputs": 2048, "targets": 512}
    assert run.eval_feed.split == "validation"
    for feed in (run.feed, run.eval_feed):   # plain values: gin is cleared by now
        cfg = feed.task_settings.flan2022
        assert cfg.directory == "/data/flan2022"
        assert dict(cfg.rates) == fc.RATES and cfg.mixing == "as_exported"
