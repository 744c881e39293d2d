"""Prompt recycling (Lester et al., 2022): move a prompt from one frozen model to another.

A recycler is a map from the source model's embedding space to the target's, learnt from the
pieces both vocabularies share: for every word piece w of a selection, the source row
E_s[w] should map to the target row E_t[w]. The prompt's rows go through the same map.
- `v2v-lin`: a linear map M [H_s, H_t] by least squares, E_s M ~ E_t (the original's
  `tf-lstsq`).
- `v2v-nn`: a two-layer ReLU network (hidden 4 x H_t), L2 loss, Adam 3e-4, batch 50,
  25 epochs (the original's `jax-nn` and its defaults).
The original's third recycler, `lin-comb` (write each prompt row as the least-squares,
minimum-norm combination of the source rows and apply the weights to the target rows), is
the same map as `v2v-lin` whenever the selection spans the source space: the minimum-norm
weights are p pinv(E_s), and p pinv(E_s) E_t = p M. It is not repeated here.

The selection follows the original's: word pieces ('▁' then lowercase letters; its
English-only list), in id order (SentencePiece ids are by frequency), `num_words` after
skipping the `word_offset` most frequent. When the two tables are identical (e.g. the
shipped t5_mini checkpoints, trained on one frozen embedding), every recycler's answer is
the identity and the prompt is written unchanged.

`main` is `ptj recycle`: the recycled prompt is a plain prompt file (PROMPT_FILE).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import sys
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from prompt_tuning_jax import checkpoints
from prompt_tuning_jax import config
from prompt_tuning_jax.analysis import neighbors
from prompt_tuning_jax.errors import UsageError

logger = logging.getLogger('prompt_tuning_jax')

LINEAR, NETWORK = 'v2v-lin', 'v2v-nn'
RECYCLERS = (LINEAR, NETWORK)
_WORD = re.compile(f'{neighbors.WORD_BOUNDARY}[a-z]+')


# ------------------------------------------------------------ the shared vocabulary


def check_same_vocabulary(source: neighbors.PieceVocabulary,
                          target: neighbors.PieceVocabulary) -> None:
  """Both models must share a vocabulary: the recycler pairs rows by piece id."""
  if source.pieces == target.pieces:
    return
  if len(source.pieces) != len(target.pieces):
    detail = f'{len(source.pieces)} vs {len(target.pieces)} ids'
  else:
    i = next(i for i, (a, b) in enumerate(zip(source.pieces, target.pieces)) if a != b)
    detail = f'id {i} is {source.pieces[i]!r} vs {target.pieces[i]!r}'
  raise UsageError(f'The source vocabulary {source.path} and the target vocabulary '
                   f'{target.path} differ ({detail}): recycling pairs the two embedding tables '
                   'row by row, so both models need the same vocabulary.')


def word_ids(vocabulary: neighbors.PieceVocabulary, num_words: int = 4000,
             word_offset: int = 1000) -> np.ndarray:
  """Ids of the vocabulary's word pieces, the `word_offset` most frequent skipped, then up to
  `num_words` (fewer when the vocabulary has fewer)."""
  words = [i for i, piece in enumerate(vocabulary.pieces) if _WORD.fullmatch(piece)]
  return np.asarray(words[word_offset:word_offset + num_words], np.int64)


def check_table(table: np.ndarray, vocabulary: neighbors.PieceVocabulary, which: str) -> None:
  if len(vocabulary) > table.shape[0]:
    raise UsageError(f'The {which} vocabulary {vocabulary.path} has {len(vocabulary)} ids, more '
                     f'than the {table.shape[0]} rows of the {which} embedding table: is it '
                     f"the {which} model's vocabulary?")


def check_width(prompt: np.ndarray, width: int) -> None:
  if prompt.ndim != 2 or prompt.shape[1] != width:
    raise UsageError(f'The prompt is {prompt.shape}, the source embedding table {width} wide: '
                     'their widths differ (wrong source model?).')


# ------------------------------------------------------------ recyclers


@dataclasses.dataclass
class LinearRecycler:
  """v2v-lin: prompt [P, H_s] -> prompt @ projection [H_s, H_t], fitted by least squares."""
  projection: Optional[np.ndarray] = None

  def fit(self, source: np.ndarray, target: np.ndarray) -> 'LinearRecycler':
    # Float64: the fit of a 4,000 x 768 system is exact to ~1e-12 there.
    self.projection, *_ = np.linalg.lstsq(np.asarray(source, np.float64),
                                          np.asarray(target, np.float64), rcond=None)
    return self

  def __call__(self, vectors: np.ndarray) -> np.ndarray:
    return np.asarray(vectors, np.float64) @ self.projection


class _MLP(nn.Module):
  hidden: int
  output: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.output, name='out')(nn.relu(nn.Dense(self.hidden, name='hidden')(x)))


@dataclasses.dataclass
class NetworkRecycler:
  """v2v-nn: Dense(hidden_scale * H_t) -> ReLU -> Dense(H_t), trained with Adam on the L2 loss."""
  hidden_scale: int = 4
  batch_size: int = 50
  epochs: int = 25
  learning_rate: float = 3e-4
  seed: int = 0
  params: Optional[dict] = None
  _module: Optional[_MLP] = None

  def fit(self, source: np.ndarray, target: np.ndarray) -> 'NetworkRecycler':
    source, target = np.asarray(source, np.float32), np.asarray(target, np.float32)
    self._module = _MLP(self.hidden_scale * target.shape[1], target.shape[1])
    rng = jax.random.PRNGKey(self.seed)
    params = self._module.init(jax.random.fold_in(rng, 0), source[:1])
    tx = optax.adam(self.learning_rate)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
      def loss_fn(p):
        return jnp.mean(0.5 * jnp.square(self._module.apply(p, x) - y))
      grads = jax.grad(loss_fn)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state

    order_rng = np.random.default_rng(self.seed)
    for _ in range(self.epochs):
      order = order_rng.permutation(len(source))
      for start in range(0, len(source), self.batch_size):
        rows = order[start:start + self.batch_size]
        params, opt_state = step(params, opt_state, source[rows], target[rows])
    self.params = params
    return self

  def __call__(self, vectors: np.ndarray) -> np.ndarray:
    return np.asarray(self._module.apply(self.params, np.asarray(vectors, np.float32)))


def make_recycler(name: str, seed: int = 0):
  if name == LINEAR:
    return LinearRecycler()
  if name == NETWORK:
    return NetworkRecycler(seed=seed)
  raise UsageError(f'Unknown recycler {name!r}; expected one of {RECYCLERS}.')


@dataclasses.dataclass(frozen=True)
class Fitted:
  """A recycler fitted on word pairs; `fitted(prompt)` is the recycled prompt, float32."""
  recycler: str
  words: int                # word pairs the map was fitted on
  r_squared: float          # on those pairs: 1 - residual / variance of the target rows
  identical_tables: bool    # the tables were equal: the map is the identity
  width: int                # the source width
  _map: Optional[Callable[[np.ndarray], np.ndarray]] = None

  def __call__(self, prompt: np.ndarray) -> np.ndarray:
    prompt = np.asarray(prompt, np.float32)
    check_width(prompt, self.width)
    if self.identical_tables:
      return prompt.copy()
    return np.asarray(self._map(prompt), np.float32)


def fit(source_table: np.ndarray, target_table: np.ndarray, ids: np.ndarray,
        recycler: str = LINEAR, seed: int = 0) -> Fitted:
  """A recycler from the source table's space to the target's, fitted on rows `ids`."""
  width = source_table.shape[1]
  if source_table.shape == target_table.shape and np.array_equal(source_table, target_table):
    return Fitted(recycler, len(ids), 1.0, True, width)
  if len(ids) <= width:
    raise UsageError(f'{len(ids)} word pieces cannot determine a map from {width} dimensions: '
                     'lower --word_offset or raise --num_words.')
  source, target = source_table[ids], np.asarray(target_table[ids], np.float64)
  fitted = make_recycler(recycler, seed).fit(source, target)
  residual = np.sum(np.square(fitted(source) - target))
  r_squared = 1.0 - residual / np.sum(np.square(target - target.mean(axis=0)))
  return Fitted(recycler, len(ids), float(r_squared), False, width, fitted)


# ------------------------------------------------------------ command line


def main(argv: Optional[Sequence[str]] = None) -> int:
  """`ptj recycle`; returns the exit status."""
  p = argparse.ArgumentParser(
      prog='ptj recycle',
      description='Recycle a prompt (Lester et al., 2022): learn a map from the source '
      "model's embedding space to the target's from the word pieces of their shared "
      'vocabulary, apply it to the prompt, write the result as a prompt file.')
  p.add_argument('--prompt', required=True, help='the prompt trained on the source model')
  p.add_argument('--source_checkpoint', required=True,
                 help='T5X checkpoint of the source model (only its embedding table is read)')
  p.add_argument('--target_checkpoint', required=True, help='T5X checkpoint of the target model')
  p.add_argument('--output', required=True, help='the recycled prompt file (.npy)')
  p.add_argument('--recycler', choices=RECYCLERS, default=LINEAR,
                 help='v2v-lin: least-squares linear map; v2v-nn: a small ReLU network')
  p.add_argument('--vocab', help="the models' shared SentencePiece vocabulary")
  p.add_argument('--source_vocab', help='the source model vocabulary (with --target_vocab)')
  p.add_argument('--target_vocab', help='the target model vocabulary (with --source_vocab)')
  p.add_argument('--extra_ids', type=int, default=100, help='seqio extra ids (T5: 100)')
  p.add_argument('--num_words', type=int, default=4000, help='word pieces the map learns from')
  p.add_argument('--word_offset', type=int, default=1000,
                 help='the most frequent word pieces skipped first')
  p.add_argument('--seed', type=int, default=0, help="v2v-nn's initialisation and order")
  args = p.parse_args(argv)
  if bool(args.vocab) == bool(args.source_vocab or args.target_vocab) or (
      bool(args.source_vocab) != bool(args.target_vocab)):
    p.error('give --vocab, or both --source_vocab and --target_vocab')

  def run() -> int:
    source_vocab = neighbors.piece_vocabulary(args.source_vocab or args.vocab, args.extra_ids)
    target_vocab = neighbors.piece_vocabulary(args.target_vocab or args.vocab, args.extra_ids)
    check_same_vocabulary(source_vocab, target_vocab)
    prompt = checkpoints.load_prompt(args.prompt)
    source_table = neighbors.load_t5x_embedding(args.source_checkpoint)
    target_table = neighbors.load_t5x_embedding(args.target_checkpoint)
    check_table(source_table, source_vocab, 'source')
    check_table(target_table, target_vocab, 'target')
    check_width(prompt, source_table.shape[1])
    ids = word_ids(source_vocab, args.num_words, args.word_offset)
    fitted = fit(source_table, target_table, ids, args.recycler, args.seed)
    recycled = fitted(prompt)
    checkpoints.save_prompt(args.output, recycled)
    if fitted.identical_tables:
      how = ('the two embedding tables are identical: every recycler is the identity, the '
             'prompt is written unchanged')
    else:
      how = f'{args.recycler} fitted on {fitted.words} word pieces (R^2 {fitted.r_squared:.3f})'
    print(f'{args.prompt} {tuple(prompt.shape)} -> {args.output} {tuple(recycled.shape)}: {how}',
          flush=True)
    return 0

  return config.report_errors('recycle', run)


if __name__ == '__main__':
  sys.exit(main())
