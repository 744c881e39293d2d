"""The target sentinel (TARGET_SENTINEL): targets that start with <extra_id_0>.

A checkpoint trained only on span corruption has only seen targets that start
with the first sentinel, `<extra_id_0>`. The paper (Fig. 3c, "span + sentinel")
prompt-tunes such a model with every target written that way, so that the
label follows a token the model expects. With TARGET_SENTINEL on, for any task:
- training targets get the sentinel id in front (`data.py`, on token ids);
- eval and infer strip a leading sentinel from decoded tokens before the
  task's postprocessor and metrics (`strip_leading`);
- rank classification scores each label with the sentinel in front
  (`prefix_labels`); score metrics score the targets the same way.

The sentinel is the vocabulary's last id: seqio numbers a vocabulary's extra ids
downwards from its end, so `<extra_id_0>` is `vocab_size - 1`.
"""
from __future__ import annotations

import numpy as np

from prompt_tuning_jax.errors import UsageError


def sentinel_id(vocabulary, where: str = 'the task') -> int:
  """The id of `<extra_id_0>` in `vocabulary`; UsageError when it has no extra ids."""
  if not getattr(vocabulary, 'extra_ids', 0):
    raise UsageError(f'TARGET_SENTINEL: the targets vocabulary of {where} has no extra ids '
                     '(no <extra_id_0> to start the targets with): use a vocabulary that has them '
                     '(T5 vocabularies: 100), or TARGET_SENTINEL=False.')
  return int(vocabulary.vocab_size) - 1


def prefix_labels(label_token_ids: np.ndarray, sentinel: int) -> np.ndarray:
  """[num_labels, d] label ids (`scoring.encode_labels`) -> [num_labels, d + 1], sentinel first."""
  labels = np.asarray(label_token_ids, np.int32)
  return np.concatenate([np.full((labels.shape[0], 1), sentinel, np.int32), labels], axis=1)


def prefix_targets(targets: np.ndarray, sentinel: int) -> np.ndarray:
  """[b, d] zero-padded target ids -> [b, d + 1], the sentinel before each non-empty row."""
  targets = np.asarray(targets, np.int32)
  first = np.where((targets > 0).any(axis=1), sentinel, 0).astype(np.int32)
  return np.concatenate([first[:, None], targets], axis=1)


def strip_leading(tokens: np.ndarray, sentinel: int) -> np.ndarray:
  """Decoded ids [..., L] with a leading sentinel removed from each row: the row moves left
  and ends with a 0. Rows that do not start with it, and later sentinels, are kept."""
  tokens = np.asarray(tokens)
  rows = tokens.reshape(-1, tokens.shape[-1])
  shifted = np.concatenate([rows[:, 1:], np.zeros_like(rows[:, :1])], axis=1)
  out = np.where((rows[:, :1] == sentinel), shifted, rows)
  return out.reshape(tokens.shape)
