"""The export run: a training run's model or prompt in another format; `ptj export`, `python -m`.

  python -m prompt_tuning_jax.export --gin.MODEL_DIR=/tmp/rte --format peft --output /tmp/rte_peft

Reads MODEL_DIR/config.gin and the checkpoint of CHECKPOINT_STEP ('latest',
'best' or a step). Formats:
- `t5x`: the whole model (frozen weights and the trained parameters, the method's
  included) as a T5X checkpoint (`checkpoints.save_t5x`): an
  INITIAL_CHECKPOINT_PATH for another run.
- `hf`: the T5 without the method's own parameters (e.g. the prompt) as a transformers
  directory (`checkpoints.save_hf`); a causal decoder-only LM as a `Pix2StructTextModel`
  (`checkpoints/hf_causal_lm.py`).
- `peft`: the method's parameters, folded (`Method.fold`), as a PEFT adapter of its
  `peft_type` (`checkpoints.peft.save_peft_adapter`: prompt tuning, prefix tuning, IA3;
  FEATURE_EXTRACTION for a causal decoder-only LM with its prompt at the very start).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

import jax

from prompt_tuning_jax import config
from prompt_tuning_jax import run_setup
from prompt_tuning_jax.checkpoints import hf as hf_lib
from prompt_tuning_jax.checkpoints import hf_causal_lm as hf_causal_lm_lib
from prompt_tuning_jax.checkpoints import peft as peft_lib
from prompt_tuning_jax.checkpoints import t5x as t5x_lib
from prompt_tuning_jax.checkpoints import tree as tree_lib
from prompt_tuning_jax.errors import UsageError
from prompt_tuning_jax import models
from prompt_tuning_jax.settings import RunSettings

logger = logging.getLogger('prompt_tuning_jax')

FORMATS = ('t5x', 'hf', 'peft')


def export(run: RunSettings, output_dir: str, export_format: str, *,
           base_model: Optional[str] = None) -> tuple[str, int]:
  """Writes CHECKPOINT_STEP of MODEL_DIR to `output_dir` (a new directory) in `export_format`.

  `base_model` is recorded in a PEFT adapter's config (e.g. the `hf` export's
  directory). Returns (`output_dir`, the step exported).
  """
  if export_format not in FORMATS:
    raise UsageError(f'Unknown export format {export_format!r}; expected one of {FORMATS}.')
  if os.path.exists(output_dir):
    raise UsageError(f'{output_dir} already exists: ptj export writes a new directory only.')
  s = run_setup.setup(run)
  method = s.method
  if export_format == 'peft' and method.peft_type is None:
    raise UsageError(f'{run.model_dir} trains {type(method).__name__}, which has no PEFT '
                     'adapter form: nothing to export as a PEFT adapter; use --format t5x or hf.')
  decoder_only = isinstance(run.model.config, models.DecoderOnlyConfig)
  if decoder_only and export_format in ('hf', 'peft'):
    why = hf_causal_lm_lib.exportable(run.model.config)
    if why is None and export_format == 'peft' and method.placement != 'prefix':
      why = (f"its prompt is placed {method.placement!r}; PEFT puts it at the very "
             "start (methods.DecoderOnlyPromptTuning.placement='prefix')")
    if why is not None:
      raise UsageError(f'--format {export_format}: no Hugging Face model computes this '
                       f'decoder-only LM: {why}. Use --format t5x.')
  if export_format == 'peft':
    method.check_peft()
  params, step = run_setup.checkpoint_params(s)
  flat = tree_lib.flatten(jax.device_get(params))
  if export_format == 't5x':
    t5x_lib.save_t5x(tree_lib.unflatten(flat), output_dir, step=step)
  elif export_format == 'hf':
    frozen = tree_lib.unflatten({path: value for path, value in flat.items()
                                 if not method.owns(path)})
    if decoder_only:
      hf_causal_lm_lib.save_hf_causal_lm(frozen, run.model.config, output_dir)
    else:
      hf_lib.save_hf(frozen, run.model.config, output_dir)
  else:
    own = method.fold({path: value for path, value in flat.items() if method.owns(path)})[1]
    peft_lib.save_peft_adapter(method.peft_type, own, output_dir,
                               base_model_name_or_path=base_model, config=run.model.config)
  logger.info('Exported %s step %d as %s to %s.', run.model_dir, step, export_format, output_dir)
  return output_dir, step


def main(argv: Optional[Sequence[str]] = None) -> int:
  """`ptj export`; returns the exit status."""
  parser = config.gin_parser('export', "write MODEL_DIR's checkpoint (CHECKPOINT_STEP) as a T5X "
                             'checkpoint, a Hugging Face T5 or a PEFT prompt adapter')
  parser.add_argument('--format', required=True, choices=FORMATS, dest='export_format',
                      help='t5x: the whole model (with the prompt); hf: the T5 without the '
                      'prompt; peft: the prompt as a PEFT prompt-tuning adapter')
  parser.add_argument('--output', required=True, help='the directory to write (must not exist)')
  parser.add_argument('--base_model', default=None,
                      help="peft: the base model recorded in the adapter's config (e.g. the hf "
                      "export's directory)")

  def run(args: argparse.Namespace, configuration: config.Configuration) -> int:
    path, step = export(configuration.settings, args.output, args.export_format,
                        base_model=args.base_model)
    print(f'Exported step {step} ({args.export_format}): {path}', flush=True)
    return 0

  return config.run_command('export', parser, argv, run)


if __name__ == '__main__':
  sys.exit(main())
