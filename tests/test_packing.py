"""Packed rows (segment ids) give each example the logits it gets alone."""

import numpy as np
from flax import nnx

from model_zoo import EncoderDecoder, preset


def test_packed_equals_separate():
    cfg = preset("t5_1_0_small", vocab_size=64, d_model=32, d_ff=64, num_heads=4, d_kv=8,
                 num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0)
    model = EncoderDecoder(cfg, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    a_in, b_in = rng.integers(2, 64, 7), rng.integers(2, 64, 5)
    a_out, b_out = rng.integers(2, 64, 4), rng.integers(2, 64, 6)

    def dec_in(t):
        return np.concatenate([[0], t[:-1]])

    def alone(inp, out):
        return np.asarray(model(inp[None].astype(np.int32), dec_in(out)[None].astype(np.int32)))[0]

    enc_len, dec_len = 16, 12
    enc = np.zeros((1, enc_len), np.int32)
    dec = np.zeros((1, dec_len), np.int32)
    enc_seg, dec_seg = np.zeros_like(enc), np.zeros_like(dec)
    enc_pos, dec_pos = np.zeros_like(enc), np.zeros_like(dec)
    enc[0, :12] = np.concatenate([a_in, b_in])
    enc_seg[0, :12] = [1] * 7 + [2] * 5
    enc_pos[0, :12] = list(range(7)) + list(range(5))
    dec[0, :10] = np.concatenate([dec_in(a_out), dec_in(b_out)])
    dec_seg[0, :10] = [1] * 4 + [2] * 6
    dec_pos[0, :10] = list(range(4)) + list(range(6))
    packed = np.asarray(model(enc, dec, encoder_segment_ids=enc_seg, decoder_segment_ids=dec_seg,
                              encoder_positions=enc_pos, decoder_positions=dec_pos))[0]
    np.testing.assert_allclose(packed[:4], alone(a_in, a_out), atol=1e-5, rtol=0)
    np.testing.assert_allclose(packed[4:10], alone(b_in, b_out), atol=1e-5, rtol=0)
