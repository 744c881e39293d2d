"""A T5X-style decoder-only language model (flaxformer's `DecoderOnly`), T5X's parameter tree.

The blocks are T5's (models/t5.py) without cross-attention: pre-norm RMS layer
norms, self-attention with one relative-position bias table shared by the
layers (causal buckets), a gated-GELU (T5.1.1) or ReLU MLP, logits by
`logits_dense` or tied to the embedding. Parameter paths are those of a T5X
decoder-only checkpoint, all under `decoder/`:

  decoder/token_embedder/embedding              [vocab, emb]
  decoder/relpos_bias/rel_embedding             [heads, buckets]
  decoder/layers_<i>/pre_self_attention_layer_norm/scale
  decoder/layers_<i>/self_attention/{query,key,value,out}/kernel
  decoder/layers_<i>/pre_mlp_layer_norm/scale
  decoder/layers_<i>/mlp/{wi_0,wi_1,wo}/kernel  (wi with one activation)
  decoder/decoder_norm/scale
  decoder/logits_dense/kernel                   (untied logits only)

Batches are T5X's decoder-only features (seqio's `DecoderFeatureConverter`):
`decoder_input_tokens` (the sequence shifted right, BOS = 0), `decoder_target_tokens`
(0 = padding; position k is real iff its target is), and for tasks with inputs
`decoder_causal_attention` (1 on BOS and the inputs: the prefix). With
`inputs_bidirectional_attention` (a prefix LM, T5's "prefix LM" and T5X's
`DecoderOnlyModel` flag) the prefix attends to itself in both directions and the
rest causally; without it every position attends causally.

A method's prompt module (`Hooks.decoder_prompt`, `PromptedDecoderOnly`) inserts prompt
vectors into the embedded sequence (`prompts.insert_prompt`); the logits keep one row per
original position, each read where the combined sequence predicts that
position's target (the prompt's own positions are dropped, as the original's
`PromptDecoderOnlyModel` drops them).

Cached decoding (`prefill`, `extend`): the prefix (BOS, the prompt, the inputs)
is written into the key/value cache in one block, right-aligned so that every
row's prefix ends at the same position (relative positions only see
distances, so the left padding changes nothing); then each call writes a block
of positions (one while decoding, a label while scoring) at the cache index.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

import jax
import jax.numpy as jnp
import seqio
from flax import linen as nn

from prompt_tuning_jax import masks as masks_lib
from prompt_tuning_jax import prompts as prompts_lib
from prompt_tuning_jax.errors import UsageError
from prompt_tuning_jax.methods import Method, MethodInputs, ModelTuning
from prompt_tuning_jax.methods import hooks as hooks_lib
from prompt_tuning_jax.methods.hooks import NO_HOOKS, Site
from prompt_tuning_jax.models import t5

Array = jnp.ndarray


@dataclasses.dataclass(frozen=True)
class DecoderOnlyConfig(t5.T5Config):
  """A T5 decoder-only LM: `num_decoder_layers` layers, no encoder."""
  num_encoder_layers: int = 0
  # A prefix LM (the inputs and the prompt attend bidirectionally); False: causal.
  inputs_bidirectional_attention: bool = True


PRESETS: dict[str, DecoderOnlyConfig] = {
    # The project's own pre-trained decoder-only mini LM
    # (prompt_tuning_jax/pretrained/decoder_mini): t5_mini's width, vocabulary and tied
    # logits, 9 layers instead of 4 + 4, so that it has t5_mini's 3.4M parameters.
    'decoder_mini': DecoderOnlyConfig(
        vocab_size=8192, emb_dim=128, num_heads=4, head_dim=32, mlp_dim=512,
        num_decoder_layers=9, logits_via_embedding=True, dtype=jnp.float32),
}


class CachedSelfAttention(t5.MultiHeadAttention):
  """T5 self-attention whose cache takes blocks of positions at an index the caller gives.

  The first cached call creates the [batch, cache length, heads, head_dim]
  cache, the length read from the bias's key axis. Every call writes its
  keys/values at `cache_index` and attends over the whole cache: the caller's
  bias [b|1, h|1, q, cache length] masks what is not visible.
  """
  cache_index: Any = None

  def _update_cache(self, key: Array, value: Array, bias: Optional[Array]):
    b, _, h, d = key.shape
    shape = (b, bias.shape[-1], h, d)
    cached_key = self.variable('cache', 'cached_key', jnp.zeros, shape, key.dtype)
    cached_value = self.variable('cache', 'cached_value', jnp.zeros, shape, value.dtype)
    zero = jnp.zeros_like(self.cache_index)  # indices of one type (int64 under x64 too)
    start = (zero, self.cache_index, zero, zero)
    cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, start)
    cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, start)
    return cached_key.value, cached_value.value, bias


class CachePositions(nn.Module):
  """The cache's bookkeeping: which positions hold a real key, and where the next block goes."""

  @nn.compact
  def __call__(self, block_valid: Array, *, cache_length: Optional[int] = None,
               hold_last: bool = False) -> tuple[Array, Array]:
    """Registers a block of q positions at the index.

    block_valid [b, q]. The first call creates the cache of `cache_length`
    positions. The index advances by q, or by q - 1 with `hold_last` (the
    next block rewrites the last position). Returns (the block's index, which
    cache positions are real [b, cache length]).
    """
    if not self.has_variable('cache', 'valid') and cache_length is None:
      raise ValueError('No cache to extend: prefill it first.')
    valid = self.variable('cache', 'valid', jnp.zeros, (block_valid.shape[0], cache_length), bool)
    index = self.variable('cache', 'index', lambda: jnp.array(0, jnp.int32))
    i = index.value
    valid.value = jax.lax.dynamic_update_slice(valid.value, block_valid, (jnp.zeros_like(i), i))
    index.value = i + block_valid.shape[1] - (1 if hold_last else 0)
    return i, valid.value


class DecoderOnlyLayer(nn.Module):
  """Pre-norm self-attention, then the MLP (a T5 decoder layer without cross-attention)."""
  config: DecoderOnlyConfig

  @nn.compact
  def __call__(self, x: Array, bias: Array, *, deterministic: bool,
               cache_index: Optional[Array] = None) -> Array:
    """x [b, q, emb]; with `cache_index` the block is written into the cache there."""
    cfg = self.config
    attention = CachedSelfAttention(cfg.num_heads, cfg.head_dim, cfg.dropout_rate, cfg.dtype,
                                    cfg.fused_attention, cache_index=cache_index,
                                    name='self_attention')
    x = t5._residual(  # pylint: disable=protected-access
        cfg, x, 'pre_self_attention_layer_norm',
        lambda y: attention(y, y, bias, deterministic=deterministic,
                            decode=cache_index is not None), deterministic)
    # The T5 hook points are not in a decoder-only LM (its method plugs in through
    # `Hooks.decoder_prompt`): the MLP runs without hooks; its site gives its name.
    mlp = t5._mlp(cfg, NO_HOOKS, Site(hooks_lib.DECODER, 0, hooks_lib.MLP),  # pylint: disable=protected-access
                  deterministic)
    return t5._residual(cfg, x, 'pre_mlp_layer_norm', mlp,  # pylint: disable=protected-access
                        deterministic)


class Decoder(nn.Module):
  """The stack of a decoder-only LM (path `decoder/`), with an optional prompt module.

  `prompt` maps (embedded [b, T, emb], valid [b, T], bidirectional [b, T] or
  None, insertion index [b], prompts, prompt_mask, right_align) to (combined
  [b, S, emb], valid, bidirectional, output index [b, T]); see
  `prompts.PromptSequence`.
  """
  config: DecoderOnlyConfig
  prompt: Optional[nn.Module] = None

  def setup(self):
    cfg = self.config
    self.token_embedder = t5.Embed(cfg.vocab_size, cfg.emb_dim, cfg.dtype, cfg.one_hot_embed)
    self.relpos_bias = t5.RelativePositionBiases(
        cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance, cfg.num_heads,
        t5.at_least_float32(cfg.dtype))
    self.layers = [DecoderOnlyLayer(cfg) for _ in range(cfg.num_decoder_layers)]
    self.decoder_norm = t5.LayerNorm(dtype=cfg.dtype)
    # Broadcast over the length axis, as T5X's embedding and output dropout.
    self.dropout = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))
    self.cache_positions = CachePositions()
    if not cfg.logits_via_embedding:
      self.logits_dense = t5.Dense(cfg.vocab_size, dtype=t5.at_least_float32(cfg.dtype))

  # ---------------------------------------------------------------- pieces

  def _embed(self, tokens: Array, valid: Array, bidirectional: Optional[Array],
             prompt_start: Optional[Array], *, deterministic: bool, right_align: bool,
             prompts: Optional[Array], prompt_mask: Optional[Array]):
    """Embeds tokens and inserts the prompt: (x [b, S, emb], valid, bidirectional, out index)."""
    x = self.token_embedder(tokens.astype(jnp.int32))  # [batch, T, emb]
    if self.prompt is not None:
      x, valid, bidirectional, out_index = self.prompt(
          x, valid, bidirectional, prompt_start, prompts=prompts, prompt_mask=prompt_mask,
          right_align=right_align)
    elif prompts is not None:
      raise ValueError('`prompts` were given to a model without a prompt module.')
    elif right_align:  # No prompt: an empty one, to right-align the rows the same way.
      b, _, h = x.shape
      x, valid, bidirectional, out_index = prompts_lib.insert_prompt(
          x, valid, bidirectional, jnp.zeros((b, 0, h), x.dtype), jnp.zeros((b, 0), bool),
          jnp.zeros((b,), jnp.int32), right_align=True)
    else:
      out_index = None
    return self.dropout(x, deterministic=deterministic), valid, bidirectional, out_index

  def _position_bias(self, length: int) -> Array:
    """[1, heads, length, length] causal relative-position biases."""
    return self.relpos_bias(length, length, bidirectional=False)

  def _stack(self, x: Array, bias: Array, *, deterministic: bool,
             cache_index: Optional[Array] = None) -> Array:
    for layer in self.layers:
      x = layer(x, bias, deterministic=deterministic, cache_index=cache_index)
    return self.dropout(self.decoder_norm(x), deterministic=deterministic)

  def _logits(self, y: Array) -> Array:
    if self.config.logits_via_embedding:
      return self.token_embedder.attend(y) / jnp.sqrt(jnp.float32(y.shape[-1]))
    return self.logits_dense(y)

  # ---------------------------------------------------------------- teacher forcing

  def __call__(self, decoder_input_tokens: Array, decoder_target_tokens: Array, *,
               deterministic: bool, decoder_causal_attention: Optional[Array] = None,
               segment_ids: Optional[Array] = None, prompts: Optional[Array] = None,
               prompt_mask: Optional[Array] = None) -> Array:
    """-> float32 logits [b, T, vocab], row k predicting decoder_target_tokens[:, k]."""
    cfg = self.config
    valid = decoder_target_tokens > 0  # [batch, T]
    bidirectional = None
    if cfg.inputs_bidirectional_attention and decoder_causal_attention is not None:
      bidirectional = decoder_causal_attention > 0
    prefix_length = (None if decoder_causal_attention is None
                     else jnp.sum(decoder_causal_attention > 0, axis=1))  # [batch]
    x, valid, bidirectional, out_index = self._embed(
        decoder_input_tokens, valid, bidirectional, prefix_length, deterministic=deterministic,
        right_align=False, prompts=prompts, prompt_mask=prompt_mask)
    mask = masks_lib.prefix_lm_mask(valid, bidirectional)
    if segment_ids is not None:
      mask = masks_lib.combine_masks(mask, masks_lib.make_segment_mask(segment_ids, segment_ids))
    bias = masks_lib.mask_to_bias(mask) + self._position_bias(x.shape[1])
    y = self._stack(x, bias, deterministic=deterministic)  # [batch, S, emb]
    if out_index is not None:
      y = jnp.take_along_axis(y, out_index[:, :, None], axis=1)  # [batch, T, emb]
    return self._logits(y)

  # ---------------------------------------------------------------- cached decoding

  def prefill(self, prefix_tokens: Array, prefix_valid: Array, prompt_start: Optional[Array],
              *, max_decode_length: int, prompts: Optional[Array] = None,
              prompt_mask: Optional[Array] = None) -> None:
    """Writes the prefix into a new cache with room for `max_decode_length` more positions.

    prefix_tokens [b, t] (BOS first), prefix_valid [b, t]. The prefix (with the
    prompt) is right-aligned to W positions; the cache index is left at W - 1,
    so the first `extend` feeds the prefix's last token again: it recomputes
    that position exactly (nothing follows it in the prefix) and predicts the
    first target.
    """
    cfg = self.config
    bidirectional = prefix_valid if cfg.inputs_bidirectional_attention else None
    x, valid, bidirectional, _ = self._embed(
        prefix_tokens, prefix_valid, bidirectional, prompt_start, deterministic=True,
        right_align=True, prompts=prompts, prompt_mask=prompt_mask)
    width = x.shape[1]
    cache_length = width + max_decode_length
    i, _ = self.cache_positions(valid, cache_length=cache_length, hold_last=True)
    mask = masks_lib.prefix_lm_mask(valid, bidirectional)  # [batch, 1, W, W]
    # Keys after the prefix are empty.
    mask = jnp.pad(mask, ((0, 0), (0, 0), (0, 0), (0, cache_length - width)))
    bias = masks_lib.mask_to_bias(mask) + self._position_bias(cache_length)[:, :, :width]
    self._stack(x, bias, deterministic=True, cache_index=i)

  def extend(self, tokens: Array) -> Array:
    """Feeds tokens [b, q] at the cache index (each sees the cache and the block's earlier
    positions) -> float32 logits [b, q, vocab]; the index advances by q."""
    b, q = tokens.shape
    i, cache_valid = self.cache_positions(jnp.ones((b, q), bool))
    length = cache_valid.shape[1]
    positions = i + jnp.arange(q)  # [q] the block's positions in the cache
    causal = jnp.arange(length)[None, :] <= positions[:, None]  # [q, length]
    visible = causal[None, None] & cache_valid[:, None, None, :]  # [batch, 1, q, length]
    rows = jax.lax.dynamic_slice_in_dim(self._position_bias(length), i, q, axis=2)
    bias = masks_lib.mask_to_bias(visible) + rows
    x = self.token_embedder(tokens.astype(jnp.int32))
    y = self._stack(x, bias, deterministic=True, cache_index=i)
    return self._logits(y)


class DecoderOnly(nn.Module):
  """A T5X-style decoder-only LM; `__call__` has the signature of flaxformer's `DecoderOnly`.

  `method` plugs in through its `decoder_prompt` hook (`methods/hooks.py`); the default,
  model tuning, adds nothing. A method that plugs into T5's points only is refused.
  `method_inputs` carry per-example prompts (mixed-task batches, prompt ensembles).
  """
  config: DecoderOnlyConfig
  method: Method = ModelTuning()

  # T5X's data contract: the converter of the tasks, the features `__call__` takes.
  FEATURE_CONVERTER_CLS: ClassVar[type] = seqio.DecoderFeatureConverter
  INPUT_FEATURES: ClassVar[tuple[str, ...]] = (
      'decoder_input_tokens', 'decoder_target_tokens', 'decoder_causal_attention')

  def __post_init__(self):
    points = self.method.hooks().t5_points()
    if points:
      raise UsageError(
          f'METHOD {type(self.method).__name__} plugs into T5 ({", ".join(points)}), not into '
          'a decoder-only LM: use methods/decoder_only_prompt_tuning.gin or '
          'methods/model_tuning.gin.')
    super().__post_init__()

  def setup(self):
    make_prompt = self.method.hooks().decoder_prompt
    self.decoder = Decoder(self.config, None if make_prompt is None else make_prompt())

  def __call__(self, decoder_input_tokens: Array, decoder_target_tokens: Array,
               decoder_segment_ids: Optional[Array] = None,
               decoder_positions: Optional[Array] = None,
               decoder_causal_attention: Optional[Array] = None, *,
               enable_dropout: bool = True,
               method_inputs: MethodInputs = MethodInputs()) -> Array:
    """Teacher-forced logits [b, T, vocab] (float32), one row per target position.

    Positions are accepted for T5X compatibility and ignored (relative positions only).
    """
    del decoder_positions
    if decoder_segment_ids is not None and self.method.hooks().decoder_prompt is not None:
      raise ValueError('Packed inputs (segment ids) are not supported with prompts: '
                       'use a feature converter with pack=False.')
    return self.decoder(decoder_input_tokens, decoder_target_tokens,
                        deterministic=not enable_dropout,
                        decoder_causal_attention=decoder_causal_attention,
                        segment_ids=decoder_segment_ids, prompts=method_inputs.prompts,
                        prompt_mask=method_inputs.prompt_mask)

  def prefill(self, inputs: Array, *, max_decode_length: int,
              method_inputs: MethodInputs = MethodInputs()) -> None:
    """Writes BOS, the prompt and inputs [b, I] (zero padded, EOS included) into a new cache
    with room for `max_decode_length` more positions."""
    b = inputs.shape[0]
    tokens = jnp.concatenate([jnp.zeros((b, 1), jnp.int32), inputs.astype(jnp.int32)], axis=1)
    valid = jnp.concatenate([jnp.ones((b, 1), bool), inputs > 0], axis=1)  # BOS is real
    self.decoder.prefill(tokens, valid, jnp.sum(valid, axis=1),
                         max_decode_length=max_decode_length,
                         prompts=method_inputs.prompts, prompt_mask=method_inputs.prompt_mask)

  def extend(self, tokens: Array) -> Array:
    """Cached step(s): tokens [b, q] -> logits [b, q, vocab]."""
    return self.decoder.extend(tokens)
