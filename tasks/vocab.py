"""The T5 SentencePiece vocabulary, resolved when first used.

`get_vocabulary()` picks the model file from, in order: its gin binding
(`get_vocabulary.path = ...`), the `PTJ_VOCAB` environment variable, and the
public T5 vocabulary on GCS. Tasks are registered at import time, before gin
files are parsed, so their features hold `TASK_VOCABULARY`, a proxy that calls
`get_vocabulary()` on first use; nothing is read at import.
"""
from __future__ import annotations

import functools
import gzip
import io
import json
import os
from typing import Optional, Sequence

import gin
import numpy as np
import seqio

from .sources import TaskDataError

DEFAULT_VOCAB_PATH = 'gs://t5-data/vocabs/cc_all.32000/sentencepiece.model'
VOCAB_ENV = 'PTJ_VOCAB'
EXTRA_IDS = 100


@gin.configurable
def get_vocabulary(path: Optional[str] = None,
                   extra_ids: int = EXTRA_IDS) -> seqio.SentencePieceVocabulary:
  """The SentencePiece vocabulary at `path`, else `$PTJ_VOCAB`, else T5's."""
  path = path or os.environ.get(VOCAB_ENV) or DEFAULT_VOCAB_PATH
  return _load(path, extra_ids)


@functools.lru_cache(maxsize=None)
def _load(path: str, extra_ids: int) -> seqio.SentencePieceVocabulary:
  """One vocabulary object per (path, extra_ids); seqio loads the file lazily."""
  return seqio.SentencePieceVocabulary(path, extra_ids=extra_ids)


class DeferredVocabulary(seqio.Vocabulary):
  """A `seqio.Vocabulary` that forwards everything to `get_vocabulary()`.

  The target is looked up at every call, so a gin binding or `PTJ_VOCAB` set
  after import still applies.
  """

  def __init__(self):
    super().__init__(extra_ids=0)

  @property
  def resolved(self) -> seqio.SentencePieceVocabulary:
    """The vocabulary this proxy currently stands for."""
    return get_vocabulary()

  def __getattr__(self, name):
    if name.startswith('__'):
      raise AttributeError(name)
    return getattr(self.resolved, name)

  @property
  def extra_ids(self) -> int:
    return self.resolved.extra_ids

  @property
  def vocab_size(self) -> int:
    return self.resolved.vocab_size

  @property
  def _base_vocab_size(self) -> int:
    return self.resolved._base_vocab_size  # pylint: disable=protected-access

  @property
  def bos_id(self) -> Optional[int]:
    return self.resolved.bos_id

  @property
  def eos_id(self) -> Optional[int]:
    return self.resolved.eos_id

  @property
  def unk_id(self) -> Optional[int]:
    return self.resolved.unk_id

  @property
  def pad_id(self) -> int:
    return self.resolved.pad_id

  def encode(self, s):
    return self.resolved.encode(s)

  def decode(self, ids):
    return self.resolved.decode(ids)

  def encode_tf(self, s):
    return self.resolved.encode_tf(s)

  def decode_tf(self, ids):
    return self.resolved.decode_tf(ids)

  def _encode(self, s):
    return self.resolved._encode(s)  # pylint: disable=protected-access

  def _decode(self, ids):
    return self.resolved._decode(ids)  # pylint: disable=protected-access

  def _encode_tf(self, s):
    return self.resolved._encode_tf(s)  # pylint: disable=protected-access

  def _decode_tf(self, ids):
    return self.resolved._decode_tf(ids)  # pylint: disable=protected-access

  def __eq__(self, other) -> bool:
    if isinstance(other, DeferredVocabulary):
      other = other.resolved
    return self.resolved == other

  def __hash__(self) -> int:
    return hash(DeferredVocabulary)

  def __str__(self) -> str:
    return f'DeferredVocabulary({self.resolved})'


TASK_VOCABULARY = DeferredVocabulary()


def output_features() -> dict[str, seqio.Feature]:
  """T5 text-to-text features: `inputs` and `targets`, both ending in EOS."""
  return {
      'inputs': seqio.Feature(TASK_VOCABULARY, add_eos=True),
      'targets': seqio.Feature(TASK_VOCABULARY, add_eos=True),
  }


# ------------------------------------------------------------ training a vocabulary

# T5's conventions: pad 0, EOS 1, UNK 2, no BOS; seqio appends the extra ids.
_SPECIAL_IDS = dict(pad_id=0, eos_id=1, unk_id=2, bos_id=-1)


def read_text_lines(spec: str) -> list[str]:
  """The non-empty lines (stripped) of a corpus file; errors name the file and line.

  `spec` is a `.txt`/`.txt.gz` file (one paragraph a line), or `FILE::FIELD`
  for one text field of a `.tsv` (with a header row) or `.jsonl` file, e.g.
  the unlabeled sentences of a task's train split:
  `glue/SST-2/train.tsv::sentence`.
  """
  path, _, field = spec.partition('::')
  if not os.path.isfile(path):
    raise TaskDataError(f'corpus file not found: {path}')
  opener = gzip.open if path.endswith('.gz') else open
  lines = []
  header = None
  with opener(path, 'rb') as f:
    for number, raw in enumerate(f, start=1):
      try:
        line = raw.decode('utf-8').rstrip('\r\n')
      except UnicodeDecodeError as e:
        raise TaskDataError(f'{path}:{number}: not UTF-8 text ({e.reason} at byte {e.start})'
                            ) from e
      if field:
        line = _field_of(path, number, line, field, header)
        if number == 1 and path.endswith(('.tsv', '.tsv.gz')):
          header = line
          continue
      line = line.strip() if isinstance(line, str) else ''
      if line:
        lines.append(line)
  if not lines:
    raise TaskDataError(f'corpus file has no text: {spec}')
  return lines


def _field_of(path: str, number: int, line: str, field: str, header):
  """One field of a tsv row (the header row is returned as a list) or a jsonl record."""
  if path.endswith(('.tsv', '.tsv.gz')):
    cells = line.split('\t')
    if header is None:
      if field not in cells:
        raise TaskDataError(f'{path}:1: no column {field!r} in the header {cells}')
      return cells
    if len(cells) != len(header):
      raise TaskDataError(f'{path}:{number}: {len(cells)} columns, the header has {len(header)}')
    return cells[header.index(field)]
  if path.endswith(('.jsonl', '.jsonl.gz')):
    if not line.strip():
      return ''
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise TaskDataError(f'{path}:{number}: not JSON: {e}') from e
    if field not in record:
      raise TaskDataError(f'{path}:{number}: no field {field!r}')
    return str(record[field])
  raise TaskDataError(f'{path}: FILE::FIELD needs a .tsv or .jsonl file')


def train_vocabulary(text_files: Sequence[str], output_path: str, *, vocab_size: int = 8000,
                     max_lines: int = 1_000_000, seed: int = 0,
                     character_coverage: float = 0.9999) -> seqio.SentencePieceVocabulary:
  """Trains a unigram SentencePiece model with T5's special ids; returns it with 100 extra ids.

  `text_files` are .txt/.txt.gz files, one paragraph a line; at most
  `max_lines` lines (a seeded sample) are used. `output_path` (the
  `.model` file) must not exist: nothing is overwritten.
  """
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top

  if os.path.exists(output_path):
    raise TaskDataError(f'{output_path} already exists; remove it or choose another path.')
  lines = [line for path in text_files for line in read_text_lines(path)]
  rng = np.random.RandomState(seed)
  if len(lines) > max_lines:
    lines = [lines[i] for i in np.sort(rng.choice(len(lines), max_lines, replace=False))]
  os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type='unigram',
        vocab_size=vocab_size, character_coverage=character_coverage,
        input_sentence_size=max_lines, shuffle_input_sentence=True, num_threads=os.cpu_count(),
        max_sentence_length=8192, minloglevel=2, **_SPECIAL_IDS)
  except RuntimeError as e:
    # e.g. "INTERNAL: src/...cc(744) [...] Vocabulary size too high (8000). Please set ..."
    reason = str(e).rpartition('] ')[2] or str(e)
    raise TaskDataError(f'cannot train a {vocab_size}-piece vocabulary from '
                        f'{list(text_files)} ({len(lines)} lines): {reason}') from e
  with open(output_path, 'xb') as f:
    f.write(model.getvalue())
  return seqio.SentencePieceVocabulary(output_path, extra_ids=EXTRA_IDS)
