"""Decode with a trained model: JSONL in, JSONL predictions out, or one --prompt.

    python -m tools.infer --model_dir=DIR --input=in.jsonl --output=out.jsonl [--field=inputs]
    python -m tools.infer --model_dir=DIR --prompt "translate English to German: hello"

--model_dir is a t5pod model_dir (its task gives the vocabulary) or an HF T5 directory
(give --vocab=path/to/spm.model or --byte). Decoding: --method greedy|sample|beam, or
--gin_file=runs/infer.gin [--gin.model_zoo.DecodeConfig.num_beams=8] to set DecodeConfig.

Multi-host: run the same command on every host (flags as tools.train); every host reads the
same input and decodes its share of each batch on --mesh (x --dcn), host 0 alone writes.
"""

from __future__ import annotations

import argparse
import json
import sys

from tools import cli  # first: the quiet start and the log lines
from model_zoo.decoding import METHODS, DecodeConfig
from tools.distributed_flags import start_distributed
from tools.path_flags import path_flag


def decode_config_from(p: argparse.ArgumentParser, args, gin_files,
                       gin_bindings) -> DecodeConfig:
    """DecodeConfig from gin when gin files are given, else from the flags (a bad flag is
    refused naming it: `--num_beams=0 is invalid: ...`)."""
    if gin_files or gin_bindings:
        from runner.gin_flags import decode_config_from_gin

        return decode_config_from_gin(gin_files, gin_bindings)
    try:
        return DecodeConfig(args.max_decode_length, args.method, args.temperature, args.top_k,
                            args.top_p, args.num_beams)
    except ValueError as e:  # the flags are DecodeConfig's fields, by the same names
        p.error(str(e).replace("DecodeConfig.", "--"))


def main(argv=None):
    p = cli.parser(__doc__, distributed=True)
    p.add_argument("--model_dir", required=True, type=path_flag)
    p.add_argument("--branch", help="a TreeDNN tree's branch: its trunk and branch, as a T5")
    p.add_argument("--prompt", action="append", default=[])
    p.add_argument("--input", type=path_flag, help="JSONL file, one object per line")
    p.add_argument("--field", default="inputs", help="JSONL field holding the input text")
    p.add_argument("--output", type=path_flag, help="JSONL predictions (default: stdout)")
    p.add_argument("--vocab", type=path_flag, help="SentencePiece model for an HF directory")
    p.add_argument("--byte", action="store_true", help="byte vocabulary (ByT5)")
    p.add_argument("--method", default="greedy", choices=METHODS)
    p.add_argument("--max_decode_length", type=int, default=64)
    p.add_argument("--num_beams", type=int, default=4)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top_k", type=int, default=0)
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_input_length", type=int, default=512,
                   help="tokens (EOS included); a longer input is truncated, with a warning")
    p.add_argument("--mesh", default="data=1")
    p.add_argument("--dcn", default="", help="mesh degrees across hosts/slices, e.g. data=2")
    p.add_argument("--rules", default="data_parallel")
    args, gin_files, gin_bindings = cli.parse(p, argv)
    from fields import paths  # the libraries after the flags: --help comes at once
    from inference.predictor import Predictor
    if bool(args.prompt) == bool(args.input):
        p.error("give --prompt TEXT or --input FILE.jsonl")
    empty = [t for t in args.prompt if not t.strip()]
    if empty:
        p.error(f"--prompt {empty[0]!r} is empty: give the text to decode")
    cfg = decode_config_from(p, args, gin_files, gin_bindings)
    if args.max_input_length < 2:
        p.error(f"--max_input_length={args.max_input_length} must be >= 2 (a token and EOS)")
    from partitioning.distributed import is_primary
    from runner.gin_flags import model_from_gin_for

    start_distributed(p, args)
    predictor = Predictor(args.model_dir, args.mesh, args.rules, cfg, args.vocab, args.byte,
                          max_input_length=args.max_input_length,
                          model=model_from_gin_for(args.model_dir, gin_files, gin_bindings),
                          dcn=args.dcn, branch=args.branch)
    if args.prompt:
        records = [{args.field: t} for t in args.prompt]
    else:
        records = [json.loads(line) for line in paths.read_text(args.input).splitlines()
                   if line.strip()]
        missing = [i for i, r in enumerate(records) if args.field not in r]
        if missing:
            p.error(f"{args.input}: lines {missing[:5]} have no field {args.field!r}")
    primary = is_primary()  # every host decodes every batch; host 0 alone writes
    lines = []
    for start in range(0, len(records), args.batch_size):
        chunk = records[start:start + args.batch_size]
        preds = predictor.predict([r[args.field] for r in chunk])
        if primary:
            for record, pred in zip(chunk, preds, strict=True):
                line = json.dumps({**record, "prediction": pred}) + "\n"
                if args.output:
                    lines.append(line)
                else:
                    sys.stdout.write(line)
    if args.output and primary:  # one shot: a bucket takes no appends
        paths.write_text(args.output, "".join(lines))


if __name__ == "__main__":
    main()
