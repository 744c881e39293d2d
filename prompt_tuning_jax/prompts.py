"""The soft prompt: its parameter, where it goes, and how it is initialised.

Three small pieces, one job each:
- `Prompt` owns the [P, H] float32 parameter (path `.../prompt/prompt`).
- `place_prompt` combines a batch of prompts with the embedded input and says
  which combined positions are valid (prompt positions always are, except the
  padding of shorter prompts in a mixed batch).
- `PromptInput` is the encoder's hook (named `prompt` by the encoder, so the
  parameter path is `encoder/prompt/prompt/prompt`, as in the original
  implementation): it broadcasts the learned prompt, or takes per-example
  prompts from the caller, and places them.
- `fill_prompt_slots` writes prompts into packed rows, where the data already left
  each example's prompt positions (`data.pack_batch`: a row of k examples holds k prompts).

Initialisers are closures with flax's initializer signature
`init(rng, shape, dtype=float32) -> [P, H]`, so they run under `jax.jit`. The
ones that need the frozen embedding table take it when they are built. The
parameter itself starts `random_uniform` at `model.init`; a run sets its
initial value from its `PromptSettings` (`run_setup.initial_prompt`).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

Array = jnp.ndarray
Initializer = Callable[..., Array]

PLACEMENTS = ('prefix', 'suffix')
# In a decoder-only LM: right after BOS (the original's default for decoder-only
# models), at the very start, or after the inputs (before their last token, EOS).
DECODER_ONLY_PLACEMENTS = ('after_bos', 'prefix', 'suffix')


# ------------------------------------------------------------ initialisers


def random_uniform(low: float = -0.5, high: float = 0.5) -> Initializer:
  """Uniform in [low, high).

  Defaults to the paper's [-0.5, 0.5] (§3.2). The original code samples
  [0, 0.5) (`flax.linen.initializers.uniform(0.5)`); pass `low=0.0` for that.
  """
  def init(rng, shape, dtype=jnp.float32):
    return jax.random.uniform(rng, shape, dtype, minval=low, maxval=high)
  return init


def sampled_vocab(embedding: Array, population_size: int = 5000) -> Initializer:
  """Rows copied from the embedding of the `population_size` most frequent pieces.

  SentencePiece ids are in frequency order, so "most frequent" is ids
  [0, population_size). Rows are drawn without replacement when the prompt is
  no longer than the population, with replacement otherwise.
  """
  population_size = min(population_size, embedding.shape[0])

  def init(rng, shape, dtype=jnp.float32):
    _check_width(shape, embedding.shape[-1])
    ids = jax.random.choice(rng, population_size, (shape[0],),
                            replace=shape[0] > population_size)
    return jnp.take(jnp.asarray(embedding), ids, axis=0).astype(dtype)
  return init


def class_labels(embedding: Array, label_token_ids: Sequence[Sequence[int]],
                 fallback: Optional[Initializer] = None) -> Initializer:
  """Row i = mean embedding of label i's pieces; remaining rows from `fallback`.

  `label_token_ids` are the labels' token ids WITHOUT the EOS token (see
  `label_token_ids_from_words`). `fallback` defaults to `sampled_vocab` over
  the same table, as in the paper.
  """
  label_token_ids = [list(ids) for ids in label_token_ids]
  for i, ids in enumerate(label_token_ids):
    if not ids:
      raise ValueError(f'Class label {i} encodes to no tokens.')
  fallback = fallback or sampled_vocab(embedding)

  def init(rng, shape, dtype=jnp.float32):
    _check_width(shape, embedding.shape[-1])
    n = len(label_token_ids)
    if n > shape[0]:
      raise ValueError(f'{n} class labels do not fit a prompt of length {shape[0]}.')
    table = jnp.asarray(embedding)
    rows = [jnp.mean(jnp.take(table, jnp.asarray(ids), axis=0), axis=0) for ids in label_token_ids]
    label_rows = jnp.stack(rows).astype(dtype)  # [n, H]
    if n == shape[0]:
      return label_rows
    rest = fallback(rng, (shape[0] - n, shape[1]), dtype)
    return jnp.concatenate([label_rows, rest], axis=0)
  return init


def label_token_ids_from_words(vocabulary, labels: Sequence[str]) -> list[list[int]]:
  """Encodes label words with a seqio/sentencepiece vocabulary, without EOS."""
  return [list(vocabulary.encode(label)) for label in labels]


def from_text(embedding: Array, token_ids: Sequence[int]) -> Initializer:
  """The embedded text, tiled to fill the prompt or truncated to fit."""
  token_ids = list(token_ids)
  if not token_ids:
    raise ValueError('Prompt text encodes to no tokens.')

  def init(rng, shape, dtype=jnp.float32):
    del rng
    _check_width(shape, embedding.shape[-1])
    reps = -(-shape[0] // len(token_ids))
    ids = jnp.asarray((token_ids * reps)[:shape[0]])
    return jnp.take(jnp.asarray(embedding), ids, axis=0).astype(dtype)
  return init


def from_array(array: np.ndarray, source: str = 'array') -> Initializer:
  """A fixed [P, H] array (e.g. a prompt trained on another task: prompt transfer)."""
  array = np.asarray(array, np.float32)
  if array.ndim != 2:
    raise ValueError(f'Prompt from {source} must be 2-D [P, H], got shape {array.shape}.')

  def init(rng, shape, dtype=jnp.float32):
    del rng
    if tuple(shape) != array.shape:
      raise ValueError(f'Prompt from {source} has shape {array.shape}, the model expects '
                       f'{tuple(shape)} (PROMPT_LENGTH, emb_dim).')
    return jnp.asarray(array, dtype)
  return init


def _check_width(shape, width: int) -> None:
  if len(shape) != 2 or shape[1] != width:
    raise ValueError(f'Prompt shape {tuple(shape)} does not match the embedding width {width}.')


# ------------------------------------------------------------ placement


def place_prompt(embedded: Array, valid: Array, prompt: Array, prompt_valid: Array,
                 placement: str = 'prefix') -> tuple[Array, Array]:
  """Combines prompts with embedded inputs.

  Args:
    embedded: [batch, t, H] embedded input tokens.
    valid: [batch, t] bool, False at padding.
    prompt: [batch, P, H] prompts.
    prompt_valid: [batch, P] bool; False only at the padding of prompts
      shorter than P (mixed batches: pad on the left). Prefix placement keeps
      the padding where it is, suffix placement moves it after the real rows,
      so every real position's distance to the input equals the unpadded case.
    placement: 'prefix' (prompt then input) or 'suffix' (prompt right after the
      last real input token, before the padding).

  Returns:
    combined [batch, P + t, H] and its validity [batch, P + t].
  """
  if placement == 'prefix':
    return (jnp.concatenate([prompt.astype(embedded.dtype), embedded], axis=1),
            jnp.concatenate([prompt_valid, valid], axis=1))
  if placement != 'suffix':
    raise ValueError(f'Unknown prompt placement {placement!r}; expected one of {PLACEMENTS}.')
  t, p = embedded.shape[1], prompt.shape[1]
  # After the input, a prompt's padding must trail its real rows (the mirror of
  # prefix placement's left padding), so real rows keep their distances.
  order = jnp.argsort(~prompt_valid, axis=1, stable=True)  # valid rows first
  prompt = jnp.take_along_axis(prompt, order[:, :, None], axis=1)
  prompt_valid = jnp.take_along_axis(prompt_valid, order, axis=1)
  both = jnp.concatenate([embedded, prompt.astype(embedded.dtype)], axis=1)  # [batch, t+P, H]
  both_valid = jnp.concatenate([valid, prompt_valid], axis=1)
  lengths = jnp.sum(valid, axis=1, keepdims=True)  # [batch, 1]
  j = jnp.arange(t + p)[None, :]  # output position
  # Output j reads input token j before the length, prompt row j - length
  # inside the prompt, and the remaining (padding) tokens after it.
  src = jnp.where(j < lengths, j, jnp.where(j < lengths + p, t + j - lengths, j - p))
  return (jnp.take_along_axis(both, src[:, :, None], axis=1),
          jnp.take_along_axis(both_valid, src, axis=1))


def insert_prompt(embedded: Array, valid: Array, bidirectional: Optional[Array], prompt: Array,
                  prompt_valid: Array, start: Array, *, right_align: bool = False
                  ) -> tuple[Array, Array, Optional[Array], Array]:
  """Inserts prompts into embedded decoder-only sequences, before token `start` of each row.

  Args:
    embedded: [batch, T, H] the embedded sequence (BOS first).
    valid: [batch, T] bool, False at padding.
    bidirectional: [batch, T] bool, the prefix of a prefix LM (None: causal).
      Prompt rows join it.
    prompt: [batch, P, H] prompts; P may be 0.
    prompt_valid: [batch, P] bool; False at the padding of prompts shorter than P
      (mixed batches). Padding rows go to the very start of the row, so every
      real position keeps its distance to every other.
    start: [batch] int, the index of the token the prompt goes before (0: the
      very start, 1: after BOS).
    right_align: move the token padding to the start too, so every row ends at
      position P + T - 1 (a prefix written into a decoding cache).

  Returns:
    combined [batch, P + T, H], its validity and bidirectional prefix (or None),
    and out_index [batch, T]: the combined position whose output predicts the
    target of original position k, the one right before token k + 1 (the last
    position for k = T - 1). Meaningless at padding.
  """
  b, t = valid.shape
  p = prompt.shape[1]
  token_key = jnp.broadcast_to(2 * jnp.arange(t)[None, :], (b, t))
  if right_align:
    token_key = jnp.where(valid, token_key, -2)
  prompt_key = jnp.where(prompt_valid, 2 * start[:, None] - 1, -2)  # [batch, P]
  order = jnp.argsort(jnp.concatenate([token_key, prompt_key], axis=1), axis=1,
                      stable=True)  # [batch, T + P]: the source of each combined position

  def gather(tokens_part, prompt_part):
    both = jnp.concatenate([tokens_part, prompt_part], axis=1)
    index = order if both.ndim == 2 else order[:, :, None]
    return jnp.take_along_axis(both, index, axis=1)

  combined = gather(embedded, prompt.astype(embedded.dtype))
  combined_valid = gather(valid, prompt_valid)
  combined_bidirectional = (None if bidirectional is None
                            else gather(bidirectional, prompt_valid))
  position = jnp.argsort(order, axis=1)[:, :t]  # [batch, T] where each token went
  out_index = jnp.concatenate(
      [position[:, 1:] - 1, jnp.full((b, 1), p + t - 1, position.dtype)], axis=1)
  return combined, combined_valid, combined_bidirectional, out_index


def prompt_positions(valid: Array, prompt_length: int, placement: str = 'prefix') -> Array:
  """Which positions of `place_prompt`'s output hold prompt rows: [batch, P + t] bool.

  `valid` [batch, t] is the input's validity (before placement); the padding rows of
  a shorter prompt in a mixed batch count as prompt positions (they are invalid anyway).
  """
  j = jnp.arange(prompt_length + valid.shape[1])[None, :]  # output position
  if placement == 'prefix':
    return jnp.broadcast_to(j < prompt_length, (valid.shape[0], j.shape[1]))
  lengths = jnp.sum(valid, axis=1, keepdims=True)  # [batch, 1]
  return (j >= lengths) & (j < lengths + prompt_length)


def fill_prompt_slots(embedded: Array, prompts: Array, slots: Array,
                      which: Optional[Array] = None) -> Array:
  """Packed rows with each example's prompt written into the positions left for it.

  Args:
    embedded: [batch, L, H] embedded packed rows (`data.pack_batch`).
    prompts: [n, P, H] the prompts to choose from (one: prompt tuning's learned prompt).
    slots: [batch, L] int, j at the j-th position of an example's prompt, -1 elsewhere.
    which: [batch, L] int, which of the n prompts each position takes (None: the first).

  Returns:
    [batch, L, H]: prompt row `slots` of prompt `which` at the slots, `embedded` elsewhere.
  """
  which = jnp.zeros_like(slots) if which is None else which
  rows = prompts[which, jnp.clip(slots, 0, prompts.shape[1] - 1)]  # [batch, L, H]
  return jnp.where((slots >= 0)[:, :, None], rows.astype(embedded.dtype), embedded)


# ------------------------------------------------------------ modules


class Prompt(nn.Module):
  """Owns the learned prompt, a [length, emb] float32 parameter named `prompt`."""
  length: int
  init: Initializer = random_uniform()

  @nn.compact
  def __call__(self, emb_dim: int) -> Array:
    return self.param('prompt', self.init, (self.length, emb_dim), jnp.float32)


def _batch_prompts(length: int, b: int, h: int, prompts: Optional[Array],
                   prompt_mask: Optional[Array]) -> tuple[Array, Array]:
  """The prompts of a batch [b, P, H] and their mask [b, P]: given ones (checked), else the
  learned `prompt` of the calling module (created here, so its path is `<caller>/prompt`)."""
  if prompts is None:
    learned = Prompt(length, name='prompt')(h)  # [P, H]
    prompts = jnp.broadcast_to(learned, (b,) + learned.shape)
  elif prompts.ndim != 3 or prompts.shape[0] != b or prompts.shape[2] != h:
    raise ValueError(f'prompts must be [batch={b}, P, emb={h}], got {prompts.shape}.')
  if prompt_mask is None:
    prompt_mask = jnp.ones(prompts.shape[:2], bool)
  return prompts, prompt_mask


class PromptInput(nn.Module):
  """The encoder's prompt hook: broadcast the learned prompt (or take given ones) and place it."""
  length: int
  placement: str = 'prefix'

  @nn.compact
  def __call__(self, embedded: Array, valid: Array, *, prompts: Optional[Array] = None,
               prompt_mask: Optional[Array] = None, prompt_slots: Optional[Array] = None
               ) -> tuple[Array, Array]:
    """embedded [b, t, H], valid [b, t] -> combined [b, P + t, H], valid [b, P + t].

    `prompts` [b, P', H] with `prompt_mask` [b, P'] replace the learned prompt
    (mixed-task batches); the learned one is still created at init. Packed rows
    (`prompt_slots` [b, t], `fill_prompt_slots`) keep their length: the learned prompt
    goes into the slots.
    """
    b, _, h = embedded.shape
    if prompt_slots is not None:
      if prompts is not None:
        raise ValueError('Per-example prompts cannot fill packed rows (prompt_slots).')
      learned = Prompt(self.length, name='prompt')(h)  # [P, H]
      return fill_prompt_slots(embedded, learned[None], prompt_slots), valid
    prompts, prompt_mask = _batch_prompts(self.length, b, h, prompts, prompt_mask)
    return place_prompt(embedded, valid, prompts, prompt_mask.astype(bool), self.placement)


class PromptSequence(nn.Module):
  """The decoder-only prompt hook: the learned prompt (or given ones) inserted into the sequence.

  The decoder names it `prompt`, so the parameter path is
  `decoder/prompt/prompt/prompt`, the original's for decoder-only models.
  """
  length: int
  placement: str = 'after_bos'

  @nn.compact
  def __call__(self, embedded: Array, valid: Array, bidirectional: Optional[Array],
               prefix_length: Optional[Array], *, prompts: Optional[Array] = None,
               prompt_mask: Optional[Array] = None, right_align: bool = False
               ) -> tuple[Array, Array, Optional[Array], Array]:
    """embedded [b, T, H] -> `insert_prompt`'s (combined, valid, bidirectional, out_index).

    `prefix_length` [b]: BOS and the inputs' tokens (needed by 'suffix' placement).
    """
    if self.placement not in DECODER_ONLY_PLACEMENTS:
      raise ValueError(f'Unknown decoder-only prompt placement {self.placement!r}; expected '
                       f'one of {DECODER_ONLY_PLACEMENTS}.')
    b, _, h = embedded.shape
    prompts, prompt_mask = _batch_prompts(self.length, b, h, prompts, prompt_mask)
    if self.placement == 'suffix':
      if prefix_length is None:
        raise ValueError("Prompt placement 'suffix' needs the inputs' extent "
                         '(decoder_causal_attention): the task has no inputs?')
      start = prefix_length - 1  # before the inputs' last token
    else:
      start = jnp.full((b,), 1 if self.placement == 'after_bos' else 0, jnp.int32)
    return insert_prompt(embedded, valid, bidirectional, prompts, prompt_mask.astype(bool),
                         start.astype(jnp.int32), right_align=right_align)
