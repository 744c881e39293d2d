"""T5 encoder-decoder in flax.linen, parameter tree and numerics equal to T5X.

Conventions (T5 / T5X): no biases; RMS layer norm (eps 1e-6) before each
sub-block; no 1/sqrt(head_dim) scaling of attention logits (it is folded into
the query initialiser); relative-position biases shared by all layers of a
stack (bidirectional buckets in the encoder, causal in the decoder); logits via
the embedding (divided by sqrt(emb_dim)) only when they are tied (T5 1.0).
Parameters and logits are float32; activations run in `config.dtype`. Norm statistics,
attention logits, softmax and output logits run in at least float32 (`at_least_float32`):
a float64 model (under `jax.enable_x64`) computes everything in float64, which tests use as
the reference when two computations must agree beyond float32 rounding.

Module names are fixed by `name=` strings: they are the checkpoint paths, e.g.
`encoder/layers_0/attention/query/kernel` [emb, heads * head_dim].

A trainable method (`methods/`) plugs in through `T5.method`'s hooks, called at fixed points
(`methods/hooks.py`); a point without a hook computes exactly what T5X does.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, ClassVar, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import seqio
from flax import linen as nn

from prompt_tuning_jax import masks as masks_lib
from prompt_tuning_jax.methods import Method, ModelTuning
from prompt_tuning_jax.methods import hooks as hooks_lib
from prompt_tuning_jax.methods.hooks import NO_HOOKS, Hooks, MethodInputs, Site

Array = jnp.ndarray
DType = Any


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Hyper-parameters of a T5 encoder-decoder (T5X's `T5Config`)."""
  vocab_size: int = 32128
  emb_dim: int = 512
  num_heads: int = 6
  head_dim: int = 64
  mlp_dim: int = 1024
  num_encoder_layers: int = 8
  num_decoder_layers: int = 8
  # ('gelu', 'linear') is T5.1.1's gated GELU; ('relu',) is T5 1.0.
  mlp_activations: Sequence[str] = ('gelu', 'linear')
  # True for T5 1.0: no `logits_dense`, logits = x @ embedding.T / sqrt(emb_dim).
  logits_via_embedding: bool = False
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  dropout_rate: float = 0.1
  # Activation dtype; parameters and logits stay float32.
  dtype: DType = jnp.bfloat16
  # Embed tokens by a one-hot matmul (the usual choice on TPU) instead of a gather.
  one_hot_embed: bool = False
  # Use jax.nn.dot_product_attention (fused kernels where the backend has them).
  fused_attention: bool = False

  def replace(self, **changes) -> 'T5Config':
    return dataclasses.replace(self, **changes)


def at_least_float32(dtype: DType) -> DType:
  """`dtype` widened to float32 (bfloat16 -> float32; float64 stays float64)."""
  return jnp.promote_types(dtype, jnp.float32)


def _t5_1_1(emb, heads, mlp, layers, **kw):
  return T5Config(emb_dim=emb, num_heads=heads, head_dim=64, mlp_dim=mlp,
                  num_encoder_layers=layers, num_decoder_layers=layers, **kw)


def _t5_1_0(emb, heads, mlp, layers):
  return T5Config(emb_dim=emb, num_heads=heads, head_dim=64, mlp_dim=mlp,
                  num_encoder_layers=layers, num_decoder_layers=layers,
                  mlp_activations=('relu',), logits_via_embedding=True)


PRESETS: dict[str, T5Config] = {
    # T5.1.1 (and the LM-adapted "lm100k" checkpoints the paper tunes).
    't5_1_1_small': _t5_1_1(512, 6, 1024, 8),
    't5_1_1_base': _t5_1_1(768, 12, 2048, 12),
    't5_1_1_large': _t5_1_1(1024, 16, 2816, 24),
    't5_1_1_xl': _t5_1_1(2048, 32, 5120, 24),
    't5_1_1_xxl': _t5_1_1(4096, 64, 10240, 24),
    # T5 1.0: ReLU MLP, logits tied to the embedding.
    't5_1_0_small': _t5_1_0(512, 8, 2048, 6),
    't5_1_0_base': _t5_1_0(768, 12, 3072, 12),
    # mT5: T5.1.1 architecture with the 250k multilingual vocabulary.
    'mt5_small': _t5_1_1(512, 6, 1024, 8, vocab_size=250112),
    'mt5_base': _t5_1_1(768, 12, 2048, 12, vocab_size=250112),
    # The project's own pre-trained mini model (prompt_tuning_jax/pretrained/t5_mini):
    # gated GELU as T5.1.1, logits tied to the embedding, an 8k SentencePiece vocabulary
    # (8,000 pieces + 100 extra ids, padded to 8,192 rows).
    't5_mini': T5Config(vocab_size=8192, emb_dim=128, num_heads=4, head_dim=32, mlp_dim=512,
                        num_encoder_layers=4, num_decoder_layers=4, logits_via_embedding=True,
                        dtype=jnp.float32),
    # The shape of ../shared/checkpoints/t5x_t5_1_1_tiny (a real T5X test checkpoint).
    't5_1_1_tiny': T5Config(emb_dim=4, num_heads=2, head_dim=2, mlp_dim=8,
                            num_encoder_layers=2, num_decoder_layers=2,
                            relative_attention_num_buckets=4,
                            relative_attention_max_distance=8,
                            dtype=jnp.float32),
}


def get_config(name: str, **overrides) -> T5Config:
  """Returns the named preset, optionally with fields replaced."""
  if name not in PRESETS:
    raise ValueError(f'Unknown T5 config {name!r}; known: {", ".join(sorted(PRESETS))}')
  return PRESETS[name].replace(**overrides)


# ------------------------------------------------------------------ layers


def _kernel_init(scale: float = 1.0):
  return nn.initializers.variance_scaling(scale, 'fan_in', 'truncated_normal')


class Dense(nn.Module):
  """Bias-free projection with a 2-D [in, out] float32 kernel, computed in `dtype`."""
  features: int
  dtype: DType = jnp.float32
  kernel_init: Callable = _kernel_init()

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param('kernel', self.kernel_init, (x.shape[-1], self.features), jnp.float32)
    return jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))


class LayerNorm(nn.Module):
  """T5 RMS norm: no mean subtraction, no bias; statistics in float32."""
  epsilon: float = 1e-6
  dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = self.param('scale', nn.initializers.ones, (x.shape[-1],), jnp.float32)
    x32 = x.astype(at_least_float32(x.dtype))
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = (x32 * jax.lax.rsqrt(var + self.epsilon)).astype(self.dtype)
    return y * scale.astype(self.dtype)


class Embed(nn.Module):
  """Token embedding table [vocab, emb]; also computes tied logits (`attend`)."""
  num_embeddings: int
  features: int
  dtype: DType = jnp.float32
  one_hot: bool = False

  def setup(self):
    self.embedding = self.param('embedding', nn.initializers.normal(stddev=1.0),
                                (self.num_embeddings, self.features), jnp.float32)

  def __call__(self, tokens: Array) -> Array:
    if self.one_hot:
      one_hot = jax.nn.one_hot(tokens, self.num_embeddings, dtype=self.dtype)
      return jnp.dot(one_hot, self.embedding.astype(self.dtype))
    return jnp.take(self.embedding, tokens, axis=0).astype(self.dtype)

  def attend(self, x: Array) -> Array:
    """x [..., emb] -> [..., vocab] float32 similarities to every embedding row."""
    return jnp.dot(x.astype(at_least_float32(self.embedding.dtype)), self.embedding.T)


def relative_position_bucket(relative_position: np.ndarray, bidirectional: bool,
                             num_buckets: int, max_distance: int) -> np.ndarray:
  """T5's bucketing of (key position - query position).

  Half the buckets hold exact small distances, the rest grow logarithmically
  up to `max_distance`; bidirectional buckets split first by direction.
  """
  n = -relative_position
  bucket = np.zeros_like(n)
  if bidirectional:
    num_buckets //= 2
    bucket += (n < 0).astype(np.int32) * num_buckets
    n = np.abs(n)
  else:
    n = np.maximum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  log_ratio = np.log(n.astype(np.float32) / max_exact + np.finfo(np.float32).eps)
  large = max_exact + (log_ratio / np.log(max_distance / max_exact)
                       * (num_buckets - max_exact)).astype(np.int32)
  large = np.minimum(large, num_buckets - 1)
  return bucket + np.where(is_small, n, large)


class RelativePositionBiases(nn.Module):
  """Per-head learned bias for each relative-position bucket (one table per stack)."""
  num_buckets: int
  max_distance: int
  num_heads: int
  dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, q_len: int, k_len: int, bidirectional: bool, prefix: int = 0) -> Array:
    """Returns [1, heads, q_len, prefix + k_len] biases.

    `prefix` keys come before the first (a method's key/value prefix: positions -prefix..-1),
    as HF T5 places past key/values before the queries.
    """
    rel_embedding = self.param(
        'rel_embedding', nn.initializers.variance_scaling(1.0, 'fan_avg', 'uniform'),
        (self.num_heads, self.num_buckets), jnp.float32)
    rel = np.arange(-prefix, k_len)[None, :] - np.arange(q_len)[:, None]
    buckets = relative_position_bucket(rel, bidirectional, self.num_buckets, self.max_distance)
    return jnp.take(rel_embedding, buckets, axis=1)[None].astype(self.dtype)


class MultiHeadAttention(nn.Module):
  """T5 attention (no logit scaling; softmax in float32) with an optional decode cache."""
  num_heads: int
  head_dim: int
  dropout_rate: float = 0.0
  dtype: DType = jnp.float32
  fused: bool = False
  hooks: Hooks = NO_HOOKS
  site: Optional[Site] = None  # where `hooks.keys_values` is called

  @nn.compact
  def __call__(self, inputs_q: Array, inputs_kv: Array, bias: Optional[Array],
               *, deterministic: bool, decode: bool = False,
               inputs: MethodInputs = MethodInputs()) -> Array:
    """inputs_q [b, q, emb], inputs_kv [b, k, emb], bias [b|1, h|1, q, k] (mask + position)."""
    b, q_len, emb = inputs_q.shape
    h, d = self.num_heads, self.head_dim
    project = functools.partial(Dense, h * d, dtype=self.dtype)
    # The 1/sqrt(head_dim) T5 does not apply to logits lives in the query init.
    query = project(kernel_init=_kernel_init(d ** -0.5), name='query')(inputs_q)
    key = project(name='key')(inputs_kv)
    value = project(name='value')(inputs_kv)
    query = query.reshape(b, q_len, h, d)  # [batch, q, heads, head_dim]
    key = key.reshape(b, -1, h, d)  # [batch, k, heads, head_dim]
    value = value.reshape(b, -1, h, d)

    if decode:
      key, value, bias = self._update_cache(key, value, bias)
    if self.hooks.keys_values is not None:
      key, value, bias = self.hooks.keys_values(key, value, bias, site=self.site, inputs=inputs,
                                                decode=decode)

    if self.fused:
      out = jax.nn.dot_product_attention(
          query, key, value, bias=None if bias is None else bias.astype(self.dtype),
          scale=1.0)
    else:
      wide = at_least_float32(query.dtype)
      logits = jnp.einsum('bqhd,bkhd->bhqk', query.astype(wide), key.astype(wide))
      if bias is not None:
        logits = logits + bias.astype(wide)
      weights = jax.nn.softmax(logits).astype(self.dtype)  # [batch, heads, q, k]
      if not deterministic and self.dropout_rate > 0:
        weights = nn.Dropout(self.dropout_rate)(weights, deterministic=False)
      out = jnp.einsum('bhqk,bkhd->bqhd', weights, value)  # [batch, q, heads, head_dim]
    return Dense(emb, dtype=self.dtype, name='out')(out.reshape(b, q_len, h * d))

  def _update_cache(self, key: Array, value: Array, bias: Optional[Array]):
    """Writes this step's key/value at the cache index and returns the full cache.

    The first call (cache absent) creates a cache shaped like the given
    [batch, max_length, heads, head_dim] keys and attends normally; later calls
    take one position each. `bias` must then be the full
    [b|1, h|1, max_length, P + max_length] bias: its row at the index is used; its first P
    columns are a method's key/value prefix (`Method.prefix_length`), never cached and
    always visible.
    """
    initialized = self.has_variable('cache', 'cached_key')
    cached_key = self.variable('cache', 'cached_key', jnp.zeros, key.shape, key.dtype)
    cached_value = self.variable('cache', 'cached_value', jnp.zeros, value.shape, value.dtype)
    cache_index = self.variable('cache', 'cache_index', lambda: jnp.array(0, jnp.int32))
    if not initialized:
      return key, value, bias
    b, max_length, h, d = cached_key.value.shape
    if key.shape[1] != 1:
      raise ValueError(f'Cached decoding takes one position per call, got {key.shape[1]}.')
    i = cache_index.value
    cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, (0, i, 0, 0))
    cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, (0, i, 0, 0))
    cache_index.value = i + 1
    visible = (jnp.arange(max_length) <= i)[None, None, None, :]  # [1, 1, 1, max_length]
    prefix = 0 if bias is None else bias.shape[-1] - max_length
    step_bias = masks_lib.mask_to_bias(masks_lib.with_visible_prefix(visible, prefix))
    if bias is not None:
      row = jax.lax.dynamic_slice_in_dim(bias, i, 1, axis=2)  # [b|1, h|1, 1, max_length]
      step_bias = step_bias + row
    return cached_key.value, cached_value.value, step_bias


class MlpBlock(nn.Module):
  """T5 MLP: product of one projection per activation, then `wo`."""
  mlp_dim: int
  activations: Sequence[str]
  dropout_rate: float = 0.0
  dtype: DType = jnp.float32
  hooks: Hooks = NO_HOOKS
  site: Optional[Site] = None  # where `hooks.mlp_hidden` is called

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool) -> Array:
    hidden = None
    for i, act in enumerate(self.activations):
      name = 'wi' if len(self.activations) == 1 else f'wi_{i}'
      h = Dense(self.mlp_dim, dtype=self.dtype, name=name)(x)  # [batch, len, mlp]
      h = h if act == 'linear' else getattr(nn, act)(h)
      hidden = h if hidden is None else hidden * h
    if self.hooks.mlp_hidden is not None:
      hidden = self.hooks.mlp_hidden(hidden, site=self.site)
    hidden = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))(
        hidden, deterministic=deterministic)
    return Dense(x.shape[-1], dtype=self.dtype, name='wo')(hidden)


def _dropout(rate: float, x: Array, deterministic: bool) -> Array:
  # Broadcast over the length axis, as T5X does for residual dropout.
  return nn.Dropout(rate, broadcast_dims=(-2,))(x, deterministic=deterministic)


def _residual(cfg: T5Config, x: Array, norm_name: str, sublayer: Callable[[Array], Array],
              deterministic: bool) -> Array:
  """T5's pre-norm residual sub-block: x + dropout(sublayer(norm(x)))."""
  y = LayerNorm(dtype=cfg.dtype, name=norm_name)(x)
  return x + _dropout(cfg.dropout_rate, sublayer(y), deterministic)


def _mlp(cfg: T5Config, hooks: Hooks, site: Site,
         deterministic: bool) -> Callable[[Array], Array]:
  return lambda y: MlpBlock(cfg.mlp_dim, cfg.mlp_activations, cfg.dropout_rate, cfg.dtype,
                            hooks, site, name=site.block)(y, deterministic=deterministic)


def _attention(cfg: T5Config, hooks: Hooks, site: Site) -> MultiHeadAttention:
  return MultiHeadAttention(cfg.num_heads, cfg.head_dim, cfg.dropout_rate, cfg.dtype,
                            cfg.fused_attention, hooks, site, name=site.block)


class EncoderLayer(nn.Module):
  config: T5Config
  hooks: Hooks = NO_HOOKS
  layer: int = 0  # its index in the stack (the hooks' `Site`)

  @nn.compact
  def __call__(self, x: Array, bias: Array, *, deterministic: bool,
               prompt: Optional[Array] = None, inputs: MethodInputs = MethodInputs()) -> Array:
    """x [b, L, emb]; `prompt` [b, L] bool marks prompt positions (for `hooks.layer_input`)."""
    cfg, hooks = self.config, self.hooks
    site = functools.partial(Site, hooks_lib.ENCODER, self.layer)
    if hooks.layer_input is not None:
      x = hooks.layer_input(x, site=site('layer'), prompt=prompt, inputs=inputs, decode=False)
    attention = _attention(cfg, hooks, site(hooks_lib.ATTENTION))
    x = _residual(cfg, x, 'pre_attention_layer_norm',
                  lambda y: attention(y, y, bias, deterministic=deterministic, inputs=inputs),
                  deterministic)
    return _residual(cfg, x, 'pre_mlp_layer_norm', _mlp(cfg, hooks, site(hooks_lib.MLP),
                                                        deterministic), deterministic)


class DecoderLayer(nn.Module):
  config: T5Config
  hooks: Hooks = NO_HOOKS
  layer: int = 0  # its index in the stack (the hooks' `Site`)

  @nn.compact
  def __call__(self, y: Array, encoded: Array, self_bias: Optional[Array],
               cross_bias: Array, *, deterministic: bool, decode: bool,
               inputs: MethodInputs = MethodInputs()) -> Array:
    cfg, hooks = self.config, self.hooks
    site = functools.partial(Site, hooks_lib.DECODER, self.layer)
    if hooks.layer_input is not None:
      y = hooks.layer_input(y, site=site('layer'), prompt=None, inputs=inputs, decode=decode)
    self_attention = _attention(cfg, hooks, site(hooks_lib.SELF_ATTENTION))
    cross_attention = _attention(cfg, hooks, site(hooks_lib.CROSS_ATTENTION))
    y = _residual(cfg, y, 'pre_self_attention_layer_norm',
                  lambda z: self_attention(z, z, self_bias, deterministic=deterministic,
                                           decode=decode, inputs=inputs), deterministic)
    y = _residual(cfg, y, 'pre_cross_attention_layer_norm',
                  lambda z: cross_attention(z, encoded, cross_bias, deterministic=deterministic,
                                            inputs=inputs), deterministic)
    return _residual(cfg, y, 'pre_mlp_layer_norm', _mlp(cfg, hooks, site(hooks_lib.MLP),
                                                        deterministic), deterministic)


class Encoder(nn.Module):
  """Embeds tokens, lets `hooks.encoder_input` combine a prompt in, runs the stack."""
  config: T5Config
  shared_embedding: nn.Module
  hooks: Hooks = NO_HOOKS
  prefix_length: int = 0  # key/value prefix of the self-attention (`Method.prefix_length`)

  @nn.compact
  def __call__(self, tokens: Array, *, deterministic: bool,
               segment_ids: Optional[Array] = None,
               inputs: MethodInputs = MethodInputs()) -> tuple[Array, Array]:
    """tokens [b, t] -> (encoded [b, L, emb], valid [b, L]); L = t (+ prompt length)."""
    cfg, hooks = self.config, self.hooks
    x = self.shared_embedding(tokens.astype(jnp.int32))  # [batch, t, emb]
    valid = tokens > 0  # [batch, t]
    if hooks.encoder_input is not None:
      x, valid, prompt = hooks.encoder_input(x, valid, inputs=inputs)
    elif inputs.prompts is not None:
      raise ValueError('`prompts` were given to a model whose method takes none.')
    else:
      prompt = jnp.zeros_like(valid)
    x = _dropout(cfg.dropout_rate, x, deterministic)  # after combining, as the original

    length = x.shape[1]
    if hooks.encoder_mask is not None:
      mask = hooks.encoder_mask(valid, prompt)
    else:
      mask = masks_lib.make_attention_mask(valid, valid)
    if segment_ids is not None:
      mask = masks_lib.combine_masks(mask, masks_lib.make_segment_mask(segment_ids, segment_ids))
    position_bias = RelativePositionBiases(
        cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance,
        cfg.num_heads, at_least_float32(cfg.dtype), name='relpos_bias')(
            length, length, bidirectional=True, prefix=self.prefix_length)
    mask = masks_lib.with_visible_prefix(mask, self.prefix_length)
    bias = masks_lib.mask_to_bias(mask) + position_bias  # [batch, heads, L, prefix + L]
    for i in range(cfg.num_encoder_layers):
      x = EncoderLayer(cfg, hooks, i, name=f'layers_{i}')(
          x, bias, deterministic=deterministic, prompt=prompt, inputs=inputs)
    x = LayerNorm(dtype=cfg.dtype, name='encoder_norm')(x)
    return _dropout(cfg.dropout_rate, x, deterministic), valid


class Decoder(nn.Module):
  config: T5Config
  shared_embedding: nn.Module
  hooks: Hooks = NO_HOOKS
  # Key/value prefixes of the self- and cross-attention (`Method.prefix_length`).
  self_prefix_length: int = 0
  cross_prefix_length: int = 0

  @nn.compact
  def __call__(self, encoded: Array, encoder_valid: Array, decoder_input_tokens: Array,
               decoder_target_tokens: Optional[Array], *, deterministic: bool,
               decode: bool = False, max_decode_length: Optional[int] = None,
               segment_ids: Optional[Array] = None,
               encoder_segment_ids: Optional[Array] = None,
               cross_segment_ids: Optional[Array] = None,
               inputs: MethodInputs = MethodInputs()) -> Array:
    """-> float32 logits [b, d, vocab]. In decode mode d = 1 (one step).

    `cross_segment_ids` [b, d]: the encoder segment each position reads, where it is not its
    own decoder segment (default `segment_ids`).
    """
    cfg = self.config
    relpos = RelativePositionBiases(
        cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance,
        cfg.num_heads, at_least_float32(cfg.dtype), name='relpos_bias')
    prefix = self.self_prefix_length
    if decode:
      # The cache masks future positions itself; the bias row is sliced per step.
      length = max_decode_length or decoder_input_tokens.shape[1]
      self_bias = relpos(length, length, bidirectional=False, prefix=prefix)
      query_valid = jnp.ones(decoder_input_tokens.shape, bool)
    else:
      length = decoder_input_tokens.shape[1]
      self_mask = masks_lib.decoder_self_attention_mask(decoder_target_tokens, segment_ids)
      self_bias = (masks_lib.mask_to_bias(masks_lib.with_visible_prefix(self_mask, prefix))
                   + relpos(length, length, bidirectional=False, prefix=prefix))
      query_valid = decoder_target_tokens > 0
    cross_mask = masks_lib.make_attention_mask(query_valid, encoder_valid)
    if cross_segment_ids is None:
      cross_segment_ids = segment_ids
    if cross_segment_ids is not None and encoder_segment_ids is not None:
      cross_mask = masks_lib.combine_masks(
          cross_mask, masks_lib.make_segment_mask(cross_segment_ids, encoder_segment_ids))
    cross_bias = masks_lib.mask_to_bias(
        masks_lib.with_visible_prefix(cross_mask, self.cross_prefix_length))

    y = self.shared_embedding(decoder_input_tokens.astype(jnp.int32))  # [batch, d, emb]
    y = _dropout(cfg.dropout_rate, y, deterministic)
    for i in range(cfg.num_decoder_layers):
      y = DecoderLayer(cfg, self.hooks, i, name=f'layers_{i}')(
          y, encoded, self_bias, cross_bias, deterministic=deterministic, decode=decode,
          inputs=inputs)
    y = LayerNorm(dtype=cfg.dtype, name='decoder_norm')(y)
    y = _dropout(cfg.dropout_rate, y, deterministic)
    if cfg.logits_via_embedding:
      return self.shared_embedding.attend(y) / math.sqrt(y.shape[-1])  # weak: keeps the dtype
    return Dense(cfg.vocab_size, dtype=at_least_float32(cfg.dtype), name='logits_dense')(y)


class T5(nn.Module):
  """T5 encoder-decoder; `__call__` has the signature of T5X's `Transformer`.

  `method` plugs in through its hooks (`methods/`); the default, model tuning, adds none.
  `method_inputs` of `__call__` / `encode` / `decode` are the per-example inputs a method
  reads (`methods.MethodInputs`: mixed batches' prompts, a mixture's task index).
  """
  config: T5Config
  method: Method = ModelTuning()

  # T5X's data contract: the converter of the tasks, the features `__call__` takes.
  FEATURE_CONVERTER_CLS: ClassVar[type] = seqio.EncDecFeatureConverter
  INPUT_FEATURES: ClassVar[tuple[str, ...]] = (
      'encoder_input_tokens', 'decoder_input_tokens', 'decoder_target_tokens')

  def setup(self):
    cfg, method = self.config, self.method
    hooks = method.hooks()
    if hooks.shared is not None:  # the method's module that every layer's hooks call
      setattr(self, hooks.shared_name, hooks.shared(cfg))
      hooks = hooks.bind(getattr(self, hooks.shared_name))
    self.token_embedder = Embed(cfg.vocab_size, cfg.emb_dim, cfg.dtype, cfg.one_hot_embed)
    self.encoder = Encoder(cfg, self.token_embedder, hooks,
                           method.prefix_length(hooks_lib.ATTENTION))
    self.decoder = Decoder(cfg, self.token_embedder, hooks,
                           method.prefix_length(hooks_lib.SELF_ATTENTION),
                           method.prefix_length(hooks_lib.CROSS_ATTENTION))

  def _check_packing(self, segment_ids: Optional[Array], stack: str,
                     inputs: MethodInputs) -> None:
    """Refuses packed rows (segment ids) the method cannot keep apart: a key/value prefix of
    the encoder's or the decoder's self-attention (one per row, its relative positions
    counted from the row's start), or an encoder prompt without a slot per example
    (`MethodInputs.prompt_slots`, `data.pack_batch`)."""
    if segment_ids is None:
      return
    method = self.method
    block = hooks_lib.ATTENTION if stack == hooks_lib.ENCODER else hooks_lib.SELF_ATTENTION
    if method.prefix_length(block):
      raise ValueError(f'Packed rows (segment ids) are not supported with a key/value prefix in '
                       f'the {stack} {block} ({type(method).__name__}): a packed row would '
                       'share one prefix between examples.')
    if (stack == hooks_lib.ENCODER and method.hooks().encoder_input is not None
        and inputs.prompt_slots is None):
      raise ValueError(f'Packed rows (segment ids) need a prompt slot per example for '
                       f'{type(method).__name__} (MethodInputs.prompt_slots, as '
                       'data.pack_batch makes them).')

  def encode(self, encoder_input_tokens: Array, *, enable_dropout: bool = False,
             encoder_segment_ids: Optional[Array] = None,
             method_inputs: MethodInputs = MethodInputs()) -> tuple[Array, Array]:
    """-> (encoded [b, L, emb], encoder_valid [b, L] bool)."""
    self._check_packing(encoder_segment_ids, hooks_lib.ENCODER, method_inputs)
    return self.encoder(encoder_input_tokens, deterministic=not enable_dropout,
                        segment_ids=encoder_segment_ids,
                        inputs=method_inputs)

  def decode(self, encoded: Array, encoder_valid: Array, decoder_input_tokens: Array,
             decoder_target_tokens: Optional[Array] = None, *, enable_dropout: bool = False,
             decode: bool = False, max_decode_length: Optional[int] = None,
             decoder_segment_ids: Optional[Array] = None,
             encoder_segment_ids: Optional[Array] = None,
             cross_segment_ids: Optional[Array] = None,
             method_inputs: MethodInputs = MethodInputs()) -> Array:
    """-> float32 logits [b, d, vocab]; `decode=True` runs one cached step.

    `cross_segment_ids` [b, d]: the encoder segment each decoder position reads, where a row
    keeps more segments apart in the decoder than in the encoder (rank classification of
    packed rows: a segment per label, each reading its example's; default
    `decoder_segment_ids`).
    """
    self._check_packing(decoder_segment_ids, hooks_lib.DECODER, method_inputs)
    return self.decoder(encoded, encoder_valid, decoder_input_tokens, decoder_target_tokens,
                        deterministic=not enable_dropout, decode=decode,
                        max_decode_length=max_decode_length, segment_ids=decoder_segment_ids,
                        encoder_segment_ids=encoder_segment_ids,
                        cross_segment_ids=cross_segment_ids, inputs=method_inputs)

  def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
               decoder_target_tokens: Array, encoder_segment_ids: Optional[Array] = None,
               decoder_segment_ids: Optional[Array] = None,
               encoder_positions: Optional[Array] = None,
               decoder_positions: Optional[Array] = None, *, enable_dropout: bool = True,
               decode: bool = False, method_inputs: MethodInputs = MethodInputs()) -> Array:
    """Teacher-forced logits [b, d, vocab] (float32).

    Positions are accepted for T5X compatibility; T5 uses relative positions only, so they
    are ignored. In packed rows (`*_segment_ids`; `data.pack_batch`) every example is
    contiguous, so the distance between two of its positions counted in the row equals the
    distance counted from the example's start (`*_positions`): the relative-position
    buckets are the same either way, and positions of two examples never attend each other
    (segment masks), as in T5X, whose T5 also reads positions only through relative attention.
    """
    del encoder_positions, decoder_positions
    encoded, encoder_valid = self.encode(
        encoder_input_tokens, enable_dropout=enable_dropout,
        encoder_segment_ids=encoder_segment_ids, method_inputs=method_inputs)
    return self.decode(encoded, encoder_valid, decoder_input_tokens, decoder_target_tokens,
                       enable_dropout=enable_dropout, decode=decode,
                       decoder_segment_ids=decoder_segment_ids,
                       encoder_segment_ids=encoder_segment_ids, method_inputs=method_inputs)
