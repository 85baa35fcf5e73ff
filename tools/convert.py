"""Convert checkpoints: HF directories, t5x checkpoints and t5pod model_dirs.

    python -m tools.convert --hf_dir=flan-t5-small --to_model_dir=ckpt/flan_small [--task=NAME]
    python -m tools.convert --t5x_checkpoint=t5_1_1_base/checkpoint_1000000 \
        --gin_file=models/t5_1_1/base.gin --to_model_dir=ckpt/t5_base   # or --to_hf_dir=DIR
    python -m tools.convert --model_dir=runs/demo --to_hf_dir=export/ [--step=N]
    python -m tools.convert --model_dir=runs/tree --branch=NAME --to_hf_dir=export/  # a TreeDNN

A t5x checkpoint stores no config: give its model with --gin_file (and --gin.NAME=VALUE) or
--preset=NAME, else it is read from the checkpoint's shapes and t5x's config.gin beside it.
A converted model_dir holds model.json and a params-only checkpoint (step 0): point
INITIAL_CHECKPOINT_PATH at it to fine-tune, or tools.infer/tools.eval at it. A target
directory that is not empty is refused untouched, before anything is read, unless
--overwrite is given: then the model files there (checkpoints/ and model.json, or
config.json and the weights) are replaced once the source has loaded; other files stay.
A TreeDNN tree (ModelConfig.tree) converts one branch at a time (`--branch=NAME`): its
trunk and that branch, written as the plain T5 of the tree's depth.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import tempfile

from tools import cli  # first: the quiet start and the log lines
from fields import paths
from fields.choices import require_choice

from tools.path_flags import path_flag

SOURCES = {"hf_dir": "an HF directory", "t5x_checkpoint": "a t5x checkpoint",
           "model_dir": "a t5pod model_dir"}
TARGETS = ("to_model_dir", "to_hf_dir")
# What --overwrite replaces in an HF directory: the model, and weights a reader could prefer
_HF_MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors",
                   "model.safetensors.index.json", "model-*.safetensors", "pytorch_model*.bin")


def check_target(target: str, overwrite: bool, source: str) -> None:
    """Refuse a target that is a file, the source itself, or (without `overwrite`) a
    directory that is not empty; nothing is read or written before this passes."""
    if paths.isfile(target):
        raise NotADirectoryError(f"target {target} is a file, not a directory")
    same = (target == source if paths.is_bucket(target) or paths.is_bucket(source)
            else os.path.realpath(target) == os.path.realpath(source))
    if same:
        raise ValueError(f"target {target} is the source; convert into another directory")
    present = paths.listdir(target)
    if present and not overwrite:
        shown = present[:6] + (["..."] if len(present) > 6 else [])
        raise FileExistsError(f"target {target} is not empty ({shown}); convert into a new or "
                              "empty directory, or pass --overwrite to replace its model files "
                              "(nothing was read or written)")


def _clear(target: str, to: str) -> None:
    if to == "to_model_dir":
        paths.rmtree(paths.join(target, "checkpoints"))
        patterns = ("model.json",)
    else:
        patterns = _HF_MODEL_FILES
    for name in paths.listdir(target):
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            paths.remove(paths.join(target, name))


def _save_hf(model, target: str) -> None:
    """hf.save into `target`; on a bucket through a local directory, uploaded file by file."""
    from model_zoo.interop import hf

    if not paths.is_bucket(target):
        hf.save(model, target)
        return
    with tempfile.TemporaryDirectory(prefix="t5pod_export_") as local:
        hf.save(model, local)
        for name in sorted(os.listdir(local)):
            paths.upload(os.path.join(local, name), paths.join(target, name))


def convert(source: str, target: str, to: str = "to_model_dir", *, model=None,
            step: int | None = None, task: str | None = None, overwrite: bool = False,
            what: str = "source", branch: str | None = None) -> None:
    """Write the checkpoint at `source` (any kind training.checkpoints.loader reads) as a
    t5pod model_dir (`to="to_model_dir"`) or an HF directory (`to="to_hf_dir"`).

    `model`: the ModelConfig a t5x checkpoint is read as (checked against the others);
    `task`: recorded in model.json (default: a t5pod source's own); `what` names the source
    in messages; `branch`: the branch of a tree to write, as a plain T5."""
    import jax
    import numpy as np

    import partitioning
    from model_zoo.identity import identity_of
    from training.checkpoints import loader
    from training.checkpoints.model_json import branch_task, write_model_json
    from training.checkpoints.manager import Checkpointer
    from training.checkpoints.lock import hold

    require_choice("", "to", to, TARGETS)
    source, target = paths.user_path(source, what), paths.user_path(target, f"--{to}")
    if to == "to_model_dir":
        from training.checkpoints.manager import refuse_s3

        refuse_s3(target, "--to_model_dir")
    check_target(target, overwrite, source)
    ckpt = loader.open_checkpoint(source, what, model=model, step=step)
    if model is not None:
        loader.check_model(ckpt, model, "the model given", "given")
    cfg = model or ckpt.config
    loader.check_branch(ckpt, branch)
    if cfg.tree is not None and branch is None:
        raise ValueError(f"{ckpt.name} holds a TreeDNN tree with branches "
                         f"{list(cfg.tree.branches)}: convert one with --branch=NAME (nothing "
                         "was written)")
    mesh = partitioning.make_mesh(partitioning.MeshConfig(ici={"data": 1}),
                                  devices=jax.devices()[:1])
    if branch is None:
        mdef, params = loader.restore(ckpt, mesh, config=cfg)
    else:
        mdef, params = loader.restore_branch(ckpt, mesh, "data_parallel", branch)
        cfg = cfg.replace(tree=None)
        task = task or (branch_task(ckpt.model_dir, branch) if ckpt.model_dir else None)
    params = jax.tree.map(np.asarray, params)
    if to == "to_hf_dir":
        if overwrite:
            _clear(target, to)
        _save_hf(mdef.bind(params), target)
        return
    paths.makedirs(target)
    with hold(target):  # no run writes this model_dir meanwhile
        if overwrite:
            _clear(target, to)
        ckpt_dir = Checkpointer(paths.join(target, "checkpoints"), async_save=False,
                                identity=identity_of(cfg))
        ckpt_dir.save(0, {"params": params}, {"converted_from": source})
        ckpt_dir.close()
        write_model_json(target, cfg, task or ckpt.task)


def _model(p: argparse.ArgumentParser, args, gin_files, gin_bindings):
    """The ModelConfig --preset or --gin_file names, or None."""
    if args.preset and (gin_files or gin_bindings):
        p.error("give --preset or --gin_file, not both")
    if args.preset:
        from model_zoo import preset

        try:
            return preset(args.preset)
        except ValueError as e:
            p.error(str(e))
    if gin_files or gin_bindings:
        from runner import gin_flags

        return gin_flags.model_from_gin(gin_files, gin_bindings)
    return None


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--hf_dir", type=path_flag,
                   help="source: an HF T5 / Switch directory (either era)")
    p.add_argument("--t5x_checkpoint", type=path_flag,
                   help="source: checkpoint_N, its `checkpoint` file or a t5x model_dir (its "
                        "newest step)")
    p.add_argument("--model_dir", type=path_flag, help="source: a t5pod model_dir")
    p.add_argument("--step", type=int, help="a step of --model_dir (default: the newest)")
    p.add_argument("--preset", help="the model of --t5x_checkpoint, e.g. t5_1_1_base "
                                    "(or --gin_file=models/...)")
    p.add_argument("--to_model_dir", type=path_flag)
    p.add_argument("--to_hf_dir", type=path_flag)
    p.add_argument("--task", help="task whose vocabulary the model uses (for tools.infer)")
    p.add_argument("--branch", help="a TreeDNN tree's branch to write as a plain T5")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the model files of a target directory that is not empty")
    args, gin_files, gin_bindings = cli.parse(p, argv)
    given = [k for k in SOURCES if getattr(args, k)]
    targets = [k for k in TARGETS if getattr(args, k)]
    if len(given) != 1 or len(targets) != 1:
        p.error("give one source (--hf_dir, --t5x_checkpoint or --model_dir) and one target "
                "(--to_model_dir or --to_hf_dir)")
    source, to = getattr(args, given[0]), targets[0]
    if args.step is not None and given[0] != "model_dir":
        p.error("--step applies to --model_dir")
    model = _model(p, args, gin_files, gin_bindings)
    target = getattr(args, to)
    convert(source, target, to, model=model, step=args.step, task=args.task,
            overwrite=args.overwrite, what=f"--{given[0]}", branch=args.branch)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
