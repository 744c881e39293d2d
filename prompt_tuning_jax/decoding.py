"""Autoregressive decoding with the key/value cache: greedy and beam search.

Every loop is written against two functions: `start` (what the model reads
once per example: T5's encoder output and an empty decoder cache, or a
decoder-only LM's cache prefilled with BOS, the prompt and the inputs; and the
first token to feed) and `step` (feed one token per sequence, get the next
log-probabilities). Beam search starts once per example and repeats the state
per beam. A new decoder (sampling, ...) is another loop over the same two.
Shapes are fixed: the loops are `lax.while_loop`s over `max_decode_length`
that stop early once every sequence is finished; positions after a
sequence's EOS hold 0.

The model caches self-attention keys/values only: every step recomputes the
cross-attention keys/values from the encoded inputs (one [L, emb] x
[emb, heads * head_dim] projection pair per decoder layer and step). That is
correct, just not the cheapest possible.

Every function takes the flax module as its first argument and the params
tree (the contents of `variables['params']`) as its second. The plain
functions trace under any enclosing `jax.jit`/`pjit`; the `jit_*` variants are
jitted with the module and the sizes (beam size, decode length) static, so
repeated calls with the same shapes reuse one compilation.

`method_inputs` (`methods.MethodInputs`) are the per-example inputs of the model's
method, e.g. every example's own prompt (mixed-prompt batches, prompt ensembles); they
reach the encoder and every decoder step of T5, a decoder-only LM's prefill. `jit_decode`
picks greedy decoding, beam search or sampling by name (the DECODER setting).

Sampling (temperature, top-k, top-p) is seeded per example: row i draws with
its own key (`example_keys`: the seed folded with the example's position), folded
with the step, so an example's draws are the same whatever batch it is in, and
two equal inputs in one batch draw independently.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from prompt_tuning_jax.methods import MethodInputs
from prompt_tuning_jax.settings import BEAM, GREEDY, SAMPLE

Array = jnp.ndarray
Params = Any

# Log-probability of impossible hypotheses: finite, so sums never become NaN.
NEG_INF = -1.0e7


def _variables(params: Params, **collections) -> dict:
  if isinstance(params, dict) and 'params' in params:
    raise ValueError("Pass the params tree itself (variables['params']), not the "
                     "variables dict that contains it.")
  return {'params': params, **collections}


def encode(model: nn.Module, params: Params, encoder_input_tokens: Array, *,
           method_inputs: MethodInputs = MethodInputs()) -> tuple[Array, Array]:
  """Runs the encoder: tokens [b, t] -> (encoded [b, L, emb], encoder_valid [b, L])."""
  return model.apply(_variables(params), encoder_input_tokens, method=model.encode,
                     method_inputs=method_inputs)


def init_cache(model: nn.Module, params: Params, encoded: Array, encoder_valid: Array,
               max_decode_length: int, method_inputs: MethodInputs = MethodInputs()) -> Any:
  """An all-zero decoder cache for `encoded.shape[0]` sequences of up to `max_decode_length`."""
  batch = encoded.shape[0]

  def create(params, encoded, encoder_valid, method_inputs):
    _, variables = model.apply(
        _variables(params), encoded, encoder_valid,
        jnp.zeros((batch, max_decode_length), jnp.int32), decode=True,
        max_decode_length=max_decode_length, method=model.decode, mutable=['cache'],
        method_inputs=method_inputs)
    return variables['cache']

  shapes = jax.eval_shape(create, params, encoded, encoder_valid, method_inputs)
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def decode_step(model: nn.Module, params: Params, cache: Any, encoded: Array,
                encoder_valid: Array, previous_tokens: Array, max_decode_length: int,
                method_inputs: MethodInputs = MethodInputs()) -> tuple[Array, Any]:
  """One cached decoder step: previous_tokens [b] -> (log_probs [b, vocab] float32, cache).

  The position decoded is the cache's index (the number of earlier steps).
  """
  logits, mutated = model.apply(
      _variables(params, cache=cache), encoded, encoder_valid, previous_tokens[:, None],
      decode=True, max_decode_length=max_decode_length, method=model.decode,
      mutable=['cache'], method_inputs=method_inputs)
  return jax.nn.log_softmax(logits[:, 0].astype(jnp.float32), axis=-1), mutated['cache']


def decodes_from_prefix(model: nn.Module) -> bool:
  """A decoder-only LM: it prefills its cache with the prefix and extends it."""
  return hasattr(model, 'prefill')


class DecodingState(NamedTuple):
  """What decoding steps read (`context`) and update (`cache`); arrays batch-first."""
  # T5: (encoded [batch, L, emb], encoder_valid [batch, L], method_inputs); decoder-only:
  # None (the prefix, its prompt included, is in the cache).
  context: Any
  cache: Any  # the model's 'cache' collection


def last_tokens(inputs: Array) -> Array:
  """[b] each row's last non-padding token (0 for an all-padding row)."""
  last = jnp.maximum(jnp.sum(inputs > 0, axis=1) - 1, 0)
  return jnp.take_along_axis(inputs, last[:, None], axis=1)[:, 0].astype(jnp.int32)


def start(model: nn.Module, params: Params, inputs: Array, *, max_decode_length: int,
          method_inputs: MethodInputs = MethodInputs()) -> tuple[Any, Array]:
  """What decoding starts from: (state, the first token to feed [b]).

  T5: the encoder's output and an empty decoder cache; the first token is
  BOS (0). A decoder-only LM: a cache holding BOS, the prompt and the inputs,
  its index on the prefix's last position; the first token is the inputs'
  last (EOS), fed again to predict the first target (`DecoderOnly.prefill`).
  The state's arrays have the batch first; its scalars are shared.
  """
  if decodes_from_prefix(model):
    _, variables = model.apply(_variables(params), inputs, max_decode_length=max_decode_length,
                               method_inputs=method_inputs, method=model.prefill,
                               mutable=['cache'])
    return DecodingState(None, variables['cache']), last_tokens(inputs)
  encoded, encoder_valid = encode(model, params, inputs, method_inputs=method_inputs)
  cache = init_cache(model, params, encoded, encoder_valid, max_decode_length, method_inputs)
  return (DecodingState((encoded, encoder_valid, method_inputs), cache),
          jnp.zeros((inputs.shape[0],), jnp.int32))


def step(model: nn.Module, params: Params, state: DecodingState, previous_tokens: Array,
         max_decode_length: int) -> tuple[Array, DecodingState]:
  """One cached step: previous_tokens [b] -> (log_probs [b, vocab] float32, state)."""
  if decodes_from_prefix(model):
    logits, mutated = model.apply(_variables(params, cache=state.cache), previous_tokens[:, None],
                                  method=model.extend, mutable=['cache'])
    log_probs, cache = jax.nn.log_softmax(logits[:, 0].astype(jnp.float32)), mutated['cache']
  else:
    encoded, encoder_valid, method_inputs = state.context
    log_probs, cache = decode_step(model, params, state.cache, encoded, encoder_valid,
                                   previous_tokens, max_decode_length, method_inputs)
  return log_probs, state._replace(cache=cache)


def repeat_rows(state: Any, times: int) -> Any:
  """The state with each row repeated `times` times (beam-minor); scalars shared."""
  return jax.tree.map(lambda x: x if x.ndim == 0 else jnp.repeat(x, times, axis=0), state)


# ------------------------------------------------------------------ greedy and sampling


class _StepState(NamedTuple):
  step: Array  # [] position being decoded
  tokens: Array  # [batch, max_decode_length]
  scores: Array  # [batch] summed log-probabilities
  done: Array  # [batch] bool, EOS emitted
  previous: Array  # [batch] last token fed to the decoder
  cache: Any  # the decoding state (`start`)


def _token_by_token(model: nn.Module, params: Params, encoder_input_tokens: Array,
                    choose: Callable[[Array, Array], Array], *, max_decode_length: int,
                    eos_id: int, method_inputs: MethodInputs) -> tuple[Array, Array]:
  """Decodes one token per step, `choose(step, log_probs [b, vocab]) -> tokens [b]`.

  A row is finished once it emits EOS: its later tokens are 0 and its score (the
  summed model log-probability of its tokens, EOS included) stops growing.
  """
  decoding, first = start(model, params, encoder_input_tokens,
                          max_decode_length=max_decode_length, method_inputs=method_inputs)
  batch = first.shape[0]

  def not_finished(state: _StepState) -> Array:
    return (state.step < max_decode_length) & ~jnp.all(state.done)

  def advance(state: _StepState) -> _StepState:
    log_probs, cache = step(model, params, state.cache, state.previous,
                            max_decode_length)  # [batch, vocab]
    chosen = choose(state.step, log_probs).astype(jnp.int32)  # [batch]
    chosen_log_prob = jnp.take_along_axis(log_probs, chosen[:, None], axis=-1)[:, 0]
    token = jnp.where(state.done, 0, chosen)
    scores = state.scores + jnp.where(state.done, 0.0, chosen_log_prob)
    tokens = jax.lax.dynamic_update_slice(state.tokens, token[:, None], (0, state.step))
    return _StepState(state.step + 1, tokens, scores, state.done | (token == eos_id),
                      token, cache)

  initial = _StepState(
      step=jnp.array(0, jnp.int32),
      tokens=jnp.zeros((batch, max_decode_length), jnp.int32),
      scores=jnp.zeros((batch,), jnp.float32),
      done=jnp.zeros((batch,), bool),
      previous=first,
      cache=decoding)
  final = jax.lax.while_loop(not_finished, advance, initial)
  return final.tokens, final.scores


def greedy_decode(model: nn.Module, params: Params, encoder_input_tokens: Array, *,
                  max_decode_length: int, eos_id: int = 1,
                  method_inputs: MethodInputs = MethodInputs()) -> tuple[Array, Array]:
  """Greedy (argmax) decoding.

  Returns:
    tokens [b, max_decode_length] int32 (0 after EOS) and scores [b] float32:
    the summed log-probability of the tokens up to and including EOS.
  """
  return _token_by_token(model, params, encoder_input_tokens,
                         lambda step, log_probs: jnp.argmax(log_probs, axis=-1),
                         max_decode_length=max_decode_length, eos_id=eos_id,
                         method_inputs=method_inputs)


def example_keys(seed: int, indices) -> Array:
  """[n, 2] uint32 PRNG keys: example i's is PRNGKey(seed) folded with `indices[i]`.

  Keyed by the example (its position in the split or input file), not by the
  batch, so an example's draws do not depend on which batch it is in.
  """
  base = jax.random.PRNGKey(seed)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(indices, jnp.uint32))


def nucleus_floor(probs: Array, top_p: float) -> Array:
  """probs [b, vocab] -> [b, 1]: the probability of the least likely token of each row's
  nucleus, the largest t with sum(probs[probs >= t]) >= top_p.

  Found by bisection over float32 bit patterns (ordered as the non-negative floats
  they encode): 31 masked sums over the vocabulary, exact, and much cheaper on CPU
  than sorting the vocabulary.
  """
  as_float = lambda bits: jax.lax.bitcast_convert_type(bits, jnp.float32)
  largest = jnp.max(probs, axis=-1, keepdims=True)
  # Invariant: the mass at or above `low` reaches top_p, the mass at or above `high` does not.
  low = jnp.zeros(largest.shape, jnp.int32)
  high = jax.lax.bitcast_convert_type(largest, jnp.int32) + 1

  def halve(_, bounds):
    low, high = bounds
    middle = low + (high - low) // 2
    mass = jnp.sum(jnp.where(probs >= as_float(middle), probs, 0.0), axis=-1, keepdims=True)
    reaches = mass >= top_p
    return jnp.where(reaches, middle, low), jnp.where(reaches, high, middle)

  low, _ = jax.lax.fori_loop(0, 31, halve, (low, high))
  return as_float(low)


def sample_tokens(keys: Array, log_probs: Array, temperature: Any = 1.0, top_k: int = 0,
                  top_p: float = 1.0) -> Array:
  """One token per row of log_probs [b, vocab], row i drawn with keys[i] ([b, 2]).

  The draw is from softmax(log_probs / temperature), cut to the `top_k` most
  likely tokens (0: no cut; ties go to the lower id, as argmax's) and then to
  the nucleus: the fewest most likely tokens whose probability (after the top-k
  cut, renormalised) reaches `top_p` (1.0: no cut; tokens tied with its least
  likely one are kept). Temperature 0 is argmax. `temperature` may be traced;
  `top_k` and `top_p` are Python numbers. With top-k the draw is among the k
  candidates only.
  """
  temperature = jnp.asarray(temperature, jnp.float32)
  # Shifted so that the best token is at 0: a tiny temperature cannot overflow it.
  shifted = log_probs - jnp.max(log_probs, axis=-1, keepdims=True)
  scaled = shifted / jnp.where(temperature > 0, temperature, 1.0)
  candidates = None
  if 0 < top_k < log_probs.shape[-1]:
    scaled, candidates = jax.lax.top_k(scaled, top_k)  # [b, k], most likely first
  if top_p < 1.0:
    probs = jax.nn.softmax(scaled, axis=-1)
    scaled = jnp.where(probs >= nucleus_floor(probs, top_p), scaled, -jnp.inf)
  drawn = jax.vmap(jax.random.categorical)(keys, scaled)
  if candidates is not None:
    drawn = jnp.take_along_axis(candidates, drawn[:, None], axis=-1)[:, 0]
  return jnp.where(temperature > 0, drawn, jnp.argmax(log_probs, axis=-1)).astype(jnp.int32)


def sample_decode(model: nn.Module, params: Params, encoder_input_tokens: Array,
                  keys: Array, *, max_decode_length: int, temperature: Any = 1.0,
                  top_k: int = 0, top_p: float = 1.0, eos_id: int = 1,
                  method_inputs: MethodInputs = MethodInputs()) -> tuple[Array, Array]:
  """Ancestral sampling (`sample_tokens` at every step); EOS ends a row as in greedy.

  `keys` [b, 2] is each row's PRNG key (`example_keys`); step t draws with it
  folded with t. Scores are the model's summed log-probability of the drawn
  tokens (temperature 1, no cut), as greedy decoding's.
  """
  def choose(step, log_probs):
    step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, step)
    return sample_tokens(step_keys, log_probs, temperature, top_k, top_p)

  return _token_by_token(model, params, encoder_input_tokens, choose,
                         max_decode_length=max_decode_length, eos_id=eos_id,
                         method_inputs=method_inputs)


# ------------------------------------------------------------------ beam search


def brevity_penalty(length: Array, alpha: float) -> Array:
  """GNMT/T5X length penalty ((5 + length) / 6) ** alpha; beam scores are log_prob / this."""
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


class _BeamState(NamedTuple):
  step: Array  # [] position being decoded
  # Sequences carry a leading BOS column: [batch, beams, 1 + max_decode_length].
  live_tokens: Array
  live_log_probs: Array  # [batch, beams], sorted best first
  finished_tokens: Array
  finished_scores: Array  # [batch, beams] length-penalised, sorted best first
  cache: Any  # the decoding state (`start`): batch * beams rows, beam-minor
  first: Array  # [batch * beams] the token the first step feeds


def _gather_beams(x: Array, beam_index: Array) -> Array:
  """x [batch, n, ...], beam_index [batch, k] -> [batch, k, ...]."""
  return x[jnp.arange(x.shape[0])[:, None], beam_index]


def _gather_cache(cache: Any, beam_index: Array) -> Any:
  """Reorders a cache of batch * beams rows by beam_index [batch, beams]."""
  batch, beams = beam_index.shape

  def gather(x):
    if x.ndim == 0:  # the shared cache index
      return x
    per_beam = x.reshape((batch, beams) + x.shape[1:])
    return _gather_beams(per_beam, beam_index).reshape(x.shape)

  return jax.tree.map(gather, cache)


def beam_search(model: nn.Module, params: Params, encoder_input_tokens: Array, *,
                beam_size: int, max_decode_length: int, alpha: float = 0.6, eos_id: int = 1,
                method_inputs: MethodInputs = MethodInputs()) -> tuple[Array, Array]:
  """Beam search; returns the best finished hypothesis per example.

  A hypothesis finishes when it emits EOS or reaches `max_decode_length`; its
  score is its summed log-probability divided by `brevity_penalty(length,
  alpha)`, length counting EOS. Each step expands the `beam_size` live beams,
  keeps the 2 * beam_size most probable continuations, finishes those among the
  best `beam_size` that end, and keeps the best `beam_size` that do not end
  alive. The loop stops once no live beam can still beat the worst kept
  finished hypothesis. With beam_size=1 and alpha=0 this is greedy decoding.

  Returns:
    tokens [b, max_decode_length] int32 (0 after EOS) and scores [b] float32.
  """
  if beam_size < 1:
    raise ValueError(f'beam_size must be >= 1, got {beam_size}.')
  decoding, first = start(model, params, encoder_input_tokens,
                          max_decode_length=max_decode_length, method_inputs=method_inputs)
  batch, k, length = first.shape[0], beam_size, max_decode_length
  # Started once per example; every beam reads its example's copy (and method inputs).
  decoding, first = repeat_rows(decoding, k), jnp.repeat(first, k)  # [batch * beams, ...]
  positions = jnp.arange(length + 1)

  def improvable(state: _BeamState) -> Array:
    # Log-probs only fall as sequences grow, so the best live beam can at most
    # reach its current log-prob over the largest penalty still ahead.
    largest_penalty = jnp.maximum(brevity_penalty(state.step + 1, alpha),
                                  brevity_penalty(length, alpha))
    best_live = state.live_log_probs[:, 0]
    bound = best_live / largest_penalty
    can_improve = (best_live > NEG_INF / 2) & (bound > state.finished_scores[:, -1])
    return (state.step < length) & jnp.any(can_improve)

  def body(state: _BeamState) -> _BeamState:
    previous = jax.lax.dynamic_index_in_dim(state.live_tokens, state.step, axis=2,
                                            keepdims=False).reshape(batch * k)
    # The first step feeds `start`'s token (BOS, or a prefix's last token).
    previous = jnp.where(state.step == 0, state.first, previous)
    log_probs, cache = step(model, params, state.cache, previous, length)
    vocab = log_probs.shape[-1]
    candidates = state.live_log_probs[:, :, None] + log_probs.reshape(batch, k, vocab)
    num_top = min(2 * k, k * vocab)
    top_log_probs, top_index = jax.lax.top_k(candidates.reshape(batch, k * vocab), num_top)
    parent, token = top_index // vocab, top_index % vocab  # [batch, num_top]
    sequences = _gather_beams(state.live_tokens, parent)  # [batch, num_top, 1 + length]
    sequences = jnp.where(positions == state.step + 1, token[:, :, None], sequences)
    ends = (token == eos_id) | (state.step + 1 == length)
    possible = top_log_probs > NEG_INF / 2

    # Live: the best beams that go on.
    live_log_probs, live_pick = jax.lax.top_k(jnp.where(ends, NEG_INF, top_log_probs), k)
    live_tokens = _gather_beams(sequences, live_pick)
    # Every beam of an example shares the context; the caches follow their parents.
    cache = cache._replace(cache=_gather_cache(cache.cache, _gather_beams(parent, live_pick)))

    # Finished: ending continuations good enough to be among the best k.
    rank = jnp.arange(num_top)[None, :]
    new_scores = jnp.where(ends & possible & (rank < k),
                           top_log_probs / brevity_penalty(state.step + 1, alpha), NEG_INF)
    all_scores = jnp.concatenate([state.finished_scores, new_scores], axis=1)
    all_tokens = jnp.concatenate([state.finished_tokens, sequences], axis=1)
    finished_scores, finished_pick = jax.lax.top_k(all_scores, k)
    finished_tokens = _gather_beams(all_tokens, finished_pick)
    return _BeamState(state.step + 1, live_tokens, live_log_probs, finished_tokens,
                      finished_scores, cache, state.first)

  tokens = jnp.zeros((batch, k, length + 1), jnp.int32)
  # One real beam per example to start with; the others are copies that never win.
  live_log_probs = jnp.where(jnp.arange(k) == 0, 0.0, NEG_INF) * jnp.ones((batch, 1))
  initial = _BeamState(
      step=jnp.array(0, jnp.int32), live_tokens=tokens, live_log_probs=live_log_probs,
      finished_tokens=tokens, finished_scores=jnp.full((batch, k), NEG_INF, jnp.float32),
      cache=decoding, first=first)
  final = jax.lax.while_loop(improvable, body, initial)
  return final.finished_tokens[:, 0, 1:], final.finished_scores[:, 0]


# ------------------------------------------------------------------ jitted variants

# `eos_id`, `alpha` and `temperature` are traced: changing them does not recompile.
jit_greedy_decode = jax.jit(greedy_decode, static_argnames=('model', 'max_decode_length'))
jit_beam_search = jax.jit(beam_search,
                          static_argnames=('model', 'beam_size', 'max_decode_length'))
jit_sample_decode = jax.jit(sample_decode,
                            static_argnames=('model', 'max_decode_length', 'top_k', 'top_p'))


def jit_decode(model: nn.Module, params: Params, encoder_input_tokens: Array, *,
               max_decode_length: int, decoder: str = GREEDY, beam_size: int = 4,
               alpha: float = 0.6, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
               keys: Array | None = None,
               method_inputs: MethodInputs = MethodInputs()) -> tuple[Array, Array]:
  """Greedy decoding, beam search ('beam') or sampling ('sample', with each row's PRNG
  key in `keys`), jitted: (tokens, scores)."""
  if decoder == BEAM:
    return jit_beam_search(model, params, encoder_input_tokens, beam_size=beam_size,
                           max_decode_length=max_decode_length, alpha=alpha,
                           method_inputs=method_inputs)
  if decoder == SAMPLE:
    if keys is None:
      raise ValueError("decoder='sample' needs each row's PRNG key: pass keys= (example_keys).")
    return jit_sample_decode(model, params, encoder_input_tokens, keys,
                             max_decode_length=max_decode_length, temperature=temperature,
                             top_k=top_k, top_p=top_p, method_inputs=method_inputs)
  return jit_greedy_decode(model, params, encoder_input_tokens,
                           max_decode_length=max_decode_length, method_inputs=method_inputs)
