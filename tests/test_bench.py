"""tools.bench runs on CPU with synthetic batches and prints one JSON line per preset."""

import json

import pytest

from tools import bench


def test_bench_prints_json_lines(capsys, tmp_path):
    out = tmp_path / "bench.jsonl"
    bench.main(["--preset", "t5_1_1_tiny", "--batch", "8", "--inputs", "16", "--targets", "8",
                "--mesh", "data=2,tensor=4", "--rules", "tensor", "--steps", "1", "--warmup",
                "0", "--out", str(out)])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["mesh"] == {"data": 2, "fsdp": 1, "tensor": 4, "expert": 1}
    assert line["step_time_s"] > 0 and line["tokens_per_s"] > 0 and line["mfu"] is None
    assert json.loads(out.read_text()) == line


def test_bench_data_mode_reports_pipeline_throughput(capsys):
    bench.main(["--data", "demo_span_corruption", "--batch", "4", "--inputs", "64",
                "--targets", "16", "--steps", "3"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["data"] == "demo_span_corruption" and line["batches"] == 3
    assert line["examples_per_s"] > 0 and line["tokens_per_s"] > line["examples_per_s"]


def test_bench_loop_mode_reports_the_loop_against_the_bare_step(capsys):
    bench.main(["--loop", "demo_span_corruption", "--batch", "4", "--inputs", "32",
                "--targets", "8", "--mesh", "data=2", "--steps", "2", "--warmup", "0"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["mode"] == "loop" and line["task"] == "demo_span_corruption"
    assert line["prefetch"] == 2 and line["loop_tokens_per_s"] > 0
    ratio = line["step_time_s"] / line["loop_step_time_s"]  # both rounded to 10 us
    assert line["loop_vs_step"] == pytest.approx(ratio, rel=0.05, abs=0.002)


def test_bench_vs_hf_prints_peer_and_ratio_and_renders_table(capsys, tmp_path):
    from tools import perf_table

    out = tmp_path / "bench.jsonl"
    bench.main(["--preset", "t5_1_1_tiny", "--batch", "2", "--inputs", "16", "--targets", "8",
                "--mesh", "data=1", "--steps", "1", "--warmup", "0", "--vs", "hf",
                "--no-hf_compile", "--out", str(out)])
    ours, peer = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()[-2:]]
    assert ours["impl"] == "t5pod" and peer["impl"] == "hf"
    assert peer["hf_model"] == "T5ForConditionalGeneration"
    assert peer["ratio_tokens_per_s"] == round(ours["tokens_per_s"] / peer["tokens_per_s"], 3)
    doc = tmp_path / "performance.md"
    perf_table.main([str(out), "--out", str(doc)])
    table = doc.read_text()
    assert "| t5_1_1_tiny | float32 | 2 | 16/8 |" in table
    assert f"| {peer['ratio_tokens_per_s']} |" in table
    # regenerating a page with prose replaces only its table
    doc.write_text("# Perf\n\nprose before\n\n" + perf_table.render([]) + "\n\nprose after\n")
    perf_table.main([str(out), "--out", str(doc)])
    text = doc.read_text()
    assert text.startswith("# Perf\n\nprose before\n\n") and text.endswith("\n\nprose after\n")
    assert "| t5_1_1_tiny | float32 | 2 | 16/8 |" in text


def test_the_hf_peer_of_a_switch_preset_is_switch_transformers(capsys):
    bench.main(["--preset", "switch_tiny", "--batch", "2", "--inputs", "16", "--targets", "8",
                "--mesh", "data=1", "--steps", "1", "--warmup", "0", "--vs", "hf",
                "--no-hf_compile"])
    peer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert peer["hf_model"] == "SwitchTransformersForConditionalGeneration"
    assert peer["tokens_per_s"] > 0 and peer["ratio_tokens_per_s"] > 0


def test_bench_feed_and_resume_modes_time_a_cached_feed(capsys, tmp_path, monkeypatch):
    from tests.test_feed_resume import write_cache
    from experiments.perf import feed_overhead

    write_cache(tmp_path, 1, "demo_span_corruption", {"inputs": 32, "targets": 16})
    monkeypatch.setattr(feed_overhead, "core_counts", lambda: [1])  # one child, not three
    shapes = ["--batch", "4", "--inputs", "32", "--targets", "16", "--cache_dir", str(tmp_path)]
    bench.main(["--feed", "demo_span_corruption", *shapes, "--mesh", "data=2", "--steps", "1",
                "--warmup", "0", "--feed_batches", "2"])
    bench.main(["--resume", "demo_span_corruption", *shapes, "--positions", "1000"])
    feed, resume = (json.loads(x) for x in capsys.readouterr().out.strip().splitlines()[-2:])
    assert feed["mode"] == "feed" and feed["cores"] == 1 and feed["source"] == "cache"
    assert feed["feed_tokens_per_s"] > 0 and feed["feed_vs_step"] == pytest.approx(
        feed["feed_batches_per_s"] / feed["step_batches_per_s"], rel=0.05)
    assert resume["position"] == 1000 and resume["first_batch_s"] > 0


def test_bench_checkpoint_mode_times_t5pods_writes_against_replica_parallel_ones(capsys):
    bench.main(["--checkpoint", "--preset", "t5_1_1_tiny", "--vocab_size", "64", "--mesh",
                "data=8", "--saves", "2"])
    ours, peer = (json.loads(x) for x in capsys.readouterr().out.strip().splitlines()[-2:])
    assert (ours["policy"], peer["policy"]) == ("t5pod", "replica_parallel")
    assert ours["devices"] == peer["devices"] == 8
    assert ours["state_bytes"] == peer["state_bytes"] > 0
    for key in ("first_save_s", "save_s", "restore_s"):
        assert ours[key] > 0 and peer[key] > 0
        assert ours[f"{key}_vs_replica_parallel"] == pytest.approx(ours[key] / peer[key],
                                                                 rel=0.05, abs=0.01)
    with pytest.raises(ValueError, match="--saves=1 must be >= 2"):
        bench.main(["--checkpoint", "--saves", "1"])
