"""Raw examples for the tasks: official local files (jsonl/tsv) or TFDS.

Where a task reads from is decided each time a dataset is built, not at
import: a benchmark whose local directory is configured reads its official
files from there, otherwise it reads TFDS (`super_glue/<cfg>`, `glue/<cfg>`).
A directory is configured by the gin binding `local_data_dirs.<benchmark>` or,
when that is unset, by the environment variable in `ENV_VARS`; it may be a gs:// path.

Local examples have the same structure as the TFDS ones (label as class index,
-1 when absent; MultiRC one example per answer option, ReCoRD one per query),
so the same preprocessing serves both.
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import os
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import gin
import seqio
import tensorflow as tf
from etils import epath

from prompt_tuning_jax import errors
from prompt_tuning_jax import remote

ENV_VARS = {
    'superglue': 'PTJ_SUPERGLUE_DIR',
    'fewglue': 'PTJ_FEWGLUE_DIR',
    'glue': 'PTJ_GLUE_DIR',
    'mrqa': 'PTJ_MRQA_DIR',
    'summarization': 'PTJ_SUMMARIZATION_DIR',
}

Row = dict[str, Any]
Example = dict[str, Any]
RowReader = Callable[[Path], Iterator[tuple[int, Optional[Row]]]]  # None: a dropped row.
Converter = Callable[[Row, int], list[Example]]
Signature = Mapping[str, Any]  # field -> tf.TensorSpec, or a nested Signature


class TaskDataError(errors.DataError):
  """A data file is missing or malformed, or no data directory is set."""


# ------------------------------------------------------------ configuration


@gin.configurable
def local_data_dirs(superglue: Optional[str] = None,
                    fewglue: Optional[str] = None,
                    glue: Optional[str] = None,
                    mrqa: Optional[str] = None,
                    summarization: Optional[str] = None) -> dict[str, Optional[str]]:
  """Local benchmark directories; an unset one falls back to its env var."""
  bound = {'superglue': superglue, 'fewglue': fewglue, 'glue': glue, 'mrqa': mrqa,
           'summarization': summarization}
  return {name: value or os.environ.get(ENV_VARS[name]) or None
          for name, value in bound.items()}


def local_dir(benchmark: str) -> Optional[Path]:
  """The configured local directory of `benchmark`, or None (use TFDS)."""
  directory = local_data_dirs()[benchmark]
  return epath.Path(directory) if directory else None  # local or gs:// (TensorFlow's gfile)


def require_local_dir(benchmark: str) -> Path:
  """`local_dir(benchmark)`, raising a `TaskDataError` that says how to set it."""
  directory = local_dir(benchmark)
  if directory is None:
    raise TaskDataError(
        f'no local directory is set for {benchmark}: set the environment '
        f'variable {ENV_VARS[benchmark]} or the gin binding '
        f'local_data_dirs.{benchmark}')
  return directory


# ------------------------------------------------------------------ readers


def _lines(path: Path) -> Iterator[tuple[int, str]]:
  """(line number, text) of each line of a split file (a leading BOM is dropped; a `.gz`
  file is read through gzip), naming the expected path when it is missing and the line
  that is not UTF-8."""
  if not path.is_file():
    raise TaskDataError(f'missing split file: expected {path}')
  with path.open('rb') as stored:  # local or gs://; a `.gz` file through gzip
    f = gzip.GzipFile(fileobj=stored) if path.suffix == '.gz' else stored
    lineno = 0
    while True:
      try:
        raw = f.readline()
      except (gzip.BadGzipFile, zlib.error, EOFError) as err:  # Damaged or cut short.
        raise TaskDataError(f'{path}:{lineno + 1}: not a readable gzip file ({err})') from None
      if not raw:
        return
      lineno += 1
      try:
        line = raw.decode('utf-8')
      except UnicodeDecodeError as err:
        raise TaskDataError(f'{path}:{lineno}: not UTF-8 text (byte 0x{raw[err.start]:02x} at '
                            f'column {err.start + 1})') from None
      yield lineno, line.removeprefix('\ufeff') if lineno == 1 else line


def read_jsonl(path: Path) -> Iterator[tuple[int, Row]]:
  """(line number, object) for each non-blank line of a jsonl file."""
  for lineno, line in _lines(path):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as err:
      raise TaskDataError(f'{path}:{lineno}: invalid JSON ({err.msg})') from None
    if not isinstance(row, dict):
      raise TaskDataError(f'{path}:{lineno}: expected a JSON object')
    yield lineno, row


def read_tsv(path: Path,
             fieldnames: Optional[Sequence[str]] = None,
             skip_short_rows: bool = False,
             required: Sequence[str] = ()
             ) -> Iterator[tuple[int, Optional[Row]]]:
  """(line number, {column: value}) for each data row of a tab-separated file.

  Columns are named by the header row, or by `fieldnames` for a headerless
  file. No quoting (as GLUE's files and TFDS's reader). A header without the
  `required` columns is an error (none of them: the file has no header). A
  row with another number of fields is an error, except that `skip_short_rows`
  drops rows with too few (TFDS drops the few truncated QQP rows): such a row
  is yielded as None, so that it keeps its place in the row positions (TFDS's
  `idx` counts it).
  """
  numbered = ((lineno, line.rstrip('\r\n')) for lineno, line in _lines(path))
  if fieldnames is None:
    _, header = next(numbered, (0, ''))
    fieldnames = header.split('\t')
    missing = [column for column in required if column not in fieldnames]
    if missing and len(missing) == len(required):
      raise TaskDataError(
          f'{path}:1: missing header row: the first line must name the columns '
          f'(tab-separated, {", ".join(map(repr, required))} among them); it reads '
          f'{header[:80]!r}')
    if missing:
      raise TaskDataError(f'{path}:1: the header row has no column '
                          f'{", ".join(map(repr, missing))} (it names '
                          f'{", ".join(map(repr, fieldnames))})')
  for lineno, line in numbered:
    if not line:
      continue
    values = line.split('\t')
    if len(values) < len(fieldnames) and skip_short_rows:
      yield lineno, None
      continue
    if len(values) != len(fieldnames):
      raise TaskDataError(
          f'{path}:{lineno}: expected {len(fieldnames)} tab-separated '
          f'fields, found {len(values)}')
    yield lineno, dict(zip(fieldnames, values))


def read_rows(path: Path, required: Sequence[str] = ()) -> Iterator[tuple[int, Row]]:
  """`read_jsonl` or `read_tsv` (with a header naming the `required` columns), by the file's
  extension."""
  if path.suffix == '.tsv':
    return read_tsv(path, required=required)
  return read_jsonl(path)


def load_examples(path: Path, reader: RowReader,
                  convert: Converter) -> list[Example]:
  """All examples of one file; a row that fails to convert names file:line.

  `convert` gets each row with its position among the file's rows; a row the
  reader gives as None (dropped) is skipped but counted in the positions.
  """
  examples = []
  for position, (lineno, row) in enumerate(reader(path)):
    if row is None:
      continue
    try:
      examples.extend(convert(row, position))
    except KeyError as err:
      raise TaskDataError(f'{path}:{lineno}: missing field {err}') from None
    except (ValueError, TypeError, IndexError) as err:
      raise TaskDataError(f'{path}:{lineno}: {err}') from None
  return examples


# ---------------------------------------------------------- label parsing


def label_index(value: Any, label_words: Sequence[str]) -> int:
  """Class index of a raw label: a label word, an index, or a bool; -1 if absent.

  Booleans map to 0/1 (False/True); strings that are not label words are read
  as integer indices (GLUE writes `0`/`1`).
  """
  if value is None or value == '':
    return -1
  if isinstance(value, bool):
    index = int(value)
  elif isinstance(value, str) and value in label_words:
    return list(label_words).index(value)
  else:
    try:
      index = int(value)
    except ValueError:
      raise ValueError(f'label {value!r} is not one of {list(label_words)}') from None
  if not 0 <= index < len(label_words):
    raise ValueError(f'label {value!r} is not one of {list(label_words)}')
  return index


# --------------------------------------------------------- tf.data datasets


def _column(values: list[Any], spec: tf.TensorSpec):
  """One signature field of all examples as a tensor (ragged for lists)."""
  if spec.shape.rank == 1:
    flat = [item for value in values for item in value]
    return tf.RaggedTensor.from_row_lengths(
        tf.constant(flat, dtype=spec.dtype, shape=[len(flat)]),
        [len(value) for value in values])
  return tf.constant(values, dtype=spec.dtype, shape=[len(values)])


def _columns(examples: list[Example], signature: Signature):
  """Signature-shaped structure of columns."""
  return {
      key: (_columns([ex[key] for ex in examples], spec)
            if isinstance(spec, Mapping) else
            _column([ex[key] for ex in examples], spec))
      for key, spec in signature.items()
  }


def examples_to_dataset(examples: list[Example],
                        signature: Signature) -> tf.data.Dataset:
  """A dataset of `examples`, restricted to (and typed by) `signature`."""
  columns = _columns(examples, signature)
  ds = tf.data.Dataset.from_tensor_slices(columns)
  # Slices of ragged columns are plain tensors; make the spec say so.
  return ds.map(lambda ex: tf.nest.map_structure(tf.identity, ex))


def select(ex: Mapping[str, Any], signature: Signature) -> dict[str, Any]:
  """The fields of `ex` named by `signature` (recursively)."""
  return {key: select(ex[key], spec) if isinstance(spec, Mapping) else ex[key]
          for key, spec in signature.items()}


# ------------------------------------------------------------- data sources


@dataclasses.dataclass(frozen=True)
class FileFormat:
  """How a task's local files become examples."""
  read: RowReader
  convert: Converter
  signature: Signature


class LocalSource(seqio.DataSource):
  """Examples read from one local file per split (jsonl or tsv)."""

  def __init__(self, splits: Sequence[str], locate: Callable[[str], Path],
               file_format: FileFormat):
    """`locate(split)` gives the file of a split (and may raise TaskDataError)."""
    super().__init__(splits=splits)
    self._locate = locate
    self._format = file_format

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return False

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]

  def path(self, split: str) -> Path:
    """The file read for `split`."""
    if split not in self.splits:
      raise TaskDataError(f'unknown split {split!r}; splits are {list(self.splits)}')
    return self._locate(split)

  def read_split(self, split: str) -> list[Example]:
    """All examples of `split` as python dicts (TFDS structure)."""
    return load_examples(self.path(split), self._format.read,
                         self._format.convert)

  def get_dataset(self, split: str = 'train', shuffle: bool = True,
                  seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, *,
                  sequence_length=None, use_cached=False,
                  num_epochs=1) -> tf.data.Dataset:
    del shuffle, seed, sequence_length, use_cached, num_epochs  # In memory.
    ds = examples_to_dataset(self.read_split(split), self._format.signature)
    if shard_info:
      ds = ds.shard(shard_info.num_shards, shard_info.index)
    return ds


class BenchmarkSource(seqio.DataSource):
  """A benchmark task read from its local directory when set, else from TFDS."""

  def __init__(self, benchmark: str, task_dir: str,
               split_files: Mapping[str, str], file_format: FileFormat,
               tfds_name: Optional[str], *,
               tfds_splits: Optional[Mapping[str, str]] = None,
               tfds_fields: Optional[Mapping[str, str]] = None):
    """Local files are `<dir>/<task_dir>/<split_files[split]>`.

    `tfds_name` None means the benchmark exists only as local files. `tfds_splits` maps a
    split to the TFDS split that holds it (default: the same name), `tfds_fields` a
    signature field to the TFDS feature that holds it (default: the same name).
    """
    super().__init__(splits=tuple(split_files))
    self.benchmark = benchmark
    self.tfds_name = tfds_name
    self._task_dir = task_dir
    self._split_files = dict(split_files)
    self._tfds_splits = {split: (tfds_splits or {}).get(split, split) for split in self.splits}
    self._tfds_fields = dict(tfds_fields or {})
    self.local = LocalSource(self.splits, self._local_path, file_format)
    self._signature = file_format.signature
    self._tfds_checked = False

  def _local_path(self, split: str) -> Path:
    root = require_local_dir(self.benchmark)
    return root / self._task_dir / self._split_files[split]

  @property
  def uses_local_files(self) -> bool:
    """Whether datasets come from local files now (else TFDS)."""
    return self.tfds_name is None or local_dir(self.benchmark) is not None

  @functools.cached_property
  def _tfds(self) -> seqio.TfdsDataSource:
    return seqio.TfdsDataSource(tfds_name=self.tfds_name, splits=self._tfds_splits)

  def check_available(self) -> None:
    """Raises TaskDataError, naming the local-files alternative, when TFDS needs a download
    it cannot make.

    Only a dataset not yet prepared is downloaded; its first download URL is
    probed (an HTTP HEAD, PTJ_REMOTE_TIMEOUT_S seconds at most), so that a
    machine without network fails at once instead of after TFDS's retries.
    """
    if self.uses_local_files or self._tfds_checked:
      return
    builder = self._tfds.tfds_dataset.builder
    if not builder.is_prepared():
      # The config's own download, or any of the builder's.
      own = getattr(builder.builder_config, 'data_url', None)
      urls = [own] if isinstance(own, str) else sorted(builder.url_infos or ())
      failure = urls and _unreachable(urls[0])
      if failure:
        files = ', '.join(sorted(set(self._split_files.values())))
        raise TaskDataError(
            f'TFDS {self.tfds_name} is not prepared in {builder.data_dir_root} and its '
            f'download cannot be reached ({urls[0]}: {failure}; no network?). Use the local '
            f'files instead: set {ENV_VARS[self.benchmark]} (or --gin.local_data_dirs.'
            f'{self.benchmark}) to a directory holding {self._task_dir}/ with {files}.')
    self._tfds_checked = True

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return False

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]

  def get_dataset(self, split: str = 'train', shuffle: bool = True,
                  seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, *,
                  sequence_length=None, use_cached=False,
                  num_epochs=1) -> tf.data.Dataset:
    del sequence_length, use_cached, num_epochs  # Unused by sources.
    if self.uses_local_files:
      return self.local.get_dataset(split, shard_info=shard_info)
    self.check_available()
    ds = self._tfds.get_dataset(split=split, shuffle=shuffle, seed=seed,
                                shard_info=shard_info)
    if self._tfds_fields:
      ds = ds.map(lambda ex: {**ex, **{field: ex[feature]
                                       for field, feature in self._tfds_fields.items()}})
    return ds.map(functools.partial(select, signature=self._signature))

  def __repr__(self) -> str:
    return (f'BenchmarkSource({self.benchmark}/{self._task_dir}, '
            f'tfds={self.tfds_name}, splits={list(self.splits)})')


def _unreachable(url: str) -> Optional[str]:
  """None when `url` answers an HTTP HEAD within the remote timeout, else why not."""
  import requests  # pylint: disable=g-import-not-at-top  (TFDS's own dependency)
  try:
    requests.head(url, timeout=remote.timeout_s(), allow_redirects=True)
  except requests.RequestException as e:
    return type(e).__name__
  return None
