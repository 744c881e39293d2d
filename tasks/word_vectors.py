"""Word vectors for a vocabulary from co-occurrence statistics (PPMI + truncated SVD).

A pre-training stage before span corruption: the token embedding of the
shipped mini T5 starts from these vectors and stays frozen while the rest of
the network trains (docs/reproduction.md, "Word vectors as the frozen
embedding"). At two CPU hours of
pre-training a T5 learns little lexical meaning (its own embeddings put
"great" and "awful" no closer to their own kind than chance), while counting
which pieces occur near which, over the same text, takes a minute and does.

The recipe (Levy, Goldberg & Dagan, 2015): counts of piece pairs at distance
d <= `window` inside one line, weighted 1/d, symmetric; positive pointwise
mutual information with the context distribution smoothed by `alpha`; rows of
U·sqrt(S) from a randomized truncated SVD. Pieces that never occur (EOS, the
extra ids) get zero rows.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import sparse

from . import vocab as vocab_lib
from .pretraining import split_long_line
from .sources import TaskDataError

WINDOW = 5
CONTEXT_ALPHA = 0.75
_LINES_PER_BATCH = 100_000


def cooccurrence_counts(lines: Sequence[str], vocabulary, window: int = WINDOW
                        ) -> sparse.csr_matrix:
  """[vocab, vocab] symmetric counts of pieces at distance 1..window in a line, weighted 1/d."""
  size = vocabulary.vocab_size
  total = sparse.csr_matrix((size, size), dtype=np.float64)
  for start in range(0, len(lines), _LINES_PER_BATCH):
    ids = [vocabulary.encode(line) for line in lines[start:start + _LINES_PER_BATCH]]
    lengths = np.array([len(x) for x in ids])
    if not lengths.sum():
      continue
    tokens = np.concatenate([np.asarray(x, np.int64) for x in ids if len(x)])
    line_of = np.repeat(np.arange(len(ids)), lengths)
    for d in range(1, window + 1):
      same = line_of[d:] == line_of[:-d]
      a, b = tokens[:-d][same], tokens[d:][same]
      weight = np.full(len(a), 1.0 / d)
      pairs = sparse.coo_matrix((np.concatenate([weight, weight]),
                                 (np.concatenate([a, b]), np.concatenate([b, a]))),
                                shape=(size, size))
      total = total + pairs.tocsr()
  return total


def ppmi(counts: sparse.csr_matrix, alpha: float = CONTEXT_ALPHA) -> sparse.csr_matrix:
  """Positive PMI of a count matrix, the context distribution raised to `alpha`."""
  coo = counts.tocoo()
  row_sums = np.asarray(counts.sum(axis=1)).ravel()
  context = np.asarray(counts.sum(axis=0)).ravel() ** alpha
  total = row_sums.sum()
  pmi = (np.log(coo.data) - np.log(row_sums[coo.row] / total) - np.log(total)
         - np.log(context[coo.col] / context.sum()))
  keep = pmi > 0
  return sparse.csr_matrix((pmi[keep].astype(np.float32), (coo.row[keep], coo.col[keep])),
                           shape=counts.shape)


def truncated_svd_embedding(matrix: sparse.csr_matrix, dim: int, seed: int = 0,
                            power_iterations: int = 3) -> np.ndarray:
  """[rows, dim] U·sqrt(S) of the top-`dim` singular triplets (randomized SVD, Halko et al.)."""
  rng = np.random.RandomState(seed)
  basis, _ = np.linalg.qr(matrix @ rng.standard_normal((matrix.shape[1], dim + 32)))
  for _ in range(power_iterations):
    basis, _ = np.linalg.qr(matrix @ (matrix.T @ basis))
  u, s, _ = np.linalg.svd((matrix.T @ basis).T, full_matrices=False)
  return ((basis @ u)[:, :dim] * np.sqrt(s[:dim])).astype(np.float32)


def train_word_vectors(text_files: Sequence[str], vocabulary_path: str, *, dim: int,
                       window: int = WINDOW, weights: Sequence[float] | None = None,
                       seed: int = 0) -> np.ndarray:
  """[vocab, dim] vectors for the pieces of a SentencePiece vocabulary, from text files.

  `text_files` are corpus specs as for `train_vocabulary` (`.txt`/`.txt.gz`,
  `FILE::FIELD` of a `.tsv`/`.jsonl`); `weights` (one per file, default 1)
  scale each file's counts, e.g. to weigh a small in-domain file up.
  """
  weights = [1.0] * len(text_files) if weights is None else list(weights)
  if len(weights) != len(text_files):
    raise TaskDataError(f'{len(weights)} weights for {len(text_files)} corpus files')
  if dim < 1 or window < 1:
    raise TaskDataError(f'word vectors need dim >= 1 and window >= 1, not {dim} and {window}')
  vocabulary = vocab_lib.get_vocabulary(vocabulary_path)
  counts = None
  for spec, weight in zip(text_files, weights):
    lines = [piece for line in vocab_lib.read_text_lines(spec)
             for piece in split_long_line(line)]
    part = weight * cooccurrence_counts(lines, vocabulary, window)
    counts = part if counts is None else counts + part
  seen = np.asarray(counts.sum(axis=1)).ravel() > 0
  if seen.sum() <= dim:
    raise TaskDataError(f'the corpus {list(text_files)} has {seen.sum()} distinct pieces with a '
                        f'neighbour, too few for {dim}-dimensional word vectors')
  vectors = truncated_svd_embedding(ppmi(counts), dim, seed)
  vectors[~seen] = 0.0  # exactly: the SVD leaves rounding noise in empty rows
  return vectors
