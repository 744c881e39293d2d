"""Text-to-text formats (T5 conventions), as pure functions over example dicts.

Each format takes one raw example (TFDS structure: text fields, `label` as a
class index or -1) and a `prefix` (the task word, or None for the `taskless_`
variants) and returns `{'inputs': str, 'targets': str}`:

  inputs  = '<prefix> <key1>: <value1> <key2>: <value2> ...'
  targets = the label word, or '<unk>' for an unlabeled (test) example.
"""
from __future__ import annotations

import re
import string
from typing import Any, Mapping, Optional, Sequence

import numpy as np

UNLABELED = '<unk>'

Example = Mapping[str, Any]
Formatted = dict[str, str]


def label_target(label: int, label_words: Sequence[str]) -> str:
  """The label word of class `label`, or '<unk>' when it has none."""
  return label_words[label] if 0 <= label < len(label_words) else UNLABELED


def join_fields(prefix: Optional[str],
                fields: Sequence[tuple[str, str]]) -> str:
  """'<prefix> key: value key: value ...' (no prefix when it is None)."""
  parts = [prefix] if prefix else []
  parts.extend(f'{key}: {value}' for key, value in fields)
  return ' '.join(parts)


def classification(ex: Example, prefix: Optional[str], *,
                   fields: Sequence[str],
                   label_words: Sequence[str]) -> Formatted:
  """The generic GLUE/SuperGLUE format: named fields in, label word out."""
  return {
      'inputs': join_fields(prefix, [(key, ex[key]) for key in fields]),
      'targets': label_target(ex['label'], label_words),
  }


def _strip_html(text: str) -> str:
  """Drops the `<br>`/`<b>` markup of MultiRC paragraphs (as T5 does)."""
  return re.sub(r'</?b>', '', text.replace('<br>', ' '))


def multirc(ex: Example, prefix: Optional[str], *,
            label_words: Sequence[str]) -> Formatted:
  """'multirc question: Q answer: A paragraph: P' -> False/True."""
  formatted = classification(ex, prefix,
                             fields=('question', 'answer', 'paragraph'),
                             label_words=label_words)
  formatted['inputs'] = _strip_html(formatted['inputs'])
  return formatted


def stsb(ex: Example, prefix: Optional[str]) -> Formatted:
  """'stsb sentence1: A sentence2: B' -> score rounded to 0.2, e.g. '3.8'.

  Rounded as T5 does (`tf.round(label * 5) / 5` on the float32 label): in
  float32, halves to even, so a score halfway between two steps (0.1, 0.7,
  2.5, ...) gets T5's target.
  """
  label = np.float32(ex['label'])
  rounded = np.round(label * np.float32(5)) / np.float32(5)
  return {
      'inputs': join_fields(prefix, [('sentence1', ex['sentence1']),
                                     ('sentence2', ex['sentence2'])]),
      'targets': f'{rounded:.1f}' if label >= 0 else UNLABELED,
  }


def _record_passage(passage: str) -> str:
  """ReCoRD passage with its '@highlight' lines joined as sentences."""
  passage = re.sub(r'([.?!"\'])\n@highlight\n', r'\1 ', passage)
  return passage.replace('\n@highlight\n', '. ')


def record(ex: Example, prefix: Optional[str]) -> Formatted:
  """'record query: Q entities: E1, E2 passage: P' -> the first answer.

  The task repeats the example once per gold answer (see preprocessors).
  """
  answers = list(ex['answers'])
  return {
      'inputs': join_fields(prefix, [
          ('query', ex['query']),
          ('entities', ', '.join(ex['entities'])),
          ('passage', _record_passage(ex['passage'])),
      ]),
      'targets': answers[0] if answers else UNLABELED,
  }


# ------------------------------------------------------------------- WSC


def _match_length(words: Sequence[str], index: int, span: str) -> int:
  """Length of `span` if the words from `index` start with it, else 0.

  Case-insensitive and whole-word: the span may not end inside a word.
  """
  rest = ' '.join(words[index:])
  if not span or not rest.lower().startswith(span.lower()):
    return 0
  whole_word = len(rest) == len(span) or not rest[len(span)].isalnum()
  return len(span) if whole_word else 0


def find_span(text: str, span: str, index: int) -> Optional[tuple[int, str]]:
  """(word index, span as spelled in `text`) nearest to word `index`.

  Spans are matched without case, and retried without a trailing '.' (the
  fixes TFDS `wsc.fixed` applies). None if the span is not in the text.
  """
  words = text.split(' ')
  for candidate in (span, span.rstrip('.')):
    found = [(abs(i - index), i, length) for i in range(len(words))
             if (length := _match_length(words, i, candidate))]
    if found:
      _, start, length = min(found)
      return start, ' '.join(words[start:])[:length]
  return None


def mark_span(text: str, found: Optional[tuple[int, str]], left: str,
              right: str) -> str:
  """`text` with the span `found` by `find_span` wrapped in left/right marks.

  Unchanged when the span was not found.
  """
  if found is None:
    return text
  start, spelled = found
  words = text.split(' ')
  before = ' '.join(words[:start])
  rest = ' '.join(words[start:])
  marked = f'{left}{spelled}{right}{rest[len(spelled):]}'
  return f'{before} {marked}' if before else marked


def wsc(ex: Example, prefix: Optional[str], *,
        label_words: Sequence[str]) -> Formatted:
  """'wsc text: ... * noun * ... # pronoun # ...' -> False/True.

  The candidate referent (span1) is wrapped in '* ... *' and the pronoun
  (span2) in '# ... #'.
  """
  referent = find_span(ex['text'], ex['span1_text'], ex['span1_index'])
  text = mark_span(ex['text'], referent, '* ', ' *')
  # The two marks around the referent are words of their own.
  shift = 2 if referent and referent[0] < ex['span2_index'] else 0
  pronoun = find_span(text, ex['span2_text'], ex['span2_index'] + shift)
  text = mark_span(text, pronoun, '# ', ' #')
  return {
      'inputs': join_fields(prefix, [('text', text)]),
      'targets': label_target(ex['label'], label_words),
  }


def wsc_simple(ex: Example, prefix: Optional[str]) -> Formatted:
  """T5's `wsc_simple`: 'wsc: ... *pronoun* ...' -> the candidate referent.

  The target is span1 as spelled in the text, whatever the label; training
  keeps only the correct referents.
  """
  pronoun = find_span(ex['text'], ex['span2_text'], ex['span2_index'])
  text = mark_span(ex['text'], pronoun, '*', '*')
  found = find_span(ex['text'], ex['span1_text'], ex['span1_index'])
  referent = found[1] if found else ex['span1_text']
  inputs = f'{prefix}: {text}' if prefix else text
  return {'inputs': inputs, 'targets': referent}


# ------------------------------------------------------ QA, summarization

_PUNCTUATION = re.compile(f'([{re.escape(string.punctuation)}])')


def pad_punctuation(text: str) -> str:
  """T5's SQuAD spacing: a space on each side of every ASCII punctuation mark, whitespace runs
  collapsed ('Who's there?' -> "Who ' s there ?")."""
  return ' '.join(_PUNCTUATION.sub(r' \1 ', text).split())


def squad(ex: Example, prefix: Optional[str]) -> Formatted:
  """T5's SQuAD format: 'question: Q context: C' -> the first answer, punctuation padded.

  The context is cut to the feature length by the pipeline (it comes last).
  """
  answers = list(ex['answers'])
  return {
      'inputs': join_fields(prefix, [('question', pad_punctuation(ex['question'])),
                                     ('context', pad_punctuation(ex['context']))]),
      'targets': pad_punctuation(answers[0]) if answers else UNLABELED,
  }


def summarize(ex: Example, prefix: Optional[str]) -> Formatted:
  """T5's summarization format: 'summarize: <document>' (whitespace runs collapsed) -> the
  summary."""
  document = ' '.join(ex['document'].split())
  return {'inputs': f'{prefix}: {document}' if prefix else document,
          'targets': ex['summary']}
