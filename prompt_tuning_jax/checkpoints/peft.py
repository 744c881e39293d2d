"""A method's parameters as a Hugging Face PEFT adapter, written and read without PEFT.

`save_peft_adapter` writes the adapter of a method's `peft_type` (`methods.Method`) from its
folded parameters (`Method.fold`); `load_peft_adapter` reads one back as (method, parameters).
Three PEFT types: PROMPT_TUNING (a soft prompt), PREFIX_TUNING and IA3, each below. All are
SEQ_2_SEQ_LM adapters of the `save_hf` copy of the frozen T5.

PROMPT_TUNING.

The format (PEFT 0.21: `peft/tuners/prompt_tuning/`, `peft/utils/save_and_load.py`,
`PeftModelForSeq2SeqLM` in `peft/peft_model.py`):

  DIR/adapter_config.json        `PromptTuningConfig` as JSON: peft_type "PROMPT_TUNING",
                                 task_type "SEQ_2_SEQ_LM", num_virtual_tokens P, token_dim H,
                                 num_transformer_submodules, num_attention_heads, num_layers,
                                 prompt_tuning_init, base_model_name_or_path, inference_mode, ...
  DIR/adapter_model.safetensors  one float32 tensor, `prompt_embeddings`
                                 [P * num_transformer_submodules, H] (the weight of PEFT's
                                 `PromptEmbedding`, loaded with strict shapes)

What PEFT does with it on an encoder-decoder (`PeftModelForSeq2SeqLM.forward` and
`.generate`, peft_type PROMPT_TUNING): rows [0, P) are prepended to the encoder's
`inputs_embeds` and P ones to its `attention_mask`; the decoder is untouched. That is
this project's prefix placement exactly: the prompt precedes the input tokens, is
visible to encoder self-attention and decoder cross-attention, and counts in the
encoder's relative positions (HF T5 computes them over the whole `inputs_embeds`).

`num_transformer_submodules`: PEFT fills in 2 for SEQ_2_SEQ_LM when it is left unset
(the config PEFT writes for a T5 prompt it trained says 2), which only doubles the
table: rows [P, 2P) are never used by prompt tuning (only MULTITASK_PROMPT_TUNING
prepends them to the decoder input). `save_peft_prompt` writes 1 (a [P, H] table) by
default; with 2 it repeats the prompt in the unused rows. `load_peft_prompt` reads
both and returns rows [0, P).

Not expressible in PEFT: suffix placement (`PromptedT5(prompt_placement='suffix')`),
and our masking of padded query rows (T5X's; HF masks keys only), which changes
only the outputs at padding positions.

PREFIX_TUNING (PEFT 0.22: `peft/tuners/prefix_tuning/`, `PeftModel.get_prompt`).
`PrefixTuningConfig` (num_virtual_tokens P, num_layers L, num_attention_heads h, token_dim
h * head_dim, num_transformer_submodules 2, prefix_projection false, inference_mode) and one
tensor, `prompt_embeddings` [P, 2L * h * head_dim]: the folded table (with prefix_projection,
PEFT saves its MLP's output too). On a T5 PEFT views it as rows [P, 2L, h, head_dim],
repeats them (4L rows) and gives decoder layer i rows 4i..4i+3 as (self-attention key,
value, cross-attention key, value), then empties the cross-attention cache: decoder layer i's
self-attention prefix is key row 4i mod 2L, value row 4i+1 mod 2L, and the encoder and the
cross-attention get none. HF T5 puts the prefix before the sequence (relative positions over
P + k keys, queries from position P; always visible), as ours does. For odd L every row is
one layer's; for even L, layers i and i + L/2 share rows, so a prefix whose layers differ
there cannot be written (`save_peft_prefix` refuses it), and half the rows are unused (zeros).
A PEFT adapter reads as `PrefixTuning(P, blocks=('self_attention',), mlp_dim=None)`.

IA3 (PEFT 0.22: `peft/tuners/ia3/`). `IA3Config` (target_modules ["k", "v", "wo"],
feedforward_modules ["wo"]) and one tensor per scaled module,
`base_model.model.<HF module>.ia3_l`: [h * head_dim, 1] for k and v (their output scaled, our
`k_conv` / `v_conv` [h, head_dim]), [1, mlp] for `wo` (its input scaled: the MLP's product of
activations, our `intermediate_conv` [mlp]). PEFT's module names are `save_hf`'s (`hf.py`).
A module an adapter does not scale reads as ones; scaling any other module (q, o, wi...),
or k, v at their input or wo at its output, is not our IA3 and is refused.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import safetensors.numpy

from prompt_tuning_jax.checkpoints import hf as hf_lib
from prompt_tuning_jax.checkpoints import tree as tree_lib
from prompt_tuning_jax.checkpoints.tree import check_prompt_array
from prompt_tuning_jax.checkpoints.tree import CheckpointError
from prompt_tuning_jax.methods import (DECODER_ONLY_PROMPT_PATH, IA3, PROMPT_PATH, Method,
                                       PrefixTuning, PromptTuning)
from prompt_tuning_jax.methods import ia3 as ia3_lib
from prompt_tuning_jax.methods import prefix_tuning as prefix_lib
from prompt_tuning_jax.methods.hooks import SELF_ATTENTION

ADAPTER_CONFIG_FILE = 'adapter_config.json'
ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors'
PICKLED_WEIGHTS_FILE = 'adapter_model.bin'
PROMPT_KEY = 'prompt_embeddings'
PEFT_TYPE = 'PROMPT_TUNING'
PREFIX_TUNING, IA3_TYPE = 'PREFIX_TUNING', 'IA3'
TASK_TYPE = 'SEQ_2_SEQ_LM'
# A causal decoder-only LM's prompt (checkpoints/hf_causal_lm.py): PEFT's
# `PeftModelForFeatureExtraction` prepends it to the whole input and returns the
# base model's logits. (`CAUSAL_LM` would do the same, but its wrapper needs a
# generating model, which Pix2StructTextModel is not in transformers 5.)
DECODER_ONLY_TASK_TYPE = 'FEATURE_EXTRACTION'
TASK_TYPES = (TASK_TYPE, DECODER_ONLY_TASK_TYPE)
PROMPT_TUNING_INITS = ('RANDOM', 'SAMPLE_VOCAB', 'TEXT')
# PEFT's IA3 on a T5: the HF projection it scales -> ours (the sibling kernel's module name,
# our scaling module) and whether PEFT scales its input (a "feedforward module").
_IA3_MODULES = {'k': ('key', ia3_lib.KEY_SCALING, False),
                'v': ('value', ia3_lib.VALUE_SCALING, False),
                'wo': ('wo', ia3_lib.MLP_SCALING, True)}
_IA3_TENSOR = re.compile(r'base_model\.model\.(.+)\.(\w+)\.ia3_l')


def is_peft_adapter(path: str) -> bool:
  """True for a local directory holding a PEFT `adapter_config.json`."""
  return os.path.isfile(os.path.join(path, ADAPTER_CONFIG_FILE))


def save_peft_adapter(peft_type: str, params: Mapping[str, Any], directory: str, *,
                      base_model_name_or_path: str | None, config: Any = None) -> str:
  """Writes a method's own parameters ({'/'-joined path: array}) as a PEFT adapter.

  `peft_type` is the method's (`Method.peft_type`); `base_model_name_or_path` and
  `config` as in `save_peft_prompt`. Returns `directory`.
  """
  if peft_type == PEFT_TYPE and DECODER_ONLY_PROMPT_PATH in params:  # `hf_causal_lm`
    return save_peft_prompt(params[DECODER_ONLY_PROMPT_PATH], directory,
                            base_model_name_or_path=base_model_name_or_path, config=config,
                            task_type=DECODER_ONLY_TASK_TYPE)
  if peft_type == PEFT_TYPE:
    return save_peft_prompt(params[PROMPT_PATH], directory,
                            base_model_name_or_path=base_model_name_or_path, config=config)
  if peft_type == PREFIX_TUNING:
    other = sorted(set(params) - {prefix_lib.table_path(SELF_ATTENTION)})
    if other:
      raise CheckpointError(
          f'{directory}: PEFT prefix tuning on a T5 has prefixes in the decoder self-attention '
          f'only; these are elsewhere: {", ".join(other)} (train with PrefixTuning.blocks = '
          "('self_attention',) to export to PEFT)")
    return save_peft_prefix(params[prefix_lib.table_path(SELF_ATTENTION)], directory,
                            base_model_name_or_path=base_model_name_or_path, config=config)
  if peft_type == IA3_TYPE:
    return save_peft_ia3(params, directory, base_model_name_or_path=base_model_name_or_path,
                         config=config)
  raise CheckpointError(f'{directory}: no PEFT adapter writer for peft_type {peft_type!r}')


def load_peft_adapter(directory: str, config: Any) -> tuple[Method, dict[str, np.ndarray]]:
  """Reads a PEFT adapter of a T5 of `config` (a `T5Config`) as (the method, its parameters).

  PROMPT_TUNING: `PromptTuning(P)` and the prompt; PREFIX_TUNING: decoder self-attention
  prefixes, `PrefixTuning(P, blocks=('self_attention',), mlp_dim=None)` and its table; IA3:
  `IA3()` and every scale (ones where the adapter has none). `T5(config, method=method)`
  with these parameters and the frozen model computes what PEFT does on its `save_hf` copy.

  Raises:
    CheckpointError: as the type's reader does, or a type we do not read.
  """
  peft_type = _read_config(directory).get('peft_type')
  if peft_type == PEFT_TYPE:
    prompt = load_peft_prompt(directory, expected_shape=(None, config.emb_dim))
    return PromptTuning(prompt.shape[0]), {PROMPT_PATH: prompt}
  if peft_type == PREFIX_TUNING:
    table = load_peft_prefix(directory, config)
    method = PrefixTuning(table.shape[0], blocks=(SELF_ATTENTION,), mlp_dim=None)
    return method, {prefix_lib.table_path(SELF_ATTENTION): table}
  if peft_type == IA3_TYPE:
    return IA3(), load_peft_ia3(directory, config)
  raise CheckpointError(f'{directory}: a {peft_type} adapter; readable PEFT types: '
                        f'{PEFT_TYPE}, {PREFIX_TUNING}, {IA3_TYPE}')


def save_peft_prompt(prompt: Any, directory: str, *,
                     base_model_name_or_path: str | None,
                     config: Any = None,
                     num_transformer_submodules: int = 1,
                     prompt_tuning_init: str = 'RANDOM',
                     prompt_tuning_init_text: str | None = None,
                     tokenizer_name_or_path: str | None = None,
                     revision: str | None = None,
                     task_type: str = TASK_TYPE) -> str:
  """Writes a [P, H] prompt as a PEFT prompt-tuning adapter for a T5 (SEQ_2_SEQ_LM), or with
  `task_type=DECODER_ONLY_TASK_TYPE` for a causal decoder-only LM (`hf_causal_lm`).

  `peft.PeftModel.from_pretrained(t5, directory)` then prepends it to the encoder
  input as `PromptedT5` does (see the module docstring), e.g. on the
  `save_hf` copy of the frozen model.

  Args:
    prompt: [P, H] floats (bfloat16 is widened exactly); written as float32.
    directory: a local directory that does not exist or is empty; written
      through a temporary sibling renamed at the end.
    base_model_name_or_path: recorded for `AutoPeftModel` (a hub id or the
      `save_hf` directory); None is allowed, as PEFT allows.
    config: the frozen model's `T5Config`: the prompt's width must be its
      `emb_dim`; fills `num_layers` (encoder layers, what PEFT takes from
      `num_hidden_layers`; a decoder-only LM's layers) and
      `num_attention_heads`. Without it these two are null and PEFT fills them
      from the base model when it loads.
    num_transformer_submodules: 1 (default: a [P, H] table) or 2 (PEFT's
      default for seq2seq: [2P, H], rows [P, 2P) unused by prompt tuning and
      holding a copy of the prompt).
    prompt_tuning_init: how the prompt was initialised, as PEFT names it
      ('RANDOM', 'SAMPLE_VOCAB', 'TEXT'); a record only (the adapter is written
      in inference mode), but PEFT requires `prompt_tuning_init_text` and
      `tokenizer_name_or_path` with 'TEXT'.

  Returns:
    `directory`.

  Raises:
    CheckpointError: not a 2-D float prompt, a width other than
      `config.emb_dim`, bad options, a `gs://` path, or an existing non-empty
      `directory`.
  """
  array = np.asarray(prompt)
  check_prompt_array(directory, array)
  array = array.astype(np.float32)
  length, width = array.shape
  if config is not None and width != config.emb_dim:
    raise CheckpointError(
        f'{directory}: the prompt is {tree_lib.shape_str(array.shape)} but the model '
        f'width (T5Config.emb_dim) is {config.emb_dim}')
  if task_type not in TASK_TYPES:
    raise CheckpointError(f'task_type={task_type!r}: one of {TASK_TYPES}')
  if num_transformer_submodules not in (1, 2):
    raise CheckpointError(
        f'num_transformer_submodules={num_transformer_submodules!r}: 1 or 2')
  if prompt_tuning_init not in PROMPT_TUNING_INITS:
    raise CheckpointError(
        f'prompt_tuning_init={prompt_tuning_init!r}: one of {PROMPT_TUNING_INITS}')
  if prompt_tuning_init == 'TEXT' and not (prompt_tuning_init_text and tokenizer_name_or_path):
    raise CheckpointError(
        "prompt_tuning_init='TEXT' needs prompt_tuning_init_text and tokenizer_name_or_path "
        '(PEFT refuses the config without them)')
  directory = tree_lib.new_local_directory(directory, 'save_peft_prompt')

  adapter_config = {
      'auto_mapping': None,
      'base_model_name_or_path': base_model_name_or_path,
      'inference_mode': True,
      'modules_to_save': None,
      'num_attention_heads': None if config is None else config.num_heads,
      'num_layers': (None if config is None
                     else config.num_encoder_layers or config.num_decoder_layers),
      'num_transformer_submodules': num_transformer_submodules,
      'num_virtual_tokens': length,
      'peft_type': PEFT_TYPE,
      'prompt_tuning_init': prompt_tuning_init,
      'prompt_tuning_init_text': prompt_tuning_init_text,
      'revision': revision,
      'task_type': task_type,
      'token_dim': width,
      'tokenizer_kwargs': None,
      'tokenizer_name_or_path': tokenizer_name_or_path,
  }
  table = np.concatenate([array] * num_transformer_submodules, axis=0)
  return _write_adapter(directory, adapter_config, {PROMPT_KEY: table})


def _write_adapter(directory: str, adapter_config: Mapping[str, Any],
                   tensors: Mapping[str, np.ndarray]) -> str:
  """Writes the two files of an adapter through a temporary sibling renamed at the end."""
  return tree_lib.write_weights_directory(
      directory, ADAPTER_WEIGHTS_FILE,
      {name: np.ascontiguousarray(value, np.float32) for name, value in tensors.items()},
      ADAPTER_CONFIG_FILE, adapter_config)


def load_peft_prompt(directory: str, *,
                     expected_shape: Sequence[int | None] | None = None) -> np.ndarray:
  """Reads the prompt of a PEFT prompt-tuning adapter as a float32 [P, H] array.

  Args:
    directory: holding `adapter_config.json` and `adapter_model.safetensors`
      (local or `gs://`); PEFT's pickled `adapter_model.bin` is not read.
    expected_shape: (P, H) to check; None entries match any size.

  Returns:
    The rows PEFT prepends to the encoder input: [0, num_virtual_tokens).

  Raises:
    CheckpointError: a missing or malformed file, an adapter of another
      PEFT type (e.g. LORA) or task type, a tensor that disagrees with the
      config, or a shape other than `expected_shape`.
  """
  directory = directory.rstrip('/')
  config = _read_config(directory, PEFT_TYPE, 'a prompt-tuning one: only PEFT peft_type '
                        f'{PEFT_TYPE} holds a soft prompt', task_types=TASK_TYPES)
  config_path = f'{directory}/{ADAPTER_CONFIG_FILE}'
  length = config.get('num_virtual_tokens')
  width = config.get('token_dim')
  submodules = config.get('num_transformer_submodules')
  for name, value in (('num_virtual_tokens', length), ('token_dim', width)):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
      raise CheckpointError(f'{config_path}: {name} is {value!r}, not a positive integer')
  if submodules not in (None, 1, 2):
    raise CheckpointError(
        f'{config_path}: num_transformer_submodules is {submodules!r}, not 1 or 2')

  tensors, weights_path = _read_tensors(directory)
  if set(tensors) != {PROMPT_KEY}:
    raise CheckpointError(
        f'{weights_path}: a prompt-tuning adapter holds one tensor {PROMPT_KEY!r}, '
        f'found {sorted(tensors)}')
  table = tensors[PROMPT_KEY]
  rows = length * (submodules or 1)
  if table.ndim != 2 or table.shape[1] != width or (
      table.shape[0] != rows if submodules else table.shape[0] not in (length, 2 * length)):
    raise CheckpointError(
        f'{weights_path}: {PROMPT_KEY} is {tree_lib.shape_str(table.shape)}, but '
        f'{ADAPTER_CONFIG_FILE} says num_virtual_tokens={length} x '
        f'num_transformer_submodules={submodules} rows of token_dim={width}')
  prompt = table[:length]
  check_prompt_array(directory, prompt, expected_shape)
  return prompt.astype(np.float32)


def _read_config(directory: str, peft_type: str | None = None, wanted: str = '',
                 task_types: Sequence[str] = (TASK_TYPE,)) -> dict[str, Any]:
  """The adapter's config, of an adapter of `peft_type` (None: any) for one of `task_types`,
  or CheckpointError ('a X adapter, not `wanted`')."""
  directory = directory.rstrip('/')
  config_path = f'{directory}/{ADAPTER_CONFIG_FILE}'
  if not tree_lib.is_gcs(directory) and not os.path.isdir(directory):
    raise CheckpointError(f'{directory}: no such PEFT adapter directory')
  if not tree_lib.is_gcs(directory) and not os.path.isfile(config_path):
    raise CheckpointError(
        f'{directory}: no {ADAPTER_CONFIG_FILE}, so not a PEFT adapter directory')
  data = tree_lib.read_bytes(config_path)
  try:
    config = json.loads(data)
  except ValueError as e:
    raise CheckpointError(f'{config_path}: not valid JSON: {e}') from e
  if not isinstance(config, dict):
    raise CheckpointError(f'{config_path}: not a PEFT adapter config (a JSON object)')
  found = config.get('peft_type')
  if peft_type is not None and found != peft_type:
    raise CheckpointError(f'{directory}: a {found} adapter, not {wanted}')
  task_type = config.get('task_type')
  if task_type not in task_types:
    raise CheckpointError(
        f'{directory}: task_type {task_type!r}: an adapter for another kind of model; '
        f"this project's models take {' or '.join(task_types)} adapters here")
  return config


def _read_tensors(directory: str) -> tuple[dict[str, np.ndarray], str]:
  """(the adapter's tensors, the weights file's path): safetensors only, never pickles."""
  directory = directory.rstrip('/')
  weights_path = f'{directory}/{ADAPTER_WEIGHTS_FILE}'
  if not tree_lib.is_gcs(directory) and not os.path.isfile(weights_path):
    pickled = os.path.isfile(f'{directory}/{PICKLED_WEIGHTS_FILE}')
    raise CheckpointError(
        f'{directory}: no {ADAPTER_WEIGHTS_FILE}' +
        (f' (only safetensors are read, never the pickled {PICKLED_WEIGHTS_FILE}: '
         're-save the adapter with safe_serialization=True)' if pickled else ''))
  data = tree_lib.read_bytes(weights_path)
  try:
    return safetensors.numpy.load(data), weights_path
  except Exception as e:  # SafetensorError (a bad header), KeyError (a dtype numpy lacks), ...
    raise CheckpointError(f'{weights_path}: not a readable safetensors file: {e!r}') from e


# ------------------------------------------------------------ prefix tuning


def _peft_prefix_rows(num_layers: int) -> list[tuple[int, int]]:
  """(key row, value row) of each decoder layer in PEFT's [P, 2L, ...] view (module doc)."""
  return [(4 * i % (2 * num_layers), (4 * i + 1) % (2 * num_layers))
          for i in range(num_layers)]


def save_peft_prefix(table: Any, directory: str, *, base_model_name_or_path: str | None,
                     config: Any) -> str:
  """Writes decoder self-attention prefixes as a PEFT prefix-tuning adapter of a T5.

  Args:
    table: PrefixTuning's plain table for 'self_attention' [P, L * 2 * h * head_dim] (row p:
      layer by layer, the key then the value of prefix position p).
    directory: a local directory that does not exist or is empty.
    base_model_name_or_path: recorded for `AutoPeftModel`, e.g. the `save_hf` directory.
    config: the frozen model's `T5Config` (L = its decoder layers, h, head_dim).

  Raises:
    CheckpointError: a table of another shape; decoder layers i and i + L/2 (even L) with
      different prefixes, which PEFT gives the same rows; an existing non-empty `directory`.
  """
  layers, heads = config.num_decoder_layers, config.num_heads
  width = heads * config.head_dim
  array = np.asarray(table, np.float32)
  if array.ndim != 2 or array.shape[1] != layers * 2 * width:
    raise CheckpointError(
        f'{directory}: a decoder self-attention prefix table is [P, {layers * 2 * width}] '
        f'(decoder layers x 2 x heads x head_dim), got {tree_lib.shape_str(array.shape)}')
  length = array.shape[0]
  ours = array.reshape(length, layers, 2, width)
  rows = np.zeros((length, 2 * layers, width), np.float32)
  written: dict[int, int] = {}
  for layer, pair in enumerate(_peft_prefix_rows(layers)):
    for kv, row in enumerate(pair):
      if row in written and not np.array_equal(rows[:, row], ours[:, layer, kv]):
        raise CheckpointError(
            f'{directory}: PEFT gives decoder layers {written[row]} and {layer} the same prefix '
            f'on a T5 with {layers} decoder layers (its seq2seq cache layout: layers i and '
            f"i + L/2 share rows when L is even), but this adapter's differ: PEFT cannot "
            'hold it')
      rows[:, row], written[row] = ours[:, layer, kv], layer
  directory = tree_lib.new_local_directory(directory, 'save_peft_prefix')
  adapter_config = {
      'auto_mapping': None,
      'base_model_name_or_path': base_model_name_or_path,
      'encoder_hidden_size': width,
      'inference_mode': True,
      'modules_to_save': None,
      'num_attention_heads': heads,
      'num_layers': layers,
      'num_transformer_submodules': 2,
      'num_virtual_tokens': length,
      'peft_type': PREFIX_TUNING,
      'prefix_projection': False,
      'revision': None,
      'task_type': TASK_TYPE,
      'token_dim': width,
  }
  return _write_adapter(directory, adapter_config, {PROMPT_KEY: rows.reshape(length, -1)})


def load_peft_prefix(directory: str, config: Any) -> np.ndarray:
  """Reads a PEFT prefix-tuning adapter of a T5 of `config` as our decoder self-attention
  table [P, L * 2 * h * head_dim] (float32; see `save_peft_prefix`).

  Raises:
    CheckpointError: a missing or malformed file, another PEFT or task type, layers, heads or
      widths other than `config`'s, a `prompt_embeddings` of another shape.
  """
  adapter = _read_config(directory, PREFIX_TUNING, 'a prefix-tuning one')
  layers, width = config.num_decoder_layers, config.num_heads * config.head_dim
  expected = {'num_layers': layers, 'num_attention_heads': config.num_heads,
              'token_dim': width, 'num_transformer_submodules': 2}
  for name, value in expected.items():
    if adapter.get(name, value) not in (value, None):
      raise CheckpointError(
          f'{directory}: {ADAPTER_CONFIG_FILE} says {name}={adapter[name]!r}, but the T5 '
          f'has {value} (decoder layers, heads, heads x head_dim; PEFT runs prefixes on a '
          'T5 with 2 transformer submodules)')
  length = adapter.get('num_virtual_tokens')
  if not isinstance(length, int) or isinstance(length, bool) or length <= 0:
    raise CheckpointError(f'{directory}: num_virtual_tokens is {length!r}, not a positive '
                          'integer')
  tensors, weights_path = _read_tensors(directory)
  table = tensors.get(PROMPT_KEY)
  if set(tensors) != {PROMPT_KEY} or table.shape != (length, 2 * layers * width):
    raise CheckpointError(
        f'{weights_path}: a prefix-tuning adapter holds one tensor {PROMPT_KEY} '
        f'[{length}, {2 * layers * width}] (num_virtual_tokens x num_layers * 2 * token_dim), '
        f'found ' + ', '.join(f'{k} {tree_lib.shape_str(v.shape)}' for k, v in tensors.items()))
  rows = table.astype(np.float32).reshape(length, 2 * layers, width)
  ours = np.stack([rows[:, list(pair)] for pair in _peft_prefix_rows(layers)], axis=1)
  return ours.reshape(length, -1)  # [P, layers, 2, width] flattened


# ------------------------------------------------------------ IA3


def save_peft_ia3(params: Mapping[str, Any], directory: str, *,
                  base_model_name_or_path: str | None, config: Any) -> str:
  """Writes IA3's scales ({'/'-joined path: array}, `methods.IA3`'s parameters) as a PEFT
  IA3 adapter of the `save_hf` copy of a T5 of `config`.

  Raises:
    CheckpointError: a parameter that is not an IA3 scale of this T5, an existing non-empty
      `directory`.
  """
  expected = _ia3_shapes(config)
  tensors = {}
  for path, value in params.items():
    value = np.asarray(value, np.float32)
    if path not in expected or value.shape != expected[path][1]:
      raise CheckpointError(
          f'{directory}: {path} {tree_lib.shape_str(value.shape)} is not an IA3 scale of '
          'this T5 (methods.IA3)')
    name, feedforward = expected[path][0], _ia3_feedforward(path)
    tensors[f'base_model.model.{name}.ia3_l'] = (
        value.reshape(1, -1) if feedforward else value.reshape(-1, 1))
  directory = tree_lib.new_local_directory(directory, 'save_peft_ia3')
  adapter_config = {
      'auto_mapping': None,
      'base_model_name_or_path': base_model_name_or_path,
      'exclude_modules': None,
      'fan_in_fan_out': False,
      'feedforward_modules': [m for m, (_, _, ff) in _IA3_MODULES.items() if ff],
      'inference_mode': True,
      'init_ia3_weights': True,
      'modules_to_save': None,
      'peft_type': IA3_TYPE,
      'revision': None,
      'target_modules': list(_IA3_MODULES),
      'task_type': TASK_TYPE,
  }
  return _write_adapter(directory, adapter_config, tensors)


def load_peft_ia3(directory: str, config: Any) -> dict[str, np.ndarray]:
  """Reads a PEFT IA3 adapter of a T5 of `config` as every scale of `methods.IA3`
  ({path: float32 array}; ones where the adapter scales nothing).

  Raises:
    CheckpointError: a missing or malformed file, another PEFT or task type, a tensor that
      scales a module our IA3 does not (or the other side of it), a shape other than the T5's.
  """
  _read_config(directory, IA3_TYPE, 'an IA3 one')
  tensors, weights_path = _read_tensors(directory)
  expected = _ia3_shapes(config)
  by_name = {name: path for path, (name, _) in expected.items()}
  params = {path: np.ones(shape, np.float32) for path, (_, shape) in expected.items()}
  for key, value in tensors.items():
    match = _IA3_TENSOR.fullmatch(key)
    module = match and _IA3_MODULES.get(match.group(2))
    path = by_name.get(f'{match.group(1)}.{match.group(2)}') if match else None
    if module is None or path is None:
      raise CheckpointError(
          f'{weights_path}: {key} scales a module our IA3 does not (it scales the keys and '
          "values of every attention, 'k' and 'v', and the input of each MLP's 'wo')")
    shape = expected[path][1]
    size = int(np.prod(shape))
    want = (1, size) if module[2] else (size, 1)
    if value.shape != want:
      raise CheckpointError(
          f'{weights_path}: {key} is {tree_lib.shape_str(value.shape)}; our IA3 scales '
          f"{'the input' if module[2] else 'the output'} of {match.group(2)!r}: "
          f'{tree_lib.shape_str(want)}')
    params[path] = value.astype(np.float32).reshape(shape)
  return params


def _ia3_feedforward(path: str) -> bool:
  return path.split('/')[-2] == ia3_lib.MLP_SCALING


def _ia3_shapes(config: Any) -> dict[str, tuple[str, tuple[int, ...]]]:
  """{IA3 scale path: (HF module it scales, shape)} for a T5 of `config`."""
  from prompt_tuning_jax.models import t5 as t5_lib  # local: models import flax
  import jax  # pylint: disable=g-import-not-at-top

  model = t5_lib.T5(config, method=IA3())
  dummy = np.ones((1, 1), np.int32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), dummy, dummy, dummy,
                                             enable_dropout=False))['params']
  kernels = {scaling: kernel for kernel, scaling, _ in _IA3_MODULES.values()}
  out = {}
  for path, leaf in tree_lib.flatten(shapes).items():
    if path.endswith(f'/{ia3_lib.SCALING}'):
      owner, scaling, _ = path.rsplit('/', 2)
      name = hf_lib.hf_name(f'{owner}/{kernels[scaling]}/kernel')
      out[path] = (name[:-len('.weight')], tuple(leaf.shape))
  return out
