"""SPoT (`transfer/spot.py`, `ptj spot`): task similarity of prompts, ranking, the transfer start."""
from __future__ import annotations

import numpy as np
import pytest

from prompt_tuning_jax import checkpoints
from prompt_tuning_jax import cli
from prompt_tuning_jax import config
from prompt_tuning_jax import run_setup
from prompt_tuning_jax.checkpoints import tree
from prompt_tuning_jax.errors import UsageError
from prompt_tuning_jax.transfer import spot

pytestmark = pytest.mark.usefixtures('restore_ptj_global_state')

H = 64  # the smoke model's width (runs/smoke.gin: byte_tiny)


def hand_made(seed=0, rows=10):
  """A target prompt whose rows lean along one direction, and sources at known angles."""
  rng = np.random.default_rng(seed)
  direction, other = np.eye(H)[0], np.eye(H)[1]

  def prompt(axis, length=rows):
    return (3 * axis + 0.1 * rng.standard_normal((length, H))).astype(np.float32)
  return prompt(direction), {
      'same_task': prompt(direction, rows + 5),  # lengths may differ
      'related': prompt((direction + other) / np.sqrt(2)),
      'unrelated': prompt(other),
      'opposite': prompt(-direction)}


@pytest.mark.parametrize('metric', spot.METRICS)
def test_task_similarity_ranks_hand_made_prompts(metric):
  target, sources = hand_made()
  ranking = spot.rank(target, sources, metric)
  assert [name for name, _ in ranking] == ['same_task', 'related', 'unrelated', 'opposite']
  scores = dict(ranking)
  assert scores['same_task'] > 0.8 and scores['opposite'] < -0.8
  assert abs(scores['unrelated']) < 0.1
  assert spot.similarity(target, target, metric) == pytest.approx(
      1.0 if metric == spot.AVERAGE_TOKENS else np.mean(
          (target / np.linalg.norm(target, axis=1, keepdims=True))
          @ (target / np.linalg.norm(target, axis=1, keepdims=True)).T))


def test_the_two_metrics_by_hand():
  a = np.array([[1.0, 0.0], [0.0, 1.0]])
  b = np.array([[1.0, 1.0], [2.0, 0.0], [0.0, -3.0]])
  # Mean rows (0.5, 0.5) and (1, -2/3).
  assert spot.similarity(a, b, spot.AVERAGE_TOKENS) == pytest.approx(
      (0.5 - 1 / 3) / (np.sqrt(0.5) * np.sqrt(1 + 4 / 9)))
  # Pairwise cosines: row (1, 0): 1/sqrt2, 1, 0; row (0, 1): 1/sqrt2, 0, -1.
  assert spot.similarity(a, b, spot.PER_TOKEN) == pytest.approx((2 / np.sqrt(2) + 1 - 1) / 6)
  with pytest.raises(UsageError, match='do not share a width'):
    spot.similarity(a, np.ones((2, 3)))


@pytest.mark.parametrize('choose', [None, 'related'])
def test_the_spot_run_starts_from_the_chosen_source(tmp_path, capsys, choose):
  target, sources = hand_made()
  checkpoints.save_prompt(str(tmp_path / 'target.npy'), target)
  args = ['spot', '--target', str(tmp_path / 'target.npy'), '--output',
          str(tmp_path / 'ranking.json')]
  for name, prompt in sources.items():
    checkpoints.save_prompt(str(tmp_path / f'{name}.npy'), prompt)
    args += ['--source', f'{name}={tmp_path / name}.npy']
  assert cli.main(args + (['--choose', choose] if choose else [])) == 0
  out = capsys.readouterr().out
  chosen = choose or 'same_task'
  assert f"Start the target from '{chosen}' ({'chosen' if choose else 'best'})" in out
  # The printed flags, as `ptj train` takes them, after the smoke run's files.
  flags = out.split('ptj train ... ', 1)[1].split('\n', 1)[0].split()
  files, bindings = config.split_bindings(flags + [f'--gin.MODEL_DIR={tmp_path / "run"}'])
  files = ['runs/smoke.gin'] + [f.split('=', 1)[1] for f in files]
  run = config.configure('train', files, bindings).settings
  params = run_setup.build_params(run_setup.setup(run))
  np.testing.assert_array_equal(tree.flatten(params)['encoder/prompt/prompt/prompt'],
                                checkpoints.load_prompt(str(tmp_path / f'{chosen}.npy')))


def test_spot_command_errors(tmp_path, capsys):
  target, sources = hand_made()
  checkpoints.save_prompt(str(tmp_path / 't.npy'), target)
  checkpoints.save_prompt(str(tmp_path / 's.npy'), sources['related'])
  assert cli.main(['spot', '--target', str(tmp_path / 't.npy'), '--source',
                   f'a={tmp_path / "s.npy"}', '--choose', 'b']) == 1
  assert "--choose 'b' is not a source; the sources are ['a']" in capsys.readouterr().err
