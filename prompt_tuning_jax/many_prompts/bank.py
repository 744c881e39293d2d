"""A bank of named soft prompts for one frozen model (paper Figure 2).

Each example of a mixed-task batch names its prompt; `PromptBank.gather` turns
those names into the per-example `prompts` [b, P_max, H] and `prompt_mask`
[b, P_max] that `PromptedT5` accepts in place of its learned prompt.

Prompts of different lengths are padded to the longest one with masked
(False) rows. The padding side must keep every real position's relative
distance to the input unchanged, so it follows the model's placement:
- prefix placement ([prompt, input]): LEFT padding, [pad, prompt, input];
- suffix placement ([input, prompt, input padding]): RIGHT padding,
  [input, prompt, pad, input padding].
`padding_side_for(placement)` gives the side. A decoder-only LM moves a prompt's
padding to the start of its sequence whatever the side (`prompts.insert_prompt`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Optional

import numpy as np

from prompt_tuning_jax import checkpoints
from prompt_tuning_jax.errors import CheckpointError, UsageError

PADDING_SIDES = ('left', 'right')
_PADDING_FOR_PLACEMENT = {'prefix': 'left', 'suffix': 'right', 'after_bos': 'left'}


def padding_side_for(placement: str) -> str:
  """The prompt padding side that keeps relative positions for a placement."""
  if placement not in _PADDING_FOR_PLACEMENT:
    raise ValueError(f'Unknown prompt placement {placement!r}; '
                     f'expected one of {tuple(_PADDING_FOR_PLACEMENT)}.')
  return _PADDING_FOR_PLACEMENT[placement]


class PromptBank:
  """Named float32 [P_i, H] prompts sharing one width H.

  Lengths may differ. The bank is host-side (numpy): `gather` is a table
  lookup; the arrays it returns go straight into a jitted model call.
  """

  def __init__(self, prompts: Mapping[str, np.ndarray], *, emb_dim: Optional[int] = None,
               sources: Optional[Mapping[str, str]] = None):
    """Builds a bank.

    Args:
      prompts: name -> [P, H] array.
      emb_dim: the model's embedding width; when given every prompt must have it.
      sources: name -> where the prompt came from (a path), used in errors.
    """
    if not prompts:
      raise UsageError('A prompt bank needs at least one prompt.')
    sources = dict(sources or {})
    self._sources = {name: sources.get(name, 'array') for name in prompts}
    self._prompts: dict[str, np.ndarray] = {}
    for name, array in prompts.items():
      if not isinstance(name, str) or not name:
        raise UsageError(f'Prompt names must be non-empty strings, got {name!r}.')
      array = np.asarray(array)
      if array.ndim != 2 or array.shape[0] == 0 or not np.issubdtype(array.dtype, np.floating):
        raise CheckpointError(f'Prompt {name!r} ({self._sources[name]}) must be a non-empty float '
                         f'[P, H] array, got shape {array.shape} dtype {array.dtype}.')
      self._prompts[name] = array.astype(np.float32)
    widths = {name: a.shape[1] for name, a in self._prompts.items()}
    if len(set(widths.values())) > 1:
      listing = ', '.join(f'{n!r} {self._prompts[n].shape} ({self._sources[n]})' for n in widths)
      raise CheckpointError(f'All prompts of a bank must share one width H; got {listing}.')
    if emb_dim is not None:
      self.check_width(emb_dim)
    self._names = tuple(self._prompts)
    self._index = {name: i for i, name in enumerate(self._names)}
    self._tables: dict[str, tuple[np.ndarray, np.ndarray]] = {}

  @classmethod
  def from_files(cls, paths: Mapping[str, str], *, emb_dim: Optional[int] = None
                ) -> 'PromptBank':
    """Reads name -> prompt file (.npy or the original suffix-less files; local or gs://)."""
    arrays = {name: checkpoints.load_prompt(path) for name, path in paths.items()}
    return cls(arrays, emb_dim=emb_dim, sources=paths)

  @classmethod
  def from_arrays(cls, arrays: Mapping[str, np.ndarray], *, emb_dim: Optional[int] = None
                 ) -> 'PromptBank':
    return cls(arrays, emb_dim=emb_dim)

  # ---------------------------------------------------------------- queries

  @property
  def names(self) -> tuple[str, ...]:
    return self._names

  @property
  def emb_dim(self) -> int:
    return next(iter(self._prompts.values())).shape[1]

  @property
  def max_length(self) -> int:
    return max(a.shape[0] for a in self._prompts.values())

  def lengths(self) -> dict[str, int]:
    return {name: a.shape[0] for name, a in self._prompts.items()}

  def __len__(self) -> int:
    return len(self._names)

  def __contains__(self, name: object) -> bool:
    return name in self._prompts

  def __getitem__(self, name: str) -> np.ndarray:
    self._check_known([name])
    return self._prompts[name]

  def check_width(self, emb_dim: int) -> None:
    """Raises CheckpointError naming every prompt whose width is not `emb_dim`."""
    wrong = [f'{n!r} {a.shape} ({self._sources[n]})'
             for n, a in self._prompts.items() if a.shape[1] != emb_dim]
    if wrong:
      raise CheckpointError(f'Prompt width must equal the model emb_dim={emb_dim} '
                       f'(prompts are [P, emb_dim]); mismatched: {", ".join(wrong)}.')

  # ---------------------------------------------------------------- gather

  def gather(self, names: Sequence[str], *, padding_side: str = 'left'
            ) -> tuple[np.ndarray, np.ndarray]:
    """Per-example prompts for a batch.

    Args:
      names: [b] prompt names, one per example.
      padding_side: 'left' for prefix placement (the default), 'right' for
        suffix placement; see `padding_side_for`.

    Returns:
      prompts float32 [b, P_max, H] and prompt_mask bool [b, P_max], where
      P_max is the longest prompt among `names` (padding rows are zero and
      masked out).
    """
    names = list(names)
    if not names:
      raise ValueError('gather needs at least one name.')
    self._check_known(names)
    table, mask = self._table(padding_side)  # [N, P_bank, H], [N, P_bank]
    idx = np.asarray([self._index[n] for n in names])
    p_max = max(self._prompts[n].shape[0] for n in names)
    # Trim the columns that are padding for every selected prompt.
    cols = slice(table.shape[1] - p_max, None) if padding_side == 'left' else slice(0, p_max)
    return table[idx][:, cols], mask[idx][:, cols]

  def _table(self, padding_side: str) -> tuple[np.ndarray, np.ndarray]:
    """All prompts padded to the bank's longest, built once per side."""
    if padding_side not in PADDING_SIDES:
      raise ValueError(f'Unknown padding_side {padding_side!r}; expected one of {PADDING_SIDES}.')
    if padding_side not in self._tables:
      n, p_max, h = len(self._names), self.max_length, self.emb_dim
      table = np.zeros((n, p_max, h), np.float32)  # [N, P_max, H]
      mask = np.zeros((n, p_max), bool)  # [N, P_max]
      for i, name in enumerate(self._names):
        p = self._prompts[name].shape[0]
        rows = slice(p_max - p, p_max) if padding_side == 'left' else slice(0, p)
        table[i, rows] = self._prompts[name]
        mask[i, rows] = True
      self._tables[padding_side] = (table, mask)
    return self._tables[padding_side]

  def _check_known(self, names: Sequence[str]) -> None:
    unknown = sorted({n for n in names if n not in self._prompts}, key=str)
    if unknown:
      raise KeyError(f'Unknown prompt name(s) {", ".join(map(repr, unknown))}; '
                     f'the bank holds: {", ".join(map(repr, self._names))}.')


def parse_bank_spec(specs: Sequence[str]) -> dict[str, str]:
  """Parses `name=path` strings (CLI flags) into {name: path}.

  A bare path is named after its file name without the `.npy` suffix.
  """
  paths: dict[str, str] = {}
  for spec in specs:
    for item in (s.strip() for s in spec.split(',')):
      if not item:
        continue
      if '=' in item:
        name, path = (s.strip() for s in item.split('=', 1))
      else:
        path = item
        name = path.rstrip('/').rsplit('/', 1)[-1]
        name = name[:-4] if name.endswith('.npy') else name
      if not name or not path:
        raise UsageError(f'Bad prompt spec {item!r}; expected NAME=PATH or PATH.')
      if name in paths and paths[name] != path:
        raise UsageError(f'Prompt name {name!r} given twice ({paths[name]} and {path}).')
      paths[name] = path
  if not paths:
    raise UsageError('No prompts given; expected NAME=PATH entries.')
  return paths
