"""Convert between HF T5 directories and t5pod model_dirs.

    python -m tools.convert --hf_dir=flan-t5-small --to_model_dir=ckpt/flan_small [--task=NAME]
    python -m tools.convert --model_dir=runs/demo --to_hf_dir=export/ [--step=N]

A converted model_dir holds model.json and a params-only checkpoint (step 0): point
INITIAL_CHECKPOINT_PATH at it to fine-tune, or tools.infer/tools.eval at it.
"""

from __future__ import annotations

import argparse
import os

import jax
import numpy as np

from model_zoo import hf
from model_zoo.model_def import split_params
from model_zoo.identity import identity_of
from runner import trained_model
from training.checkpoints import Checkpointer


def hf_to_t5pod(hf_dir: str, model_dir: str, task: str | None = None) -> None:
    ckpt_dir = os.path.join(model_dir, "checkpoints")
    if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
        raise FileExistsError(f"{ckpt_dir} already holds checkpoints; convert into an empty "
                              "model_dir (nothing was overwritten)")
    model = hf.load(hf_dir)
    _, params = split_params(model)
    ckpt = Checkpointer(ckpt_dir, async_save=False, identity=identity_of(model.config))
    ckpt.save(0, {"params": params}, {"converted_from": os.path.abspath(hf_dir)})
    ckpt.close()
    trained_model.write_model_json(model_dir, model.config, task)


def t5pod_to_hf(model_dir: str, hf_dir: str, step: int | None = None) -> None:
    import partitioning

    mesh = partitioning.make_mesh(partitioning.MeshConfig(ici={"data": 1}),
                                  devices=jax.devices()[:1])
    mdef, params, cfg, _ = trained_model.load(model_dir, mesh, step=step)
    hf.save(mdef.bind(jax.tree.map(np.asarray, params)), hf_dir)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hf_dir")
    p.add_argument("--to_model_dir")
    p.add_argument("--task", help="task whose vocabulary the model uses (for tools.infer)")
    p.add_argument("--model_dir")
    p.add_argument("--to_hf_dir")
    p.add_argument("--step", type=int)
    args = p.parse_args(argv)
    if args.hf_dir and args.to_model_dir:
        hf_to_t5pod(args.hf_dir, args.to_model_dir, args.task)
        print(f"wrote {args.to_model_dir}")
    elif args.model_dir and args.to_hf_dir:
        t5pod_to_hf(args.model_dir, args.to_hf_dir, args.step)
        print(f"wrote {args.to_hf_dir}")
    else:
        p.error("give --hf_dir with --to_model_dir, or --model_dir with --to_hf_dir")


if __name__ == "__main__":
    main()
