"""WikiSpell after pretraining: the Zipf corpus follows wordfreq, and the command writes
its table, CSV and plot."""

import collections
import csv

import numpy as np
import pytest

from tasks import wikispell
from tasks.pretraining import zipf_corpus
from tasks.pretraining.zipf_corpus import ZipfCorpusConfig

SMALL = ZipfCorpusConfig(documents=2000, words_per_document=32, repeat_probability=0.3,
                         sampling_alpha=0.2, seed=0)


def average_ranks(x):
    """Ranks 0.. of x with ties sharing their mean rank (what Spearman's rho uses)."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def test_word_counts_follow_wordfreq():
    import wordfreq

    counts = collections.Counter(w for t in zipf_corpus.texts(SMALL, "train") for w in t.split())
    assert sum(counts.values()) == 2000 * 32
    # the 300 most frequent letter-only English words, ranked by wordfreq itself
    top = [w for w in wordfreq.top_n_list("en", 1000, wordlist="large")
           if w.isascii() and w.isalpha()][:300]
    expected = np.array([wordfreq.word_frequency(w, "en", wordlist="large") for w in top])
    observed = np.array([counts[w] for w in top], np.float64)
    rho = np.corrcoef(average_ranks(expected), average_ranks(observed))[0, 1]
    assert rho > 0.85, rho
    # and in absolute terms: "the" is about 5% of English
    share = counts["the"] / sum(counts.values())
    assert share == pytest.approx(wordfreq.word_frequency("the", "en", wordlist="large"), rel=0.1)
    # burstiness: a document repeats words far more than independent draws would
    docs = zipf_corpus.texts(SMALL, "train")
    repeats = np.mean([len(d.split()) - len(set(d.split())) for d in docs])
    plain = ZipfCorpusConfig(documents=2000, repeat_probability=0.0)
    assert repeats > 1.5 * np.mean([len(d.split()) - len(set(d.split()))
                                    for d in zipf_corpus.texts(plain, "train")])


def test_subword_sampling_keeps_the_text_and_varies_the_pieces():
    import sentencepiece

    from tasks.vocabularies import WIKISPELL_SPM

    sp = sentencepiece.SentencePieceProcessor(model_file=WIKISPELL_SPM)
    config = ZipfCorpusConfig(documents=100, seed=1, sampling_alpha=0.2)
    docs = zipf_corpus.texts(config, "validation")
    assert docs == zipf_corpus.texts.__wrapped__(config, "validation")  # deterministic
    assert docs != zipf_corpus.texts(config, "train")
    sampled = zipf_corpus.sentencepiece_ids(config, "validation", WIKISPELL_SPM)
    assert sampled == zipf_corpus.sentencepiece_ids.__wrapped__(config, "validation",
                                                                 WIKISPELL_SPM)
    assert [sp.decode(ids) for ids in sampled] == list(docs)
    plain = zipf_corpus.sentencepiece_ids(
        ZipfCorpusConfig(documents=100, seed=1, sampling_alpha=0.0), "validation", WIKISPELL_SPM)
    assert list(plain) == sp.encode(list(docs))
    # most of "the" stays one piece, some occurrences are spelt out in smaller pieces
    the = sp.piece_to_id("▁the")
    n_the = sum(d.split().count("the") for d in docs)
    kept = sum(ids.count(the) for ids in sampled)
    assert 0.5 * n_the < kept < n_the


def test_bad_corpus_settings_are_clear_errors():
    with pytest.raises(ValueError, match="repeat_probability=1.0"):
        ZipfCorpusConfig(repeat_probability=1.0)
    with pytest.raises(ValueError, match="sampling_alpha=-1"):
        ZipfCorpusConfig(sampling_alpha=-1)
    with pytest.raises(ValueError, match=r"zipf_corpus.split='test' is invalid: expected one of "
                                         r"\('train', 'validation'\)"):
        zipf_corpus.texts(SMALL, "test")


def test_smallest_setting_writes_table_csv_and_plot(tmp_path, monkeypatch):
    """Really pretrains the tiny T5 2 steps and fine-tunes it 2 steps from that checkpoint
    (training without pretraining is test_wikispell's; decoding is left out here: the table
    takes the numbers it is given)."""
    import runner.train
    import experiments.wikispell_gap
    from tools import wikispell_compare

    evaluated, real_train = [], runner.train.train

    def train(run, model_dir, **kw):
        if model_dir != str(tmp_path / "t5"):
            return real_train(run, model_dir, **kw)
        assert run.initial_checkpoint_path is None
        return {}

    monkeypatch.setattr(runner.train, "train", train)

    def evaluate(model_dir, targets_length, per_bucket, config=None):
        evaluated.append(model_dir)
        return {f"exact_match/{b}": 10.0 * len(evaluated) + i
                for i, b in enumerate(wikispell.BUCKET_NAMES)} | {"exact_match": 1.0}

    monkeypatch.setattr(experiments.wikispell_gap, "evaluate", evaluate)
    args = [f"--out={tmp_path}", "--models=t5", "--steps=2", "--pretrain_steps=2",
            "--per_bucket=1", "--gin=EVAL_EVERY=0", "--gin=training.ScheduleConfig.warmup_steps=1",
            "--gin=BATCH_SIZE=8", "--pretrain_gin=tasks.zipf_corpus.documents=50"]
    results = wikispell_compare.main(args)
    assert set(results) == {"t5", "t5_pretrained"}
    assert evaluated == [str(tmp_path / "t5"), str(tmp_path / "t5_pretrained")]
    assert (tmp_path / "pretrain_t5" / "model.json").exists()
    assert (tmp_path / "t5_pretrained" / "model.json").exists()
    # the fine-tuning started from the pretrained params: its config names that model_dir
    assert str(tmp_path / "pretrain_t5") in (tmp_path / "t5_pretrained" / "config.gin").read_text()
    md = (tmp_path / "table.md").read_text()
    assert "no pretraining | 738k | 10.0 | 11.0" in md and "pretrained 2 steps | 738k | 20.0" in md
    rows = list(csv.DictReader(open(tmp_path / "table.csv")))
    assert len(rows) == 2 * 6 and rows[1] == {"model": "t5", "pretrained": "False",
                                              "bucket": "top_1_10", "exact_match": "11.0"}
    assert rows[-1] == {"model": "t5", "pretrained": "True", "bucket": "all",
                        "exact_match": "1.0"}
    png = (tmp_path / "wikispell_pretrained.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, message", [
    (["--models=hybrid", "--pretrain_steps=2"], r"\['hybrid'\] have no pretraining run"),
    (["--models=t5", "--pretrain_steps=2", "--steps=byt5=3"], r"names \['byt5'\]"),
])
def test_bad_comparisons_are_refused_before_training(tmp_path, argv, message):
    from tools import wikispell_compare

    with pytest.raises(ValueError, match=message):
        wikispell_compare.main([f"--out={tmp_path}"] + argv)
    assert not list(tmp_path.iterdir())


def test_per_model_steps_need_pretraining(capsys):
    from tools import wikispell_compare

    with pytest.raises(SystemExit):
        wikispell_compare.main(["--steps=t5=3"])
    assert "MODEL=N needs --pretrain_steps" in capsys.readouterr().err
