"""The T5 SentencePiece vocabulary, resolved when first used.

`get_vocabulary()` picks the model file from, in order: its gin binding
(`get_vocabulary.path = ...`), the `PTJ_VOCAB` environment variable, and the
public T5 vocabulary on GCS. Tasks are registered at import time, before gin
files are parsed, so their features hold `TASK_VOCABULARY`, a proxy that calls
`get_vocabulary()` on first use; nothing is read at import.
"""
from __future__ import annotations

import functools
import os
from typing import Optional

import gin
import seqio

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
