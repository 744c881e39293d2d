"""PromptBank: loading, gathering with left/right padding, and its errors."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path
from prompt_tuning_jax import checkpoints
from prompt_tuning_jax.many_prompts.bank import PromptBank, padding_side_for, parse_bank_spec

H = 6


def _prompt(length: int, seed: int) -> np.ndarray:
  return np.random.RandomState(seed).randn(length, H).astype(np.float32)


@pytest.fixture
def bank() -> PromptBank:
  return PromptBank({'a': _prompt(3, 0), 'b': _prompt(5, 1), 'c': _prompt(2, 2)})


def test_gather_left_pads_shorter_prompts(bank):
  prompts, mask = bank.gather(['c', 'b', 'a', 'c'])
  assert prompts.shape == (4, 5, H) and prompts.dtype == np.float32
  assert mask.shape == (4, 5) and mask.dtype == bool
  np.testing.assert_array_equal(mask[0], [False, False, False, True, True])
  np.testing.assert_array_equal(prompts[0, 3:], bank['c'])
  np.testing.assert_array_equal(prompts[0, :3], 0.0)
  np.testing.assert_array_equal(prompts[1], bank['b'])
  assert mask[1].all()
  np.testing.assert_array_equal(prompts[2, 2:], bank['a'])


def test_gather_right_pads_for_suffix_placement(bank):
  assert padding_side_for('prefix') == 'left' and padding_side_for('suffix') == 'right'
  prompts, mask = bank.gather(['a', 'b'], padding_side='right')
  np.testing.assert_array_equal(prompts[0, :3], bank['a'])
  np.testing.assert_array_equal(mask[0], [True, True, True, False, False])


def test_gather_width_is_the_longest_selected_prompt(bank):
  prompts, mask = bank.gather(['a', 'c'])
  assert prompts.shape == (2, 3, H)
  np.testing.assert_array_equal(prompts[0], bank['a'])
  np.testing.assert_array_equal(mask[1], [False, True, True])
  prompts, mask = bank.gather(['a', 'c'], padding_side='right')
  assert prompts.shape == (2, 3, H)
  np.testing.assert_array_equal(prompts[1, :2], bank['c'])


def test_unknown_name_lists_the_known_ones(bank):
  with pytest.raises(KeyError, match=r"Unknown prompt name\(s\) 'zz'.*'a', 'b', 'c'"):
    bank.gather(['a', 'zz'])


def test_width_errors_name_the_prompt_and_shapes(tmp_path):
  with pytest.raises(ValueError, match=r"one width.*'x' \(3, 6\).*'y' \(3, 4\)"):
    PromptBank({'x': np.zeros((3, 6), np.float32), 'y': np.zeros((3, 4), np.float32)})
  bank = PromptBank({'x': np.zeros((3, 6), np.float32)})
  with pytest.raises(ValueError, match=r"emb_dim=8.*'x' \(3, 6\)"):
    bank.check_width(8)
  with pytest.raises(ValueError, match=r"'v'.*\[P, H\]"):
    PromptBank({'v': np.zeros(6, np.float32)})
  path = tmp_path / 'p.npy'
  checkpoints.save_prompt(str(path), np.zeros((2, 6), np.float32))
  with pytest.raises(ValueError, match=str(path)):
    PromptBank.from_files({'p': str(path)}, emb_dim=768)


def test_from_files_reads_npy_and_suffixless_files(tmp_path):
  checkpoints.save_prompt(str(tmp_path / 'encoder.prompt.prompt.prompt'), _prompt(4, 3))
  np.save(tmp_path / 'b.npy', _prompt(2, 4))
  specs = parse_bank_spec([f'one={tmp_path / "encoder.prompt.prompt.prompt"}',
                           str(tmp_path / 'b.npy')])
  assert sorted(specs) == ['b', 'one']
  bank = PromptBank.from_files(specs, emb_dim=H)
  assert bank.lengths() == {'one': 4, 'b': 2} and bank.max_length == 4 and bank.emb_dim == H
  np.testing.assert_array_equal(bank['one'], _prompt(4, 3))
  with pytest.raises(ValueError, match='given twice'):
    parse_bank_spec(['a=x.npy', 'a=y.npy'])


def test_released_prompts():
  paths = {name: str(shared_path('prompts', 'original_release', f'{name}.npy'))
           for name in ('sst2', 'rte', 'mrpc')}
  bank = PromptBank.from_files(paths, emb_dim=768)
  prompts, mask = bank.gather(['rte', 'sst2'])
  assert prompts.shape == (2, 100, 768) and mask.all()
