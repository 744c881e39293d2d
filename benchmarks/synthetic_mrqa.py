"""A synthetic SQuAD in the official MRQA layout, small enough for the mini model.

  python -m benchmarks.synthetic_mrqa --out /tmp/mrqa [--train 2000 --dev 200 --seed 0]
  PTJ_MRQA_DIR=/tmp/mrqa ptj train --gin.MIXTURE_OR_TASK_NAME=mrqa_squad_v001 ...

Writes `<out>/train/SQuAD.jsonl.gz` and `<out>/dev/SQuAD.jsonl.gz` as `tasks/qa.py` reads
them (a header line, then one context a line with its `qas`, `answers` and
`detected_answers`). Each context states four facts about different people in generated
sentences ('Maria lives in Lisbon.', 'Tom works as a baker.', ...); each question asks one of
them back ('Where does Maria live?'), so the answer is a span that only reading the
context finds: the other facts of the same kind are distractors. Used for the QA
measurement on `t5_mini` in docs/reproduction.md.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
from typing import Any, Optional, Sequence

NAMES = ('Maria', 'Tom', 'Anna', 'Peter', 'Laura', 'James', 'Sofia', 'David', 'Emma', 'John',
         'Clara', 'Paul', 'Alice', 'Henry', 'Lucy', 'George', 'Helen', 'Frank', 'Rose',
         'Victor', 'Julia', 'Oscar', 'Nina', 'Simon')
CITIES = ('Paris', 'London', 'Berlin', 'Rome', 'Madrid', 'Lisbon', 'Vienna', 'Dublin',
          'Prague', 'Oslo', 'Athens', 'Boston', 'Chicago', 'Toronto', 'Cairo', 'Tokyo')
JOBS = ('baker', 'teacher', 'doctor', 'farmer', 'painter', 'pilot', 'lawyer', 'singer',
        'nurse', 'writer', 'driver', 'cook', 'judge', 'sailor', 'tailor', 'miner')
COLOURS = ('red', 'blue', 'green', 'black', 'white', 'yellow', 'brown', 'grey')
THINGS = ('car', 'house', 'boat', 'coat', 'bicycle', 'dog', 'hat', 'door')
# A fact: (its sentence, its question, the answer's field), formatted with one person.
FACTS = (
    ('{name} lives in {city}.', 'Where does {name} live?', 'city'),
    ('{name} works as a {job}.', 'What does {name} work as?', 'job'),
    ('{name} was born in {year}.', 'When was {name} born?', 'year'),
    ('{name} has a {colour} {thing}.', 'What colour is the {thing} of {name}?', 'colour'),
)
FACTS_PER_CONTEXT = 4
QUESTIONS_PER_CONTEXT = 2


def _slots(rng: random.Random, name: str) -> dict[str, str]:
  return {'name': name, 'city': rng.choice(CITIES), 'job': rng.choice(JOBS),
          'year': str(rng.randint(1900, 1999)), 'colour': rng.choice(COLOURS),
          'thing': rng.choice(THINGS)}


def context_line(rng: random.Random, index: int, split: str) -> dict[str, Any]:
  """One MRQA context object: four facts about four people, two of them asked back."""
  people = rng.sample(NAMES, FACTS_PER_CONTEXT)
  facts = [(rng.choice(FACTS), _slots(rng, name)) for name in people]
  sentences = [sentence.format(**slots) for (sentence, _, _), slots in facts]
  context = ' '.join(sentences)
  qas = []
  for k in rng.sample(range(FACTS_PER_CONTEXT), QUESTIONS_PER_CONTEXT):
    (_, question, field), slots = facts[k]
    answer = slots[field]
    sentence_start = sum(len(s) + 1 for s in sentences[:k])
    start = sentence_start + sentences[k].rindex(answer)
    assert context[start:start + len(answer)] == answer
    qas.append({'qid': f'{split}-{index}-{k}', 'question': question.format(**slots),
                'answers': [answer],
                'detected_answers': [{'text': answer,
                                      'char_spans': [[start, start + len(answer) - 1]]}]})
  return {'id': f'{split}-{index}', 'context': context, 'qas': qas}


def write_split(path: str, split: str, contexts: int, rng: random.Random) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with gzip.open(path, 'wt') as f:
    f.write(json.dumps({'header': {'dataset': 'SQuAD', 'split': split,
                                   'note': 'synthetic (benchmarks/synthetic_mrqa.py)'}}) + '\n')
    for i in range(contexts):
      f.write(json.dumps(context_line(rng, i, split)) + '\n')


def write(out: str, train: int, dev: int, seed: int) -> None:
  """The two files; the same seed writes the same bytes (gzip's header time aside)."""
  rng = random.Random(seed)
  write_split(os.path.join(out, 'train', 'SQuAD.jsonl.gz'), 'train', train, rng)
  write_split(os.path.join(out, 'dev', 'SQuAD.jsonl.gz'), 'dev', dev, rng)


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--out', required=True, help='the MRQA directory to write')
  p.add_argument('--train', type=int, default=2000, help='train contexts (2 questions each)')
  p.add_argument('--dev', type=int, default=200, help='dev contexts (2 questions each)')
  p.add_argument('--seed', type=int, default=0)
  args = p.parse_args(argv)
  write(args.out, args.train, args.dev, args.seed)
  print(f'wrote {args.train} + {args.dev} contexts to {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
