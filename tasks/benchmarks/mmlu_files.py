"""MMLU's questions from the layouts it is published and copied in.

1. Hendrycks' CSV files (the reference): data_dir/{dev,val,test}/{subject}_{dev,val,test}.csv,
   no header, each record `question, A, B, C, D, answer letter`.
2. The same files with a header `question,choice0,choice1,choice2,choice3,answer` and the
   answer as an index 0-3.
3. Parquet (cais/mmlu on the HF hub): {dev,validation,test}-*.parquet in data_dir, or in its
   `all/` or `data/` folder, columns `question`, `subject`, `choices` (four strings) and
   `answer` (an int 0-3).

Fields are kept as their file has them (no trimming, no number parsing). Anything else fails
naming the file and line (CSV) or row (Parquet) and the layouts that would be valid.
"""

from __future__ import annotations

import csv
import dataclasses
import io

from fields import paths

LETTERS = ("A", "B", "C", "D")
CSV_DIRS = {"dev": "dev", "validation": "val", "test": "test"}
HEADER = ("question", "choice0", "choice1", "choice2", "choice3", "answer")
PARQUET_DIRS = ("", "all", "data")
PARQUET_COLUMNS = ("question", "subject", "choices", "answer")
LAYOUTS = ("valid layouts: no header and `question,A,B,C,D,answer letter` (hendrycks/test), "
           "or the header `" + ",".join(HEADER) + "` with answers 0-3")


@dataclasses.dataclass(frozen=True)
class Question:
    question: str
    options: tuple[str, ...]
    answer: int    # index into LETTERS


def _answer(text: str, header: bool, where: str) -> int:
    valid = ("0", "1", "2", "3") if header else LETTERS
    if text not in valid:
        kind = "with the header, answers are 0-3" if header else LAYOUTS
        raise ValueError(f"{where}: answer {text!r} is not one of {valid} ({kind})")
    return valid.index(text)


def read_csv(path: str) -> list[Question]:
    """The questions of one MMLU CSV file, in file order (either CSV layout)."""
    out, header = [], False
    with io.StringIO(paths.read_text(path), newline="") as f:
        reader = csv.reader(f)
        for record in reader:
            where = f"{path}:{reader.line_num}"
            if not record or not any(field.strip() for field in record):
                continue
            if not out and not header and tuple(record) == HEADER:
                header = True
                continue
            if len(record) != 6:
                raise ValueError(f"{where}: {len(record)} columns, expected 6; {LAYOUTS}")
            out.append(Question(record[0], tuple(record[1:5]),
                                _answer(record[5].strip(), header, where)))
    if not out:
        raise ValueError(f"{path} holds no questions")
    return out


def parquet_files(data_dir: str, split: str) -> list[str]:
    """The Parquet shards of `split` ('dev', 'validation', 'test'), or [] if none."""
    for folder in PARQUET_DIRS:
        found = paths.glob(paths.join(data_dir, folder, f"{split}-*.parquet"))
        if found:
            return found
    return []


def _parquet_question(row: dict, where: str) -> Question:
    choices, answer = row["choices"], row["answer"]
    if not isinstance(row["question"], str) or not isinstance(row["subject"], str):
        raise ValueError(f"{where}: 'question' and 'subject' must be strings, got "
                         f"{row['question']!r:.40} and {row['subject']!r:.40}")
    if (not isinstance(choices, list) or len(choices) != 4
            or not all(isinstance(c, str) for c in choices)):
        raise ValueError(f"{where}: 'choices' must be a list of 4 strings, got {choices!r:.80}")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer <= 3:
        raise ValueError(f"{where}: 'answer' {answer!r} must be an int 0-3 (A-D)")
    return Question(row["question"], tuple(choices), answer)


def read_parquet(files: list[str]) -> dict[str, list[Question]]:
    """{subject: its questions in file order} of Parquet shards in the cais/mmlu layout."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out: dict[str, list[Question]] = {}
    for path in files:
        try:
            table = pq.read_table(pa.BufferReader(paths.read_bytes(path)))
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f"{path} is not a readable Parquet file: {e}") from None
        missing = [c for c in PARQUET_COLUMNS if c not in table.column_names]
        if missing:
            raise ValueError(f"{path}: no column(s) {missing}; columns: {table.column_names}; "
                             f"the Parquet layout needs {list(PARQUET_COLUMNS)}")
        for i, row in enumerate(table.select(list(PARQUET_COLUMNS)).to_pylist()):
            question = _parquet_question(row, f"{path} row {i}")
            out.setdefault(row["subject"], []).append(question)
    return out


def load(data_dir: str, split: str) -> dict[str, list[Question]]:
    """{subject: questions} of `split` ('dev', 'validation', 'test') in either layout."""
    data_dir = paths.user_path(data_dir, "tasks.mmlu.data_dir")
    folder = paths.join(data_dir, CSV_DIRS[split])
    suffix = f"_{CSV_DIRS[split]}.csv"
    if paths.isdir(folder):
        names = [f for f in paths.listdir(folder) if f.endswith(suffix)]
        if names:
            return {name[: -len(suffix)]: read_csv(paths.join(folder, name))
                    for name in names}
    shards = parquet_files(data_dir, split)
    if shards:
        return read_parquet(shards)
    raise FileNotFoundError(
        f"no MMLU {split} files in {data_dir}: expected {folder}/<subject>{suffix} (CSV) or "
        f"{split}-*.parquet in it or in its all/ or data/ folder (cais/mmlu's Parquet)")
