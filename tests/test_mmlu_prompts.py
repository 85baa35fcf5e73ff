"""MMLU prompts against hendrycks/test's evaluate_flan.py, whose three prompt functions and
k-shortening loop are written out here over rows read with the csv module (pandas is not
installed here); the layouts t5pod reads and refuses; first-token scoring's targets. Pure
data: no model."""

import csv

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import seqio

import tasks  # noqa: F401  (registers the tasks)
from tasks.benchmarks import mmlu, mmlu_files
from tasks import settings, settings_scope
from tasks.vocabularies import byte_vocabulary

CHOICES = ["A", "B", "C", "D"]


# --- evaluate_flan.py's functions, over a list of rows (its DataFrame's .iloc) -------------

def ref_format_subject(subject):
    out = ""
    for word in subject.split("_"):
        out = out + " " + word
    return out


def ref_format_example(rows, idx, include_answer=True):
    row = rows[idx]
    k = len(row) - 2
    text = row[0]
    for j in range(k):
        text += "\n" + CHOICES[j] + ". " + row[j + 1]
    text += "\nAnswer:"
    if include_answer:
        text += " " + row[k + 1] + "\n\n"
    return text


def ref_gen_prompt(train_rows, subject, k=-1):
    text = ("The following are multiple choice questions (with answers) about "
            + ref_format_subject(subject) + ".\n\n")
    for i in range(len(train_rows) if k == -1 else k):
        text += ref_format_example(train_rows, i)
    return text


def ref_prompt(dev_rows, test_rows, i, subject, ntrain, count, limit=2048):
    """evaluate_flan.py's loop: k = ntrain, then k - 1 while the ids exceed the limit."""
    k = ntrain
    end = ref_format_example(test_rows, i, include_answer=False)
    text = ref_gen_prompt(dev_rows[:ntrain], subject, k) + end
    while count(text) > limit:
        k -= 1
        text = ref_gen_prompt(dev_rows[:ntrain], subject, k) + end
    return text


# --- files -----------------------------------------------------------------------------------

DEV = [['He said "yes", then left.', "a, b", 'c "d"', "e\nf", "g", "B"],
       ["Line one\nline two?", "1", "2", "3", "4", "D"],
       ["Plain?", "x", "y", "z", "w", "A"],
       ['"Quoted" start', "one", "two", "three", "four", "C"],
       ["Fifth, with commas, many", "p", "q", "r", "s", "A"]]
TEST = [["Which, of these, is \"alive\"?", "a cat", "rock", "an old chair", "sea", "A"],
        ["Cells\nhave?", "walls sometimes", "no", "DNA", "wheels", "C"],
        ["Trailing space ", " lead", "mid dle", "end ", "\"\"", "B"]]
SUBJECT = "high_school_us_history"


def write_csv(root, split, rows, subject=SUBJECT, header=None):
    folder = root / {"dev": "dev", "test": "test", "validation": "val"}[split]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{subject}_{folder.name}.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def hendrycks(root):
    write_csv(root, "dev", DEV)
    write_csv(root, "test", TEST)
    return root


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def active(root, **values):
    return settings_scope.active(settings.from_mapping({"mmlu": {"data_dir": str(root),
                                                                 **values}}))


def byte_count(text):
    return len(text.encode()) + 1   # ByT5's ids, EOS included, as HF's tokenizer gives them


@pytest.mark.parametrize("ntrain", [0, 5])
def test_prompts_are_evaluate_flans_byte_for_byte(tmp_path, ntrain):
    root = hendrycks(tmp_path)
    dev, test = read_rows(root / "dev" / f"{SUBJECT}_dev.csv"), read_rows(
        root / "test" / f"{SUBJECT}_test.csv")
    with active(root):
        rows = mmlu.examples("test", ntrain, byte_vocabulary())
    expected = [ref_prompt(dev, test, i, SUBJECT, ntrain, byte_count) for i in range(len(test))]
    assert [r["inputs"] for r in rows] == expected
    assert "about  high school us history.\n\n" in expected[0]   # two spaces
    assert [r["targets"] for r in rows] == [t[5] for t in test]


def test_exemplars_are_dropped_until_the_prompt_fits(tmp_path):
    root = hendrycks(tmp_path)
    dev, test = read_rows(root / "dev" / f"{SUBJECT}_dev.csv"), read_rows(
        root / "test" / f"{SUBJECT}_test.csv")
    lengths = [byte_count(ref_prompt(dev, test, 0, SUBJECT, k, byte_count, 10**9))
               for k in range(6)]
    limit = lengths[2] + 1   # 2 exemplars fit the first question, 3 do not
    with active(root, max_prompt_tokens=limit):
        rows = mmlu.examples("test", 5, byte_vocabulary())
    for i, row in enumerate(rows):
        assert row["inputs"] == ref_prompt(dev, test, i, SUBJECT, 5, byte_count, limit)
    assert rows[0]["inputs"].count("\nAnswer: ") == 2
    with active(root, max_prompt_tokens=5):   # nothing fits: the zero-shot prompt
        assert mmlu.examples("test", 5, byte_vocabulary())[0]["inputs"] == ref_gen_prompt(
            dev, SUBJECT, 0) + ref_format_example(test, 0, include_answer=False)
    with active(root, max_prompt_tokens=None):
        assert mmlu.examples("test", 5, byte_vocabulary())[0]["inputs"].count(
            "\nAnswer: ") == 5


def _parquet(path, rows, subject=SUBJECT, **override):
    path.parent.mkdir(parents=True, exist_ok=True)
    table = {"question": [r[0] for r in rows], "subject": [subject] * len(rows),
             "choices": [r[1:5] for r in rows], "answer": ["ABCD".index(r[5]) for r in rows]}
    table.update(override)
    pq.write_table(pa.table(table), path)


def test_header_csv_and_parquet_copies_give_the_same_prompts(tmp_path):
    with active(hendrycks(tmp_path / "ref")):
        expected = mmlu.examples("test", 5, byte_vocabulary())
    header = tmp_path / "header"
    for split, rows in (("dev", DEV), ("test", TEST)):
        write_csv(header, split, [r[:5] + [str("ABCD".index(r[5]))] for r in rows],
                  header=mmlu_files.HEADER)
    parquet = tmp_path / "cais"
    for split, rows in (("dev", DEV), ("test", TEST)):
        _parquet(parquet / "all" / f"{split}-00000-of-00001.parquet", rows)
    for root in (header, parquet):
        with active(root):
            assert mmlu.examples("test", 5, byte_vocabulary()) == expected


@pytest.mark.parametrize("header,rows,match", [
    (["input", "A", "B", "C", "D", "target"], TEST,
     r"_test.csv:1: answer 'target' is not one of \('A', 'B', 'C', 'D'\) \(valid layouts: "),
    (mmlu_files.HEADER, TEST, r"_test.csv:2: answer 'A' is not one of \('0', '1', '2', '3'\)"),
    (None, [r + ["extra"] for r in TEST], r"_test.csv:1: 7 columns, expected 6; valid layouts"),
])
def test_other_csv_layouts_are_refused_naming_file_and_line(tmp_path, header, rows, match):
    path = write_csv(tmp_path, "test", rows, header=header)
    with pytest.raises(ValueError, match=match):
        mmlu_files.read_csv(str(path))


@pytest.mark.parametrize("override,match", [
    ({"answer": [0, 4, 1]}, r"test-0.parquet row 1: 'answer' 4 must be an int 0-3"),
    ({"choices": [["a", "b", "c", "d"], ["a", "b", "c"], ["a", "b", "c", "d"]]},
     r"row 1: 'choices' must be a list of 4 strings"),
    ({"topic": [SUBJECT] * 3}, r"no column\(s\) \['subject'\]"),
])
def test_bad_parquet_is_refused_naming_file_and_row(tmp_path, override, match):
    _parquet(tmp_path / "test-0.parquet", TEST, **override)
    if "topic" in override:
        table = pq.read_table(tmp_path / "test-0.parquet").drop(["subject"])
        pq.write_table(table, tmp_path / "test-0.parquet")
    with active(tmp_path), pytest.raises(ValueError, match=match):
        mmlu.examples("test", 0)


def test_no_layout_found_says_what_would_be_read(tmp_path):
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "notes.txt").write_text("x")
    with active(tmp_path), pytest.raises(FileNotFoundError, match=r"expected .*test/<subject>"
                                         r"_test.csv \(CSV\) or test-\*.parquet"):
        mmlu.examples("test", 0)


def _rank_rows(root, **values):
    with active(root, **values):
        ds = seqio.get_mixture_or_task("mmlu_zero_shot_rank_byte").get_dataset(
            None, split="test", shuffle=False)
        return list(ds.as_numpy_iterator())


def test_first_token_scoring_scores_each_letters_first_token_alone(tmp_path):
    root = hendrycks(tmp_path)
    first = _rank_rows(root)
    letters = [byte_vocabulary().encode(x)[0] for x in "ABCD"]   # as tokenizer(x).input_ids[0]
    assert [r["targets"].tolist() for r in first[:4]] == [[t] for t in letters]
    assert [r["idx"].tolist() for r in first[:4]] == [[0, 0], [0, 1], [0, 2], [0, 3]]
    sequence = _rank_rows(root, scoring="sequence")
    assert [r["targets"].tolist() for r in sequence[:4]] == [[t, 1] for t in letters]
    assert [r["inputs"].tolist() for r in sequence] == [r["inputs"].tolist() for r in first]


@pytest.mark.parametrize("values,match", [
    ({"scoring": "logits"}, r"tasks.mmlu.scoring='logits' is invalid: expected one of "
                            r"\('first_token', 'sequence'"),
    ({"rank_choices": "options"}, r"rank_choices='options' needs tasks.mmlu.scoring='sequence'"),
    ({"max_prompt_tokens": 0}, r"max_prompt_tokens=0 is invalid: expected an integer >= 1"),
    ({"max_prompt_token": 10}, r"tasks.mmlu has no parameter 'max_prompt_token'; did you mean "
                               r"\['max_prompt_tokens'\]"),
])
def test_settings_are_checked(values, match):
    with pytest.raises(ValueError, match=match):
        settings.from_mapping({"mmlu": values})
