"""The one rule of hybrid inputs (tasks.hybrid_features.mismatch): task, model and lengths
agree on byte_inputs, and the message names all three and what to change."""

import types

import pytest

from tasks.hybrid_features import mismatch

HYBRID = types.SimpleNamespace(name="qa_hybrid", output_features={"inputs": 0,
                                                                  "byte_inputs": 0})
PLAIN = types.SimpleNamespace(name="qa", output_features={"inputs": 0})
WITH_BYTES = {"inputs": 8, "byte_inputs": 32, "targets": 4}
WITHOUT = {"inputs": 8, "targets": 4}


@pytest.mark.parametrize("provider,byte_encoder,lengths", [
    (HYBRID, True, WITH_BYTES), (PLAIN, False, WITHOUT), (HYBRID, None, WITH_BYTES),
    (PLAIN, False, None), (HYBRID, None, None)])
def test_agreement_is_no_error(provider, byte_encoder, lengths):
    assert mismatch(provider.name, provider, byte_encoder, lengths) is None


@pytest.mark.parametrize("provider,byte_encoder,lengths,message", [
    (HYBRID, True, WITHOUT,
     "task 'qa_hybrid' provides byte_inputs (a hybrid task) and the model reads them "
     "(ModelConfig.byte_encoder set), but task_feature_lengths={'inputs': 8, 'targets': 4} "
     "has no 'byte_inputs' length; add a 'byte_inputs' length to task_feature_lengths"),
    (PLAIN, None, WITH_BYTES,
     "task 'qa' has no byte_inputs, but task_feature_lengths={'inputs': 8, 'byte_inputs': 32, "
     "'targets': 4} gives 'byte_inputs'; drop 'byte_inputs' from task_feature_lengths"),
    (PLAIN, True, WITHOUT,
     "task 'qa' has no byte_inputs and task_feature_lengths={'inputs': 8, 'targets': 4} has "
     "no 'byte_inputs' length, but the model reads them (ModelConfig.byte_encoder set); use a "
     "task with byte_inputs (a '_hybrid' variant) instead with a 'byte_inputs' length, or a "
     "model without a byte encoder"),
    (HYBRID, False, WITHOUT,
     "task 'qa_hybrid' provides byte_inputs (a hybrid task), but the model has no byte "
     "encoder (ModelConfig.byte_encoder=None) and task_feature_lengths={'inputs': 8, "
     "'targets': 4} has no 'byte_inputs' length; use a task without byte_inputs instead, or "
     "a model with a byte_encoder and a 'byte_inputs' length"),
])
def test_a_disagreement_names_task_model_lengths_and_the_change(provider, byte_encoder,
                                                                 lengths, message):
    assert mismatch(provider.name, provider, byte_encoder, lengths).startswith(message)
