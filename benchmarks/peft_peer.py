"""The peer: Hugging Face PEFT prompt tuning of a randomly initialised T5, timed like ours.

  python -m benchmarks.peft_peer --size small

Same T5.1.1 shape (gated GELU, untied logits, no dropout), same random batch
(`common.random_batch`), same prompt length, AdamW over the prompt only, torch
using os.cpu_count() threads. `benchmarks.train_step --peer` runs this in its
own process and prints the ratios; run alone it prints one JSON result.
torch, transformers and peft are the `bench` extra, not runtime dependencies.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

from benchmarks import common

MODULE = 'benchmarks.peft_peer'


def hf_config(shape: dict):
  """A transformers T5Config with our shape fields (T5.1.1: gated GELU, untied logits)."""
  import transformers  # pylint: disable=g-import-not-at-top
  return transformers.T5Config(
      vocab_size=shape['vocab_size'], d_model=shape['emb_dim'], d_kv=shape['head_dim'],
      d_ff=shape['mlp_dim'], num_layers=shape['num_encoder_layers'],
      num_decoder_layers=shape['num_decoder_layers'], num_heads=shape['num_heads'],
      relative_attention_num_buckets=shape['relative_attention_num_buckets'],
      relative_attention_max_distance=shape['relative_attention_max_distance'],
      dropout_rate=0.0, layer_norm_epsilon=1e-6, feed_forward_proj='gated-gelu',
      tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)


def _measure_train(payload: dict) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  import peft  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(payload['seed'])
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  rss_after_import = common.current_rss_mib()
  workload = common.Workload(**payload['workload'])
  shape = payload['shape']

  model = transformers.T5ForConditionalGeneration(hf_config(shape))
  model = peft.get_peft_model(model, peft.PromptTuningConfig(
      task_type=peft.TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=workload.prompt_len))
  model.to(device).train()
  trainable = [p for p in model.parameters() if p.requires_grad]
  optimizer = torch.optim.AdamW(trainable, lr=payload['learning_rate'])
  batch = common.random_batch(workload, shape['vocab_size'], payload['seed'])
  input_ids = torch.from_numpy(batch['encoder_input_tokens']).long().to(device)
  labels = torch.from_numpy(batch['decoder_target_tokens']).long().to(device)
  attention_mask = torch.ones_like(input_ids)

  def train_step():
    loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device == 'cuda':
      torch.cuda.synchronize()

  start = time.perf_counter()
  train_step()  # PEFT has no compile; its first step (allocator warm-up) is reported apart.
  result = {'first_step_s': time.perf_counter() - start, 'backend': device,
            'torch_threads': torch.get_num_threads(), 'rss_after_import_mib': rss_after_import,
            'trainable_parameters': sum(p.numel() for p in trainable)}
  result.update(common.time_calls(train_step, payload['warmup'], payload['steps']))
  result.update(common.throughput(result['median_s'], workload))
  result['peak_rss_mib'] = common.process_peak_rss_mib(result)
  if device == 'cuda':
    result['device_peak_mib'] = torch.cuda.max_memory_allocated() / 2**20
  if payload.get('count_flops'):
    # After the memory peak is read: the counter's bookkeeping is not PEFT's cost.
    from torch.utils import flop_counter  # pylint: disable=g-import-not-at-top
    counter = flop_counter.FlopCounterMode(display=False)
    with counter:
      train_step()
    result['flops_per_step'] = float(counter.get_total_flops())
    result['flops_per_s'] = result['flops_per_step'] / result['median_s']
  return result


def _measure(payload: dict) -> dict:
  kind = payload['kind']
  if kind == 'matmul':
    return common.torch_matmul_flops_per_s(payload['n'])
  if kind == 'train':
    return _measure_train(payload)
  raise ValueError(f'{MODULE} worker: unknown measurement kind {kind!r}')


def main(argv: Sequence[str]) -> None:
  if common.worker_main(argv, _measure):
    return
  parser = argparse.ArgumentParser(prog=f'python -m {MODULE}', description=__doc__.split('\n')[0])
  parser.add_argument('--size', default='tiny', choices=tuple(common.SIZES))
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--input_len', type=int, default=256)
  parser.add_argument('--prompt_len', type=int, default=100)
  parser.add_argument('--target_len', type=int, default=8)
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--learning_rate', type=float, default=0.3)
  parser.add_argument('--count_flops', action='store_true')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  workload = common.Workload(args.batch, args.input_len, args.prompt_len, args.target_len)
  payload = {'kind': 'train', 'shape': common.model_shape(args.size),
             'workload': vars(workload), 'warmup': args.warmup, 'steps': args.steps,
             'learning_rate': args.learning_rate, 'seed': args.seed,
             'count_flops': args.count_flops}
  result = common.run_worker(MODULE, payload)
  print(json.dumps(dict(result, size=args.size, machine=common.machine_info()), indent=1))


if __name__ == '__main__':
  main(sys.argv[1:])
