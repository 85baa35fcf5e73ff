"""The eval step returns weighted loss sums that equal the model's loss, on any mesh."""

import jax
import numpy as np

from model_zoo.losses import cross_entropy_loss
from tests.train_helpers import copy_batch, make_trainer


def test_eval_sums_match_direct_loss_on_a_sharded_mesh():
    batch = copy_batch(8, seed=3)
    results = []
    for ici, rules in (({"data": 1}, "data_parallel"), ({"data": 2, "tensor": 4}, "tensor")):
        trainer = make_trainer(ici, rules)
        state = trainer.init_state()
        results.append({k: float(v) for k, v in trainer.eval_step(state.params, batch).items()})
        params = jax.device_get(state.params)
        mdef = trainer.model_def
    logits = mdef.bind(params)(batch["encoder_input_tokens"], batch["decoder_input_tokens"])
    direct = cross_entropy_loss(logits, batch["decoder_target_tokens"],
                                batch["decoder_loss_weights"], z_loss=1e-4)
    for got in results:
        assert got["weight"] == float(np.sum(batch["decoder_loss_weights"]))
        np.testing.assert_allclose(got["loss"], float(direct.loss), rtol=1e-5)
        np.testing.assert_allclose(got["correct"], float(direct.correct))
