"""The one reader of a run's metrics on a local disk: a torn last line (a kill while
writing) and lines that are no record are skipped, the records before them kept."""

from training.metrics_log import read_records


def test_a_torn_last_line_is_skipped(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n[1, 2]\n'
                                            '{"loss": 9.0}\n{"step": 2, "loss": 1.5}\n'
                                            '{"step": 3, "lo')
    assert read_records(tmp_path) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]
    assert read_records(tmp_path / "never_ran") == []
