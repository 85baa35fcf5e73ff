"""The evaluators a Run asks for (training/evaluator.py's interface): the eval loss over
`run.train.eval_feed` (its first `eval_batches` batches) and the seqio eval of
`run.train.inference_eval = @run.inference_eval()`.

Built before the run writes anything: each reads (and so checks) its data here."""

from __future__ import annotations

import itertools

import numpy as np

from runner.run import Run


def padded(batches, batch_size: int):
    """Pad a finite feed's last, short batch with zero rows (zero loss weight)."""
    for batch in batches:
        n = next(iter(batch.values())).shape[0]
        if n < batch_size:
            batch = {k: np.concatenate([v, np.zeros((batch_size - n,) + v.shape[1:], v.dtype)])
                     for k, v in batch.items()}
        yield batch


def eval_batches(run: Run, feed_config=None, branch: int | None = None):
    """`make_batches()` for EvalLoss: the first `eval_batches` host batches of the eval feed
    (`feed_config`: a tree branch's, whose rows get that `branch` index)."""
    from tasks.feeding.host_feed import HostFeed

    feed_config = feed_config or run.eval_feed

    def with_branch(batches):
        for batch in batches:
            rows = next(iter(batch.values())).shape[0]
            yield batch if branch is None else {
                **batch, "branch_index": np.full((rows,), branch, np.int32)}

    def make_batches():
        feed = HostFeed(feed_config)
        return with_branch(padded(itertools.islice(feed, run.eval_batches),
                                  feed_config.batch_size // feed.process_count))

    return make_batches


def evaluators(run: Run, trainer) -> list:
    """EvalLoss (if the run has an eval feed), then SeqioEvaluator (if inference_eval)."""
    out = []
    if run.eval_feed is not None:
        from training.eval_loss import EvalLoss

        if run.model.tree is None:
            out.append(EvalLoss(trainer, eval_batches(run)))
        else:  # a tree: one eval loss per branch, on its task
            for index, (name, feed) in enumerate(run.feeds_of(run.eval_feed).items()):
                out.append(EvalLoss(trainer, eval_batches(run, feed, index), f"eval/{name}/"))
    if run.inference_eval is not None:
        from inference.seqio_evaluator import for_trainer
        from tasks import settings_scope
        from tasks.task_lookup import lookup

        vocab = lookup(run.feed.mixture_or_task_name).output_features["targets"].vocabulary
        with settings_scope.active(run.feed.task_settings):  # its data is read here
            out.append(for_trainer(run.inference_eval, trainer, vocab))
    return out
