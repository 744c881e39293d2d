"""MRQA 2019 (the paper's Table 1) as seqio tasks: SQuAD in domain, six sets out of domain.

Registered (see README.md for the format):

  mrqa_squad_v001                               train, validation (in domain)
  mrqa_{textbookqa,bioasq,race,relation_extraction,duorc,drop}_v001   validation
  mixtures mrqa_out_of_domain_v001 (the six) and squad_to_mrqa_v001 (trains on
  SQuAD; evaluates SQuAD and the six)

One example per question: 'question: <question> context: <context>' -> the first gold
answer, punctuation padded as T5's SQuAD task; the context comes last, so a long one is cut
at the feature length (and counted, as every cut input). Scored by SQuAD exact match and F1,
each the best over all gold answers (`metrics.squad`).

Reads the official MRQA files when `PTJ_MRQA_DIR` (or the gin binding
`local_data_dirs.mrqa`) is set: `<dir>/train/SQuAD.jsonl.gz`, `<dir>/dev/SQuAD.jsonl.gz`
and `<dir>/dev/<Dataset>.jsonl.gz` (`.jsonl` if unzipped), each a header object on line 1
and then one context per line with its `qas`. Otherwise TFDS `mrqa/<config>`, whose
out-of-domain sets are its `test` split.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterator

import seqio
import tensorflow as tf

from . import formats
from . import metrics
from . import postprocessors
from . import registry
from . import sources

TFDS_VERSION = '1.0.0'
SQUAD = 'mrqa_squad_v001'
OUT_OF_DOMAIN_MIXTURE = 'mrqa_out_of_domain_v001'
SQUAD_TO_MRQA_MIXTURE = 'squad_to_mrqa_v001'


@dataclasses.dataclass(frozen=True)
class MrqaSet:
  """One MRQA dataset: its key, official file name and TFDS config."""
  key: str  # textbookqa, ...: the task is mrqa_<key>_v001
  file_name: str  # TextbookQA: <dir>/dev/TextbookQA.jsonl.gz
  tfds_config: str
  domain: str  # as the paper's Table 1

  @property
  def task_name(self) -> str:
    return f'mrqa_{self.key}_v001'


IN_DOMAIN = MrqaSet('squad', 'SQuAD', 'squad', 'Wiki')
# The paper's Table 1 rows, in its order.
OUT_OF_DOMAIN = (
    MrqaSet('textbookqa', 'TextbookQA', 'textbook_qa', 'Book'),
    MrqaSet('bioasq', 'BioASQ', 'bio_asq', 'Bio'),
    MrqaSet('race', 'RACE', 'race', 'Exam'),
    MrqaSet('relation_extraction', 'RelationExtraction', 'relation_extraction', 'Wiki'),
    MrqaSet('duorc', 'DuoRC.ParaphraseRC', 'duo_rc', 'Movie'),
    MrqaSet('drop', 'DROP', 'drop', 'Wiki'),
)

_TEXT = tf.TensorSpec([], tf.string)
SIGNATURE = {'context': _TEXT, 'question': _TEXT, 'qid': _TEXT,
             'answers': tf.TensorSpec([None], tf.string)}


def read_mrqa(path: Path) -> Iterator[tuple[int, sources.Row]]:
  """(line number, context object) of an MRQA file after its header line.

  A missing `.jsonl.gz` is looked for unzipped (`.jsonl`) too.
  """
  if not path.is_file() and path.suffix == '.gz' and path.with_suffix('').is_file():
    path = path.with_suffix('')
  rows = sources.read_jsonl(path)
  first = next(rows, None)
  if first is None or 'header' not in first[1]:
    where = f'{path}:{first[0]}' if first else str(path)
    raise sources.TaskDataError(f'{where}: expected the MRQA header line '
                                '({"header": {"dataset": ..., "split": ...}}) first')
  yield from rows


def convert_context(row: sources.Row, position: int) -> list[dict[str, Any]]:
  """One context line -> one example per question, with all its gold answers."""
  del position
  examples = []
  for qa in row['qas']:
    answers = [str(answer) for answer in qa['answers']]
    if not answers:
      raise ValueError(f'question {qa["qid"]!r} has no answers')
    examples.append({'context': str(row['context']), 'question': str(qa['question']),
                     'qid': str(qa['qid']), 'answers': answers})
  return examples


FILE_FORMAT = sources.FileFormat(read_mrqa, convert_context, SIGNATURE)

TASK_FORMAT = registry.TaskFormat(
    format_fn=formats.squad, prefix='', postprocess_fn=postprocessors.qa,
    metric_fns=(metrics.squad,))


def mrqa_source(dataset: MrqaSet) -> sources.BenchmarkSource:
  """Local `<dir>/{train,dev}/<File>.jsonl.gz` or TFDS `mrqa/<config>`."""
  if dataset is IN_DOMAIN:
    files = {'train': f'train/{dataset.file_name}.jsonl.gz',
             'validation': f'dev/{dataset.file_name}.jsonl.gz'}
    tfds_splits = None
  else:  # Out of domain: MRQA's dev set, TFDS's test split.
    files = {'validation': f'dev/{dataset.file_name}.jsonl.gz'}
    tfds_splits = {'validation': 'test'}
  return sources.BenchmarkSource('mrqa', '.', files, FILE_FORMAT,
                                 f'mrqa/{dataset.tfds_config}:{TFDS_VERSION}',
                                 tfds_splits=tfds_splits)


def _register() -> None:
  for dataset in (IN_DOMAIN, *OUT_OF_DOMAIN):
    registry.register(dataset.task_name, mrqa_source(dataset), TASK_FORMAT)
  out_of_domain = [dataset.task_name for dataset in OUT_OF_DOMAIN]
  seqio.MixtureRegistry.add(OUT_OF_DOMAIN_MIXTURE, [(name, 1.0) for name in out_of_domain])
  # Trains on SQuAD only (the others have no train split); evaluates all seven.
  seqio.MixtureRegistry.add(SQUAD_TO_MRQA_MIXTURE,
                            [(SQUAD, 1.0)] + [(name, 0.0) for name in out_of_domain])


_register()
