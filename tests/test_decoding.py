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


# ------------------------------------------------------------------ sampling


def sample(model, params, inputs, *, seed=0, indices=None, eos_id=1, length=LENGTH, **kwargs):
  indices = np.arange(inputs.shape[0]) if indices is None else indices
  return decoding.jit_sample_decode(model, params, inputs, decoding.example_keys(seed, indices),
                                    max_decode_length=length, eos_id=eos_id, **kwargs)


@pytest.mark.parametrize('temperature, top_k, top_p', [
    (0.0, 0, 1.0), (1e-4, 0, 1.0), (1.0, 1, 1.0), (2.0, 1, 0.9), (0.0, 5, 0.5)])
def test_temperature_zero_and_top_k_one_sample_the_greedy_tokens(temperature, top_k, top_p):
  model = PromptedT5(small_config(), prompt_length=4)
  params = params_for(model)
  inputs = encoder_inputs()
  eos_id = eos_from_free_run(model, params, inputs)
  greedy_tokens, greedy_scores = decoding.jit_greedy_decode(
      model, params, inputs, max_decode_length=LENGTH, eos_id=eos_id)
  tokens, scores = sample(model, params, inputs, eos_id=eos_id, temperature=temperature,
                          top_k=top_k, top_p=top_p)
  assert (np.asarray(greedy_tokens) == 0).any()  # a row stopped at its EOS
  np.testing.assert_array_equal(tokens, greedy_tokens)
  np.testing.assert_allclose(scores, greedy_scores, atol=1e-5, rtol=0)


def reference_distribution(log_probs: np.ndarray, temperature: float, top_k: int,
                           top_p: float) -> np.ndarray:
  """The sampling distribution over the vocabulary, in float64, from its definition."""
  logits = np.asarray(log_probs, np.float64) / temperature
  probs = np.exp(logits - logits.max())
  order = np.argsort(-probs, kind='stable')
  keep = np.zeros(len(probs), bool)
  keep[order[:top_k or len(probs)]] = True
  probs = np.where(keep, probs, 0.0) / probs[keep].sum()
  if top_p < 1.0:
    better = np.cumsum(probs[order]) - probs[order]
    # The nucleus is decided away from float rounding: no cumulative sum is near top_p.
    assert np.min(np.abs(better[keep[order]] - top_p)) > 1e-4
    nucleus = order[(better < top_p) & keep[order]]
    probs = np.where(np.isin(np.arange(len(probs)), nucleus), probs, 0.0)
    probs /= probs.sum()
  return probs


def first_step_log_probs(model, params, inputs):
  """Cache-free log p(first token | input) [b, vocab]."""
  batch = inputs.shape[0]
  zeros = jnp.zeros((batch, 1), jnp.int32)
  return np.asarray(_full_log_probs(model, params, inputs, zeros, jnp.ones_like(zeros)))[:, 0]


DRAWS = 20_000
FALSE_FAILURE = 1e-6  # probability that a correct sampler fails the bound, for a random seed


def assert_draws_follow(drawn: np.ndarray, probs: np.ndarray) -> None:
  """Pearson's chi-square of the drawn tokens against `probs` (float64), below the chi-square
  quantile at 1 - FALSE_FAILURE; tokens of probability 0 must never be drawn."""
  scipy_stats = pytest.importorskip('scipy.stats')
  observed = np.bincount(drawn, minlength=len(probs)).astype(np.float64)
  expected = len(drawn) * probs
  assert observed[expected == 0].sum() == 0  # never outside the top-k / nucleus
  # Bins of expected count >= 5; the others pooled into the smallest of those.
  order = np.argsort(expected)[::-1]
  big = order[expected[order] >= 5]
  small = order[(expected[order] > 0) & (expected[order] < 5)]
  exp_bins, obs_bins = expected[big].copy(), observed[big].copy()
  exp_bins[-1] += expected[small].sum()
  obs_bins[-1] += observed[small].sum()
  assert len(exp_bins) >= 3  # a distribution, not a near-certain token
  statistic = float(((obs_bins - exp_bins) ** 2 / exp_bins).sum())
  bound = float(scipy_stats.chi2.ppf(1 - FALSE_FAILURE, df=len(exp_bins) - 1))
  assert statistic < bound, (statistic, bound, len(exp_bins))


@pytest.mark.parametrize('temperature, top_k, top_p', [
    (1.0, 0, 1.0), (0.6, 12, 1.0), (1.5, 0, 0.7), (1.0, 20, 0.55)])
def test_first_token_frequencies_match_the_sampling_distribution(temperature, top_k, top_p):
  """DRAWS rows of one input, each with its own key, against the distribution computed
  from its definition in float64."""
  model = PromptedT5(small_config(), prompt_length=4)
  params = params_for(model)
  inputs = jnp.tile(encoder_inputs()[:1], (DRAWS, 1))
  tokens, _ = sample(model, params, inputs, seed=3, length=1, temperature=temperature,
                     top_k=top_k, top_p=top_p)
  assert_draws_follow(np.asarray(tokens)[:, 0], reference_distribution(
      first_step_log_probs(model, params, inputs[:1])[0], temperature, top_k, top_p))


def test_second_token_frequencies_match_the_distribution_given_the_first():
  """Each step draws afresh: the second token, among the rows whose first token is the most
  frequent one, follows p(second | input, first)."""
  model = PromptedT5(small_config(), prompt_length=4)
  params = params_for(model)
  inputs = jnp.tile(encoder_inputs()[:1], (DRAWS, 1))
  tokens = np.asarray(sample(model, params, inputs, seed=4, eos_id=-1, length=2)[0])
  first = np.bincount(tokens[:, 0]).argmax()
  rows = tokens[:, 0] == first
  assert rows.sum() > 1000
  decoder_inputs = jnp.array([[0, first]], jnp.int32)
  log_probs = _full_log_probs(model, params, inputs[:1], decoder_inputs,
                              jnp.ones_like(decoder_inputs))
  probs = np.exp(np.asarray(log_probs[0, 1], np.float64))
  assert_draws_follow(tokens[rows, 1], probs / probs.sum())


def test_top_p_never_samples_outside_the_nucleus_at_any_step():
  model = PromptedT5(small_config(), prompt_length=4)
  params = params_for(model)
  inputs = jnp.tile(encoder_inputs(), (40, 1))  # 120 rows, each its own key
  top_p = 0.3
  tokens = np.asarray(sample(model, params, inputs, seed=5, eos_id=-1, top_p=top_p)[0])
  decoder_inputs = np.pad(tokens[:, :-1], ((0, 0), (1, 0)))
  log_probs = np.asarray(_full_log_probs(model, params, inputs, jnp.asarray(decoder_inputs),
                                         jnp.ones(tokens.shape, jnp.int32)), np.float64)
  probs = np.exp(log_probs)  # [b, LENGTH, vocab]
  order = np.argsort(-probs, axis=-1, kind='stable')
  sorted_probs = np.take_along_axis(probs, order, axis=-1)
  better = np.cumsum(sorted_probs, axis=-1) - sorted_probs
  rank = np.argmax(order == tokens[:, :, None], axis=-1)  # each drawn token's rank
  better_than_drawn = np.take_along_axis(better, rank[:, :, None], axis=-1)[:, :, 0]
  assert (better_than_drawn < top_p + 1e-5).all()
  assert (rank > 0).any()  # the nucleus is more than the best token somewhere


def test_nucleus_of_a_known_distribution():
  log_probs = jnp.log(jnp.array([[0.05, 0.5, 0.15, 0.3]] * 2000))
  keys = decoding.example_keys(0, np.arange(2000))
  for top_p, nucleus in [(0.45, {1}), (0.7, {1, 3}), (0.85, {1, 2, 3}), (1.0, {0, 1, 2, 3})]:
    drawn = set(np.asarray(decoding.sample_tokens(keys, log_probs, top_p=top_p)).tolist())
    assert drawn == nucleus, top_p
  drawn = np.asarray(decoding.sample_tokens(keys, log_probs, top_k=2))
  assert set(drawn.tolist()) == {1, 3}
  # Ties with the nucleus' least likely token are kept.
  tied = jnp.log(jnp.array([[0.25] * 4] * 2000))
  assert set(np.asarray(decoding.sample_tokens(keys, tied, top_p=0.3)).tolist()) == {0, 1, 2, 3}


def test_nucleus_floor_is_the_least_likely_token_of_the_sorted_nucleus():
  rng = np.random.RandomState(0)
  logits = rng.normal(0, 3, (6, 5000)).astype(np.float32)
  probs = np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=-1))
  for top_p in (0.05, 0.5, 0.9):
    floor = np.asarray(decoding.nucleus_floor(jnp.asarray(probs), top_p))[:, 0]
    for row, value in zip(probs.astype(np.float64), floor):
      ordered = np.sort(row)[::-1]
      better = np.cumsum(ordered) - ordered
      assert np.min(np.abs(better - top_p)) > 1e-5  # away from float rounding
      assert value == np.float32(ordered[better < top_p][-1]), top_p


def test_same_seed_same_draws_whatever_the_batch_and_each_example_its_own():
  model = PromptedT5(small_config(), prompt_length=4)
  params = params_for(model)
  inputs = encoder_inputs()
  tokens, scores = map(np.asarray, sample(model, params, inputs, seed=11))
  again = np.asarray(sample(model, params, inputs, seed=11)[0])
  np.testing.assert_array_equal(again, tokens)
  # The same examples (same positions) in another order, with other examples between.
  others = encoder_inputs(seed=4)
  mixed = jnp.concatenate([others[:1], inputs[2:], others[1:], inputs[:2]])
  mixed_tokens = np.asarray(sample(model, params, mixed, seed=11,
                                   indices=np.array([7, 2, 8, 9, 0, 1]))[0])
  np.testing.assert_array_equal(mixed_tokens[[4, 5, 1]], tokens)
  # Another seed draws otherwise; equal inputs at different positions draw otherwise.
  assert (np.asarray(sample(model, params, inputs, seed=12)[0]) != tokens).any()
  same = np.asarray(sample(model, params, jnp.tile(inputs[:1], (3, 1)), seed=11)[0])
  assert len({tuple(row) for row in same}) == 3


def test_sampling_stops_rows_at_eos_and_scores_their_tokens():
  model = PromptedT5(small_config(), prompt_length=4)
  params = params_for(model)
  inputs = encoder_inputs()
  free = np.asarray(sample(model, params, inputs, seed=2, eos_id=-1)[0])
  eos_id = int(free[0, 2])  # row 0 draws it at step 2
  tokens, scores = map(np.asarray, sample(model, params, inputs, seed=2, eos_id=eos_id))
  keep = first_eos_mask(free, eos_id).astype(bool)
  np.testing.assert_array_equal(tokens, np.where(keep, free, 0))  # draws before EOS unchanged
  assert (tokens[0, 3:] == 0).all()
  log_prob, _ = sequence_log_prob(model, params, inputs, tokens, eos_id)
  np.testing.assert_allclose(scores, log_prob, atol=1e-5, rtol=0)


def test_sampling_needs_keys():
  model = T5(small_config())
  with pytest.raises(ValueError, match='keys='):
    decoding.jit_decode(model, params_for(model), encoder_inputs(), max_decode_length=LENGTH,
                        decoder='sample')
