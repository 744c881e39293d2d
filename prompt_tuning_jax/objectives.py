"""Training losses over the label set (LOSS other than 'token_cross_entropy').

The token loss makes an example's target the most likely string of the whole
vocabulary; classification is evaluated by rank classification, which only asks
the gold label to score highest among its task's labels. These losses train
for that, as the original implementation's `extended/perceptron` does. An
example's label scores `s` [labels] are the summed log-likelihoods of each label
word of its task, with EOS: what rank classification ranks (not divided by the
label's length, unlike the original), computed in one teacher-forced decoder row
per example (`scoring.pack_labels`, called by `train_step`). With `g` the gold
label and `r` the best other label (the first of several tied):

- sequence_cross_entropy: logsumexp(s) - s[g] (no z-loss: the scores are
  already log-probabilities);
- perceptron: max(0, s[r] - s[g]), zero once the gold ranks first by any margin;
- hinge: max(0, margin + s[r] - s[g]), zero once the gold leads by the margin.
  (The README of the original defines it so; its code takes `r` over all labels,
  the gold included, which makes the hinge the perceptron plus a constant.)

At the boundary (a tie for the perceptron) the value is 0 and the gradient is
the perceptron's update d s[r] - d s[g], as in the perceptron's rule "update if
S(r) >= S(g)": rank classification may pick the other of a tie.

A mixture's tasks may have different label counts: the tables are padded to
the most labels (`valid` marks the real ones) and each example takes its task's
row by its TASK_INDEX. Its gold label is the label whose tokens equal its
target (`LabelSets.gold`, on the host); a target that is no label is an error.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning_jax import data as data_lib
from prompt_tuning_jax import scoring
from prompt_tuning_jax.errors import DataError, UsageError
from prompt_tuning_jax.settings import LABEL_SET_LOSSES

Array = jnp.ndarray
# (scores [b, labels], gold [b], valid [b, labels]) -> loss of each example [b].
LabelLoss = Callable[[Array, Array, Array], Array]
# Score of a padding label: below any summed log-likelihood, finite (no NaN in sums).
_NEG_INF = -1.0e7
LABEL_INDEX = 'label_index'  # the batch feature: each example's gold label


def _wide(scores: Array) -> Array:
  """At least float32 (float64 stays float64)."""
  return scores.astype(jnp.promote_types(scores.dtype, jnp.float32))


def _gold_scores(scores: Array, gold: Array) -> Array:
  return jnp.take_along_axis(scores, gold[:, None], axis=-1)[:, 0]


def sequence_cross_entropy(scores: Array, gold: Array, valid: Array) -> Array:
  """-log softmax over the valid labels of the gold label's score, per example [b]."""
  scores = _wide(scores)
  return jax.nn.logsumexp(jnp.where(valid, scores, _NEG_INF), axis=-1) - _gold_scores(scores,
                                                                                      gold)


def margin_loss(scores: Array, gold: Array, valid: Array, margin: float = 0.0) -> Array:
  """max(0, margin + best other score - gold score) per example [b]; margin 0: the perceptron.

  At the boundary the value is 0 and the gradient the update (module docstring).
  """
  scores = _wide(scores)
  others = valid & (jnp.arange(scores.shape[-1])[None, :] != gold[:, None])
  masked = jnp.where(others, scores, _NEG_INF)
  rival = jnp.take_along_axis(masked, jnp.argmax(masked, axis=-1)[:, None], axis=-1)[:, 0]
  violation = margin + rival - _gold_scores(scores, gold)
  return jnp.where(violation >= 0, violation, 0.0)


def rank_correct(scores: Array, gold: Array, valid: Array) -> Array:
  """[b] bool: the gold label ranks first among the valid ones (the first of a tie wins,
  as in `scoring.rank_classify`)."""
  return jnp.argmax(jnp.where(valid, scores, _NEG_INF), axis=-1) == gold


def label_loss(name: str, hinge_margin: float) -> LabelLoss:
  """The loss function a LOSS name stands for."""
  if name == 'sequence_cross_entropy':
    return sequence_cross_entropy
  if name == 'perceptron':
    return margin_loss
  if name == 'hinge':
    return functools.partial(margin_loss, margin=hinge_margin)
  raise ValueError(f'Not a loss over the label set: {name!r}; expected one of '
                   f'{LABEL_SET_LOSSES}.')


@dataclasses.dataclass(frozen=True)
class LabelObjective:
  """A loss over the label set and the label tables it scores: what `make_train_step` takes."""
  loss: LabelLoss
  tokens: np.ndarray  # [tasks, labels, d] int32: label words with EOS, zero padded
  valid: np.ndarray   # [tasks, labels] bool: real labels (a task may have fewer)


@dataclasses.dataclass(frozen=True)
class LabelSets:
  """The label words of each task of a run (by TASK_INDEX) as token tables; host side."""
  task_names: tuple[str, ...]
  words: tuple[tuple[str, ...], ...]
  tokens: np.ndarray  # [tasks, labels, d] int32
  valid: np.ndarray   # [tasks, labels] bool
  vocabularies: tuple  # each task's targets vocabulary (to quote a bad target)

  def objective(self, loss: LabelLoss) -> LabelObjective:
    return LabelObjective(loss, self.tokens, self.valid)

  def gold(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """[b] int32: the label of each example's task whose tokens equal its target tokens."""
    targets = np.asarray(batch['decoder_target_tokens'])
    task = np.asarray(batch[data_lib.TASK_INDEX])
    width = max(targets.shape[1], self.tokens.shape[2])
    targets = np.pad(targets, ((0, 0), (0, width - targets.shape[1])))
    labels = np.pad(self.tokens, ((0, 0), (0, 0), (0, width - self.tokens.shape[2])))[task]
    match = (labels == targets[:, None, :]).all(-1) & self.valid[task]  # [b, labels]
    bad = np.flatnonzero(~match.any(-1))
    if bad.size:
      i = int(bad[0])
      tokens = [int(t) for t in targets[i] if t > 0]
      text = self.vocabularies[task[i]].decode(tokens)
      raise DataError(
          f'An example of {self.task_names[task[i]]!r} has the target {text!r} (tokens '
          f'{tokens}), which is none of its label words {list(self.words[task[i]])}: a loss '
          'over the label set needs every target to be one label (use '
          "LOSS='token_cross_entropy', or CLASS_LABELS).")
    return match.argmax(-1).astype(np.int32)


def label_sets(mixture_or_task_name: str, loss: str,
               class_labels: Optional[Sequence[str]] = None,
               task_index: Optional[Mapping[str, int]] = None) -> LabelSets:
  """The label tables of the tasks of a run, each at its TASK_INDEX (`task_index`, the
  method's: `run_setup.Setup.task_index`; None: `data.task_index_of`); a row no task of the
  run takes stays empty. UsageError for a task without label words."""
  tasks = data_lib.sub_tasks(mixture_or_task_name)
  index = dict(task_index or data_lib.task_index_of(mixture_or_task_name))
  rows = max(index[task.name] for task in tasks) + 1
  names, words, vocabularies = [''] * rows, [()] * rows, [None] * rows
  tables = {}
  for task in tasks:
    task_words = data_lib.label_words(task.name, class_labels)
    if not task_words:
      raise UsageError(f"LOSS={loss!r} scores each task's label words, and {task.name!r} has "
                       "none (a generation task?): use LOSS='token_cross_entropy', or set "
                       'CLASS_LABELS.')
    i = index[task.name]
    vocabularies[i] = task.output_features['targets'].vocabulary
    names[i], words[i] = task.name, tuple(task_words)
    tables[i] = scoring.encode_labels(vocabularies[i], task_words)
  num_labels = max(len(t) for t in tables.values())
  length = max(t.shape[1] for t in tables.values())
  tokens = np.zeros((rows, num_labels, length), np.int32)
  valid = np.zeros((rows, num_labels), bool)
  for i, table in tables.items():
    tokens[i, :table.shape[0], :table.shape[1]] = table
    valid[i, :table.shape[0]] = True
  return LabelSets(tuple(names), tuple(words), tokens, valid, tuple(vocabularies))
