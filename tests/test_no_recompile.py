"""After the first step, training and eval steps run without compiling again."""

import jax.monitoring as monitoring

from tests.train_helpers import copy_batch, make_trainer


def test_steps_after_the_first_do_not_recompile():
    trainer = make_trainer(ici={"data": 2, "fsdp": 2}, rules="fsdp")
    state = trainer.init_state()
    state, _ = trainer.train_step(state, copy_batch(8, seed=0))
    trainer.eval_step(state.params, copy_batch(8, seed=9))
    compiles = []

    def listen(name, seconds, **kwargs):
        if name.endswith("backend_compile_duration"):
            compiles.append(name)

    monitoring.register_event_duration_secs_listener(listen)
    try:
        for seed in range(1, 4):  # new data, donated state, same shapes
            state, metrics = trainer.train_step(state, copy_batch(8, seed=seed))
            trainer.eval_step(state.params, copy_batch(8, seed=seed + 10))
        float(metrics["loss"])
    finally:
        monitoring.unregister_event_duration_listener(listen)
    assert compiles == []
