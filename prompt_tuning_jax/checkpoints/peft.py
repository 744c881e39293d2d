"""A method's parameters as a Hugging Face PEFT adapter, written and read without PEFT.

`save_peft_adapter` writes the adapter of a method's `peft_type` (`methods.Method`); the
one PEFT type so far is PROMPT_TUNING, a soft prompt:

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
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import safetensors.numpy

from prompt_tuning_jax.checkpoints import tree as tree_lib
from prompt_tuning_jax.checkpoints.tree import check_prompt_array
from prompt_tuning_jax.checkpoints.tree import CheckpointError
from prompt_tuning_jax.methods import DECODER_ONLY_PROMPT_PATH, PROMPT_PATH

ADAPTER_CONFIG_FILE = 'adapter_config.json'
ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors'
PICKLED_WEIGHTS_FILE = 'adapter_model.bin'
PROMPT_KEY = 'prompt_embeddings'
PEFT_TYPE = 'PROMPT_TUNING'
TASK_TYPE = 'SEQ_2_SEQ_LM'
# A causal decoder-only LM's prompt (checkpoints/hf_causal_lm.py): PEFT's
# `PeftModelForFeatureExtraction` prepends it to the whole input and returns the
# base model's logits. (`CAUSAL_LM` would do the same, but its wrapper needs a
# generating model, which Pix2StructTextModel is not in transformers 5.)
DECODER_ONLY_TASK_TYPE = 'FEATURE_EXTRACTION'
TASK_TYPES = (TASK_TYPE, DECODER_ONLY_TASK_TYPE)
PROMPT_TUNING_INITS = ('RANDOM', 'SAMPLE_VOCAB', 'TEXT')


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
  raise CheckpointError(f'{directory}: no PEFT adapter writer for peft_type {peft_type!r}')


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
  table = np.ascontiguousarray(np.concatenate([array] * num_transformer_submodules, axis=0))

  parent = os.path.dirname(os.path.abspath(directory))
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(dir=parent, prefix=f'.{os.path.basename(directory)}.tmp')
  try:
    safetensors.numpy.save_file({PROMPT_KEY: table},
                                os.path.join(staging, ADAPTER_WEIGHTS_FILE),
                                metadata={'format': 'pt'})
    with open(os.path.join(staging, ADAPTER_CONFIG_FILE), 'w') as f:
      json.dump(adapter_config, f, indent=2, sort_keys=True)
      f.write('\n')
    os.chmod(staging, 0o755)
    os.rename(staging, directory)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return directory


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
  peft_type = config.get('peft_type')
  if peft_type != PEFT_TYPE:
    raise CheckpointError(
        f'{directory}: a {peft_type} adapter, not a prompt-tuning one: only PEFT '
        f'peft_type {PEFT_TYPE} holds a soft prompt')
  task_type = config.get('task_type')
  if task_type not in TASK_TYPES:
    raise CheckpointError(
        f'{directory}: task_type {task_type!r}: a prompt for another kind of model; '
        f"prompts of this project's models are {' or '.join(TASK_TYPES)} adapters")
  length = config.get('num_virtual_tokens')
  width = config.get('token_dim')
  submodules = config.get('num_transformer_submodules')
  for name, value in (('num_virtual_tokens', length), ('token_dim', width)):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
      raise CheckpointError(f'{config_path}: {name} is {value!r}, not a positive integer')
  if submodules not in (None, 1, 2):
    raise CheckpointError(
        f'{config_path}: num_transformer_submodules is {submodules!r}, not 1 or 2')

  weights_path = f'{directory}/{ADAPTER_WEIGHTS_FILE}'
  if not tree_lib.is_gcs(directory) and not os.path.isfile(weights_path):
    pickled = os.path.isfile(f'{directory}/{PICKLED_WEIGHTS_FILE}')
    raise CheckpointError(
        f'{directory}: no {ADAPTER_WEIGHTS_FILE}' +
        (f' (only safetensors are read, never the pickled {PICKLED_WEIGHTS_FILE}: '
         're-save the adapter with safe_serialization=True)' if pickled else ''))
  data = tree_lib.read_bytes(weights_path)
  try:
    tensors = safetensors.numpy.load(data)
  except Exception as e:  # SafetensorError (a bad header), KeyError (a dtype numpy lacks), ...
    raise CheckpointError(f'{weights_path}: not a readable safetensors file: {e!r}') from e
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
