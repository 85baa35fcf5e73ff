"""The asynchronous loop: prefetched batches change nothing, and preemption is agreed only
where the loop waits for the devices anyway (the 2-process checks are in test_multihost)."""

import json
import os
import signal

import jax
import numpy as np
import pytest

import training.loop
from tests.train_helpers import copy_batch, make_trainer
from training.checkpoints.manager import Checkpointer
from training.loop import LoopConfig, preemption_mode, run


@pytest.fixture(scope="module")
def trainer():
    return make_trainer({"data": 2})


class Feed:
    """`steps` copy batches by position, then StopIteration; SIGTERM while reading `term`."""

    def __init__(self, state, steps, term=None):
        self.position, self.steps, self.term = (state or {}).get("position", 0), steps, term

    def __next__(self):
        if self.position == self.steps:
            raise StopIteration  # the loop must never read past its last step
        self.position += 1
        if self.position == self.term:
            os.kill(os.getpid(), signal.SIGTERM)
        return copy_batch(8, seed=self.position)

    def state(self):
        return {"position": self.position}


def train(trainer, model_dir, steps=6, term=None, started=None, **loop):
    config = LoopConfig(train_steps=steps, checkpoint_every=loop.pop("checkpoint_every", 100),
                        log_every=loop.pop("log_every", 1), async_checkpoints=False, **loop)
    return run(trainer, config, str(model_dir), lambda s: Feed(s, steps, term), progress=False,
               on_start=None if started is None else started.append)


def losses(model_dir):
    return [json.loads(x)["loss"] for x in open(model_dir / "metrics.jsonl")]


def test_prefetch_gives_the_batches_and_losses_of_the_loop_without_it(trainer, tmp_path,
                                                                     monkeypatch):
    seen = {}
    step = trainer.train_step

    def recording(state, batch):
        seen.setdefault(key, []).append(jax.device_get(batch["encoder_input_tokens"]))
        return step(state, batch)
    monkeypatch.setattr(trainer, "train_step", recording)
    results = {}
    for key in (0, 3):
        results[key] = train(trainer, tmp_path / str(key), prefetch=key)
    want = [copy_batch(8, seed=i)["encoder_input_tokens"] for i in range(1, 7)]
    for key in (0, 3):
        np.testing.assert_array_equal(np.stack(seen[key]), np.stack(want))
    assert losses(tmp_path / "0") == losses(tmp_path / "3")
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(results[0].state.params),
                 jax.device_get(results[3].state.params))

    # SIGTERM while batch 3 is read, which with prefetch=2 is during step 1: step 1 is saved
    # with the position of the batch it consumed (1, not 3), and the resumed run matches.
    cut, started = tmp_path / "cut", []
    first = train(trainer, cut, term=3, prefetch=2, started=started)
    assert first.preempted and first.step == 1 and started == [0]
    ckpt = Checkpointer(str(cut / "checkpoints"), async_save=False)
    assert ckpt.all_steps() == [1]
    assert ckpt.restore(trainer.abstract_state())[1] == {"position": 1}
    rest = train(trainer, cut, prefetch=2, started=started)
    assert rest.resumed and rest.step == 6 and rest.stopped == "done" and started == [0, 1]
    assert losses(cut) == losses(tmp_path / "0")
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(rest.state.params),
                 jax.device_get(results[0].state.params))
    done = train(trainer, cut, prefetch=2, started=started)  # already there: no start
    assert done.stopped == "already_done" and done.state is None and started == [0, 1]


def test_collective_agreement_only_on_log_checkpoint_and_every_nth_step(trainer, tmp_path,
                                                                       monkeypatch):
    calls, steps = [], []
    gather, step = training.loop._gather_flag, trainer.train_step

    def counting(state, batch):
        steps.append(len(steps) + 1)
        return step(state, batch)
    monkeypatch.setattr(trainer, "train_step", counting)
    monkeypatch.setattr(training.loop, "_gather_flag",
                        lambda flag: calls.append(len(steps)) or gather(flag))
    loop = dict(preemption_sync="collective", log_every=4, checkpoint_every=6,
                preemption_check_every=5)
    result = train(trainer, tmp_path / "a", steps=9, **loop)
    # before the first step, then after log step 4, the 5th, checkpoint step 6, log step 8;
    # the last step saves and ends the run without one
    assert calls == [0, 4, 5, 6, 8] and not result.preempted
    calls.clear()
    steps.clear()
    result = train(trainer, tmp_path / "b", steps=9, term=3, **loop)  # SIGTERM in step 1
    assert calls == [0, 4] and result.preempted and result.step == 4
    assert Checkpointer(str(tmp_path / "b" / "checkpoints")).all_steps() == [4]


def test_one_process_needs_no_collective_and_bad_settings_fail_at_construction():
    assert preemption_mode("auto") == preemption_mode("service") == "local"
    assert preemption_mode("collective") == "collective"
    for kwargs, match in ((dict(prefetch=-1), r"prefetch=-1 is invalid: expected an integer >= 0"),
                          (dict(preemption_sync="barrier"),
                           r"preemption_sync='barrier' is invalid: expected one of"),
                          (dict(preemption_check_every=0), r"preemption_check_every=0")):
        with pytest.raises(ValueError, match=match):
            LoopConfig(train_steps=1, **kwargs)


class Recording:
    """A user's evaluator: the loop knows only `prefix` and `run(step, params)`."""

    prefix = "probe/"

    def __init__(self):
        self.calls = []

    def run(self, step, params):
        params = jax.device_get(params)
        self.calls.append((step, params))
        return {"probe/norm": float(sum(np.sum(np.square(x)) for x in jax.tree.leaves(params)))}


def test_the_loop_runs_any_evaluator_at_eval_every_with_the_live_params(trainer, tmp_path):
    probe = Recording()
    config = LoopConfig(train_steps=4, eval_every=2, checkpoint_every=2, log_every=1,
                        async_checkpoints=False)
    result = run(trainer, config, str(tmp_path), lambda s: Feed(s, 4), [probe], progress=False)
    assert [s for s, _ in probe.calls] == [2, 4]
    ckpt = Checkpointer(str(tmp_path / "checkpoints"), async_save=False)
    for step, seen in probe.calls:  # the params trained up to that step, not a stale copy
        want = ckpt.restore_params(trainer.abstract_state().params, step)
        jax.tree.map(np.testing.assert_array_equal, seen, jax.device_get(want))
    records = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    logged = [(r["step"], r["probe/norm"]) for r in records if "probe/norm" in r]
    norms = [sum(float(np.sum(np.square(x))) for x in jax.tree.leaves(p)) for _, p in probe.calls]
    assert [s for s, _ in logged] == [2, 4]
    assert [n for _, n in logged] == pytest.approx(norms, rel=1e-6)
    assert result.eval_metrics["probe/norm"] == logged[-1][1]

    # A kill during the final eval: the rerun trains nothing and runs only that evaluator.
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    (tmp_path / "metrics.jsonl").write_text("".join(
        x + "\n" for x in lines if not ('"probe/norm"' in x and json.loads(x)["step"] == 4)))
    again = Recording()
    rerun = run(trainer, config, str(tmp_path), lambda s: Feed(s, 4), [again], progress=False)
    assert [s for s, _ in again.calls] == [4] and rerun.step == 4
    assert rerun.eval_metrics["probe/norm"] == result.eval_metrics["probe/norm"]


@pytest.mark.parametrize("evaluator, error", [
    (object(), r"must have run\(step, params\).*prefix"),
    (type("NoPrefix", (), {"run": lambda self, step, params: {}})(), "prefix"),
])
def test_an_object_that_is_no_evaluator_is_refused_before_training(trainer, tmp_path, evaluator,
                                                                   error):
    with pytest.raises(TypeError, match=error):
        run(trainer, LoopConfig(train_steps=1), str(tmp_path), lambda s: Feed(s, 1),
            [evaluator], progress=False)
    assert not os.path.exists(tmp_path / "checkpoints")


def test_a_metric_outside_the_evaluators_prefix_is_refused(trainer, tmp_path):
    wrong = Recording()
    wrong.run = lambda step, params: {"loss": 1.0}
    with pytest.raises(ValueError, match=r"returned 'loss'.*prefix 'probe/'"):
        run(trainer, LoopConfig(train_steps=1, async_checkpoints=False), str(tmp_path),
            lambda s: Feed(s, 1), [wrong], progress=False)
