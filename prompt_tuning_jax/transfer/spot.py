"""SPoT (Vu et al., 2022): rank trained source prompts for a target task by task similarity.

A task's embedding is a prompt trained on it (the paper's "task prompts as task
embeddings"); two prompts' similarity is one of the paper's two metrics:
- `average_tokens` (cosine similarity of average tokens): the cosine of the two prompts'
  mean rows;
- `per_token` (per-token average cosine similarity): the mean cosine over every pair of
  rows, one from each prompt.
The target's own prompt (trained briefly on the target) ranks the library of source prompts;
SPoT then starts the target's prompt from the best source's file (prompts/from_file_transfer.gin,
PROMPT_FILE), which needs the source's shape.

`main` is `ptj spot`: the ranking, and the flags that start the target from the best (or a
chosen) source.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from typing import Any, Optional, Sequence

import numpy as np

from prompt_tuning_jax import checkpoints
from prompt_tuning_jax import config
from prompt_tuning_jax.errors import UsageError
from prompt_tuning_jax.many_prompts.bank import parse_bank_spec

AVERAGE_TOKENS, PER_TOKEN = 'average_tokens', 'per_token'
METRICS = (AVERAGE_TOKENS, PER_TOKEN)
_EPS = 1e-12


def _unit_rows(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), _EPS)


def similarity(a: np.ndarray, b: np.ndarray, metric: str = AVERAGE_TOKENS) -> float:
  """The task similarity of two prompts [P_a, H] and [P_b, H] (lengths may differ)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise UsageError(f'Prompts of shapes {a.shape} and {b.shape} do not share a width.')
  if metric == AVERAGE_TOKENS:
    return float(_unit_rows(a.mean(axis=0)) @ _unit_rows(b.mean(axis=0)))
  if metric == PER_TOKEN:
    return float(np.mean(_unit_rows(a) @ _unit_rows(b).T))
  raise UsageError(f'Unknown task similarity {metric!r}; expected one of {METRICS}.')


def rank(target: np.ndarray, sources: Mapping[str, np.ndarray],
         metric: str = AVERAGE_TOKENS) -> list[tuple[str, float]]:
  """(name, similarity to the target) of every source, most similar first (ties: by name)."""
  scored = [(name, similarity(target, prompt, metric)) for name, prompt in sources.items()]
  return sorted(scored, key=lambda item: (-item[1], item[0]))


def main(argv: Optional[Sequence[str]] = None) -> int:
  """`ptj spot`; returns the exit status."""
  p = argparse.ArgumentParser(
      prog='ptj spot',
      description='SPoT (Vu et al., 2022): rank source prompts by their task similarity to a '
      "target task's prompt, and print the flags that start the target's prompt from the "
      'best (or --choose) source.')
  p.add_argument('--target', required=True,
                 help="a prompt trained (briefly) on the target task: the target's embedding")
  p.add_argument('--source', action='append', required=True, metavar='NAME=FILE',
                 help='a source prompt trained on another task (repeatable)')
  p.add_argument('--metric', choices=METRICS, default=AVERAGE_TOKENS,
                 help='average_tokens: cosine of the mean rows; per_token: mean cosine of '
                 'every pair of rows')
  p.add_argument('--choose', metavar='NAME', help='start from this source instead of the best')
  p.add_argument('--output', help='write the ranking as json')
  args = p.parse_args(argv)

  def run() -> int:
    paths = parse_bank_spec(args.source)
    if args.choose is not None and args.choose not in paths:
      raise UsageError(f'--choose {args.choose!r} is not a source; the sources are '
                       f'{sorted(paths)}.')
    target = checkpoints.load_prompt(args.target)
    sources = {name: checkpoints.load_prompt(path) for name, path in paths.items()}
    ranking = rank(target, sources, args.metric)
    chosen = args.choose or ranking[0][0]
    lines = [f'Sources ranked by {args.metric} similarity to {args.target} '
             f'{tuple(target.shape)}:']
    width = max(map(len, paths))
    for i, (name, score) in enumerate(ranking, 1):
      lines.append(f'  {i:2d}. {name:<{width}}  {score:+.4f}  {paths[name]} '
                   f'{tuple(sources[name].shape)}')
    shape = sources[chosen].shape
    lines += [f'Start the target from {chosen!r} ({"chosen" if args.choose else "best"}):',
              f'  ptj train ... --gin_file=prompts/from_file_transfer.gin '
              f'--gin.PROMPT_FILE={paths[chosen]} --gin.PROMPT_LENGTH={shape[0]}']
    result: dict[str, Any] = {'target': args.target, 'metric': args.metric,
                              'ranking': [{'name': n, 'similarity': s, 'prompt_file': paths[n]}
                                          for n, s in ranking],
                              'chosen': chosen, 'prompt_file': paths[chosen]}
    if args.output:
      os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
      with open(args.output, 'w', encoding='utf-8') as f:
        json.dump(result, f, indent=1)
      lines.append(f'  written to {args.output}')
    print('\n'.join(lines), flush=True)
    return 0

  return config.report_errors('spot', run)


if __name__ == '__main__':
  sys.exit(main())
