"""Prompt interpretation (paper §7): nearest vocabulary pieces of each prompt token.

For every prompt row, the top-k rows of the frozen embedding table by cosine
similarity, decoded to SentencePiece pieces. Two references put the numbers
in context:
- a random baseline: random directions, each scaled to the norm of one prompt
  row (cosine ignores the scale; the baseline has the prompt's norm
  distribution so that dot-product variants compare too);
- the share of prompt rows with a class-label piece among their top-k (the
  paper's observation that class labels persist, notably after class-label
  initialisation).

`analyze` computes, `format_report` / `plot_report` / `write_report` present;
`main` is `ptj neighbors`.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import io
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import seqio
import sentencepiece
import tensorstore as ts
from flax import serialization

from prompt_tuning_jax import checkpoints
from prompt_tuning_jax import config
from prompt_tuning_jax import models
from prompt_tuning_jax import run_setup
from prompt_tuning_jax.checkpoints import t5x, tree
from prompt_tuning_jax.errors import CheckpointError, DataError, UsageError
from prompt_tuning_jax.tasks import vocab as vocab_lib

WORD_BOUNDARY = '\u2581'  # SentencePiece's "▁"
_EPS = 1e-12


# ------------------------------------------------------------ similarity


@functools.partial(jax.jit, static_argnames=('k', 'num_rows'))
def _top_k_cosine(queries: jnp.ndarray, chunks: jnp.ndarray, *, k: int, num_rows: int
                 ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Top-k cosine over a chunked table.

  queries [P, H]; chunks [n, C, H] (the table padded to n*C rows; rows at or
  beyond `num_rows` never win). Returns sims [P, k] float32 and ids [P, k].
  """
  q = queries / jnp.maximum(jnp.linalg.norm(queries, axis=-1, keepdims=True), _EPS)
  p, c = q.shape[0], chunks.shape[1]
  init = (jnp.full((p, k), -jnp.inf, jnp.float32), jnp.zeros((p, k), jnp.int32))

  def step(best, chunk_and_index):
    chunk, i = chunk_and_index  # [C, H], scalar
    rows = chunk / jnp.maximum(jnp.linalg.norm(chunk, axis=-1, keepdims=True), _EPS)
    sims = jnp.matmul(q, rows.T, precision=jax.lax.Precision.HIGHEST)  # [P, C]
    ids = i * c + jnp.arange(c, dtype=jnp.int32)  # [C]
    sims = jnp.where(ids[None, :] < num_rows, sims, -jnp.inf)
    top_sims, top_pos = jax.lax.top_k(sims, k)  # [P, k]
    all_sims = jnp.concatenate([best[0], top_sims], axis=1)  # [P, 2k]
    all_ids = jnp.concatenate([best[1], ids[top_pos]], axis=1)
    merged_sims, pos = jax.lax.top_k(all_sims, k)
    return (merged_sims, jnp.take_along_axis(all_ids, pos, axis=1)), None

  steps = jnp.arange(chunks.shape[0], dtype=jnp.int32)
  (sims, ids), _ = jax.lax.scan(step, init, (chunks, steps))
  return jnp.clip(sims, -1.0, 1.0), ids


def nearest_neighbors(vectors: np.ndarray, embedding: np.ndarray, *, top_k: int = 5,
                      max_id: Optional[int] = None, chunk_size: int = 4096
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Cosine top-k of each row of `vectors` [P, H] against `embedding` [V, H].

  Args:
    max_id: search only ids < max_id (e.g. the vocabulary size, leaving out
      the padding rows a T5 table has beyond it); default all V rows.
    chunk_size: table rows compared per step (bounds memory to [P, chunk]).

  Returns:
    sims float32 [P, top_k] (descending, in [-1, 1]) and ids int [P, top_k].
    Zero vectors have cosine 0 with everything.
  """
  vectors, embedding = np.asarray(vectors, np.float32), np.asarray(embedding, np.float32)
  if vectors.ndim != 2 or embedding.ndim != 2 or vectors.shape[1] != embedding.shape[1]:
    raise ValueError(f'Prompt [P, H] and embedding table [V, H] must share H; got prompt '
                     f'{vectors.shape} and table {embedding.shape}.')
  num_rows = embedding.shape[0] if max_id is None else min(max_id, embedding.shape[0])
  if not 1 <= top_k <= num_rows:
    raise UsageError(f'top_k={top_k} must be in [1, {num_rows}] (rows searched).')
  chunk_size = max(top_k, min(chunk_size, num_rows))
  n = -(-num_rows // chunk_size)
  table = embedding[:num_rows]
  if n * chunk_size != num_rows:
    table = np.concatenate(
        [table, np.zeros((n * chunk_size - num_rows, table.shape[1]), np.float32)])
  chunks = table.reshape(n, chunk_size, table.shape[1])  # [n, C, H]
  sims, ids = _top_k_cosine(jnp.asarray(vectors), jnp.asarray(chunks), k=top_k,
                            num_rows=num_rows)
  return np.asarray(sims), np.asarray(ids)


def random_like(prompt: np.ndarray, seed: int = 0) -> np.ndarray:
  """Random directions [P, H], row i scaled to the norm of prompt row i."""
  prompt = np.asarray(prompt, np.float32)
  directions = np.random.default_rng(seed).standard_normal(prompt.shape).astype(np.float32)
  directions /= np.maximum(np.linalg.norm(directions, axis=1, keepdims=True), _EPS)
  return directions * np.linalg.norm(prompt, axis=1, keepdims=True)


# ------------------------------------------------------------ vocabulary


class _Pieces:
  """Id -> piece text from the `pieces` a subclass lists; `encode` maps text to ids."""
  pieces: list[str]
  path: str

  def __len__(self) -> int:
    return len(self.pieces)

  def piece(self, token_id: int) -> str:
    return self.pieces[token_id] if 0 <= token_id < len(self.pieces) else f'<row {token_id}>'


class PieceVocabulary(_Pieces):
  """Id <-> piece text for a SentencePiece model, with T5's extra ids.

  Ids [0, n) are the model's pieces; the next `extra_ids` are seqio's
  sentinels, `<extra_id_0>` being the LAST one (seqio's convention).
  """

  def __init__(self, model_path: str, extra_ids: int = 100):
    self.path = model_path
    self._sp = sentencepiece.SentencePieceProcessor()
    try:
      self._sp.LoadFromSerializedProto(tree.read_bytes(model_path))
    except RuntimeError as e:
      raise DataError(f'{model_path}: not a SentencePiece model: {e}') from e
    base = self._sp.get_piece_size()
    self.pieces = [self._sp.id_to_piece(i) for i in range(base)]
    self.pieces += [f'<extra_id_{extra_ids - 1 - j}>' for j in range(extra_ids)]

  def encode(self, text: str) -> list[int]:
    return list(self._sp.encode_as_ids(text))


class SeqioPieces(_Pieces):
  """Id -> text for any seqio vocabulary (e.g. `seqio.ByteVocabulary`), one id at a time.

  Ids that decode to nothing printable on their own are shown as `<0xNN>`
  (bytes of `seqio.ByteVocabulary` past ASCII) or `<id N>`.
  """

  def __init__(self, vocabulary: Any, name: str = ''):
    self._vocabulary = vocabulary
    # ByteVocabulary: id = byte + number of special ids (pad, eos, unk).
    self._byte_offset = (vocabulary._num_special_tokens  # pylint: disable=protected-access
                         if isinstance(vocabulary, seqio.ByteVocabulary) else None)
    self.path = name or type(vocabulary).__name__
    special = {vocabulary.pad_id: '<pad>', vocabulary.eos_id: '</s>'}
    if getattr(vocabulary, 'unk_id', None) is not None:
      special[vocabulary.unk_id] = '<unk>'
    self.pieces = [special.get(i) or self._decode_one(i) for i in range(vocabulary.vocab_size)]

  def _decode_one(self, token_id: int) -> str:
    text = self._vocabulary.decode([token_id])
    if text and '\ufffd' not in text:
      return text
    if self._byte_offset is not None:
      return f'<0x{token_id - self._byte_offset:02X}>'
    return f'<id {token_id}>'

  def encode(self, text: str) -> list[int]:
    return list(self._vocabulary.encode(text))


def piece_vocabulary(spec: str, extra_ids: int = 100) -> Optional[_Pieces]:
  """--vocab: a SentencePiece model path, 'byte' (seqio.ByteVocabulary) or 'none'."""
  if spec.lower() == 'none':
    return None
  if spec.lower() == 'byte':
    return SeqioPieces(seqio.ByteVocabulary(), 'byte')
  return PieceVocabulary(spec, extra_ids=extra_ids)


def label_piece_ids(vocabulary: Any, labels: Sequence[str]
                   ) -> dict[str, list[int]]:
  """label -> the ids of its pieces, leaving out a bare word-boundary piece.

  "positive" -> [▁positive]; "entailment" -> [en, tail, ment] (its leading
  "▁" piece alone says nothing about the label).
  """
  out = {}
  for label in labels:
    ids = [i for i in vocabulary.encode(label) if vocabulary.piece(i) != WORD_BOUNDARY]
    if not ids:
      raise UsageError(f'Label {label!r} encodes to no pieces with {vocabulary.path}.')
    out[label] = ids
  return out


def read_back(ids: np.ndarray, text_ids: Sequence[int], vocabulary: Any) -> dict[str, Any]:
  """How the first n prompt rows' neighbours (ids [P, k], nearest first) read as a text's n pieces.

  `top1_accuracy`: the share of rows whose nearest piece is the text's piece at that
  position; `topk_accuracy`: among the row's k; `text`: the nearest pieces, decoded.
  """
  n = len(text_ids)
  if n > ids.shape[0]:
    raise UsageError(f'The text has {n} pieces, more than the prompt has rows ({ids.shape[0]}).')
  wanted = np.asarray(text_ids)
  top1 = ids[:n, 0]
  pieces = [vocabulary.piece(int(i)) for i in top1]
  return {'pieces': n, 'top1_accuracy': float(np.mean(top1 == wanted)),
          'topk_accuracy': float(np.mean([w in row for w, row in zip(wanted, ids[:n])])),
          'text': ''.join(pieces).replace(WORD_BOUNDARY, ' ').strip()}


def label_hits(ids: np.ndarray, label_ids: Mapping[str, Sequence[int]]) -> list[list[str]]:
  """For each row of ids [P, k]: the labels with a piece among that row's ids."""
  sets = {label: set(v) for label, v in label_ids.items()}
  return [[label for label, s in sets.items() if s & set(row.tolist())] for row in ids]


# ------------------------------------------------------------ analysis


@dataclasses.dataclass
class NeighborReport:
  """Everything `write_report` presents; arrays are numpy."""
  prompt_shape: tuple[int, int]
  table_shape: tuple[int, int]
  rows_searched: int
  top_k: int
  norms: np.ndarray  # [P]
  sims: np.ndarray  # [P, k]
  ids: np.ndarray  # [P, k]
  pieces: list[list[str]]  # [P][k]
  random_sims: np.ndarray  # [P, k]
  random_ids: np.ndarray  # [P, k]
  random_pieces: list[list[str]]
  label_ids: dict[str, list[int]]
  label_pieces: dict[str, list[str]]
  hits: list[list[str]]  # [P] labels among each row's top-k
  random_hits: list[list[str]]
  embedding_norms: tuple[float, float]  # mean, std of the table's row norms
  source: str = ''
  read_back: Optional[dict[str, Any]] = None  # `read_back` of a text, when one was given

  def summary(self) -> dict[str, Any]:
    def share(hits):
      return float(np.mean([bool(h) for h in hits])) if self.label_ids else None
    return {
        'source': self.source,
        'prompt_shape': list(self.prompt_shape),
        'table_shape': list(self.table_shape),
        'rows_searched': self.rows_searched,
        'top_k': self.top_k,
        'prompt_norm_mean': float(self.norms.mean()),
        'prompt_norm_std': float(self.norms.std()),
        'embedding_norm_mean': self.embedding_norms[0],
        'embedding_norm_std': self.embedding_norms[1],
        'mean_top1_cosine': float(self.sims[:, 0].mean()),
        'mean_topk_cosine': float(self.sims.mean()),
        'random_mean_top1_cosine': float(self.random_sims[:, 0].mean()),
        'random_mean_topk_cosine': float(self.random_sims.mean()),
        'labels': self.label_pieces,
        'label_share': share(self.hits),
        'random_label_share': share(self.random_hits),
        'label_share_by_label': {
            label: float(np.mean([label in h for h in self.hits])) for label in self.label_ids},
        'read_back': self.read_back,
    }


def analyze(prompt: np.ndarray, embedding: np.ndarray, *,
            vocabulary: Optional[Any] = None, labels: Sequence[str] = (),
            top_k: int = 5, max_id: Optional[int] = None, seed: int = 0,
            source: str = '', text: Optional[str] = None) -> NeighborReport:
  """Nearest neighbours of a prompt [P, H] in `embedding` [V, H], with baselines.

  Args:
    vocabulary: a `PieceVocabulary` or `SeqioPieces`: decodes ids to pieces
      (and labels to ids); without it pieces are shown as `<id N>` and
      `labels` must be empty.
    labels: class-label words (e.g. "positive,negative").
    max_id: search ids < max_id; defaults to the vocabulary's size when one
      is given (T5 tables have padding rows past 32100), else all rows.
    seed: the random baseline's seed.
    text: a text the prompt should read as (a Wayward prompt's): its `read_back`.
  """
  prompt = np.asarray(prompt, np.float32)
  embedding = np.asarray(embedding, np.float32)
  if (labels or text) and vocabulary is None:
    raise UsageError('Class labels and texts need a vocabulary to find their pieces (--vocab).')
  if max_id is None and vocabulary is not None:
    max_id = min(len(vocabulary), embedding.shape[0])
  sims, ids = nearest_neighbors(prompt, embedding, top_k=top_k, max_id=max_id)
  random_sims, random_ids = nearest_neighbors(random_like(prompt, seed), embedding,
                                              top_k=top_k, max_id=max_id)
  decode = vocabulary.piece if vocabulary is not None else (lambda i: f'<id {i}>')
  label_ids = label_piece_ids(vocabulary, labels) if labels else {}
  table_norms = np.linalg.norm(embedding, axis=1)
  return NeighborReport(
      prompt_shape=tuple(prompt.shape), table_shape=tuple(embedding.shape),
      rows_searched=embedding.shape[0] if max_id is None else min(max_id, embedding.shape[0]),
      top_k=top_k,
      norms=np.linalg.norm(prompt, axis=1), sims=sims, ids=ids,
      pieces=[[decode(int(i)) for i in row] for row in ids],
      random_sims=random_sims, random_ids=random_ids,
      random_pieces=[[decode(int(i)) for i in row] for row in random_ids],
      label_ids=label_ids,
      label_pieces={label: [decode(i) for i in v] for label, v in label_ids.items()},
      hits=label_hits(ids, label_ids),
      random_hits=label_hits(random_ids, label_ids),
      embedding_norms=(float(table_norms.mean()), float(table_norms.std())), source=source,
      read_back=read_back(ids, vocabulary.encode(text), vocabulary) if text else None)


# ------------------------------------------------------------ presentation


def format_report(report: NeighborReport) -> str:
  """A plain-text report: summary, then one line per prompt position."""
  s = report.summary()
  lines = [
      f'Prompt nearest neighbours (cosine, top {report.top_k})',
      f'prompt: {s["source"] or "(array)"} {tuple(report.prompt_shape)}; '
      f'embedding table {tuple(report.table_shape)}, ids < {report.rows_searched} searched',
      f'prompt row norms: mean {s["prompt_norm_mean"]:.3f} std {s["prompt_norm_std"]:.3f}; '
      f'table row norms: mean {s["embedding_norm_mean"]:.3f} std {s["embedding_norm_std"]:.3f}',
      '',
      f'{"":24}{"prompt":>10}{"random":>10}',
      f'{"mean top-1 cosine":24}{s["mean_top1_cosine"]:10.4f}{s["random_mean_top1_cosine"]:10.4f}',
      f'{"mean top-k cosine":24}{s["mean_topk_cosine"]:10.4f}{s["random_mean_topk_cosine"]:10.4f}',
  ]
  if report.label_ids:
    lines.append(f'{"rows with a label in top-k":24}{s["label_share"]:10.2%}'
                 f'{s["random_label_share"]:10.2%}')
    for label, pieces in s['labels'].items():
      lines.append(f'  label {label!r} pieces {pieces}: in the top-k of '
                   f'{s["label_share_by_label"][label]:.2%} of rows')
  if report.read_back:
    r = report.read_back
    lines += [f'read back as the text ({r["pieces"]} pieces): nearest piece right at '
              f'{r["top1_accuracy"]:.1%} of positions, among the top {report.top_k} at '
              f'{r["topk_accuracy"]:.1%}', f'  reads: {r["text"]}']
  lines += ['', 'The random baseline: random directions scaled to the prompt row norms.', '',
            f'{"pos":>4} {"norm":>8}  neighbours (piece cosine)']
  for i in range(report.sims.shape[0]):
    cells = '  '.join(f'{_show(p)} {c:.3f}' for p, c in zip(report.pieces[i], report.sims[i]))
    mark = f'  [labels: {", ".join(report.hits[i])}]' if report.hits[i] else ''
    lines.append(f'{i:4d} {report.norms[i]:8.3f}  {cells}{mark}')
  return '\n'.join(lines) + '\n'


def _show(piece: str) -> str:
  """A piece as printable text (repr when it holds control or blank characters)."""
  return piece if piece.isprintable() and piece.strip() == piece and piece else repr(piece)


def plot_report(report: NeighborReport, path: str) -> None:
  """A PNG heat map of the top-k cosines per prompt position, prompt beside random baseline.

  The prompt panel's cells are labelled with their pieces (up to 120
  positions; beyond that only the top-1 piece, on the y axis).
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top  (after use('Agg'))

  p, k = report.sims.shape
  height = min(max(3.0, 0.2 * p + 1.2), 40.0)
  fig, axes = plt.subplots(1, 2, figsize=(3 + 2.6 * k, height),
                           gridspec_kw={'width_ratios': [2, 1]})
  fig.subplots_adjust(left=0.06, right=0.9, bottom=0.6 / height, top=1 - 0.5 / height,
                      wspace=0.15)
  vmin = float(min(report.sims.min(), report.random_sims.min()))
  vmax = float(max(report.sims.max(), report.random_sims.max()))
  panels = ((axes[0], report.sims, f'prompt {report.source}'.strip()),
            (axes[1], report.random_sims, 'random vectors, same norms'))
  for ax, sims, title in panels:
    image = ax.imshow(sims, aspect='auto', cmap='viridis', vmin=vmin, vmax=vmax,
                      interpolation='nearest')
    ax.set_title(title, fontsize=9)
    ax.set_xlabel('neighbour rank')
    ax.set_xticks(range(k))
    ax.set_xticklabels([str(r + 1) for r in range(k)])
    ax.set_yticks(range(p))
    ax.set_yticklabels([str(i) for i in range(p)], fontsize=6)
  axes[0].set_ylabel('prompt position')
  if p <= 120:
    middle = (vmin + vmax) / 2
    for i in range(p):
      for j in range(k):
        axes[0].text(j, i, _show(report.pieces[i][j])[:16], ha='center', va='center',
                     fontsize=6, color='black' if report.sims[i, j] > middle else 'white')
  else:
    axes[0].set_yticklabels([f'{i}: {_show(report.pieces[i][0])}' for i in range(p)],
                            fontsize=5)
  colorbar_axes = fig.add_axes([0.92, 0.25, 0.015, 0.5])
  fig.colorbar(image, cax=colorbar_axes, label='cosine similarity')
  fig.savefig(path, dpi=90)
  plt.close(fig)


def write_report(report: NeighborReport, output_dir: str) -> dict[str, str]:
  """Writes neighbors.txt, neighbors.png and neighbors.json; returns their paths."""
  os.makedirs(output_dir, exist_ok=True)
  paths = {name: os.path.join(output_dir, f'neighbors.{name}') for name in ('txt', 'png', 'json')}
  with open(paths['txt'], 'w', encoding='utf-8') as f:
    f.write(format_report(report))
  plot_report(report, paths['png'])
  rows = [{'position': i, 'norm': float(report.norms[i]), 'ids': report.ids[i].tolist(),
           'pieces': report.pieces[i], 'cosines': report.sims[i].tolist(),
           'labels': report.hits[i]} for i in range(report.sims.shape[0])]
  with open(paths['json'], 'w', encoding='utf-8') as f:
    json.dump({'summary': report.summary(), 'rows': rows}, f, ensure_ascii=False, indent=1)
  return paths


# ------------------------------------------------------------ embedding tables


def load_t5x_embedding(path: str) -> np.ndarray:
  """Reads only the token embedding [V, H] from a T5X checkpoint (local or gs://): T5's
  `token_embedder/embedding` or a decoder-only LM's `decoder/token_embedder/embedding`.

  The released Base checkpoint is ~1 GB of weights; this reads ~100 MB of it.
  """
  path = path.rstrip('/')
  if path.endswith('/' + t5x.CHECKPOINT_FILE) or path == t5x.CHECKPOINT_FILE:
    ckpt_dir, ckpt_file = path.rpartition('/')[0] or '.', path
  else:
    ckpt_dir, ckpt_file = path, f'{path}/{t5x.CHECKPOINT_FILE}'
  try:
    contents = serialization.msgpack_restore(tree.read_bytes(ckpt_file))
  except CheckpointError:
    raise
  except Exception as e:  # msgpack raises several unrelated types.
    raise CheckpointError(f'{ckpt_file}: not a T5X msgpack checkpoint: {e}') from e
  state = contents.get('optimizer', contents) if isinstance(contents, dict) else None
  target = state.get('target') if isinstance(state, dict) else None
  found = tree.flatten(target, is_leaf=t5x.is_ts_spec) if isinstance(target, dict) else {}
  path_found = next((p for p in models.EMBEDDING_PATHS if p in found), None)
  if path_found is None:
    raise CheckpointError(f'{ckpt_file}: no target/{" or target/".join(models.EMBEDDING_PATHS)} '
                          'in the checkpoint.')
  node = found[path_found]
  if isinstance(node, dict) and 'driver' in node:
    try:
      node = ts.open(t5x.resolve_spec(node, ckpt_dir), open=True).result().read().result()
    except ValueError as e:
      raise CheckpointError(f'{ckpt_dir}: cannot read {path_found}: {e}') from e
  array = np.asarray(node, np.float32)
  if array.ndim != 2:
    raise CheckpointError(f'{ckpt_dir}: {path_found} has shape {array.shape}, '
                          'expected [vocab, emb].')
  return array


def load_embedding(*, checkpoint: Optional[str] = None, embedding_npy: Optional[str] = None,
                   hf_checkpoint: Optional[str] = None) -> tuple[np.ndarray, str]:
  """The frozen embedding table [V, H] from exactly one source, and a description."""
  given = {k: v for k, v in (('checkpoint', checkpoint), ('embedding_npy', embedding_npy),
                             ('hf_checkpoint', hf_checkpoint)) if v}
  if len(given) != 1:
    raise UsageError('Give exactly one embedding source: --checkpoint (T5X), '
                     f'--hf_checkpoint or --embedding_npy; got {sorted(given) or "none"}.')
  if checkpoint:
    return load_t5x_embedding(checkpoint), checkpoint
  if hf_checkpoint:
    params, _ = checkpoints.load_hf(hf_checkpoint)
    return np.asarray(params['token_embedder']['embedding'], np.float32), hf_checkpoint
  array = np.load(io.BytesIO(tree.read_bytes(embedding_npy)), allow_pickle=False)
  if array.ndim != 2:
    raise CheckpointError(f'{embedding_npy}: an embedding table is [vocab, emb], got '
                          f'{array.shape}.')
  return array.astype(np.float32), embedding_npy


def run_embedding(model_dir: str) -> np.ndarray:
  """The frozen embedding table [V, H] of the run in MODEL_DIR, built as `ptj eval` builds it."""
  configuration = config.configure('neighbors', [], [f'MODEL_DIR = {model_dir!r}'])
  s = run_setup.setup(configuration.settings)
  flat = tree.flatten(run_setup.frozen_params_without_prompt(s))
  return np.asarray(flat[models.embedding_path(flat)], np.float32)


# ------------------------------------------------------------ command line


def main(argv: Optional[Sequence[str]] = None) -> int:
  """`ptj neighbors`; returns the exit status."""
  p = argparse.ArgumentParser(
      prog='ptj neighbors',
      description='Nearest vocabulary pieces of each prompt token (cosine against the frozen '
      'embedding table), with a random-vector baseline; writes neighbors.txt, .png and .json.')
  p.add_argument('--prompt', required=True,
                 help='prompt file [P, H]: .npy or the original suffix-less numpy file')
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument('--checkpoint', help='T5X checkpoint dir (local or gs://); only '
                      'token_embedder/embedding is read')
  source.add_argument('--hf_checkpoint', help='Hugging Face T5 checkpoint dir (safetensors)')
  source.add_argument('--embedding_npy', help='a saved [vocab, H] embedding table (.npy)')
  source.add_argument('--model_dir', help="a training run's MODEL_DIR: the table of its frozen "
                      'model, built as `ptj eval` builds it (its checkpoint, or its seeded random '
                      'init)')
  p.add_argument('--vocab', default=vocab_lib.DEFAULT_VOCAB_PATH,
                 help='SentencePiece model decoding ids to pieces (default: the T5 vocabulary on '
                 'GCS; local or gs://); "byte" for seqio.ByteVocabulary; "none" shows ids')
  p.add_argument('--extra_ids', type=int, default=vocab_lib.EXTRA_IDS,
                 help="seqio extra ids after the vocab's pieces (T5: 100)")
  p.add_argument('--labels', default='',
                 help='comma-separated class-label words, e.g. "positive,negative"')
  p.add_argument('--text', help='a text the prompt should read as (Wayward prompts): how '
                 "many of the first rows' nearest pieces are the text's pieces")
  p.add_argument('--top_k', type=int, default=5)
  p.add_argument('--seed', type=int, default=0, help='seed of the random baseline')
  p.add_argument('--output_dir', required=True)
  args = p.parse_args(argv)

  def run() -> int:
    prompt = checkpoints.load_prompt(args.prompt)
    if args.model_dir:
      table, table_source = run_embedding(args.model_dir), f'{args.model_dir} (frozen model)'
    else:
      table, table_source = load_embedding(
          checkpoint=args.checkpoint, embedding_npy=args.embedding_npy,
          hf_checkpoint=args.hf_checkpoint)
    if prompt.shape[1] != table.shape[1]:
      raise UsageError(f'The prompt {args.prompt} is {prompt.shape}, the embedding table of '
                       f'{table_source} is {table.shape}: their widths differ (wrong model size?).')
    labels = [w.strip() for w in args.labels.split(',') if w.strip()]
    report = analyze(prompt, table, vocabulary=piece_vocabulary(args.vocab, args.extra_ids),
                     labels=labels, top_k=args.top_k, seed=args.seed, source=args.prompt,
                     text=args.text)
    paths = write_report(report, args.output_dir)
    summary = report.summary()
    lines = [f'{args.prompt} {tuple(prompt.shape)} vs {table_source} {tuple(table.shape)}',
             f'  mean top-1 cosine: prompt {summary["mean_top1_cosine"]:.4f}, '
             f'random {summary["random_mean_top1_cosine"]:.4f}']
    if labels:
      lines.append(f'  rows with a label in the top {args.top_k}: prompt '
                   f'{summary["label_share"]:.1%}, random {summary["random_label_share"]:.1%}')
    if report.read_back:
      r = report.read_back
      lines.append(f'  read back as the text: {r["top1_accuracy"]:.1%} of its {r["pieces"]} '
                   f'pieces nearest, {r["topk_accuracy"]:.1%} in the top {args.top_k}')
    lines += [f'  {kind}: {path}' for kind, path in paths.items()]
    print('\n'.join(lines), flush=True)
    return 0

  return config.report_errors('neighbors', run)


if __name__ == '__main__':
  sys.exit(main())
