"""ByT5: HF ByT5 directories load, byte ids agree with HF's tokenizer, byte span corruption."""

import numpy as np
import torch
from transformers import ByT5Tokenizer

from model_zoo.interop import hf
from tasks.vocabularies import byte_vocabulary
from tests.hf_reference import hf_logits, make_hf_t5

TEXT = ["Spell: naïve café", "ByT5 reads UTF-8 bytes — even 日本語."]


def test_byte_ids_equal_hf_byt5_tokenizer():
    tok, vocab = ByT5Tokenizer(), byte_vocabulary()
    for text in TEXT:
        assert vocab.encode(text) + [1] == tok(text).input_ids
        assert vocab.decode(vocab.encode(text)) == text
    assert vocab.vocab_size == 384


def test_hf_byt5_directory_loads_and_matches_hf_on_real_bytes(tmp_path):
    ref = make_hf_t5("byt5")
    ref.save_pretrained(tmp_path)
    ByT5Tokenizer().save_pretrained(tmp_path)
    model = hf.load(str(tmp_path))
    cfg = model.config
    assert (cfg.vocab_size, cfg.num_encoder_layers, cfg.num_decoder_layers) == (384, 3, 1)
    batch = ByT5Tokenizer()(TEXT, padding=True, return_tensors="np")
    enc, mask = batch["input_ids"].astype(np.int32), batch["attention_mask"]
    dec = np.concatenate([np.zeros((2, 1), np.int32), enc[:, :7]], axis=1)
    ours = np.asarray(model(enc, dec))
    with torch.no_grad():
        theirs = hf_logits(ref, enc, dec, mask)
    np.testing.assert_allclose(ours, theirs, atol=2e-4)


def test_byte_span_corruption_task_has_mean_noise_span_near_20():
    import seqio

    import tasks  # noqa: F401  (registers)

    task = seqio.get_mixture_or_task("demo_span_corruption_byte")
    ds = task.get_dataset({"inputs": 1024, "targets": 256}, split="train", shuffle=False)
    spans = []
    for ex in ds.take(40).as_numpy_iterator():
        targets = ex["targets"].tolist()
        # targets: sentinel, span bytes, sentinel, span bytes, ..., eos
        sentinels = [i for i, t in enumerate(targets) if t >= 259]
        bounds = sentinels + [len(targets) - 1]
        spans += [b - a - 1 for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    assert abs(np.mean(spans) - 20.0) < 3.0, np.mean(spans)
