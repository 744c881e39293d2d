"""seqio postprocessors: decoded text (and its example) -> value for metrics.

Each has seqio's signature `fn(text, example=None, is_target=False)`. Text
that is not a valid label becomes `INVALID` (-1), which every metric counts as
wrong; nothing here raises on model output.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional, Sequence

from . import formats

INVALID = -1

Example = Optional[Mapping[str, Any]]
Postprocessor = Callable[..., Any]


def _text(value: Any) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def label_id(text: str, label_words: Sequence[str]) -> int:
  """Class index of a label word (surrounding spaces ignored), else INVALID."""
  text = text.strip()
  return list(label_words).index(text) if text in label_words else INVALID


def classification(text: str, example: Example = None, is_target: bool = False,
                   *, label_words: Sequence[str]) -> int:
  """Label word -> class index (INVALID for anything else, '<unk>' included)."""
  del example, is_target
  return label_id(text, label_words)


def transferred(text: str, example: Example = None, is_target: bool = False, *,
                label_words: Sequence[str], to_target: Sequence[int]) -> int:
  """A label word of another task (the one a prompt was trained on) -> class index of this
  task: `to_target[i]` for the i-th word (INVALID for anything else)."""
  del example, is_target
  index = label_id(text, label_words)
  return INVALID if index == INVALID else to_target[index]


def to_float(text: str, example: Example = None,
             is_target: bool = False) -> float:
  """A number (STS-B score); -1.0 when the text is not a finite number."""
  del example, is_target
  try:
    value = float(text)
  except ValueError:
    return float(INVALID)
  return value if math.isfinite(value) else float(INVALID)


def grouped(text: str, example: Example = None, is_target: bool = False, *,
            label_words: Sequence[str], group: Callable[[Mapping], Any]
            ) -> dict[str, Any]:
  """{'group': group(example), 'value': class index}, for group metrics."""
  del is_target
  return {'group': group(example) if example is not None else None,
          'value': label_id(text, label_words)}


def multirc_group(example: Mapping[str, Any]) -> tuple[int, int]:
  """A MultiRC question: (paragraph idx, question idx)."""
  return int(example['idx/paragraph']), int(example['idx/question'])


def axg_pair(example: Mapping[str, Any]) -> int:
  """An AX-g minimal pair: examples 2k and 2k+1 differ only in gender."""
  return int(example['idx']) // 2


def record(text: str, example: Example = None,
           is_target: bool = False) -> dict[str, Any]:
  """Target: {'group', 'answers'}; prediction: {'group', 'value': text}.

  The group is the (passage, query) pair, shared by the copies of a query.
  """
  group = None
  if example is not None:
    group = int(example['idx/passage']), int(example['idx/query'])
  if is_target:
    answers = [] if example is None else [_text(a) for a in example['answers']]
    return {'group': group, 'answers': answers}
  return {'group': group, 'value': text}


_DETERMINERS = frozenset({
    'a', 'an', 'few', 'her', 'his', 'each', 'every', 'many', 'much', 'my',
    'our', 'some', 'that', 'the', 'their', 'these', 'this', 'those', 'which',
    'whose', 'your'})


def _content_words(text: str) -> list[str]:
  """Lower-cased words without determiners."""
  return [w for w in text.strip().lower().split() if w not in _DETERMINERS]


def names_referent(prediction: str, referent: str) -> bool:
  """Whether a predicted noun phrase names the referent (T5's WSC rule).

  Compared without case and determiners, one word set must contain the other
  ('fuzzy bunny' names 'bunny'), and both or neither must be possessive (so
  'Bob' does not name "Bob's hat").
  """
  predicted, gold = _content_words(prediction), _content_words(referent)
  if ("'" in ' '.join(predicted)) != ("'" in ' '.join(gold)):
    return False
  predicted_set, gold_set = set(predicted), set(gold)
  return predicted_set <= gold_set or gold_set <= predicted_set


def wsc_simple(text: str, example: Example = None,
               is_target: bool = False) -> int:
  """Target: the example's label; prediction: 1 if it names the candidate."""
  if is_target:
    return int(example['label'])
  candidate = _text(example['targets_pretokenized'])
  return int(names_referent(text, candidate))


def rank_target(text: str, example: Example = None, is_target: bool = False,
                *, label_words: Sequence[str], base: Postprocessor) -> Any:
  """A rank-classification candidate, described for `metrics.RankClassification`.

  For targets: {'key': the example's idx fields, 'target': the gold label
  through `base`, 'prediction': this candidate through `base`}. Predictions
  (unused: rank tasks are scored) pass through.
  """
  if not is_target:
    return text
  key = tuple(sorted((k, int(v)) for k, v in example.items()
                     if k == 'idx' or k.startswith('idx/')))
  gold = formats.label_target(int(example['label']), label_words)
  candidate = label_words[int(example['rank_candidate'])]
  return {
      'key': key,
      'target': base(gold, example=example, is_target=True),
      'prediction': base(candidate, example=example, is_target=False),
  }


def qa(text: str, example: Example = None, is_target: bool = False) -> Any:
  """Target: every gold answer, punctuation padded as the targets (T5's `qa`); prediction: the
  text."""
  if is_target:
    return [formats.pad_punctuation(_text(a)) for a in example['answers']]
  return _text(text)


def as_text(value: Any, example: Example = None, is_target: bool = False) -> str:
  """The decoded text itself (generation tasks)."""
  del example, is_target
  return _text(value)
