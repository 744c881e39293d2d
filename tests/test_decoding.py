"""Greedy and beam decoding with the KV cache, checked against cache-free references."""
from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import small_config
from prompt_tuning_jax import decoding
from prompt_tuning_jax.methods import MethodInputs, PromptTuning
from prompt_tuning_jax.models import PromptedT5, T5

LENGTH = 6  # max_decode_length


def encoder_inputs(batch=3, length=7, seed=0):
  """Random encoder tokens (ids 2..63); rows after the first end in padding."""
  tokens = np.random.RandomState(seed).randint(2, 64, (batch, length))
  for i in range(1, batch):
    tokens[i, length - 2 * i:] = 0
  return jnp.asarray(tokens)


@functools.lru_cache(maxsize=None)
def _prompted_params(vocab_size: int = 64):
  """Random params of the 4-position prompted model, shared by the tests.

  Filled with numpy from the parameter shapes (no compiled init): the token
  embedding ~ N(0, 1) as in T5, other 2-D leaves ~ N(0, 1 / rows), norm scales 1.
  """
  model = PromptedT5(small_config(vocab_size=vocab_size), prompt_length=4)
  tokens = jnp.ones((1, LENGTH), jnp.int32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), tokens, tokens, tokens,
                                             enable_dropout=False))['params']
  rng = np.random.RandomState(2)

  def fill(path, shape):
    if len(shape.shape) == 1:
      return jnp.ones(shape.shape, jnp.float32)
    std = 1.0 if path[-1].key == 'embedding' else shape.shape[0] ** -0.5
    return jnp.asarray(rng.normal(0.0, std, shape.shape), jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def params_for(model):
  """Params for `model`: the shared random weights, with the prompt only where it has one."""
  params = dict(_prompted_params(model.config.vocab_size))
  if not isinstance(model.method, PromptTuning):
    params['encoder'] = {k: v for k, v in params['encoder'].items() if k != 'prompt'}
  return params


def first_eos_mask(tokens: np.ndarray, eos_id: int) -> np.ndarray:
  """1 at positions up to and including the first EOS (all positions if none)."""
  is_eos = tokens == eos_id
  after_eos = np.cumsum(is_eos, axis=1) - is_eos > 0
  return (~after_eos).astype(np.int32)


@functools.partial(jax.jit, static_argnames=('model',))
def _full_log_probs(model, params, inputs, decoder_inputs, valid):
  """Cache-free: the whole model (encoder included) on [b, d] decoder inputs."""
  logits = model.apply({'params': params}, inputs, decoder_inputs, valid,
                       enable_dropout=False)
  return jax.nn.log_softmax(logits, axis=-1)


def naive_greedy(model, params, inputs, eos_id):
  """Greedy decoding that reruns the full model on the growing prefix at every step."""
  batch = inputs.shape[0]
  tokens = np.zeros((batch, LENGTH), np.int32)
  scores = np.zeros(batch, np.float32)
  done = np.zeros(batch, bool)
  for i in range(LENGTH):
    decoder_inputs = np.pad(tokens[:, :-1], ((0, 0), (1, 0)))
    log_probs = np.asarray(_full_log_probs(model, params, inputs, jnp.asarray(decoder_inputs),
                                           jnp.ones((batch, LENGTH), jnp.int32)))[:, i]
    best = log_probs.argmax(-1)
    tokens[:, i] = np.where(done, 0, best)
    scores += np.where(done, 0.0, log_probs[np.arange(batch), best])
    done |= tokens[:, i] == eos_id
  return tokens, scores


def sequence_log_prob(model, params, inputs, tokens, eos_id):
  """Cache-free summed log-probability of each row up to its first EOS (0 tokens allowed)."""
  tokens = np.asarray(tokens)
  valid = first_eos_mask(tokens, eos_id)
  decoder_inputs = np.pad(tokens[:, :-1], ((0, 0), (1, 0)))
  log_probs = np.asarray(_full_log_probs(model, params, inputs, jnp.asarray(decoder_inputs),
                                         jnp.asarray(valid)))
  picked = np.take_along_axis(log_probs, tokens[:, :, None], axis=-1)[:, :, 0]
  return (picked * valid).sum(-1), valid.sum(-1)


def eos_from_free_run(model, params, inputs):
  """An EOS id the model emits mid-sequence (the last row's 4th free-running token).

  Random models rarely emit token 1, so tests take this one: the last row then
  stops early while the others (usually) run to the end.
  """
  free, _ = naive_greedy(model, params, inputs, eos_id=-1)
  return int(free[-1, 3])


MODELS = {
    't5': lambda cfg: T5(cfg),
    'prefix': lambda cfg: PromptedT5(cfg, prompt_length=4, prompt_placement='prefix'),
    'suffix': lambda cfg: PromptedT5(cfg, prompt_length=4, prompt_placement='suffix'),
}


@pytest.mark.parametrize('kind', list(MODELS))
def test_greedy_with_cache_equals_naive_greedy(kind):
  model = MODELS[kind](small_config())
  params = params_for(model)
  inputs = encoder_inputs()
  eos_id = eos_from_free_run(model, params, inputs)

  tokens, scores = decoding.jit_greedy_decode(model, params, inputs, max_decode_length=LENGTH,
                                              eos_id=eos_id)
  expected_tokens, expected_scores = naive_greedy(model, params, inputs, eos_id)

  assert tokens.shape == (3, LENGTH) and tokens.dtype == jnp.int32
  assert scores.shape == (3,) and scores.dtype == jnp.float32
  after_eos = first_eos_mask(expected_tokens, eos_id) == 0
  assert after_eos.any()  # an early stop is exercised
  np.testing.assert_array_equal(tokens, expected_tokens)
  np.testing.assert_allclose(scores, expected_scores, atol=1e-5, rtol=0)
  assert (np.asarray(tokens)[after_eos] == 0).all()


def test_greedy_stops_once_every_row_is_done():
  model = T5(small_config())
  params = params_for(model)
  inputs = jnp.tile(encoder_inputs()[:1], (3, 1))  # identical rows finish together
  free, _ = naive_greedy(model, params, inputs, eos_id=-1)
  eos_id = int(free[0, 2])
  tokens, scores = decoding.jit_greedy_decode(model, params, inputs, max_decode_length=LENGTH,
                                              eos_id=eos_id)
  expected_tokens, expected_scores = naive_greedy(model, params, inputs, eos_id)
  assert (expected_tokens[:, 3:] == 0).all()
  np.testing.assert_array_equal(tokens, expected_tokens)
  np.testing.assert_allclose(scores, expected_scores, atol=1e-5, rtol=0)


def test_jitted_decoding_does_not_retrace(monkeypatch):
  model = T5(small_config())
  params = params_for(model)
  inputs = encoder_inputs()
  traces = []
  encode = decoding.encode
  monkeypatch.setattr(decoding, 'encode', lambda *a, **k: traces.append(1) or encode(*a, **k))
  decoding.jit_greedy_decode(model, params, inputs, max_decode_length=LENGTH, eos_id=3)
  first = len(traces)  # 0 when an earlier test compiled the same shapes
  decoding.jit_greedy_decode(model, params, inputs[::-1], max_decode_length=LENGTH, eos_id=5)
  assert first <= 1 and len(traces) == first


def test_beam_size_one_without_length_penalty_is_greedy():
  # Width 1 keeps the greedy path; with alpha=0 a finished greedy sequence can
  # only be beaten by a longer one of higher probability, which cannot exist.
  model = T5(small_config())
  params = params_for(model)
  inputs = encoder_inputs()
  eos_id = eos_from_free_run(model, params, inputs)
  greedy_tokens, greedy_scores = decoding.jit_greedy_decode(
      model, params, inputs, max_decode_length=LENGTH, eos_id=eos_id)
  beam_tokens, beam_scores = decoding.jit_beam_search(
      model, params, inputs, beam_size=1, max_decode_length=LENGTH, alpha=0.0, eos_id=eos_id)
  np.testing.assert_array_equal(beam_tokens, greedy_tokens)
  np.testing.assert_allclose(beam_scores, greedy_scores, atol=1e-5, rtol=0)


def test_beam_score_is_the_penalised_log_prob_of_its_tokens():
  # For a narrow beam, "beam >= greedy" is not a theorem (the greedy prefix can
  # be pruned); what must hold is that the returned score is the length-
  # penalised log-probability of the returned tokens.
  model = T5(small_config())
  params = params_for(model)
  inputs = encoder_inputs(seed=1)
  eos_id = eos_from_free_run(model, params, inputs)
  alpha = 0.6
  tokens, scores = decoding.jit_beam_search(model, params, inputs, beam_size=4,
                                            max_decode_length=LENGTH, alpha=alpha, eos_id=eos_id)
  assert tokens.shape == (3, LENGTH) and scores.shape == (3,)
  log_prob, length = sequence_log_prob(model, params, inputs, tokens, eos_id)
  np.testing.assert_allclose(scores, log_prob / ((5.0 + length) / 6.0) ** alpha,
                             atol=1e-5, rtol=0)
  after_eos = first_eos_mask(np.asarray(tokens), eos_id) == 0
  assert (np.asarray(tokens)[after_eos] == 0).all()


def test_exhaustive_beam_search_finds_the_best_sequence():
  vocab, length, eos_id, alpha = 6, 3, 1, 0.6
  model = T5(small_config(vocab_size=vocab))
  params = params_for(model)
  inputs = jnp.array([[2, 3, 4, 5, 2, 3, 4], [5, 4, 3, 0, 0, 0, 0]])

  # Every output: a length-3 sequence, zeroed after its first EOS.
  candidates = np.array(list(itertools.product(range(vocab), repeat=length)), np.int32)
  candidates = np.unique(candidates * first_eos_mask(candidates, eos_id), axis=0)
  n = len(candidates)
  all_tokens = np.tile(candidates, (2, 1))
  decoder_inputs = np.pad(all_tokens[:, :-1], ((0, 0), (1, 0)))
  valid = first_eos_mask(all_tokens, eos_id)
  log_probs = np.asarray(_full_log_probs(model, params, jnp.repeat(inputs, n, axis=0),
                                         jnp.asarray(decoder_inputs), jnp.asarray(valid)))
  picked = np.take_along_axis(log_probs, all_tokens[:, :, None], axis=-1)[:, :, 0]
  penalised = ((picked * valid).sum(-1) / ((5.0 + valid.sum(-1)) / 6.0) ** alpha).reshape(2, n)
  best = penalised.argmax(-1)

  # Wide enough that nothing is ever pruned.
  tokens, scores = decoding.jit_beam_search(
      model, params, inputs, beam_size=vocab ** length, max_decode_length=length,
      alpha=alpha, eos_id=eos_id)
  np.testing.assert_array_equal(tokens, candidates[best])
  np.testing.assert_allclose(scores, penalised[np.arange(2), best], atol=1e-5, rtol=0)

  # The greedy sequence is one of the candidates, so it cannot score higher.
  greedy_tokens, _ = decoding.jit_greedy_decode(model, params, inputs,
                                                max_decode_length=length, eos_id=eos_id)
  greedy_index = [np.flatnonzero((candidates == g).all(-1))[0] for g in np.asarray(greedy_tokens)]
  assert (np.asarray(scores) >= penalised[np.arange(2), greedy_index] - 1e-6).all()


def with_prompt(params, prompt):
  return {**params, 'encoder': {**params['encoder'], 'prompt': {'prompt': {'prompt': prompt}}}}


def mixed_prompt_case(emb_dim: int):
  """Three prompts of lengths 4, 4 and 2, one per row of a 3-row batch.

  Returns (prompt_list, prompts [3, 4, emb], prompt_mask [3, 4]); row i uses
  prompt i, and the short prompt is left-padded with mask False.
  """
  rng = np.random.RandomState(7)
  prompt_list = [jnp.asarray(rng.uniform(-2, 2, (size, emb_dim)), jnp.float32)
                 for size in (4, 4, 2)]
  prompts = jnp.stack([jnp.pad(p, ((4 - p.shape[0], 0), (0, 0))) for p in prompt_list])
  prompt_mask = jnp.stack([jnp.arange(4) >= 4 - p.shape[0] for p in prompt_list])
  return prompt_list, prompts, prompt_mask


def prompted_model_for(prompt) -> PromptedT5:
  return PromptedT5(small_config(), prompt_length=prompt.shape[0])


def test_mixed_prompts_decode_like_separate_prompted_models():
  """One batch, three prompts (the short one left-padded) == each prompt's own model."""
  model = PromptedT5(small_config(), prompt_length=4)
  params = params_for(model)
  inputs = encoder_inputs()  # rows 1 and 2 padded
  prompt_list, prompts, prompt_mask = mixed_prompt_case(model.config.emb_dim)

  expected_tokens, expected_scores = np.zeros((3, LENGTH), np.int32), np.zeros(3, np.float32)
  for i, prompt in enumerate(prompt_list):
    # The whole batch under prompt i (same shapes as the other tests: no new compile).
    tokens, scores = decoding.jit_greedy_decode(prompted_model_for(prompt),
                                                with_prompt(params, prompt), inputs,
                                                max_decode_length=LENGTH)
    expected_tokens[i], expected_scores[i] = tokens[i], scores[i]

  tokens, scores = decoding.jit_greedy_decode(model, params, inputs, max_decode_length=LENGTH,
                                              method_inputs=MethodInputs(prompts, prompt_mask))
  np.testing.assert_array_equal(tokens, expected_tokens)
  np.testing.assert_allclose(scores, expected_scores, atol=1e-5, rtol=0)


def test_beam_search_rejects_empty_beam():
  with pytest.raises(ValueError, match='beam_size'):
    decoding.beam_search(T5(small_config()), {}, encoder_inputs(), beam_size=0,
                         max_decode_length=LENGTH)


def test_variables_dict_instead_of_params_is_a_clear_error():
  model = T5(small_config())
  with pytest.raises(ValueError, match="variables\\['params'\\]"):
    decoding.greedy_decode(model, {'params': params_for(model)}, encoder_inputs(),
                           max_decode_length=LENGTH)
