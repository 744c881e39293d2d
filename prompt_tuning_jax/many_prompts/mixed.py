"""Mixed-task batches: one frozen model, one call, a different prompt per example.

The paper's Figure 2: because prompt tuning leaves the model frozen, one model
serves many tasks at once; each example of a batch carries its task's prompt.
Here each example names a prompt of a `PromptBank`; the bank gathers the
per-example prompts (padded and masked so that a short prompt gives exactly
the result it gives alone) and the model runs once on the whole batch.

Params: any `PromptedT5` params tree works, with or without a learned prompt
at `encoder/prompt/prompt/prompt`: the gathered prompts (`MethodInputs.prompts`)
replace the learned prompt, which is then never read. Frozen weights loaded from a T5X or
Hugging Face checkpoint (no prompt at all) are therefore enough:

  model = PromptedT5(get_config('t5_1_1_base'))   # prompt_length is not used
  params = checkpoints.load_t5x(path)             # frozen weights only
  bank = PromptBank.from_files({'sst2': 'sst2.npy', 'rte': 'rte.npy'})
  tokens, scores = mixed_greedy_decode(model, params, bank, ['sst2', 'rte'], inputs,
                                       max_decode_length=8)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Union

import jax.numpy as jnp
import numpy as np

from prompt_tuning_jax import decoding
from prompt_tuning_jax import scoring
from prompt_tuning_jax.errors import UsageError
from prompt_tuning_jax.many_prompts.bank import PromptBank, padding_side_for
from prompt_tuning_jax.methods import MethodInputs, PromptTuning

Array = jnp.ndarray
LabelTokens = Union[np.ndarray, Mapping[str, np.ndarray]]


def check_model(model: Any) -> None:
  """Refuses a model whose method a prompt of a bank cannot stand in for.

  That is prompt tuning, or a method built on it whose given prompts replace what it
  learned (multi-task prompts: a task's prompt replaces the combined one).
  """
  method = getattr(model, 'method', None)
  if not isinstance(method, PromptTuning):
    raise UsageError(f'{type(method).__name__} is not one prompt before the input: mixed-prompt '
                     'batches need prompt tuning (or multi-task prompts, whose task prompts '
                     'export as plain prompt files).')


def gather_prompts(model: Any, bank: PromptBank, names: Sequence[str]) -> MethodInputs:
  """The method inputs of `names` for `model`: prompts [b, P_max, H], prompt_mask [b, P_max].

  Checks the model (`check_model`) and that the bank's width equals its emb_dim; pads on
  the side the model's placement needs.
  """
  check_model(model)
  method = model.method
  bank.check_width(model.config.emb_dim)
  prompts, prompt_mask = bank.gather(names, padding_side=padding_side_for(method.placement))
  return MethodInputs(prompts=jnp.asarray(prompts), prompt_mask=jnp.asarray(prompt_mask))


def _check_batch(names: Sequence[str], encoder_input_tokens: Array) -> None:
  if len(names) != encoder_input_tokens.shape[0]:
    raise ValueError(f'{len(names)} prompt names for a batch of '
                     f'{encoder_input_tokens.shape[0]} examples; give one name per example.')


def mixed_greedy_decode(model: Any, params: Any, bank: PromptBank, names: Sequence[str],
                        encoder_input_tokens: Array, *, max_decode_length: int,
                        eos_id: int = 1) -> tuple[Array, Array]:
  """Greedy decoding of a batch whose example i uses prompt `names[i]`.

  Returns:
    tokens [b, max_decode_length] int32 (0 after EOS) and scores [b] float32,
    as `decoding.greedy_decode`. One jitted call for the whole batch.
  """
  encoder_input_tokens = jnp.asarray(encoder_input_tokens)
  _check_batch(names, encoder_input_tokens)
  return decoding.jit_greedy_decode(model, params, encoder_input_tokens,
                                    max_decode_length=max_decode_length, eos_id=eos_id,
                                    method_inputs=gather_prompts(model, bank, names))


def mixed_rank_classify(model: Any, params: Any, bank: PromptBank, names: Sequence[str],
                        encoder_input_tokens: Array, label_token_ids: LabelTokens, *,
                        normalize: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """Rank classification of a batch whose example i uses prompt `names[i]`.

  Args:
    label_token_ids: one [num_labels, d] array (`scoring.encode_labels`)
      shared by every example, or {prompt name: [num_labels_i, d_i]} when the
      tasks have their own labels. Per-prompt label sets are scored as their
      union in the one call; each example then picks among its own labels.
    normalize: as in `scoring.rank_classify`.

  Returns:
    label_index [b] (into the example's own label list) and label_scores
    [b, max num_labels] float32, -inf past the end of a shorter label list.
  """
  encoder_input_tokens = jnp.asarray(encoder_input_tokens)
  _check_batch(names, encoder_input_tokens)
  method_inputs = gather_prompts(model, bank, names)
  union, columns = _label_union(label_token_ids, names)  # [U, d], [b, L_max]
  _, union_scores = scoring.jit_rank_classify(
      model, params, encoder_input_tokens, jnp.asarray(union), method_inputs=method_inputs,
      normalize=normalize)  # [b, U]
  union_scores = np.asarray(union_scores)
  scores = np.take_along_axis(union_scores, np.maximum(columns, 0), axis=1)
  scores = np.where(columns >= 0, scores, -np.inf).astype(np.float32)
  return np.argmax(scores, axis=1).astype(np.int32), scores


def _label_union(label_token_ids: LabelTokens, names: Sequence[str]
                ) -> tuple[np.ndarray, np.ndarray]:
  """Unique label rows [U, d] and, per example, the union columns of its labels [b, L_max].

  Columns past the end of an example's label list are -1.
  """
  if not isinstance(label_token_ids, Mapping):
    labels = np.asarray(label_token_ids, np.int32)
    if labels.ndim != 2:
      raise ValueError(f'label_token_ids must be [num_labels, length], got {labels.shape}.')
    return labels, np.tile(np.arange(labels.shape[0]), (len(names), 1))
  missing = sorted({n for n in names if n not in label_token_ids})
  if missing:
    raise KeyError(f'No label tokens for prompt(s) {missing}; label_token_ids has '
                   f'{sorted(label_token_ids)}.')
  rows: dict[tuple[int, ...], int] = {}
  per_name: dict[str, list[int]] = {}
  for name in dict.fromkeys(names):
    labels = np.asarray(label_token_ids[name], np.int32)
    if labels.ndim != 2:
      raise ValueError(f'Label tokens of {name!r} must be [num_labels, length], '
                       f'got {labels.shape}.')
    keys = [tuple(int(t) for t in row[row > 0]) for row in labels]
    per_name[name] = [rows.setdefault(key, len(rows)) for key in keys]
  width = max(len(key) for key in rows)
  union = np.zeros((len(rows), width), np.int32)
  for key, i in rows.items():
    union[i, :len(key)] = key
  longest = max(len(v) for v in per_name.values())
  columns = np.full((len(names), longest), -1, np.int64)
  for i, name in enumerate(names):
    columns[i, :len(per_name[name])] = per_name[name]
  return union, columns
