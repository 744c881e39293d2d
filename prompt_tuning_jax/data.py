"""seqio tasks for a run: finding them, their label words, and training batches.

The pipeline is `Task.get_dataset` (untrimmed, shuffled with `seed`, repeated;
for a mixture each example is tagged with its task's index, `task_index_of`)
-> a truncation flag per example -> the model's feature converter with
pack=False (`EncDecFeatureConverter` for T5; `DecoderFeatureConverter` for a
decoder-only LM: inputs and targets concatenated, `decoder_causal_attention` on
the prefix, loss on the targets only), which trims and pads to the feature
lengths -> batches of BATCH_SIZE, each fixed at the feature lengths or cut to
length buckets (below). With TARGET_SENTINEL every target starts with the
vocabulary's `<extra_id_0>` (`sentinel.py`), put before the targets are trimmed, so
it counts towards their length.
With PACK_LENGTHS each batch's examples are then packed into rows (below).

The batches are GLOBAL batches, the same on every process: the sequence is a
pure function of (task, split, feature lengths, buckets, batch size, seed)
and the step, because tf.data shuffles deterministically when given a seed; it does
not depend on the number of processes or devices. Each process builds the
whole stream and places only the rows its devices hold
(`partitioning.global_batch`). The price: every host reads and preprocesses
every example (what a single host would), not 1/N of them; for prompt
tuning's tasks (thousands of short examples, tokenised once per epoch) that
is milliseconds per step, far below a step of the frozen model.

Length buckets (LENGTH_BUCKETS): real examples are much shorter than the
feature lengths (SST-2 inputs average ~22 tokens of 512). With buckets, the
seeded example stream is cut into windows of `WINDOW_BATCHES` batches; inside
a window the examples are sorted by input length and cut into batches, and
the window's batches are put in a seeded random order (seed, window index).
Each batch is then cut to the smallest bucket of each feature that holds its
longest example (the rows are padded at the end, so cutting the padding
changes nothing else); a decoder-only batch, one sequence of inputs and
targets, to the smallest inputs bucket plus the targets length. Every
example still comes exactly once per epoch, the batches are still a pure
function of the settings and the step (so every host agrees on each step's
shape), and there is at most one compilation per bucket pair.

Packing (PACK_LENGTHS = {'inputs': R, 'targets': D}; `pack_batch`): the BATCH_SIZE
examples of each batch (fixed or bucketed, as above) are packed, longest first, each into
the first row with room, into rows of R encoder and D decoder positions; the number of rows
is rounded up to a multiple of the data-parallel devices x micro-batches (`row_count`), one
compilation per row count. An example takes its prompt's length (the method's
`added_positions`) plus its input tokens in its row: the data leaves its prompt positions
(`PROMPT_SLOTS`: j at the j-th, -1 elsewhere; the model fills them, so a row of k examples
holds k prompts), before its tokens ('prefix') or after them ('suffix'). Segment ids keep
examples apart, positions restart at each (T5X's packed features), TASK_INDEX is given per
encoder position. A step sees the same examples, and sums the same token losses, as without
packing; only the padding differs.

Data position on resume: a run resumed at step `s` skips the first `s`
batches (`start_step`) and sees exactly the batches an uninterrupted run would
have seen, on any number of hosts. Skipping re-reads and re-preprocesses the
skipped examples, which costs seconds for the SuperGLUE-sized tasks.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import itertools
import logging
from typing import Iterator, Mapping, Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf

from prompt_tuning_jax import sentinel as sentinel_lib
from prompt_tuning_jax import tasks
from prompt_tuning_jax.errors import DataError, UsageError
from prompt_tuning_jax.settings import DataSettings
from prompt_tuning_jax.tasks import sources as task_sources

# Per-example [inputs_truncated, targets_truncated] (0/1), passed through the
# feature converter; removed from the batches by `TruncationCounter.pop`.
TRUNCATED = 'truncated'
# Per-example index of the example's task in `sub_tasks(name)` (0 for a single task), in
# every training batch: what selects an example's task-specific parameters or label set.
TASK_INDEX = 'task_index'
# Packed rows (`pack_batch`): j at the j-th position of an example's prompt, -1 elsewhere
# (`MethodInputs.prompt_slots`), and the token a prompt position holds (any real id: the
# model replaces its embedding; not 0, which is padding).
PROMPT_SLOTS = 'prompt_slots'
PROMPT_SLOT_TOKEN = 1
MODEL_FEATURES = ('encoder_input_tokens', 'decoder_input_tokens', 'decoder_target_tokens',
                  'decoder_loss_weights')
DECODER_FEATURES = MODEL_FEATURES[1:]
# A decoder-only LM's features (seqio's DecoderFeatureConverter): one sequence each.
SEQUENCE_FEATURES = DECODER_FEATURES + ('decoder_causal_attention',)
# Length-bucketed training sorts examples by length within windows of this many
# batches: longer windows pad less but mix lengths less across the run.
WINDOW_BATCHES = 32


class UnknownTaskError(UsageError):
  """A task or mixture name seqio does not know."""


# ------------------------------------------------------------ tasks


def import_task_modules(modules: Sequence[str] | str | None = ()) -> None:
  """Imports the modules that register tasks: this package's and the user's.

  `MIXTURE_OR_TASK_MODULE` (T5X's macro) may be one module name or several.
  """
  if isinstance(modules, str):
    modules = [modules]
  for name in ['prompt_tuning_jax.tasks', 'prompt_tuning_jax.tasks.smoke', *(modules or ())]:
    try:
      importlib.import_module(name)
    except ImportError as e:
      raise UsageError(f'Cannot import the task module {name!r} '
                       f'(MIXTURE_OR_TASK_MODULE): {e}') from e


def get_mixture_or_task(name: str) -> seqio.Task | seqio.Mixture:
  """The registered task or mixture, or an error that suggests close names."""
  known = list(seqio.TaskRegistry.names()) + list(seqio.MixtureRegistry.names())
  if name in known:
    return seqio.get_mixture_or_task(name)
  close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
  hint = (f' Did you mean: {", ".join(close)}?' if close else
          ' Set MIXTURE_OR_TASK_MODULE to the module that registers it.')
  raise UnknownTaskError(f'Unknown task or mixture {name!r} (MIXTURE_OR_TASK_NAME).{hint}')


def task_vocabularies(name: str) -> dict[str, seqio.Vocabulary]:
  """The vocabulary of each output feature ('inputs', 'targets')."""
  features = get_mixture_or_task(name).output_features
  return {key: feature.vocabulary for key, feature in features.items()}


def sub_tasks(name: str) -> list[seqio.Task]:
  """The task itself, or the (leaf) tasks of a mixture."""
  provider = get_mixture_or_task(name)
  return list(provider.tasks) if isinstance(provider, seqio.Mixture) else [provider]


def task_index_of(name: str) -> dict[str, int]:
  """{task name: its TASK_INDEX} for the tasks of `name` (a task, or a mixture's leaf tasks)."""
  return {task.name: i for i, task in enumerate(sub_tasks(name))}


def _tagged_dataset(provider: seqio.Task | seqio.Mixture, sequence_length,
                    task_index: Optional[Mapping[str, int]] = None, **kwargs
                    ) -> tf.data.Dataset:
  """`provider.get_dataset(sequence_length, **kwargs)` with each example's TASK_INDEX.

  The index of a task is `task_index[name]` (the method's, `run_setup.Setup.task_index`),
  by default its place in the mixture (`task_index_of`). A mixture's datasets are built and
  sampled with the calls its own `get_dataset` makes, in the same order and with the same
  seed (so the examples are the same: tests check it), each task's examples tagged before
  they are mixed.
  """
  index = dict(task_index or task_index_of(provider.name))

  def tag(name):
    return lambda example: {**example, TASK_INDEX: tf.constant([index[name]], tf.int32)}

  if not isinstance(provider, seqio.Mixture):
    return provider.get_dataset(sequence_length, **kwargs).map(tag(provider.name))
  split, seed = kwargs['split'], kwargs.get('seed')
  tasks = [task for task in provider.tasks if split in task.splits]
  if not tasks:
    raise DataError(f'No task of {provider.name!r} has a {split!r} split.')
  keys = set(provider.output_features)
  datasets = [provider.get_task_dataset(task, keys, sequence_length, **kwargs).map(
      tag(task.name)) for task in tasks]
  return provider._sample_fn(datasets, provider._get_all_mixing_rates(tasks), seed)


def check_sources_available(name: str) -> None:
  """Each task of `name` can read its data: a TFDS download it needs can be made (else
  one line naming the local files to use instead)."""
  for task in sub_tasks(name):
    check = getattr(task.source, 'check_available', None)  # tasks.sources.BenchmarkSource
    if check is not None:
      check()


def label_words(task_name: str, class_labels: Optional[Sequence[str]] = None
                ) -> Optional[list[str]]:
  """The label words of a task: `class_labels` (CLASS_LABELS) when set, else the task's own.

  None for a task without label words, or a name that is no task of this package.
  """
  if class_labels:
    return list(class_labels)
  try:
    return tasks.label_words(task_name)
  except KeyError:
    return None


# ------------------------------------------------------------ batches


def _needs_lengths(provider: seqio.Task | seqio.Mixture) -> bool:
  """Whether some preprocessor (other than EOS appending) reads the sequence length."""
  tasks = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
  for task in tasks:
    for step in task.preprocessors:
      fn = getattr(step, 'func', step)  # functools.partial
      if fn is seqio.preprocessors.append_eos_after_trim:
        continue
      try:
        if 'sequence_length' in inspect.signature(fn).parameters:
          return True
      except (TypeError, ValueError):
        continue
  return False


def _flag_and_trim(lengths: Mapping[str, int], features: Mapping[str, seqio.Feature]):
  """Flags examples longer than `lengths`, then trims them as seqio would.

  A feature that ends in EOS keeps it (seqio's `append_eos_after_trim`).
  """
  def fn(example):
    example = dict(example)
    flags = []
    for key in ('inputs', 'targets'):
      tokens, length = example[key], lengths[key]
      flags.append(tf.cast(tf.size(tokens) > length, tf.int32))
      if features[key].add_eos:
        example[key] = tf.cond(tf.size(tokens) > length,
                               lambda t=tokens, n=length: tf.concat([t[:n - 1], t[-1:]], 0),
                               lambda t=tokens: t)
      else:
        example[key] = tokens[:length]
    example[TRUNCATED] = tf.stack(flags)
    return example
  return fn


@dataclasses.dataclass(frozen=True)
class Packing:
  """How `pack_batch` packs a batch: PACK_LENGTHS and what the model needs of the rows."""
  lengths: Mapping[str, int]  # {'inputs': R (prompts included), 'targets': D}
  prompt_length: int = 0  # positions left for each example's prompt (`added_positions`)
  placement: str = 'prefix'  # the prompt before ('prefix') or after ('suffix') the tokens
  row_multiple: int = 1  # rows divisible by it (data-parallel devices x micro-batches)


def row_count(needed: int, multiple: int = 1) -> int:
  """The rows a packed batch gets: `needed` rounded up to a multiple of `multiple`. Packed
  batches of one task need nearly the same number of rows, so few counts ever compile."""
  return -(-needed // multiple) * multiple


def pack_rows(inputs: np.ndarray, targets: np.ndarray, packing: Packing) -> list[list[int]]:
  """The examples of each packed row, in the row's order, from each example's input and
  target token counts [n]: longest first, each into the first row with room."""
  p = packing.prompt_length
  width, depth = packing.lengths['inputs'], packing.lengths['targets']
  too_long = np.flatnonzero((inputs + p > width) | (targets > depth))
  if too_long.size:
    raise DataError(f'An example of {int(inputs[too_long[0]])} input and '
                    f'{int(targets[too_long[0]])} target tokens (with a prompt of {p}) does '
                    f'not fit a packed row, PACK_LENGTHS={dict(packing.lengths)}.')
  rows: list[list[int]] = []
  fill: list[list[int]] = []  # each row's [encoder, decoder] positions taken
  for i in np.argsort(-(inputs + p), kind='stable'):
    need = (int(inputs[i]) + p, int(targets[i]))
    row = next((r for r, (e, d) in enumerate(fill)
                if e + need[0] <= width and d + need[1] <= depth), None)
    if row is None:
      rows.append([])
      fill.append([0, 0])
      row = len(rows) - 1
    rows[row].append(int(i))
    fill[row][0] += need[0]
    fill[row][1] += need[1]
  return rows


def pack_batch(batch: Mapping[str, np.ndarray], packing: Packing) -> dict[str, np.ndarray]:
  """A batch of end-padded examples packed into rows (see the module docstring).

  Features not per position (TRUNCATED) pass through per example.
  """
  p, placement = packing.prompt_length, packing.placement
  width, depth = packing.lengths['inputs'], packing.lengths['targets']
  inputs = example_lengths(batch['encoder_input_tokens'])
  targets = example_lengths(batch['decoder_target_tokens'])
  rows = pack_rows(inputs, targets, packing)
  n = row_count(len(rows), packing.row_multiple)
  enc = {key: np.zeros((n, width), np.int32) for key in (
      'encoder_input_tokens', 'encoder_segment_ids', 'encoder_positions', TASK_INDEX)}
  slots = np.full((n, width), -1, np.int32)
  dec = {key: np.zeros((n, depth), np.int32) for key in (
      'decoder_input_tokens', 'decoder_target_tokens', 'decoder_loss_weights',
      'decoder_segment_ids', 'decoder_positions')}
  for r, members in enumerate(rows):
    e = d = 0
    for segment, i in enumerate(members, 1):
      t, u = int(inputs[i]), int(targets[i])
      tokens_at = e + p if placement == 'prefix' else e
      slots_at = e if placement == 'prefix' else e + t
      enc['encoder_input_tokens'][r, tokens_at:tokens_at + t] = (
          batch['encoder_input_tokens'][i, :t])
      enc['encoder_input_tokens'][r, slots_at:slots_at + p] = PROMPT_SLOT_TOKEN
      slots[r, slots_at:slots_at + p] = np.arange(p)
      enc['encoder_segment_ids'][r, e:e + p + t] = segment
      enc['encoder_positions'][r, e:e + p + t] = np.arange(p + t)
      enc[TASK_INDEX][r, e:e + p + t] = batch[TASK_INDEX][i]
      for key in ('decoder_input_tokens', 'decoder_target_tokens', 'decoder_loss_weights'):
        if key in batch:
          dec[key][r, d:d + u] = batch[key][i, :u]
      dec['decoder_segment_ids'][r, d:d + u] = segment
      dec['decoder_positions'][r, d:d + u] = np.arange(u)
      e, d = e + p + t, d + u
  if 'decoder_loss_weights' not in batch:
    del dec['decoder_loss_weights']
  packed = {key: value for key, value in batch.items() if key not in MODEL_FEATURES + (
      TASK_INDEX,)}
  packed.update(enc, **dec)
  if p:
    packed[PROMPT_SLOTS] = slots
  return packed


# What `scoring.rank_classify_packed` reads of packed rows.
ENCODER_ROW_FEATURES = ('encoder_input_tokens', 'encoder_segment_ids', TASK_INDEX, PROMPT_SLOTS)


def pack_encoder_rows(tokens: np.ndarray, task_index: np.ndarray, packing: Packing
                      ) -> tuple[dict[str, np.ndarray], list[list[int]]]:
  """Examples' end-padded inputs [n, L] and TASK_INDEX [n] packed into encoder rows as
  `pack_batch` packs them (no targets: rank classification decodes labels) -> (the rows'
  `ENCODER_ROW_FEATURES`, the examples of each row in segment order, `pack_rows`)."""
  n = len(tokens)
  no_targets = np.zeros((n, 0), np.int32)
  packed = pack_batch({'encoder_input_tokens': tokens, 'decoder_target_tokens': no_targets,
                       TASK_INDEX: task_index}, packing)
  rows = pack_rows(example_lengths(tokens), np.zeros(n, np.int64), packing)
  return {k: packed[k] for k in ENCODER_ROW_FEATURES if k in packed}, rows


def train_batches(settings: DataSettings, *, start_step: int = 0,
                  window_batches: int = WINDOW_BATCHES,
                  task_index: Optional[Mapping[str, int]] = None,
                  feature_converter_cls: type = seqio.EncDecFeatureConverter,
                  packing: Optional[Packing] = None
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Global training batches of model features (+ `truncated` [batch, 2]), from `start_step` on.

  Each example carries TASK_INDEX: `task_index[its task]` (None: `task_index_of`).

  The 'train' split, shuffled with the seed and repeated; the same batches on
  every process (see the module docstring). With LENGTH_BUCKETS, each batch is
  cut to its buckets, the examples grouped by length in windows of
  `window_batches` batches. `feature_converter_cls` is the model's
  (`FEATURE_CONVERTER_CLS`). Truncation is counted when no preprocessor of the task
  needs the sequence length (true of text-to-text classification tasks);
  otherwise seqio trims as usual and the counts stay 0 (logged once). With `packing`
  (PACK_LENGTHS) each batch is packed (`pack_batch`).
  """
  batches = _unpacked_train_batches(settings, start_step, window_batches, task_index,
                                    feature_converter_cls)
  if packing is None:
    return batches
  return (pack_batch(batch, packing) for batch in batches)


def _unpacked_train_batches(settings: DataSettings, start_step: int, window_batches: int,
                            task_index: Optional[Mapping[str, int]],
                            feature_converter_cls: type) -> Iterator[dict[str, np.ndarray]]:
  options = tf.data.Options()
  options.deterministic = True
  if settings.length_buckets is None:
    ds = global_batches(settings, task_index,
                        feature_converter_cls=feature_converter_cls).skip(start_step)
    return iterate(ds.with_options(options).prefetch(tf.data.AUTOTUNE))
  window = settings.batch_size * window_batches
  first_window, skip_batches = divmod(start_step, window_batches)
  windows = _converted_examples(settings, task_index, feature_converter_cls).batch(
      window, drop_remainder=True).skip(first_window)
  windows = iterate(windows.with_options(options).prefetch(2))
  batches = _bucketed(windows, settings, first_window)
  return itertools.islice(batches, skip_batches, None)


def _converted_examples(settings: DataSettings,
                        task_index: Optional[Mapping[str, int]] = None,
                        feature_converter_cls: type = seqio.EncDecFeatureConverter
                        ) -> tf.data.Dataset:
  """The endless stream of examples in seeded order, trimmed, flagged and padded to the lengths.

  Whatever forms the batches must depend only on the settings, never on the
  process, so that every process sees the same batches.
  """
  lengths = dict(settings.task_feature_lengths)
  provider = get_mixture_or_task(settings.mixture_or_task_name)
  count = not _needs_lengths(provider)
  if not count:
    logging.info('%s: a preprocessor uses the sequence length, so seqio trims the examples '
                 'and truncation is not counted.', settings.mixture_or_task_name)
  # Without a sequence length seqio trims nothing; `_flag_and_trim` does it.
  ds = _tagged_dataset(provider, None if count else lengths, task_index, split='train',
                       shuffle=True,
                       seed=settings.seed, num_epochs=None, trim_output_features=not count)
  if settings.target_sentinel:
    ds = ds.map(_with_sentinel(target_sentinel(settings.mixture_or_task_name)),
                num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.map(_flag_and_trim(lengths, provider.output_features),
              num_parallel_calls=tf.data.AUTOTUNE)
  int_feature = seqio.FeatureConverter.FeatureSpec(tf.int32)
  converter = feature_converter_cls(
      pack=False, passthrough_features={TRUNCATED: int_feature, TASK_INDEX: int_feature})
  ds = converter(ds, task_feature_lengths={**lengths, TRUNCATED: 2, TASK_INDEX: 1})
  return ds.map(lambda ex: {**ex, TASK_INDEX: ex[TASK_INDEX][0]})  # [1] -> a scalar


def target_sentinel(name: str) -> int:
  """The id of `<extra_id_0>` in the targets vocabulary of `name` (TARGET_SENTINEL)."""
  vocabulary = get_mixture_or_task(name).output_features['targets'].vocabulary
  return sentinel_lib.sentinel_id(vocabulary, repr(name))


def _with_sentinel(sentinel: int):
  """Puts the sentinel id before an example's target ids (before they are trimmed)."""
  def fn(example):
    targets = example['targets']
    return {**example, 'targets': tf.concat([tf.constant([sentinel], targets.dtype), targets], 0)}
  return fn


def global_batches(settings: DataSettings, task_index: Optional[Mapping[str, int]] = None, *,
                   feature_converter_cls: type = seqio.EncDecFeatureConverter
                   ) -> tf.data.Dataset:
  """The endless sequence of fixed-shape global batches (LENGTH_BUCKETS=None)."""
  return _converted_examples(settings, task_index, feature_converter_cls).batch(
      settings.batch_size, drop_remainder=True)


def _bucketed(windows: Iterator[dict[str, np.ndarray]], settings: DataSettings,
              first_window: int) -> Iterator[dict[str, np.ndarray]]:
  """Each window's examples sorted by length, batched, the batches in seeded order, cut."""
  size = settings.batch_size
  for index, window in enumerate(windows, first_window):
    order = np.argsort(example_lengths(length_feature(window)), kind='stable')
    batches = order.reshape(-1, size)  # [window_batches, batch]
    shuffle = np.random.default_rng([settings.seed, index]).permutation(len(batches))
    for rows in batches[shuffle]:
      yield cut_to_buckets({k: v[rows] for k, v in window.items()}, settings.length_buckets)


def length_feature(batch: Mapping[str, np.ndarray]) -> np.ndarray:
  """The tokens batches are grouped by: the inputs (T5), or the whole sequence (decoder-only)."""
  return batch['encoder_input_tokens' if 'encoder_input_tokens' in batch
               else 'decoder_target_tokens']


def example_lengths(tokens: np.ndarray) -> np.ndarray:
  """[n] real (non-padding) tokens of each row of [n, length] end-padded tokens."""
  return (tokens > 0).sum(axis=1)


def bucket_for(length: int, buckets: Sequence[int]) -> int:
  """The smallest bucket that holds `length` tokens (the largest when none does)."""
  for bucket in buckets:
    if bucket >= length:
      return bucket
  return buckets[-1]


def cut_to_buckets(batch: Mapping[str, np.ndarray], buckets: Mapping[str, Sequence[int]]
                   ) -> dict[str, np.ndarray]:
  """A batch padded to the feature lengths, cut to the smallest buckets holding its examples.

  A decoder-only batch (no `encoder_input_tokens`) is one sequence per example,
  cut to the smallest inputs bucket plus the targets length.
  """
  batch = dict(batch)
  if 'encoder_input_tokens' not in batch:
    sequence = tuple(i + buckets['targets'][-1] for i in buckets['inputs'])
    length = bucket_for(int(example_lengths(batch['decoder_target_tokens']).max()), sequence)
    return {k: v[:, :length] if k in SEQUENCE_FEATURES else v for k, v in batch.items()}
  inputs = bucket_for(int(example_lengths(batch['encoder_input_tokens']).max()),
                      buckets['inputs'])
  targets = bucket_for(int(example_lengths(batch['decoder_target_tokens']).max()),
                       buckets['targets'])
  batch['encoder_input_tokens'] = batch['encoder_input_tokens'][:, :inputs]
  for key in DECODER_FEATURES:
    if key in batch:
      batch[key] = batch[key][:, :targets]
  return batch


def iterate(ds: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
  """Numpy batches."""
  return ds.as_numpy_iterator()


def split_files(name: str, split: str) -> list[str]:
  """The local files the tasks of `name` read for `split` (none for TFDS or generated data)."""
  files = []
  for task in sub_tasks(name):
    source = task.source
    local = getattr(source, 'local', source)  # A benchmark source reads through a LocalSource.
    if (isinstance(local, task_sources.LocalSource) and getattr(source, 'uses_local_files', True)
        and split in local.splits):
      files.append(str(local.path(split)))
  return files


def no_examples(name: str, split: str) -> DataError:
  """The error for a split without a single example, naming its files."""
  files = split_files(name, split)
  where = f' (read from {", ".join(files)}: empty?)' if files else ''
  return DataError(f'The {split!r} split of {name!r} has no examples{where}.')


def examples_with_flags(name: str, split: str, lengths: Mapping[str, int],
                        num_examples: Optional[int] = None) -> tf.data.Dataset:
  """The split's examples in order, trimmed as seqio trims, each with its `truncated` flags.

  The flags stay 0 when a preprocessor needs the sequence length (seqio trims).
  """
  provider = get_mixture_or_task(name)
  count = not _needs_lengths(provider)
  ds = provider.get_dataset(None if count else dict(lengths), split=split, shuffle=False,
                            num_epochs=1, trim_output_features=not count)
  if num_examples:
    ds = ds.take(num_examples)
  return ds.map(_flag_and_trim(lengths, provider.output_features))


def split_counts(name: str, split: str, lengths: Mapping[str, int],
                 num_examples: Optional[int] = None) -> dict[str, int]:
  """{'examples', 'truncated_inputs', 'truncated_targets'} of `split`, over the tasks of `name`
  that have it; DataError when one of them has no example."""
  totals = {'examples': 0, 'truncated_inputs': 0, 'truncated_targets': 0}
  for task in sub_tasks(name):
    if split not in task.splits:
      continue
    flags = [ex[TRUNCATED] for ex in
             examples_with_flags(task.name, split, lengths, num_examples).as_numpy_iterator()]
    if not flags:
      raise no_examples(task.name, split)
    totals['examples'] += len(flags)
    totals['truncated_inputs'] += int(sum(f[0] for f in flags))
    totals['truncated_targets'] += int(sum(f[1] for f in flags))
  return totals


class TruncationCounter:
  """Counts the examples whose inputs or targets were cut to the feature length."""

  def __init__(self, lengths: Mapping[str, int]):
    self.lengths = dict(lengths)
    self.examples = 0
    self.truncated = {'inputs': 0, 'targets': 0}
    self._warned = False

  def pop(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Counts the batch's flags and returns the batch without them."""
    batch = dict(batch)
    flags = batch.pop(TRUNCATED)  # [batch, 2]
    self.examples += flags.shape[0]
    for i, key in enumerate(('inputs', 'targets')):
      self.truncated[key] += int(flags[:, i].sum())
    if not self._warned and any(self.truncated.values()):
      self._warned = True
      logging.warning('Some examples are longer than TASK_FEATURE_LENGTHS=%s and are '
                      'truncated; counts are logged as truncated_inputs/truncated_targets.',
                      self.lengths)
    return batch

  def metrics(self) -> dict[str, float]:
    return {f'truncated_{key}': float(value) for key, value in self.truncated.items()}
