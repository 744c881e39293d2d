"""The loss curve of the shipped mini model's pre-training (docs/figures/pretraining_loss.png).

  python -m benchmarks.pretraining_curve [--output docs/figures/pretraining_loss.png]

Reads the metrics that `launch/pretrain_mini.sh` wrote and that ship with the
model (`prompt_tuning_jax/pretrained/t5_mini/pretraining/*_metrics.jsonl`), and
prints each stage's last loss and median throughput.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Optional, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOGS = os.path.join(REPO, 'prompt_tuning_jax', 'pretrained', 't5_mini', 'pretraining')
STAGES = {'span corruption (word-vector embedding)': os.path.join(LOGS, 'span_metrics.jsonl'),
          'LM adaptation': os.path.join(LOGS, 'lm_metrics.jsonl')}


def read_train_records(path: str) -> list[dict]:
  """The train records of a metrics.jsonl, by step (a resumed run's rewrite wins)."""
  by_step = {}
  with open(path) as f:
    for line in f:
      record = json.loads(line)
      if record.get('split') == 'train':
        by_step[record['step']] = record
  return [by_step[s] for s in sorted(by_step)]


def plot(stages: dict[str, str], path: str, batch_size: int = 32) -> dict[str, dict]:
  """Loss per target token against real tokens seen, the stages one after another."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(7, 4))
  figures, offset = {}, 0.0
  for stage, metrics_file in stages.items():
    records = read_train_records(metrics_file)
    tokens_per_step = batch_size * float(np.median(
        [r['tokens_per_second'] / r['examples_per_second'] for r in records]))
    x = [offset + r['step'] * tokens_per_step / 1e6 for r in records]
    ax.plot(x, [r['loss'] for r in records], label=stage)
    offset = x[-1]
    figures[stage] = {'steps': records[-1]['step'], 'loss': records[-1]['loss'],
                      'accuracy': records[-1]['accuracy'], 'million_tokens': x[-1],
                      'tokens_per_second': float(np.median(
                          [r['tokens_per_second'] for r in records]))}
  ax.set_xlabel('real (non-padding) tokens seen, millions')
  ax.set_ylabel('loss per target token')
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return figures


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--output', default=os.path.join(REPO, 'docs', 'figures',
                                                       'pretraining_loss.png'))
  args = parser.parse_args(argv)
  for stage, values in plot(STAGES, args.output).items():
    print(f'{stage}: step {values["steps"]}, loss {values["loss"]:.3f}, token accuracy '
          f'{values["accuracy"]:.3f}, {values["million_tokens"]:.1f}M tokens so far, '
          f'{values["tokens_per_second"]:.0f} tokens/s (median)')
  print(f'Wrote {args.output}')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
