"""Teacher-forced scoring and rank classification."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from conftest import shared_path, small_config
from prompt_tuning_jax import decoding, scoring
from prompt_tuning_jax.methods import MethodInputs
from prompt_tuning_jax.models import PromptedT5, T5
from prompt_tuning_jax.models.t5 import Decoder, Encoder
from test_decoding import (LENGTH, encoder_inputs, eos_from_free_run, first_eos_mask,
                           mixed_prompt_case, params_for, prompted_model_for, with_prompt)

# Three labels of different lengths, with EOS (1), zero padded to LENGTH.
LABELS = np.array([[5, 1, 0, 0, 0, 0],
                   [7, 8, 1, 0, 0, 0],
                   [9, 10, 11, 1, 0, 0]], np.int32)


def test_score_targets_equals_the_greedy_decoders_own_scores():
  model = T5(small_config())
  params = params_for(model)
  inputs = encoder_inputs()
  eos_id = eos_from_free_run(model, params, inputs)
  tokens, greedy_scores = decoding.jit_greedy_decode(model, params, inputs,
                                                     max_decode_length=LENGTH, eos_id=eos_id)
  tokens = np.asarray(tokens)
  assert (tokens[first_eos_mask(tokens, eos_id) == 1] > 0).all()  # no padding mid-sequence

  scores = scoring.jit_score_targets(model, params, inputs, tokens)
  assert scores.shape == (3,) and scores.dtype == jnp.float32
  np.testing.assert_allclose(scores, greedy_scores, atol=1e-5, rtol=0)


def _per_label_scores(model, params, inputs, **prompt_args) -> np.ndarray:
  """[b, num_labels] via one `score_targets` call per label (encoder run per label)."""
  rows = [scoring.jit_score_targets(model, params, inputs,
                                    jnp.tile(label, (inputs.shape[0], 1)), **prompt_args)
          for label in LABELS]
  return np.stack([np.asarray(r) for r in rows], axis=1)


def test_rank_classify_picks_the_label_with_the_highest_log_likelihood():
  model = T5(small_config())
  params = params_for(model)
  inputs = encoder_inputs()
  expected = _per_label_scores(model, params, inputs)

  index, label_scores = scoring.jit_rank_classify(model, params, inputs, LABELS)
  assert index.shape == (3,) and index.dtype == jnp.int32
  assert label_scores.shape == (3, 3) and label_scores.dtype == jnp.float32
  np.testing.assert_allclose(label_scores, expected, atol=1e-5, rtol=0)
  np.testing.assert_array_equal(index, expected.argmax(-1))

  lengths = (LABELS > 0).sum(-1)
  index, label_scores = scoring.jit_rank_classify(model, params, inputs, LABELS, normalize=True)
  np.testing.assert_allclose(label_scores, expected / lengths, atol=1e-5, rtol=0)
  np.testing.assert_array_equal(index, (expected / lengths).argmax(-1))


def test_rank_classify_on_a_uniform_model_prefers_the_shortest_label():
  # Zero logits: every token has probability 1 / vocab, so a label of n tokens
  # scores exactly -n log(vocab); summed scores favour label 0, means tie.
  model = T5(small_config())
  params = params_for(model)
  zero_logits = {'kernel': jnp.zeros_like(params['decoder']['logits_dense']['kernel'])}
  params = {**params, 'decoder': {**params['decoder'], 'logits_dense': zero_logits}}
  inputs = encoder_inputs()
  lengths = (LABELS > 0).sum(-1)

  index, label_scores = scoring.jit_rank_classify(model, params, inputs, LABELS)
  np.testing.assert_allclose(label_scores, np.tile(-lengths * np.log(64), (3, 1)), rtol=1e-6)
  np.testing.assert_array_equal(index, [0, 0, 0])
  _, label_scores = scoring.jit_rank_classify(model, params, inputs, LABELS, normalize=True)
  np.testing.assert_allclose(label_scores, np.full((3, 3), -np.log(64)), rtol=1e-6)


def test_rank_classify_runs_the_encoder_once_per_example():
  model = PromptedT5(small_config(), prompt_length=4)
  params = params_for(model)
  inputs = encoder_inputs()
  calls = {Encoder: [], Decoder: []}

  def record(next_fn, args, kwargs, context):
    if context.method_name == '__call__' and type(context.module) in calls:
      batch_arg = args[0] if isinstance(context.module, Encoder) else args[2]
      calls[type(context.module)].append(batch_arg.shape[0])
    return next_fn(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.make_jaxpr(functools.partial(scoring.rank_classify, model))(params, inputs, LABELS)
  # One encoder pass over the 3 examples, one decoder pass over 3 rows (labels packed).
  assert calls[Encoder] == [3]
  assert calls[Decoder] == [3]


def test_jitted_rank_classify_does_not_retrace(monkeypatch):
  model = T5(small_config())
  params = params_for(model)
  inputs = encoder_inputs()
  traces = []
  encode = decoding.encode
  monkeypatch.setattr(decoding, 'encode', lambda *a, **k: traces.append(1) or encode(*a, **k))
  scoring.jit_rank_classify(model, params, inputs, LABELS)
  first = len(traces)  # 0 when an earlier test compiled the same shapes
  scoring.jit_rank_classify(model, params, inputs[::-1], LABELS[::-1] + 0)
  assert first <= 1 and len(traces) == first


def test_mixed_prompts_rank_classify_like_separate_prompted_models():
  model = PromptedT5(small_config(), prompt_length=4)
  params = params_for(model)
  inputs = encoder_inputs()
  prompt_list, prompts, prompt_mask = mixed_prompt_case(model.config.emb_dim)

  expected = np.zeros((3, 3), np.float32)
  for i, prompt in enumerate(prompt_list):
    _, label_scores = scoring.jit_rank_classify(prompted_model_for(prompt),
                                                with_prompt(params, prompt), inputs, LABELS)
    expected[i] = label_scores[i]

  index, label_scores = scoring.jit_rank_classify(model, params, inputs, LABELS,
                                                  method_inputs=MethodInputs(prompts, prompt_mask))
  np.testing.assert_allclose(label_scores, expected, atol=1e-5, rtol=0)
  np.testing.assert_array_equal(index, expected.argmax(-1))


def test_rank_classify_rejects_malformed_labels():
  model = T5(small_config())
  params, inputs = params_for(model), encoder_inputs()
  with pytest.raises(ValueError, match=r'\[num_labels, length\]'):
    scoring.rank_classify(model, params, inputs, LABELS[0])
  with pytest.raises(ValueError, match=r'rows \[1\] are all padding'):
    scoring.jit_rank_classify(model, params, inputs, LABELS * [[1], [0], [1]])


class _WordVocabulary:
  """A stand-in seqio vocabulary: one id per known word piece."""
  eos_id = 1
  pieces = {'yes': [7], 'no': [9], 'not_entailment': [11, 12, 13], 'empty': []}

  def encode(self, text):
    return self.pieces[text]


def test_encode_labels_appends_eos_and_pads():
  ids = scoring.encode_labels(_WordVocabulary(), ['yes', 'not_entailment'])
  np.testing.assert_array_equal(ids, [[7, 1, 0, 0], [11, 12, 13, 1]])
  assert ids.dtype == np.int32
  ids = scoring.encode_labels(_WordVocabulary(), ['yes', 'no'], length=3)
  np.testing.assert_array_equal(ids, [[7, 1, 0], [9, 1, 0]])


def test_encode_labels_refuses_to_cut_or_drop():
  with pytest.raises(ValueError, match="'not_entailment' is 4 tokens"):
    scoring.encode_labels(_WordVocabulary(), ['yes', 'not_entailment'], length=3)
  with pytest.raises(ValueError, match="'empty' encodes to no tokens"):
    scoring.encode_labels(_WordVocabulary(), ['yes', 'empty'])


def test_encode_labels_with_the_t5_vocabulary():
  import sentencepiece as spm
  processor = spm.SentencePieceProcessor(
      model_file=str(shared_path('vocab', 't5', 'spiece.model')))

  class Vocabulary:
    eos_id = processor.eos_id()
    encode = staticmethod(processor.encode)

  ids = scoring.encode_labels(Vocabulary(), ['positive', 'negative', 'not_entailment'])
  assert Vocabulary.eos_id == 1
  for row, word in zip(ids, ['positive', 'negative', 'not_entailment']):
    pieces = processor.encode(word)
    np.testing.assert_array_equal(row[:len(pieces) + 1], pieces + [1])
    assert (row[len(pieces) + 1:] == 0).all()
