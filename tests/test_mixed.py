"""Mixed-task batches: a batch mixing prompts equals running each prompt's examples alone."""
from __future__ import annotations

import copy

import jax
import numpy as np
import pytest

from conftest import naive_greedy, small_config
from prompt_tuning_jax import scoring
from prompt_tuning_jax.many_prompts import mixed
from prompt_tuning_jax.many_prompts.bank import PromptBank
from prompt_tuning_jax.models import PromptedT5

CONFIG = small_config(num_decoder_layers=1)  # prompts act in the encoder; 1 decoder layer compiles fast
LENGTHS = {'a': 2, 'b': 5, 'c': 5}  # three prompts, two lengths
NAMES = ['a', 'b', 'c', 'b', 'a', 'c']  # two rows each: the runs alone share compilations
MAX_DECODE = 6


def _inputs() -> np.ndarray:
  """Rows 0-2 share one input under prompts a, b, c; the others differ, with padding."""
  rng = np.random.RandomState(0)
  tokens = rng.randint(3, CONFIG.vocab_size, (len(NAMES), 9)).astype(np.int32)
  for i, length in enumerate([9, 9, 9, 4, 2, 5]):
    tokens[i, length - 1] = 1  # EOS
    tokens[i, length:] = 0
  tokens[1:3] = tokens[0]
  return tokens


def _frozen_params(placement: str) -> dict:
  """Frozen weights of a prompted model, without its learned prompt."""
  model = PromptedT5(CONFIG, prompt_length=3, prompt_placement=placement)
  params = model.init(jax.random.PRNGKey(0), np.ones((1, 4), np.int32), np.ones((1, 2), np.int32),
                      np.ones((1, 2), np.int32), enable_dropout=False)['params']
  params = copy.deepcopy(jax.tree.map(np.asarray, params))
  del params['encoder']['prompt']
  return params


def _bank() -> PromptBank:
  rng = np.random.RandomState(1)
  return PromptBank({n: 2.0 * rng.randn(p, CONFIG.emb_dim).astype(np.float32)
                     for n, p in LENGTHS.items()}, emb_dim=CONFIG.emb_dim)


def _alone(frozen: dict, bank: PromptBank, name: str, placement: str):
  """A model whose learned prompt IS `name`'s prompt, and its params."""
  model = PromptedT5(CONFIG, prompt_length=LENGTHS[name], prompt_placement=placement)
  params = copy.deepcopy(frozen)
  params['encoder']['prompt'] = {'prompt': {'prompt': bank[name]}}
  return model, params


@pytest.mark.parametrize('placement', ['prefix', 'suffix'])
def test_mixed_greedy_decode_equals_each_prompt_alone(placement):
  frozen, bank, inputs = _frozen_params(placement), _bank(), _inputs()
  model = PromptedT5(CONFIG, prompt_placement=placement)
  tokens, scores = mixed.mixed_greedy_decode(model, frozen, bank, NAMES, inputs,
                                             max_decode_length=MAX_DECODE)
  tokens, scores = np.asarray(tokens), np.asarray(scores)
  assert tokens.shape == (len(NAMES), MAX_DECODE) and scores.shape == (len(NAMES),)
  for name in LENGTHS:
    rows = [i for i, n in enumerate(NAMES) if n == name]
    alone_model, alone_params = _alone(frozen, bank, name, placement)
    # Cache-free: the whole model of that prompt alone, rerun on the growing prefix.
    want_tokens, want_scores = naive_greedy(alone_model, alone_params, inputs[rows], MAX_DECODE)
    np.testing.assert_array_equal(tokens[rows], want_tokens, err_msg=name)
    np.testing.assert_allclose(scores[rows], np.asarray(want_scores), atol=1e-5, rtol=0,
                               err_msg=name)
  # Rows 0-2: one input, prompts a, b, c: the prompts matter (the check is not vacuous).
  assert len({round(float(s), 4) for s in scores[:3]}) == 3


@pytest.mark.parametrize('placement', ['prefix', 'suffix'])
def test_mixed_rank_classify_equals_each_prompt_alone(placement):
  frozen, bank, inputs = _frozen_params(placement), _bank(), _inputs()
  model = PromptedT5(CONFIG, prompt_placement=placement)
  labels = np.array([[5, 9, 1], [7, 1, 0], [11, 12, 1]], np.int32)
  index, scores = mixed.mixed_rank_classify(model, frozen, bank, NAMES, inputs, labels)
  assert index.shape == (len(NAMES),) and scores.shape == (len(NAMES), 3)
  for name in LENGTHS:
    rows = [i for i, n in enumerate(NAMES) if n == name]
    alone_model, alone_params = _alone(frozen, bank, name, placement)
    want_index, want_scores = scoring.jit_rank_classify(alone_model, alone_params,
                                                        inputs[rows], labels)
    np.testing.assert_array_equal(index[rows], np.asarray(want_index), err_msg=name)
    np.testing.assert_allclose(scores[rows], np.asarray(want_scores), atol=1e-5, rtol=0,
                               err_msg=name)


def test_mixed_rank_classify_with_per_task_label_sets():
  frozen, bank, inputs = _frozen_params('prefix'), _bank(), _inputs()
  model = PromptedT5(CONFIG)
  per_task = {'a': np.array([[5, 1], [6, 1]], np.int32),
              'b': np.array([[6, 1, 0], [7, 8, 1], [9, 1, 0]], np.int32),
              'c': np.array([[10, 1]], np.int32)}
  index, scores = mixed.mixed_rank_classify(model, frozen, bank, NAMES, inputs, per_task)
  assert scores.shape == (len(NAMES), 3)
  for name, labels in per_task.items():
    rows = [i for i, n in enumerate(NAMES) if n == name]
    alone_model, alone_params = _alone(frozen, bank, name, 'prefix')
    want_index, want_scores = scoring.jit_rank_classify(alone_model, alone_params,
                                                        inputs[rows], labels)
    n = labels.shape[0]
    np.testing.assert_array_equal(index[rows], np.asarray(want_index))
    np.testing.assert_allclose(scores[rows][:, :n], np.asarray(want_scores), atol=1e-5, rtol=0)
    assert np.all(scores[rows][:, n:] == -np.inf)
  with pytest.raises(KeyError, match=r"No label tokens for prompt\(s\) \['c'\]"):
    mixed.mixed_rank_classify(model, frozen, bank, NAMES, inputs,
                              {k: v for k, v in per_task.items() if k != 'c'})


def test_errors():
  frozen, bank, inputs = _frozen_params('prefix'), _bank(), _inputs()
  with pytest.raises(ValueError, match='one name per example'):
    mixed.mixed_greedy_decode(PromptedT5(CONFIG), frozen, bank, NAMES[:2], inputs,
                              max_decode_length=2)
  wide = PromptedT5(CONFIG.replace(emb_dim=32))
  with pytest.raises(ValueError, match='emb_dim=32'):
    mixed.gather_prompts(wide, bank, ['a'])
  from prompt_tuning_jax.models import T5
  with pytest.raises(ValueError, match='ModelTuning is not one prompt before the input'):
    mixed.gather_prompts(T5(CONFIG), bank, ['a'])
