"""WikiSpell: deterministic splits, rank buckets, disjointness, custom lists, metric, tasks."""

import numpy as np
import pytest

from tasks import wikispell
from tasks.wikispell import WikiSpellConfig

SMALL = dict(train_size=400, eval_per_bucket=20)


@pytest.fixture(scope="module")
def word_list(tmp_path_factory):
    """5,000 distinct letter-only words, most frequent first, with a few bad lines."""
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words, seen = [], set()
    while len(words) < 5000:
        w = "".join(rng.choice(letters, rng.integers(3, 10)))
        if w not in seen:
            seen.add(w)
            words.append(w)
    lines = [f"{w}\t{6000 - i}" for i, w in enumerate(words)]
    lines[10:10] = ["", "café\t5", "naïve", "two words\t4", words[0]]
    path = tmp_path_factory.mktemp("words") / "words.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path), words


def test_splits_are_deterministic_disjoint_and_sized(word_list):
    path, _ = word_list
    cfg = WikiSpellConfig(seed=3, word_list=path, **SMALL)
    a, b = wikispell.splits(cfg), wikispell.splits(WikiSpellConfig(seed=3, word_list=path,
                                                                   **SMALL))
    assert a == b
    assert wikispell.splits(WikiSpellConfig(seed=4, word_list=path, **SMALL)) != a
    words = {s: [w for w, _ in rows] for s, rows in a.items()}
    assert len(words["train"]) == 400 and len(set(words["train"])) == 400
    assert len(words["validation"]) == len(words["test"]) == 5 * 20
    assert not set(words["train"]) & set(words["test"])
    assert not set(words["train"]) & set(words["validation"])
    assert not set(words["validation"]) & set(words["test"])


def test_buckets_follow_the_rank_boundaries(word_list):
    path, words = word_list
    rank = {w: i for i, w in enumerate(words)}
    split = wikispell.splits(WikiSpellConfig(word_list=path, **SMALL))
    bounds = {"top_1": (0, 50), "top_1_10": (50, 500), "top_10_20": (500, 1000),
              "top_20_30": (1000, 1500), "bottom_50": (2500, 5000)}
    for rows in split.values():
        for word, bucket in rows:
            lo, hi = bounds.get(bucket, (1500, 2500))
            assert lo <= rank[word] < hi, (word, bucket, rank[word])
    train_buckets = [b for _, b in split["train"]]
    assert train_buckets.count("bottom_50") == 200  # half uniform from the bottom 50%
    # the other half is frequency-weighted: frequent buckets are over-represented per word
    assert train_buckets.count("top_1_10") / 450 > train_buckets.count("top_20_30") / 500


def test_default_list_is_wordfreq_english_letters():
    split = wikispell.splits(WikiSpellConfig(seed=0, train_size=1000, eval_per_bucket=50))
    assert all(w.isascii() and w.isalpha() for s in split.values() for w, _ in s)
    assert [b for _, b in split["test"]][::50] == list(wikispell.BUCKET_NAMES)
    rows = wikispell.examples("test", WikiSpellConfig(seed=0, train_size=1000,
                                                      eval_per_bucket=50), bucket="top_1")
    assert len(rows) == 50 and rows[0]["targets"] == " ".join(rows[0]["inputs"])


def test_bad_words_are_skipped_and_counted(word_list, caplog):
    path, words = word_list
    kept, _, skipped = wikispell.read_word_list(path)
    assert kept == words
    assert skipped == {"empty": 1, "not_ascii_letters": 3, "duplicate": 1}
    wikispell.splits(WikiSpellConfig(seed=9, word_list=path, **SMALL))
    assert "'not_ascii_letters': 3" in caplog.text


def test_bad_names_and_sizes_are_clear_errors(word_list):
    path, _ = word_list
    with pytest.raises(ValueError, match=r"WikiSpell.bucket='top_5' is invalid: expected one of "
                                         r"\(.*bottom_50.*did you mean 'top_1'"):
        wikispell.examples("test", WikiSpellConfig(word_list=path, **SMALL), bucket="top_5")
    with pytest.raises(ValueError, match=r"WikiSpell.split='dev' is invalid: expected one of "
                                         r"\('train', 'validation', 'test'\)"):
        wikispell.examples("dev", WikiSpellConfig(word_list=path, **SMALL))
    with pytest.raises(ValueError, match="bucket 'top_1' holds 50 words"):
        wikispell.splits(WikiSpellConfig(word_list=path, train_size=100, eval_per_bucket=26))


def test_exact_match_is_reported_per_bucket():
    targets = [("top_1", "c a t"), ("top_1", "d o g"), ("bottom_50", "z y g o t e")]
    preds = [("top_1", "c a t"), ("top_1", "d o o g"), ("bottom_50", "z y g o t e")]
    got = wikispell.exact_match_by_bucket(targets, preds)
    assert got == {"exact_match": pytest.approx(200 / 3), "exact_match/top_1": 50.0,
                   "exact_match/bottom_50": 100.0}


def test_hybrid_task_feeds_the_same_word_as_tokens_and_bytes():
    import seqio

    import tasks  # noqa: F401
    from tasks.feed_config import FeedConfig
    from tasks.feeding.host_feed import HostFeed

    feed = HostFeed(FeedConfig("wikispell_hybrid", {"inputs": 16, "byte_inputs": 24,
                                                    "targets": 24}, 4, pack=False), 0, 1)
    batch = next(feed)
    spm = seqio.get_mixture_or_task("wikispell_hybrid").output_features["inputs"].vocabulary
    for tokens, byte_ids, targets in zip(batch["encoder_input_tokens"],
                                         batch["byte_encoder_input_tokens"],
                                         batch["decoder_target_tokens"], strict=True):
        word = spm.decode([t for t in tokens.tolist() if t > 1])
        assert bytes(b - 3 for b in byte_ids.tolist() if b > 2).decode() == word
        assert spm.decode([t for t in targets.tolist() if t > 1]) == " ".join(word)
    with pytest.raises(ValueError, match="add a 'byte_inputs' length"):
        HostFeed(FeedConfig("wikispell_hybrid", {"inputs": 16, "targets": 24}, 4), 0, 1)


def test_comparison_and_quickstart_train_runs_through_the_library(tmp_path, monkeypatch):
    import json

    import runner.train
    import experiments.wikispell_gap
    from runner.run import Run
    from tools import quickstart, wikispell_compare

    calls = []

    def train(run, model_dir, progress=None, records=None):  # records what would be trained
        calls.append((run, model_dir, records))
        return {"step": run.loop.train_steps}

    monkeypatch.setattr(runner.train, "train", train)
    monkeypatch.setattr(experiments.wikispell_gap, "evaluate", lambda *a, **k: {
        f"exact_match/{b}": 50.0 for b in wikispell.BUCKET_NAMES} | {"exact_match": 50.0})
    wikispell_compare.main([f"--out={tmp_path}", "--models=t5,byt5", "--steps=3",
                            "--per_bucket=2", "--gin=EVAL_EVERY=0",
                            "--gin=training.ScheduleConfig.warmup_steps=1"])
    assert [d for _, d, _ in calls] == [str(tmp_path / "t5"), str(tmp_path / "byt5")]
    assert all(isinstance(r, Run) and r.loop.train_steps == 3 and r.loop.eval_every == 0
               for r, _, _ in calls)
    assert [r.feed.mixture_or_task_name for r, _, _ in calls] == ["wikispell_spm",
                                                                 "wikispell_byte"]
    assert "operative_config.gin" in calls[0][2]
    assert json.loads((tmp_path / "results.json").read_text())["steps"] == 3
    calls.clear()
    quickstart.main([f"--out={tmp_path}/q", "--steps=60", "--per_bucket=1"])
    assert [(r.loop.train_steps, r.loop.checkpoint_every) for r, _, _ in calls] == [(60, 300)] * 2
