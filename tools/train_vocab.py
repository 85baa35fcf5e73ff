"""Train a T5-style SentencePiece model from a user's corpus (no hub needed).

    python -m tools.train_vocab --input 'data/*.txt' --out vocab/my_spm --vocab_size 32000
    python -m tools.train_vocab --demo --out tasks/data/demo_spm   # the shipped demo model
    python -m tools.train_vocab --wikispell --out tasks/data/wikispell_spm   # WikiSpell's

Text files give one example per line; .jsonl files take the --field of each line.
"""

from __future__ import annotations


from tools import cli  # first: the quiet start and the log lines
from tasks.pretraining.corpus import split
from tasks.sentencepiece_training import train_sentencepiece
from tasks.pretraining.text_files import read_texts
from tasks.vocabularies import DEMO_SPM_VOCAB_SIZE, WIKISPELL_SPM_VOCAB_SIZE
from tools.path_flags import local_path_flag


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--input", action="append", default=[], help="file or glob (repeatable)")
    p.add_argument("--field", default="text", help="JSONL field holding the text")
    p.add_argument("--demo", action="store_true", help="use the embedded demo corpus")
    p.add_argument("--wikispell", action="store_true",
                   help="frequency-weighted English words (the char-blind WikiSpell baseline)")
    p.add_argument("--out", required=True, type=local_path_flag,
                   help="output prefix: writes PREFIX.model/.vocab (a local path)")
    p.add_argument("--vocab_size", type=int, default=None)
    p.add_argument("--model_type", default="unigram", choices=["unigram", "bpe"])
    args = p.parse_args(argv)
    if args.demo + args.wikispell + bool(args.input) != 1:
        p.error("give one of --demo, --wikispell or --input FILES")
    if args.wikispell:
        from tasks.wikispell import frequency_weighted_text

        texts, default_size = frequency_weighted_text(), WIKISPELL_SPM_VOCAB_SIZE
    elif args.demo:
        texts, default_size = split("train"), DEMO_SPM_VOCAB_SIZE
    else:
        texts, default_size = read_texts(args.input, args.field), 32000
    size = args.vocab_size or default_size
    path = train_sentencepiece(texts, args.out, vocab_size=size, model_type=args.model_type)
    print(f"wrote {path} ({size} pieces; add T5's 100 extra ids in the vocabulary)")


if __name__ == "__main__":
    main()
