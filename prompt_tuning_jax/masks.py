"""Attention masks and the additive biases built from them.

A mask is 1 where a query may attend a key and 0 elsewhere, shaped
[batch, 1, q_len, k_len] (the 1 broadcasts over heads). Prompt positions are
valid positions like any other: callers mark them valid in the per-position `valid`
vectors (see `prompts.place_prompt`), which makes them visible to encoder
self-attention and decoder cross-attention. `prompt_attention_mask` restricts what the
prompt positions themselves attend (the original implementation's extended masks).
"""
from __future__ import annotations

from typing import Optional

import jax.numpy as jnp

Array = jnp.ndarray

# Large negative logit for masked positions, as T5X uses (finite, so a fully
# masked row gives a uniform softmax rather than NaN).
MASKED_LOGIT = -1e10


def make_attention_mask(query_valid: Array, key_valid: Array, dtype=jnp.float32) -> Array:
  """[batch, q] x [batch, k] validity -> [batch, 1, q, k] mask."""
  mask = query_valid[:, :, None] & key_valid[:, None, :]
  return mask[:, None].astype(dtype)


def make_causal_mask(length: int, dtype=jnp.float32) -> Array:
  """[1, 1, length, length] lower-triangular mask (a query sees itself and the past)."""
  idx = jnp.arange(length)
  return (idx[None, :] <= idx[:, None])[None, None].astype(dtype)


def make_segment_mask(query_segments: Array, key_segments: Array, dtype=jnp.float32) -> Array:
  """Packed examples attend within their own segment only."""
  return (query_segments[:, :, None] == key_segments[:, None, :])[:, None].astype(dtype)


def combine_masks(*masks: Optional[Array], dtype=jnp.float32) -> Optional[Array]:
  """Logical AND of the masks that are not None (None if all are None)."""
  masks = [m for m in masks if m is not None]
  if not masks:
    return None
  out = masks[0].astype(bool)
  for m in masks[1:]:
    out = out & m.astype(bool)
  return out.astype(dtype)


PROMPT_TO_PROMPT = ('all', 'causal', 'self')


def prompt_attention_mask(valid: Array, prompt: Array, *, prompt_to_input: bool = True,
                          prompt_to_prompt: str = 'all', dtype=jnp.float32) -> Array:
  """Self-attention mask [b, 1, L, L] of a sequence with prompt positions.

  valid [b, L] (False at padding), prompt [b, L] (True at prompt positions). Every position
  sees every valid position, except that a prompt position sees the other positions only
  with `prompt_to_input`, and the prompt positions by `prompt_to_prompt`: 'all', those at
  or before it ('causal'), or itself alone ('self'). With the defaults it is
  `make_attention_mask(valid, valid)`.
  """
  if prompt_to_prompt not in PROMPT_TO_PROMPT:
    raise ValueError(f'prompt_to_prompt must be one of {PROMPT_TO_PROMPT}, got '
                     f'{prompt_to_prompt!r}.')
  position = jnp.arange(valid.shape[1])
  within_prompt = {'all': jnp.ones((), bool),
                   'causal': position[None, :] <= position[:, None],  # [L, L]
                   'self': position[None, :] == position[:, None]}[prompt_to_prompt]
  prompt_row = jnp.where(prompt[:, None, :], within_prompt, prompt_to_input)  # [b, L, L]
  sees = jnp.where(prompt[:, :, None], prompt_row, True)
  return (sees & valid[:, :, None] & valid[:, None, :])[:, None].astype(dtype)


def with_visible_prefix(mask: Array, length: int) -> Array:
  """[..., q, k] -> [..., q, length + k]: `length` key columns first that every query sees
  (a method's key/value prefix, `Method.prefix_length`)."""
  return jnp.pad(mask, [(0, 0)] * (mask.ndim - 1) + [(length, 0)], constant_values=1)


def mask_to_bias(mask: Array, dtype=jnp.float32) -> Array:
  """0 where allowed, MASKED_LOGIT where masked."""
  return jnp.where(mask > 0, 0.0, MASKED_LOGIT).astype(dtype)


def decoder_self_attention_mask(
    decoder_target_tokens: Array,
    decoder_segment_ids: Optional[Array] = None,
    dtype=jnp.float32,
) -> Array:
  """Causal mask restricted to non-padding target positions (T5X's decoder mask)."""
  valid = decoder_target_tokens > 0
  mask = combine_masks(
      make_causal_mask(decoder_target_tokens.shape[-1], dtype),
      make_attention_mask(valid, valid, dtype),
      None if decoder_segment_ids is None else make_segment_mask(
          decoder_segment_ids, decoder_segment_ids, dtype),
      dtype=dtype)
  return mask


def prefix_lm_mask(valid: Array, bidirectional: Optional[Array] = None,
                   dtype=jnp.float32) -> Array:
  """T5X's decoder-only mask [batch, 1, S, S]: causal, and within the prefix both ways.

  `valid` [batch, S] is False at padding; `bidirectional` [batch, S] marks the
  prefix of a prefix LM (None: causal everywhere).
  """
  visible = make_causal_mask(valid.shape[-1], dtype) > 0
  if bidirectional is not None:
    visible = visible | (make_attention_mask(bidirectional, bidirectional, dtype) > 0)
  return (visible & (make_attention_mask(valid, valid, dtype) > 0)).astype(dtype)
