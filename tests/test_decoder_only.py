"""The decoder-only LM: T5X's tree, an independent numpy forward, masks, relative positions,
the prompt's placements, cached decoding with a prefill."""
from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio
import tensorflow as tf
from flax import traverse_util

from conftest import decoder_only_config, prefix_lm_batch
from prompt_tuning_jax import decoding
from prompt_tuning_jax import dry_run
from prompt_tuning_jax import masks
from prompt_tuning_jax import optim
from prompt_tuning_jax import prompts as prompts_lib
from prompt_tuning_jax import scoring
from prompt_tuning_jax import train_step
from prompt_tuning_jax.methods import DecoderOnlyPromptTuning, MethodInputs
from prompt_tuning_jax.models import (T5, DecoderOnly, PromptedDecoderOnly, dummy_inputs,
                                      get_config, model_inputs)


def _init(model):
  return model.init(jax.random.PRNGKey(0), **dummy_inputs(model), enable_dropout=False)['params']


def _flat(params):
  return traverse_util.flatten_dict(params, sep='/')


def _randomize(params, seed=1):
  """Every weight random (norm scales and relpos biases too, so that each one matters)."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(tree, [0.5 * jax.random.normal(k, x.shape, x.dtype) + (x.ndim == 1)
                                   for k, x in zip(keys, leaves)])


# ------------------------------------------------------------------ the tree


@pytest.mark.parametrize('tied', [True, False])
def test_parameter_tree_is_t5x_decoder_only(tied):
  """The paths and shapes of flaxformer's DecoderOnly (T5.1.1 blocks, shared relpos bias)."""
  cfg = decoder_only_config(logits_via_embedding=tied)
  e, hd, m, v = cfg.emb_dim, cfg.num_heads * cfg.head_dim, cfg.mlp_dim, cfg.vocab_size
  expected = {'decoder/token_embedder/embedding': (v, e),
              'decoder/relpos_bias/rel_embedding': (cfg.num_heads,
                                                    cfg.relative_attention_num_buckets),
              'decoder/decoder_norm/scale': (e,)}
  for i in range(cfg.num_decoder_layers):
    p = f'decoder/layers_{i}'
    expected.update({f'{p}/pre_self_attention_layer_norm/scale': (e,),
                     f'{p}/pre_mlp_layer_norm/scale': (e,),
                     f'{p}/self_attention/query/kernel': (e, hd),
                     f'{p}/self_attention/key/kernel': (e, hd),
                     f'{p}/self_attention/value/kernel': (e, hd),
                     f'{p}/self_attention/out/kernel': (hd, e),
                     f'{p}/mlp/wi_0/kernel': (e, m), f'{p}/mlp/wi_1/kernel': (e, m),
                     f'{p}/mlp/wo/kernel': (m, e)})
  if not tied:
    expected['decoder/logits_dense/kernel'] = (e, v)
  assert {k: x.shape for k, x in _flat(_init(DecoderOnly(cfg))).items()} == expected
  prompted = _flat(_init(PromptedDecoderOnly(cfg, prompt_length=3)))
  assert {k: x.shape for k, x in prompted.items()} == {
      **expected, 'decoder/prompt/prompt/prompt': (3, e)}


def test_decoder_mini_has_t5_minis_parameter_count():
  count = lambda cfg: sum(x.size for x in jax.tree.leaves(
      jax.eval_shape(lambda: _init(DecoderOnly(cfg)))))
  t5_count = sum(x.size for x in jax.tree.leaves(jax.eval_shape(
      lambda: T5(get_config('t5_mini')).init(jax.random.PRNGKey(0), **dummy_inputs(T5),
                                              enable_dropout=False))))
  # 3,410,432 and 3,410,944 (the same embedding; 9 layers of 262k vs 4 + 4 of 262k and 328k).
  assert abs(count(get_config('decoder_mini')) - t5_count) / t5_count < 0.001


# ------------------------------------------------------------------ an independent forward


def _np_bucket(relative: int, num_buckets: int, max_distance: int) -> int:
  """T5's causal bucket of key - query, from its definition: exact below num_buckets / 2,
  logarithmic up to max_distance, the future in bucket 0."""
  n = max(-relative, 0)
  exact = num_buckets // 2
  if n < exact:
    return n
  large = exact + int(math.log(n / exact) / math.log(max_distance / exact) * (num_buckets - exact))
  return min(large, num_buckets - 1)


def _np_forward(p, cfg, embedded, mask):
  """Decoder-only logits of embedded [S, emb] under mask [S, S] (numpy, float64)."""
  p = {k: np.asarray(v, np.float64) for k, v in p.items()}
  s = len(embedded)
  rms = lambda x, scale: x / np.sqrt(np.mean(x ** 2, -1, keepdims=True) + 1e-6) * scale
  gelu = lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
  buckets = np.array([[_np_bucket(k - q, cfg.relative_attention_num_buckets,
                                  cfg.relative_attention_max_distance) for k in range(s)]
                      for q in range(s)])
  position_bias = p['decoder/relpos_bias/rel_embedding'][:, buckets]  # [heads, S, S]
  h, d = cfg.num_heads, cfg.head_dim
  x = np.asarray(embedded, np.float64)
  for i in range(cfg.num_decoder_layers):
    w = lambda name, i=i: p[f'decoder/layers_{i}/{name}']
    y = rms(x, w('pre_self_attention_layer_norm/scale'))
    q, k, v = (y @ w(f'self_attention/{n}/kernel') for n in ('query', 'key', 'value'))
    q, k, v = (a.reshape(s, h, d).transpose(1, 0, 2) for a in (q, k, v))
    logits = q @ k.transpose(0, 2, 1) + position_bias + np.where(mask, 0.0, -1e10)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    x = x + (weights @ v).transpose(1, 0, 2).reshape(s, h * d) @ w('self_attention/out/kernel')
    y = rms(x, w('pre_mlp_layer_norm/scale'))
    x = x + (gelu(y @ w('mlp/wi_0/kernel')) * (y @ w('mlp/wi_1/kernel'))) @ w('mlp/wo/kernel')
  x = rms(x, p['decoder/decoder_norm/scale'])
  if cfg.logits_via_embedding:
    return x @ p['decoder/token_embedder/embedding'].T / np.sqrt(cfg.emb_dim)
  return x @ p['decoder/logits_dense/kernel']


def _np_prefix_lm_mask(valid, bidirectional):
  s = len(valid)
  return np.array([[valid[i] and valid[j] and (j <= i or (bidirectional is not None
                                                          and bidirectional[i] and bidirectional[j]))
                    for j in range(s)] for i in range(s)])


@pytest.mark.parametrize('bidirectional', [True, False])
@pytest.mark.parametrize('tied', [True, False])
def test_forward_equals_numpy_reference(bidirectional, tied):
  """Prefix LM and causal, tied and untied logits, against numpy in float64: the float64 model
  within 1e-9, the float32 model within 1e-5 of the logits' scale (float32 rounding)."""
  cfg = decoder_only_config(logits_via_embedding=tied, inputs_bidirectional_attention=bidirectional)
  batch = prefix_lm_batch([([5, 7, 9, 1], [3, 1]), ([4, 1], [8, 8, 6, 1])], length=10)
  params = _randomize(_init(DecoderOnly(cfg)))
  logits32 = np.asarray(DecoderOnly(cfg).apply({'params': params},
                                               **model_inputs(DecoderOnly, batch),
                                               enable_dropout=False))
  with jax.enable_x64(True):
    model64 = DecoderOnly(cfg.replace(dtype=jnp.float64))
    params64 = jax.tree.map(lambda x: x.astype(jnp.float64), params)
    logits64 = np.asarray(model64.apply({'params': params64}, **model_inputs(model64, batch),
                                        enable_dropout=False))
  assert logits64.dtype == np.float64
  flat = _flat(params)
  for row in range(2):
    valid = np.asarray(batch['decoder_target_tokens'][row]) > 0
    causal = np.asarray(batch['decoder_causal_attention'][row]) > 0
    embedded = np.asarray(flat['decoder/token_embedder/embedding'])[
        np.asarray(batch['decoder_input_tokens'][row])]
    mask = _np_prefix_lm_mask(valid, causal if bidirectional else None)
    expected = _np_forward(flat, cfg, embedded, mask)[valid]
    np.testing.assert_allclose(logits64[row][valid], expected, atol=1e-9, rtol=0)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(logits32[row][valid], expected, atol=1e-5 * scale, rtol=0)


def test_prefix_lm_mask_by_hand():
  valid = jnp.array([[1, 1, 1, 1, 1, 0]], bool)
  prefix = jnp.array([[1, 1, 1, 0, 0, 0]], bool)
  expected_prefix_lm = np.array([[1, 1, 1, 0, 0, 0],
                                 [1, 1, 1, 0, 0, 0],
                                 [1, 1, 1, 0, 0, 0],
                                 [1, 1, 1, 1, 0, 0],
                                 [1, 1, 1, 1, 1, 0],
                                 [0, 0, 0, 0, 0, 0]])
  expected_causal = np.array([[1, 0, 0, 0, 0, 0],
                              [1, 1, 0, 0, 0, 0],
                              [1, 1, 1, 0, 0, 0],
                              [1, 1, 1, 1, 0, 0],
                              [1, 1, 1, 1, 1, 0],
                              [0, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(masks.prefix_lm_mask(valid, prefix)[0, 0], expected_prefix_lm)
  np.testing.assert_array_equal(masks.prefix_lm_mask(valid)[0, 0], expected_causal)


def test_relative_position_buckets_by_hand():
  """The model's causal biases: bucket i of head h at key - query = -i for i < 4 (exact), the
  future in bucket 0, distances 4-5, 6-7, 8-11, 12-15 (log up to 16) in buckets 4..7."""
  cfg = decoder_only_config()
  model = DecoderOnly(cfg)
  params = _init(model)
  table = np.arange(4 * 8, dtype=np.float32).reshape(4, 8)  # head h, bucket b -> 8 h + b
  params['decoder']['relpos_bias']['rel_embedding'] = jnp.asarray(table)
  bias = model.apply({'params': params}, 20, method=lambda m, n: m.decoder._position_bias(n))
  query = 19
  expected_bucket = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 4, 6: 5, 7: 5, 8: 6, 11: 6, 12: 7, 15: 7,
                     16: 7, 19: 7}
  for distance, bucket in expected_bucket.items():
    key = query - distance
    assert bias[0, 2, query, key] == 16 + bucket, (distance, bias[0, 2, query, key])
  assert np.all(np.asarray(bias[0, 1, 0, 1:]) == 8)  # the future: bucket 0


# ------------------------------------------------------------------ the prompt


def test_prompt_after_bos_worked_example():
  """inputs [a, b, EOS] -> targets [t1, EOS], P = 2: the sequence is BOS p1 p2 a b EOS t1, the
  prefix (BOS, the prompt, the inputs) sees itself both ways, the rest causally; p2 predicts a,
  a predicts b, ..., EOS predicts t1."""
  a, b, t1, eos = 5, 7, 9, 1
  batch = prefix_lm_batch([([a, b, eos], [t1, eos])], length=5)
  np.testing.assert_array_equal(batch['decoder_input_tokens'][0], [0, a, b, eos, t1])
  emb = jnp.arange(5, dtype=jnp.float32)[None, :, None] * jnp.ones((1, 1, 2))  # row i = i
  prompt = jnp.array([[[10., 10.], [11., 11.]]])
  valid = batch['decoder_target_tokens'] > 0
  prefix = batch['decoder_causal_attention'] > 0
  combined, combined_valid, combined_prefix, out_index = prompts_lib.insert_prompt(
      emb, valid, prefix, prompt, jnp.ones((1, 2), bool), jnp.array([1]))
  # Sources: BOS(0) p1 p2 a(1) b(2) EOS(3) t1(4).
  np.testing.assert_array_equal(combined[0, :, 0], [0, 10, 11, 1, 2, 3, 4])
  np.testing.assert_array_equal(combined_valid[0], [1, 1, 1, 1, 1, 1, 1])
  np.testing.assert_array_equal(combined_prefix[0], [1, 1, 1, 1, 1, 1, 0])
  np.testing.assert_array_equal(out_index[0], [2, 3, 4, 5, 6])
  expected_mask = np.array([[1, 1, 1, 1, 1, 1, 0]] * 6 + [[1, 1, 1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(
      masks.prefix_lm_mask(combined_valid, combined_prefix)[0, 0], expected_mask)


@pytest.mark.parametrize('placement,start', [('after_bos', 1), ('prefix', 0), ('suffix', None)])
@pytest.mark.parametrize('bidirectional', [True, False])
def test_prompted_logits_equal_the_originals_recipe(placement, start, bidirectional):
  """As the original computes a prompted decoder-only LM: the prompt spliced into the embedded
  sequence, the mask of [P ones + targets] (and [P ones + causal attention] for a prefix LM),
  the logits of the first P positions dropped; here by numpy, in float64."""
  cfg = decoder_only_config(inputs_bidirectional_attention=bidirectional)
  model = PromptedDecoderOnly(cfg, prompt_length=3, prompt_placement=placement)
  params = _randomize(_init(model))
  batch = prefix_lm_batch([([5, 7, 9, 1], [3, 1]), ([4, 1], [8, 8, 6, 1])], length=10)
  logits = np.asarray(model.apply({'params': params}, **model_inputs(model, batch), enable_dropout=False))
  flat = _flat(params)
  prompt = np.asarray(flat['decoder/prompt/prompt/prompt'])
  for row, inputs_length in ((0, 4), (1, 2)):
    tokens = np.asarray(batch['decoder_input_tokens'][row])
    embedded = np.asarray(flat['decoder/token_embedder/embedding'])[tokens]
    s = inputs_length if start is None else start  # suffix: before the inputs' EOS
    spliced = np.concatenate([embedded[:s], prompt, embedded[s:]])
    ones = np.ones(3, bool)
    valid = np.concatenate([ones, np.asarray(batch['decoder_target_tokens'][row]) > 0])
    prefix = np.concatenate([ones, np.asarray(batch['decoder_causal_attention'][row]) > 0])
    expected = _np_forward(flat, cfg, spliced, _np_prefix_lm_mask(
        valid, prefix if bidirectional else None))[3:]
    weights = np.asarray(batch['decoder_loss_weights'][row]) > 0
    # The targets: placement before them and in the prefix, so their logits are the recipe's.
    scale = np.abs(expected[weights]).max()
    np.testing.assert_allclose(logits[row][weights], expected[weights], atol=1e-5 * scale, rtol=0)


def test_left_padded_mixed_prompts_equal_unpadded_prompts():
  """A 2-vector prompt padded to 4 (mixed batches) gives the logits of the 2-vector prompt
  (float64: the two sequence lengths sum in other orders)."""
  cfg = decoder_only_config(dtype=jnp.float64)
  batch = prefix_lm_batch([([5, 7, 9, 1], [3, 1])], length=8)
  with jax.enable_x64(True):
    short = PromptedDecoderOnly(cfg, prompt_length=2)
    params = jax.tree.map(lambda x: x.astype(jnp.float64), _randomize(_init(short)))
    prompt = params['decoder']['prompt']['prompt']['prompt']
    run = lambda **kw: short.apply({'params': params}, **model_inputs(short, batch),
                                   enable_dropout=False, **kw)
    alone = run()
    padded = jnp.concatenate([jnp.full((2, cfg.emb_dim), 99.0), prompt])[None]
    mixed = run(method_inputs=MethodInputs(prompts=padded,
                                           prompt_mask=jnp.array([[0, 0, 1, 1]], bool)))
  weights = batch['decoder_loss_weights'][0] > 0
  np.testing.assert_allclose(mixed[0][weights], alone[0][weights], atol=1e-9)


# ------------------------------------------------------------------ cached decoding


@pytest.mark.parametrize('placement', [None, 'after_bos', 'prefix', 'suffix'])
@pytest.mark.parametrize('bidirectional', [True, False])
def test_prefill_then_extend_equals_teacher_forcing(placement, bidirectional):
  """The prefix written at once (right-aligned, a padded row included), then the targets fed
  as one block and one by one: the teacher-forced logits (float64, within 1e-9)."""
  cfg = decoder_only_config(inputs_bidirectional_attention=bidirectional, dtype=jnp.float64)
  model = (DecoderOnly(cfg) if placement is None
           else PromptedDecoderOnly(cfg, prompt_length=3, prompt_placement=placement))
  examples = [([5, 7, 9, 1], [3, 2, 1]), ([4, 1], [8, 6, 1])]
  batch = prefix_lm_batch(examples, length=8)
  inputs = jnp.array([[5, 7, 9, 1], [4, 1, 0, 0]])
  # The first fed token is the prefix's last (EOS), then the targets but their last.
  block = jnp.array([[1, 3, 2], [1, 8, 6]])
  with jax.enable_x64(True):
    params = jax.tree.map(lambda x: x.astype(jnp.float64), _randomize(_init(model)))
    teacher = np.asarray(model.apply({'params': params}, **model_inputs(model, batch),
                                     enable_dropout=False))
    _, variables = model.apply({'params': params}, inputs, max_decode_length=4,
                               method=model.prefill, mutable=['cache'])
    extend = lambda cache, tokens: model.apply({'params': params, 'cache': cache}, tokens,
                                               method=model.extend, mutable=['cache'])
    logits, _ = extend(variables['cache'], block)
    cache, stepped = variables['cache'], []
    for i in range(3):
      step_logits, mutated = extend(cache, block[:, i:i + 1])
      cache = mutated['cache']
      stepped.append(step_logits[:, 0])
  for row, (inputs_row, _) in enumerate(examples):
    expected = teacher[row, len(inputs_row):len(inputs_row) + 3]
    np.testing.assert_allclose(logits[row], expected, atol=1e-9)
    np.testing.assert_allclose(np.stack(stepped, 1)[row], expected, atol=1e-9)


def test_extend_without_prefill_is_an_error():
  model = DecoderOnly(decoder_only_config())
  with pytest.raises(ValueError, match='prefill'):
    model.apply({'params': _init(model)}, jnp.ones((1, 1), jnp.int32), method=model.extend,
                mutable=['cache'])


def test_prefix_lm_batch_matches_seqios_converter():
  """The tests' batches are seqio's PrefixLMFeatureConverter's (unpacked)."""
  examples = [([5, 7, 9, 1], [3, 1]), ([4, 1], [8, 8, 6, 1])]
  ds = tf.data.Dataset.from_generator(
      lambda: ({'inputs': i, 'targets': t} for i, t in examples),
      output_signature={'inputs': tf.TensorSpec([None], tf.int32),
                        'targets': tf.TensorSpec([None], tf.int32)})
  converted = seqio.DecoderFeatureConverter(pack=False)(ds, {'inputs': 6, 'targets': 4})
  ours = prefix_lm_batch(examples, length=10)
  for row, features in enumerate(converted.as_numpy_iterator()):
    for key, value in features.items():
      np.testing.assert_array_equal(value, ours[key][row], err_msg=key)


# ------------------------------------------------------------------ decoding and scoring

DECODE_LENGTH = 5
DECODING_MODELS = {
    'plain': lambda cfg: DecoderOnly(cfg),
    'after_bos': lambda cfg: PromptedDecoderOnly(cfg, prompt_length=3),
    'suffix': lambda cfg: PromptedDecoderOnly(cfg, prompt_length=3, prompt_placement='suffix'),
}
INPUTS = jnp.array([[5, 7, 9, 12, 1], [4, 11, 1, 0, 0], [6, 1, 0, 0, 0]])


def _rows(inputs):
  return [[int(t) for t in row if t > 0] for row in np.asarray(inputs)]


@functools.partial(jax.jit, static_argnames=('model',))
def _teacher_log_probs(model, params, batch):
  logits = model.apply({'params': params}, **model_inputs(model, batch), enable_dropout=False)
  return jax.nn.log_softmax(logits, axis=-1)


def _teacher_batch(examples, length):
  """Prefix-LM features of (inputs, continuation) where the continuation may hold token 0 as a
  real token (decoders may emit it): validity comes from a stand-in id, the inputs are real."""
  batch = prefix_lm_batch([(i, [t or 63 for t in c]) for i, c in examples], length)
  real = prefix_lm_batch([(i, list(c)) for i, c in examples], length)['decoder_target_tokens']
  return {**batch, 'decoder_input_tokens': jnp.pad(real[:, :-1], ((0, 0), (1, 0)))}


def _naive_greedy(model, params, inputs, eos_id):
  """Cache-free: the whole sequence (prefix and the tokens so far) rerun at every step."""
  rows = _rows(inputs)
  tokens = np.zeros((len(rows), DECODE_LENGTH), np.int32)
  scores, done = np.zeros(len(rows)), np.zeros(len(rows), bool)
  for i in range(DECODE_LENGTH):
    batch = _teacher_batch([(r, list(t[:i]) + [2]) for r, t in zip(rows, tokens)],
                           length=INPUTS.shape[1] + DECODE_LENGTH)
    log_probs = np.asarray(_teacher_log_probs(model, params, batch))
    step = log_probs[np.arange(len(rows)), [len(r) + i for r in rows]]  # predicts target i
    best = step.argmax(-1)
    tokens[:, i] = np.where(done, 0, best)
    scores += np.where(done, 0.0, step[np.arange(len(rows)), best])
    done |= tokens[:, i] == eos_id
  return tokens, scores


def _decoding_case(kind):
  model = DECODING_MODELS[kind](decoder_only_config())
  params = _randomize(_init(model), seed=3)
  free, _ = _naive_greedy(model, params, INPUTS, eos_id=-1)
  return model, params, int(free[-1, 2])  # an EOS the last row emits mid-sequence


@pytest.mark.parametrize('kind', list(DECODING_MODELS))
def test_cached_greedy_equals_cache_free_greedy(kind):
  model, params, eos_id = _decoding_case(kind)
  tokens, scores = decoding.jit_greedy_decode(model, params, INPUTS,
                                              max_decode_length=DECODE_LENGTH, eos_id=eos_id)
  expected_tokens, expected_scores = _naive_greedy(model, params, INPUTS, eos_id)
  np.testing.assert_array_equal(tokens, expected_tokens)
  np.testing.assert_allclose(scores, expected_scores, atol=1e-4)
  assert (np.asarray(tokens)[-1, 3:] == 0).all()  # stopped after its EOS


def test_beam_search_finds_the_best_sequence_exhaustively():
  """Beam search wide enough to prune nothing returns the best length-penalised sequence of
  all vocab ** length (zeroed after EOS), each scored by teacher forcing."""
  vocab, length, eos_id, alpha = 6, 3, 1, 0.6
  model = PromptedDecoderOnly(decoder_only_config(vocab_size=vocab), prompt_length=2)
  params = _randomize(_init(model), seed=4)
  inputs = jnp.array([[2, 3, 4, 1], [5, 1, 0, 0]])
  candidates = np.array(list(itertools.product(range(vocab), repeat=length)), np.int32)
  is_eos = candidates == eos_id
  counted = ~(np.cumsum(is_eos, axis=1) - is_eos > 0)  # up to and including the first EOS
  candidates = np.unique(np.where(counted, candidates, 0), axis=0)
  counted = ~(np.cumsum(candidates == eos_id, axis=1) - (candidates == eos_id) > 0)
  best = []
  for row in _rows(inputs):
    batch = _teacher_batch([(row, c) for c in candidates], length=4 + length)
    log_probs = np.asarray(_teacher_log_probs(model, params, batch))
    picked = log_probs[:, len(row) + np.arange(length)][
        np.arange(len(candidates))[:, None], np.arange(length), candidates]
    n = counted.sum(-1)
    totals = (picked * counted).sum(-1) / ((5.0 + n) / 6.0) ** alpha
    best.append((candidates[totals.argmax()], totals.max()))
  tokens, scores = decoding.jit_beam_search(model, params, inputs, beam_size=vocab ** length,
                                            max_decode_length=length, alpha=alpha, eos_id=eos_id)
  for row, (expected_tokens, expected_score) in enumerate(best):
    np.testing.assert_array_equal(tokens[row], expected_tokens)
    np.testing.assert_allclose(scores[row], expected_score, atol=1e-4)


def test_rank_classification_sums_the_teacher_forced_log_probabilities():
  """Each label's score is the sum of its tokens' log-probabilities (EOS included) after the
  prefix, teacher-forced by hand; the best one wins. Also `score_targets`."""
  model = PromptedDecoderOnly(decoder_only_config(), prompt_length=3)
  params = _randomize(_init(model), seed=5)
  labels = scoring.encode_labels(_Vocabulary(), ['aa', 'b', 'ccc'])  # [3, 4] with EOS
  best, scores = scoring.jit_rank_classify(model, params, INPUTS, jnp.asarray(labels))
  rows = _rows(INPUTS)
  batch = prefix_lm_batch([(r, [t for t in label if t]) for r in rows for label in labels],
                          length=INPUTS.shape[1] + labels.shape[1])
  log_probs = np.asarray(_teacher_log_probs(model, params, batch)).reshape(3, 3, -1, 64)
  expected = np.array([[sum(log_probs[i, j, len(r) + k, t] for k, t in enumerate(labels[j]) if t)
                        for j in range(3)] for i, r in enumerate(rows)])
  np.testing.assert_allclose(scores, expected, atol=1e-4)
  np.testing.assert_array_equal(best, expected.argmax(-1))
  targets = jnp.asarray(labels[[0, 2, 1]])
  np.testing.assert_allclose(scoring.jit_score_targets(model, params, INPUTS, targets),
                             expected[[0, 1, 2], [0, 2, 1]], atol=1e-4)


class _Vocabulary:
  """Letters a.. as ids 5.., EOS 1."""
  eos_id = 1

  def encode(self, text):
    return [ord(c) - ord('a') + 5 for c in text]


def test_mixed_prompts_decode_and_rank_like_separate_prompted_models():
  """One batch, a prompt per row (the short one left-padded) == each prompt on its own."""
  cfg = decoder_only_config()
  rng = np.random.RandomState(7)
  prompt_list = [jnp.asarray(rng.uniform(-2, 2, (n, cfg.emb_dim)), jnp.float32) for n in (3, 3, 1)]
  prompts = jnp.stack([jnp.pad(p, ((3 - len(p), 0), (0, 0))) for p in prompt_list])
  prompt_mask = jnp.stack([jnp.arange(3) >= 3 - len(p) for p in prompt_list])
  model = PromptedDecoderOnly(cfg, prompt_length=3)
  params = _randomize(_init(model), seed=6)
  labels = jnp.asarray(scoring.encode_labels(_Vocabulary(), ['aa', 'b']))
  given = MethodInputs(prompts=prompts, prompt_mask=prompt_mask)
  tokens, _ = decoding.jit_greedy_decode(model, params, INPUTS, max_decode_length=DECODE_LENGTH,
                                         method_inputs=given)
  _, label_scores = scoring.jit_rank_classify(model, params, INPUTS, labels, method_inputs=given)
  for row, prompt in enumerate(prompt_list):
    alone = PromptedDecoderOnly(cfg, prompt_length=len(prompt))
    alone_params = {'decoder': {**params['decoder'], 'prompt': {'prompt': {'prompt': prompt}}}}
    alone_tokens, _ = decoding.jit_greedy_decode(alone, alone_params, INPUTS[row:row + 1],
                                                 max_decode_length=DECODE_LENGTH)
    _, alone_scores = scoring.jit_rank_classify(alone, alone_params, INPUTS[row:row + 1], labels)
    np.testing.assert_array_equal(tokens[row], alone_tokens[0])
    np.testing.assert_allclose(label_scores[row], alone_scores[0], atol=1e-4)


# ------------------------------------------------------------------ training and planning


def _step_flops(rules):
  model = PromptedDecoderOnly(decoder_only_config(emb_dim=64, num_heads=4, head_dim=16,
                                                  mlp_dim=128, vocab_size=256), prompt_length=8)
  rng = np.random.RandomState(0)
  batch = prefix_lm_batch([(list(rng.randint(2, 256, 31)) + [1], list(rng.randint(2, 256, 7)) + [1])
                           for _ in range(4)], length=40)
  params = _init(model)
  trainable, frozen = optim.partition(params, rules)
  tx = optim.partitioned_optimizer(params, optim.adafactor(), rules)
  state = jax.eval_shape(lambda t, f: train_step.init_train_state(t, f, tx), trainable, frozen)
  compiled = jax.jit(train_step.make_train_step(model, tx)).lower(state, frozen, batch).compile()
  cost = compiled.cost_analysis()
  return (cost[0] if isinstance(cost, (list, tuple)) else cost)['flops']


def test_prompt_only_step_skips_weight_gradients():
  """Only the prompt is differentiated: no weight gradients, about 4/6 of a full step's FLOPs
  (forward 2, activation gradients 2, weight gradients 2 per weight FLOP; the attention's
  token-by-token products have no weight and cost the same in both). Measured 0.697
  (9.14e7 / 1.31e8); differentiating the frozen weights would give ~1."""
  prompt_only = _step_flops(optim.PROMPT_TUNING_RULES)
  full = _step_flops(optim.MODEL_TUNING_RULES)
  print(f'compiled step FLOPs: prompt-only {prompt_only:.3e}, full {full:.3e}, '
        f'ratio {prompt_only / full:.3f}')
  assert 0.64 < prompt_only / full < 0.72


def test_dry_run_plans_one_sequence_without_cross_attention():
  report = dry_run.dry_run('decoder_mini', DecoderOnlyPromptTuning(100), 32,
                           {'inputs': 64, 'targets': 8}, 1)
  assert report.encoder_length == 0 and report.decoder_length == 64 + 100 + 8
  assert report.num_params == 3_410_432 + 100 * 128
  assert report.num_trainable_params == 100 * 128
  assert report.activation_bytes['encoder layers'] == 0
  assert 'sequence length 172' in str(report)
