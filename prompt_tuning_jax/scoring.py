"""Teacher-forced scoring of targets and rank classification.

`score_targets` sums log p(target token) over the non-padding target
positions. `rank_classify` scores every candidate label for every example and
picks the best; it runs the encoder once per example and one decoder row per
example holding all its labels (`pack_labels`), so its cost is one encoder pass
plus one decoder pass. `rank_classify_packed` does the same for packed encoder rows
(PACK_LENGTHS): one encoder pass a row of several examples, one decoder row a packed row.
Training over the label set (objectives.py) scores the labels through `pack_labels`' rows.
A decoder-only LM prefills its cache with each
example's prefix (BOS, the prompt, the inputs) once, repeats it per label and feeds
every label as one block after it (`decoding.start`): one prefix pass plus one pass
over the labels' tokens.

As in `decoding`, functions take the flax module and the params tree; the
`jit_*` variants are jitted with the module static. `method_inputs` are the per-example
inputs of the model's method (e.g. every example's own prompt). A prompt ensemble is a
thin layer on top: repeat the inputs once per prompt, pass the stacked prompts,
and average `label_scores` over the prompt axis.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from prompt_tuning_jax import decoding
from prompt_tuning_jax.methods import MethodInputs
from prompt_tuning_jax.methods.hooks import SELF_ATTENTION

Array = jnp.ndarray


def shift_right(targets: Array) -> Array:
  """Decoder inputs for teacher forcing: [0, targets[:-1]] per row."""
  return jnp.pad(targets[:, :-1], ((0, 0), (1, 0)))


def token_log_likelihoods(logits: Array, targets: Array) -> Array:
  """logits [b, d, vocab], targets [b, d] -> log p(target) [b, d] (at least float32), 0 at
  padding (0)."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)),
                                axis=-1)
  picked = jnp.take_along_axis(log_probs, targets[:, :, None].astype(jnp.int32), axis=-1)
  return jnp.where(targets > 0, picked[:, :, 0], 0.0)


def score_targets(model: nn.Module, params, encoder_input_tokens: Array,
                  decoder_target_tokens: Array, *,
                  method_inputs: MethodInputs = MethodInputs()) -> Array:
  """Summed log-likelihood [b] of decoder_target_tokens [b, d] (0 = padding) given the inputs."""
  if decoding.decodes_from_prefix(model):
    state, first = decoding.start(model, params, encoder_input_tokens,
                                  max_decode_length=decoder_target_tokens.shape[1],
                                  method_inputs=method_inputs)
    return _score_after_prefix(model, params, state, first, decoder_target_tokens)
  encoded, encoder_valid = decoding.encode(model, params, encoder_input_tokens,
                                           method_inputs=method_inputs)
  return _score_encoded(model, params, encoded, encoder_valid, decoder_target_tokens,
                        method_inputs)


def _score_encoded(model: nn.Module, params, encoded: Array, encoder_valid: Array,
                   targets: Array, method_inputs: MethodInputs) -> Array:
  """Teacher-forced decoder on already encoded inputs -> summed log-likelihood [b]."""
  logits = model.apply({'params': params}, encoded, encoder_valid, shift_right(targets),
                       targets, method=model.decode,
                       method_inputs=method_inputs)  # [b, d, vocab]
  return jnp.sum(token_log_likelihoods(logits, targets), axis=-1)


def _score_after_prefix(model: nn.Module, params, state: decoding.DecodingState, first: Array,
                        targets: Array) -> Array:
  """A decoder-only LM's prefilled cache, the targets fed as one block -> log-likelihood [b]."""
  block = jnp.concatenate([first[:, None], targets[:, :-1]], axis=1)  # [b, d]
  logits, _ = model.apply({'params': params, 'cache': state.cache}, block, method=model.extend,
                          mutable=['cache'])  # [b, d, vocab]
  return jnp.sum(token_log_likelihoods(logits, targets), axis=-1)


def rank_classify(model: nn.Module, params, encoder_input_tokens: Array,
                  label_token_ids: Array, *, method_inputs: MethodInputs = MethodInputs(),
                  normalize: bool = False) -> tuple[Array, Array]:
  """Picks the label whose tokens the model finds most likely for each example.

  Args:
    label_token_ids: [num_labels, d] label tokens with EOS, zero padded (see
      `encode_labels`).
    normalize: divide each label's summed log-likelihood by its token count
      (EOS included), removing the bias towards short labels. May be traced.

  Returns:
    label_index [b] int32 and label_scores [b, num_labels] float32 (summed, or
    with `normalize` mean, log-likelihoods).
  """
  _check_labels(label_token_ids)
  label_token_ids = jnp.asarray(label_token_ids, jnp.int32)
  num_labels, d = label_token_ids.shape
  if decoding.decodes_from_prefix(model):
    state, first = decoding.start(model, params, encoder_input_tokens, max_decode_length=d,
                                  method_inputs=method_inputs)
    batch = first.shape[0]
    # One row per (example, label), label-minor: the prefix's cache copied per label.
    scores = _score_after_prefix(
        model, params, decoding.repeat_rows(state, num_labels), jnp.repeat(first, num_labels),
        jnp.tile(label_token_ids, (batch, 1))).reshape(batch, num_labels)
    return _pick(scores, label_token_ids, normalize)
  encoded, encoder_valid = decoding.encode(model, params, encoder_input_tokens,
                                           method_inputs=method_inputs)
  batch, num_labels = encoded.shape[0], label_token_ids.shape[0]
  if model.method.prefix_length(SELF_ATTENTION):
    # A decoder self-attention prefix sits before the row: a label's offset in a shared row
    # would change its relative position to the prefix, so each label gets its own row.
    tiled = lambda x: jnp.repeat(x, num_labels, axis=0)  # [batch * labels, ...]
    targets = jnp.tile(label_token_ids, (batch, 1))  # [batch * labels, d]
    logits = model.apply({'params': params}, tiled(encoded), tiled(encoder_valid),
                         shift_right(targets), targets, method=model.decode,
                         method_inputs=jax.tree.map(tiled, method_inputs))
    scores = token_log_likelihoods(logits, targets).sum(-1).reshape(batch, num_labels)
    return _pick(scores, label_token_ids, normalize)
  labels = jnp.broadcast_to(label_token_ids, (batch, *label_token_ids.shape))
  decoder = pack_labels(labels)
  logits = model.apply({'params': params}, encoded, encoder_valid,
                       decoder['decoder_input_tokens'], decoder['decoder_target_tokens'],
                       decoder_segment_ids=decoder['decoder_segment_ids'],
                       method=model.decode,
                       method_inputs=method_inputs)  # [batch, labels * d, vocab]
  scores = packed_label_scores(logits, decoder['decoder_target_tokens'], labels.shape[1])
  return _pick(scores, label_token_ids, normalize)


def rank_classify_packed(model: nn.Module, params, rows: Mapping[str, Array],
                         label_token_ids: Array, *, members: int,
                         normalize: bool = False) -> tuple[Array, Array]:
  """`rank_classify` of packed encoder rows (`data.pack_batch`): several examples a row,
  each with its prompt slots and segment id, encoded in one pass.

  The decoder row of encoder row r holds every label of each of its `members` examples
  (member j is segment j + 1; label k of member j the decoder segment j * labels + k + 1),
  each label's positions reading only member j's encoder segment (`cross_segment_ids`).

  Args:
    rows: encoder_input_tokens, encoder_segment_ids [r, R] and the method inputs of the
      rows (task_index, prompt_slots [r, R]).
    members: the most examples any row holds (static); a row's entries past its own
      examples are meaningless.

  Returns:
    label_index [r, members] int32 and label_scores [r, members, labels], as `rank_classify`.
  """
  _check_labels(label_token_ids)
  label_token_ids = jnp.asarray(label_token_ids, jnp.int32)
  num_labels, d = label_token_ids.shape
  method_inputs = MethodInputs.from_batch(rows)
  segments = rows['encoder_segment_ids']
  encoded, encoder_valid = model.apply({'params': params}, rows['encoder_input_tokens'],
                                       encoder_segment_ids=segments, method=model.encode,
                                       method_inputs=method_inputs)  # [r, R, emb]
  labels = jnp.tile(label_token_ids, (1, members, 1))  # [1, members * labels, d]
  decoder = pack_labels(labels)  # one row, [1, members * labels * d]
  member = jnp.repeat(jnp.arange(1, members + 1, dtype=jnp.int32), num_labels * d)
  each_row = lambda x: jnp.broadcast_to(x, (encoded.shape[0], x.shape[-1]))
  targets = each_row(decoder['decoder_target_tokens'])
  logits = model.apply({'params': params}, encoded, encoder_valid,
                       each_row(decoder['decoder_input_tokens']), targets,
                       decoder_segment_ids=each_row(decoder['decoder_segment_ids']),
                       encoder_segment_ids=segments, cross_segment_ids=each_row(member),
                       method=model.decode, method_inputs=method_inputs)
  scores = packed_label_scores(logits, targets, members * num_labels)
  return _pick(scores.reshape(-1, members, num_labels), label_token_ids, normalize)


def _pick(scores: Array, label_token_ids: Array, normalize) -> tuple[Array, Array]:
  """(the best label [...], the scores [..., labels]) from summed log-likelihoods."""
  lengths = jnp.sum(label_token_ids > 0, axis=-1)  # [labels]
  scores = jnp.where(normalize, scores / lengths, scores)
  return jnp.argmax(scores, axis=-1).astype(jnp.int32), scores


def pack_labels(label_token_ids: Array) -> dict[str, Array]:
  """Every example's labels [b, labels, d] as ONE teacher-forced decoder row each.

  Returns decoder_input_tokens, decoder_target_tokens and decoder_segment_ids,
  each [b, labels * d]: label k is segment k + 1. With the rows, the decoder reads
  the encoded input once per example, not once per label (the cross-attention
  keys/values are computed once per row); segment masking keeps the labels apart,
  and T5's relative positions make their offsets in the row irrelevant. An
  all-padding label (a task with fewer labels than the table) scores 0.
  """
  batch, num_labels, d = label_token_ids.shape
  targets = label_token_ids.reshape(batch, num_labels * d)
  inputs = shift_right(label_token_ids.reshape(batch * num_labels, d))
  segments = jnp.repeat(jnp.arange(1, num_labels + 1, dtype=jnp.int32), d)  # [labels * d]
  return {'decoder_input_tokens': inputs.reshape(batch, num_labels * d),
          'decoder_target_tokens': targets,
          'decoder_segment_ids': jnp.broadcast_to(segments, targets.shape)}


def packed_label_scores(logits: Array, targets: Array, num_labels: int) -> Array:
  """Logits [b, labels * d, vocab] of `pack_labels`'s rows -> summed log-likelihoods [b, labels]."""
  batch = targets.shape[0]
  return token_log_likelihoods(logits, targets).reshape(batch, num_labels, -1).sum(-1)


def _check_labels(label_token_ids) -> None:
  """Shape always; all-padding rows (which would score 0, i.e. win) when values are known."""
  if jnp.ndim(label_token_ids) != 2:
    raise ValueError(f'label_token_ids must be [num_labels, length], got shape '
                     f'{jnp.shape(label_token_ids)}.')
  if isinstance(label_token_ids, jax.core.Tracer):
    return
  empty = np.flatnonzero(~(np.asarray(label_token_ids) > 0).any(axis=-1))
  if empty.size:
    raise ValueError(f'label_token_ids rows {empty.tolist()} are all padding; every label '
                     'needs at least its EOS (see encode_labels).')


def encode_labels(vocabulary, label_words: Sequence[str],
                  length: Optional[int] = None) -> np.ndarray:
  """Label words -> [num_labels, length] int32 token ids with EOS, zero padded.

  `vocabulary` is a seqio vocabulary (anything with `encode(str)` and
  `eos_id`). `length` defaults to the longest label; a label that does not fit
  is an error rather than being cut.
  """
  encoded = []
  for word in label_words:
    ids = list(vocabulary.encode(word))
    if not ids:
      raise ValueError(f'Label {word!r} encodes to no tokens.')
    encoded.append(ids + [vocabulary.eos_id])
  if not encoded:
    raise ValueError('No label words given.')
  longest = max(len(ids) for ids in encoded)
  length = longest if length is None else length
  if longest > length:
    word = label_words[[len(ids) for ids in encoded].index(longest)]
    raise ValueError(f'Label {word!r} is {longest} tokens with EOS, longer than length={length}.')
  out = np.zeros((len(encoded), length), np.int32)
  for i, ids in enumerate(encoded):
    out[i, :len(ids)] = ids
  return out


jit_score_targets = jax.jit(score_targets, static_argnames=('model',))
_jit_rank_classify = jax.jit(rank_classify, static_argnames=('model',))
jit_rank_classify_packed = jax.jit(rank_classify_packed, static_argnames=('model', 'members'))


def jit_rank_classify(model: nn.Module, params, encoder_input_tokens: Array,
                      label_token_ids: Array, **kwargs) -> tuple[Array, Array]:
  """`rank_classify` compiled once per module and shapes (`normalize` is traced).

  The labels are checked here, while their values are still known.
  """
  _check_labels(label_token_ids)
  return _jit_rank_classify(model, params, encoder_input_tokens, label_token_ids, **kwargs)
