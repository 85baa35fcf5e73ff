"""The one JSON-lines reader: records with their file:line, blank lines skipped, gzip read,
and a bad line named by file and line with what is wrong."""

import gzip

import pytest

from tasks import json_lines


def test_records_name_their_line_and_gzip_reads_the_same(tmp_path):
    text = b'{"a": 1}\n\n  \n{"a": 2}\r\n'
    plain, packed = tmp_path / "x.jsonl", tmp_path / "x.jsonl.gz"
    plain.write_bytes(text)
    packed.write_bytes(gzip.compress(text))
    assert list(json_lines.records(str(plain))) == [(f"{plain}:1", {"a": 1}),
                                                   (f"{plain}:4", {"a": 2})]
    assert [r for _, r in json_lines.records(str(packed))] == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize("line,match", [
    (b'{"a": 1', r"x\.jsonl:2 is not valid JSON"),
    (b'["a", 1]', r"x\.jsonl:2 is a JSON list, not an object"),
    (b'{"a": "\xff"}', r"x\.jsonl:2 is not UTF-8 text"),
])
def test_a_bad_line_is_named(tmp_path, line, match):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 0}\n' + line + b"\n")
    with pytest.raises(ValueError, match=match):
        list(json_lines.records(str(path)))
