"""The Fig. 3c driver (benchmarks/fig3c.py): its runs, their flags, its table."""
from __future__ import annotations

from benchmarks import fig3c
from benchmarks import reproduction


def test_the_runs_and_their_flags():
  cells = fig3c.cells()
  assert len(cells) == len({c.name for c in cells}) == 2 * 3 * 3
  sentinel = fig3c.Cell('sst2', 'span_sentinel', 1)
  assert sentinel.name == 'sst2-span_corruption-sentinel-p100-class_labels-s1'
  flags = reproduction.train_flags(sentinel.study_run, reproduction.Setting(), '/m',
                                   reproduction.CHECKPOINTS)
  assert '--gin.TARGET_SENTINEL=True' in flags and '--gin.PROMPT_LENGTH=100' in flags
  assert f'--gin.INITIAL_CHECKPOINT_PATH={reproduction.CHECKPOINTS["span_corruption"]}' in flags
  # The other arms are the study's own runs (the same names, no sentinel flag).
  span = fig3c.Cell('sst2', 'span_only', 1).study_run
  assert span == reproduction.Run('sst2', model='span_corruption', prompt_length=100, seed=1)
  assert not any('SENTINEL' in f for f in reproduction.train_flags(
      span, reproduction.Setting(), '/m', reproduction.CHECKPOINTS))
  smoke = fig3c.smoke_flags(fig3c.Cell('smoke', 'span_sentinel', 2), '/m',
                            reproduction.CHECKPOINTS)
  assert smoke == ['--gin_file=runs/smoke_pretrained.gin', '--gin.MODEL_DIR=/m', '--gin.SEED=2',
                   f'--gin.INITIAL_CHECKPOINT_PATH={reproduction.CHECKPOINTS["span_corruption"]}',
                   '--gin.TARGET_SENTINEL=True']
  assert '--gin.TARGET_SENTINEL=True' not in fig3c.smoke_flags(
      fig3c.Cell('smoke', 'lm_adapted', 2), '/m', reproduction.CHECKPOINTS)


def test_the_table_has_every_arm_its_seeds_and_the_comparisons():
  accuracy = {'span_only': (50.0, 52.0, 54.0), 'span_sentinel': (60.0, 61.0, 62.0),
              'lm_adapted': (70.0, 70.0, 70.0)}
  results = [{'task': 'sst2', 'arm': arm, 'seed': seed, 'accuracy': value,
              'decode_accuracy': value - 10}
             for arm, values in accuracy.items() for seed, value in enumerate(values)]
  summary = fig3c.summarise(results)
  assert summary['sst2']['span_sentinel']['rank']['mean'] == 61.0
  text = fig3c.table(summary)
  assert '| sst2 | rank classification | 52.0 ± 1.6 (n=3): 50.0 / 52.0 / 54.0 |' in text
  claims = {(c.claim, c.task): c for c in fig3c.comparisons(summary)}
  helps = claims['the sentinel helps the span-corruption model (Fig. 3c), rank', 'sst2']
  assert helps.difference == 9.0 and helps.verdict == 'held'
  # A driver run on some arms only tabulates what it ran.
  partial = fig3c.summarise([r for r in results if r['arm'] != 'lm_adapted'])
  assert 'not run' in fig3c.table(partial)
  assert len(fig3c.comparisons(partial)) == 2  # rank and decode: the sentinel only
