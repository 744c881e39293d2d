"""Prefix tuning (Li & Liang 2021): learned keys and values before every attention's own.

Each attention kind in `blocks` ('attention': the encoder's self-attention,
'self_attention' and 'encoder_decoder_attention': the decoder's) has `length` learned key and
value rows per layer. The T5 counts them as positions before the sequence
(`Method.prefix_length`): always visible, relative positions -length..-1, as HF T5 places
PEFT's prefix (its past key/values). Never cached: in cached decoding they are added to the
whole cache on every step.

One `PrefixGenerator` per attention kind, at `prefix/<block>/` (the T5's child `prefix`,
shared by the layers), gives a [length, layers * 2 * heads * head_dim] table: row p holds,
layer by layer, the key and then the value of prefix position p (PEFT's
`prompt_embeddings` layout). Trained with `mlp_dim` set, the table is Li & Liang's
reparameterisation, an MLP of a small embedding (`embedding` [P, emb] -> `wi` -> tanh ->
`wo`); `fold` replaces it with its output, the plain table `keys_values`, which exports
and served models hold (`mlp_dim=None`). Checkpoints of the run keep the MLP, so training
resumes with it.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar, Mapping, Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from prompt_tuning_jax.errors import UsageError
from prompt_tuning_jax.methods.base import Method
from prompt_tuning_jax.methods.hooks import (ATTENTION_BLOCKS, DECODER, ENCODER, SELF_ATTENTION,
                                            Hooks, Site)

PREFIX = 'prefix'  # the T5's child holding the generators: prefix/<block>/...
TABLE = 'keys_values'  # the plain table's name in a generator


def table_path(block: str) -> str:
  """The path of the plain (folded) table of the prefixes of attention `block`."""
  return f'{PREFIX}/{block}/{TABLE}'


class PrefixGenerator(nn.Module):
  """One attention kind's [length, width] prefix table: a parameter, or an MLP's output."""
  length: int
  width: int  # layers * 2 * heads * head_dim
  mlp_dim: Optional[int] = None  # None: the table is the parameter `keys_values`
  emb_dim: int = 0  # the embedding's width (with `mlp_dim`)

  @nn.compact
  def __call__(self) -> jnp.ndarray:
    normal = nn.initializers.normal(1.0)  # as torch's Embedding (Li & Liang, PEFT)
    if self.mlp_dim is None:
      return self.param(TABLE, normal, (self.length, self.width), jnp.float32)
    embedding = self.param('embedding', normal, (self.length, self.emb_dim), jnp.float32)
    hidden = jnp.tanh(nn.Dense(self.mlp_dim, name='wi')(embedding))  # [P, mlp]
    return nn.Dense(self.width, name='wo')(hidden)  # [P, width]


class Prefixes(nn.Module):
  """The generators of the attention kinds in `blocks`; called with a site, its layer's rows."""
  method: 'PrefixTuning'
  config: Any  # the T5Config: layers, heads, head_dim, emb_dim

  @nn.compact
  def __call__(self, site: Site) -> tuple[jnp.ndarray, jnp.ndarray]:
    """-> key, value [P, heads, head_dim] of `site.layer` in `site.block`."""
    cfg, method = self.config, self.method
    layers = {ENCODER: cfg.num_encoder_layers, DECODER: cfg.num_decoder_layers}[site.stack]
    table = PrefixGenerator(method.length, layers * 2 * cfg.num_heads * cfg.head_dim,
                            method.mlp_dim, cfg.emb_dim, name=site.block)()
    rows = table.reshape(method.length, layers, 2, cfg.num_heads, cfg.head_dim)[:, site.layer]
    return rows[:, 0], rows[:, 1]


@dataclasses.dataclass(frozen=True)
class PrefixTuning(Method):
  """`length` learned key/value positions before the keys of each attention in `blocks`."""
  length: int = 10
  blocks: tuple[str, ...] = ATTENTION_BLOCKS
  mlp_dim: Optional[int] = 512  # the reparameterisation's hidden width; None: plain tables
  peft_type: ClassVar[Optional[str]] = 'PREFIX_TUNING'

  def __post_init__(self):
    if not isinstance(self.length, int) or isinstance(self.length, bool) or self.length < 0:
      raise UsageError(f'PrefixTuning.length must be a number of prefix positions >= 0, got '
                       f'{self.length!r}.')
    blocks = (self.blocks,) if isinstance(self.blocks, str) else tuple(self.blocks)
    if not blocks or len(set(blocks)) != len(blocks) or set(blocks) - set(ATTENTION_BLOCKS):
      raise UsageError(f'PrefixTuning.blocks must name attentions among {ATTENTION_BLOCKS}, '
                       f'each once, got {self.blocks!r}.')
    object.__setattr__(self, 'blocks', tuple(b for b in ATTENTION_BLOCKS if b in blocks))
    if self.mlp_dim is not None and (not isinstance(self.mlp_dim, int) or self.mlp_dim < 1):
      raise UsageError(f'PrefixTuning.mlp_dim must be a positive width or None (no '
                       f'reparameterisation), got {self.mlp_dim!r}.')

  def hooks(self) -> Hooks:
    return Hooks(keys_values=self._keys_values, shared=lambda config: Prefixes(self, config),
                 shared_name=PREFIX)

  def _keys_values(self, key, value, bias, *, site: Site, inputs, decode, shared):
    del inputs, decode
    if site.block not in self.blocks:
      return key, value, bias
    rows = shared(site)  # key, value [P, heads, head_dim]
    key, value = (jnp.concatenate([jnp.broadcast_to(r.astype(x.dtype), (x.shape[0],) + r.shape),
                                   x], axis=1) for r, x in zip(rows, (key, value)))
    return key, value, bias  # the T5 made the bias [.., q, P + k] (`prefix_length`)

  def check_peft(self) -> None:
    if self.blocks != (SELF_ATTENTION,):
      raise UsageError(
          f'PEFT prefix tuning on a T5 holds decoder self-attention prefixes only; this run has '
          f'them in {self.blocks}: train with PREFIX_BLOCKS = ({SELF_ATTENTION!r},) to export '
          'to PEFT, or use --format t5x.')

  def prefix_length(self, block: str) -> int:
    return self.length if block in self.blocks else 0

  @property
  def parameter_rules(self) -> tuple[str, ...]:
    return (re.escape(PREFIX) + '/.*',)

  def fold(self, own: Mapping[str, Any]) -> tuple['PrefixTuning', dict[str, Any]]:
    """The plain tables (`mlp_dim=None`): each reparameterisation's output, computed as the
    model does, in the parameters' dtype."""
    if self.mlp_dim is None:
      return self, dict(own)
    folded = dataclasses.replace(self, mlp_dim=None)
    tables = {}
    for block in self.blocks:
      params = {path.split('/', 2)[2]: value for path, value in own.items()
                if path.startswith(f'{PREFIX}/{block}/')}
      tree = {'embedding': params['embedding'],
              **{dense: {leaf: params[f'{dense}/{leaf}'] for leaf in ('kernel', 'bias')}
                 for dense in ('wi', 'wo')}}
      generator = PrefixGenerator(self.length, tree['wo']['bias'].shape[0], self.mlp_dim,
                                  tree['embedding'].shape[1])
      tables[table_path(block)] = np.asarray(generator.apply({'params': tree}))
    return folded, tables

  def exports(self, trainable: Mapping[str, Any]) -> dict[str, Any]:
    """The plain tables, e.g. `prefix.self_attention.keys_values` [P, layers * 2 * H]."""
    own = {path: value for path, value in trainable.items() if self.owns(path)}
    return {path.replace('/', '.'): value for path, value in self.fold(own)[1].items()}
