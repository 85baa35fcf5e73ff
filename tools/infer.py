"""Decode with a trained model: JSONL in, JSONL predictions out, or one --prompt.

    python -m tools.infer --model_dir=DIR --input=in.jsonl --output=out.jsonl [--field=inputs]
    python -m tools.infer --model_dir=DIR --prompt "translate English to German: hello"

--model_dir is a t5pod model_dir (its task gives the vocabulary) or an HF T5 directory
(give --vocab=path/to/spm.model or --byte). Decoding: --method greedy|sample|beam, or
--gin_file=runs/infer.gin [--gin.model_zoo.DecodeConfig.num_beams=8] to set DecodeConfig.
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import numpy as np

import partitioning
from model_zoo.axes import activation_rules
from model_zoo.decoding import METHODS, DecodeConfig, decode
from runner import trained_model as restore
from tools.bench import mesh_devices, parse_mesh


def vocabulary_for(task: str | None, vocab: str | None, byte: bool):
    if byte:
        from tasks.vocabularies import byte_vocabulary
        return byte_vocabulary()
    if vocab:
        from tasks.vocabularies import sentencepiece_vocabulary
        return sentencepiece_vocabulary(vocab)
    if task:
        from tasks.feeding import lookup
        return lookup(task).output_features["inputs"].vocabulary
    raise ValueError("no vocabulary: this model_dir names no task; pass --vocab or --byte")


class Predictor:
    """Batches texts, pads them to the data-parallel degree, decodes in one jitted call."""

    def __init__(self, model_dir: str, mesh_spec: str = "data=1", rules: str = "data_parallel",
                 decode_config: DecodeConfig | None = None, vocab=None, byte=False,
                 max_input_length: int = 512, seed: int = 0):
        self.mesh = partitioning.make_mesh(partitioning.MeshConfig(ici=parse_mesh(mesh_spec)),
                                           devices=mesh_devices(mesh_spec))
        self.rules = partitioning.rule_set(rules)
        self.mdef, self.params, self.config, task = restore.load(model_dir, self.mesh,
                                                                 self.rules)
        self.vocab = vocabulary_for(task, vocab, byte)
        # a hybrid model also reads the bytes of each input
        self.byte_vocab = (vocabulary_for(None, None, True) if self.config.byte_encoder
                           else None)
        self.decode_config = decode_config or DecodeConfig()
        self.max_input_length = max_input_length
        self.dp = partitioning.data_parallel_degree(self.rules, self.mesh)
        self.rng = jax.random.key(seed)
        cfg = self.decode_config
        self._decode = jax.jit(lambda p, e, r, b: decode(self.mdef.bind(p), e, cfg, r, b))

    def encode_texts(self, texts: list[str], vocab=None) -> np.ndarray:
        vocab = vocab or self.vocab
        rows = [vocab.encode(t)[: self.max_input_length - 1] + [1] for t in texts]
        width = max(len(r) for r in rows)
        batch = -(-len(rows) // self.dp) * self.dp
        out = np.zeros((batch, width), np.int32)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out

    def predict(self, texts: list[str]) -> list[str]:
        enc = self.encode_texts(texts)
        byte_enc = self.encode_texts(texts, self.byte_vocab) if self.byte_vocab else None
        self.rng, key = jax.random.split(self.rng)
        with jax.set_mesh(self.mesh), activation_rules(
                partitioning.activation_resolver(self.rules, self.mesh)):
            out = self._decode(self.params, enc, key, byte_enc)
        ids = np.asarray(out[0] if isinstance(out, tuple) else out)
        preds = []
        for row in ids[: len(texts)]:
            row = row.tolist()
            row = row[: row.index(1)] if 1 in row else row
            preds.append(self.vocab.decode([t for t in row if t > 0]))
        return preds


def decode_config_from(args, gin_files, gin_bindings) -> DecodeConfig:
    """DecodeConfig from gin when gin files are given, else from the flags."""
    if gin_files or gin_bindings:
        from runner import configurables, gin_flags

        gin_flags.parse(gin_files, gin_bindings)
        return configurables.decode_config()
    return DecodeConfig(args.max_decode_length, args.method, args.temperature, args.top_k,
                        args.top_p, args.num_beams)


def main(argv=None):
    from runner import gin_flags

    gin_files, gin_bindings, argv = gin_flags.split_gin_args(
        sys.argv[1:] if argv is None else list(argv))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model_dir", required=True)
    p.add_argument("--prompt", action="append", default=[])
    p.add_argument("--input", help="JSONL file, one object per line")
    p.add_argument("--field", default="inputs", help="JSONL field holding the input text")
    p.add_argument("--output", help="JSONL predictions (default: stdout)")
    p.add_argument("--vocab", help="SentencePiece model for an HF directory")
    p.add_argument("--byte", action="store_true", help="byte vocabulary (ByT5)")
    p.add_argument("--method", default="greedy", choices=METHODS)
    p.add_argument("--max_decode_length", type=int, default=64)
    p.add_argument("--num_beams", type=int, default=4)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top_k", type=int, default=0)
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--mesh", default="data=1")
    p.add_argument("--rules", default="data_parallel")
    args = p.parse_args(argv)
    if bool(args.prompt) == bool(args.input):
        p.error("give --prompt TEXT or --input FILE.jsonl")
    cfg = decode_config_from(args, gin_files, gin_bindings)
    predictor = Predictor(args.model_dir, args.mesh, args.rules, cfg, args.vocab, args.byte)
    if args.prompt:
        records = [{args.field: t} for t in args.prompt]
    else:
        with open(args.input) as f:
            records = [json.loads(line) for line in f if line.strip()]
        missing = [i for i, r in enumerate(records) if args.field not in r]
        if missing:
            p.error(f"{args.input}: lines {missing[:5]} have no field {args.field!r}")
    out = open(args.output, "w") if args.output else sys.stdout
    for start in range(0, len(records), args.batch_size):
        chunk = records[start:start + args.batch_size]
        for record, pred in zip(chunk, predictor.predict([r[args.field] for r in chunk]),
                                strict=True):
            out.write(json.dumps({**record, "prediction": pred}) + "\n")
    if args.output:
        out.close()


if __name__ == "__main__":
    main()
