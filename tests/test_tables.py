"""`ptj table` (the paper's Table 1 / Table 2 layouts) on fabricated metrics files, and the
domain-shift driver's plan and summary (benchmarks/domain_shift.py) on fabricated results."""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import domain_shift
from prompt_tuning_jax import cli
from prompt_tuning_jax.analysis import tables

pytestmark = pytest.mark.usefixtures('restore_ptj_global_state')


def _run(path, records):
  path.mkdir(parents=True, exist_ok=True)
  with open(path / 'metrics.jsonl', 'w') as f:
    for record in records:
      f.write(json.dumps(record) + '\n')
  return str(path)


def _mrqa_eval(step, squad, textbook, **extra):
  """A `ptj eval` of squad_to_mrqa: SQuAD and TextbookQA (EM, F1), as the evaluator writes."""
  return [{'step': step, 'split': 'eval/mrqa_squad_v001', 'em': squad[0], 'f1': squad[1]},
          {'step': step, 'split': 'eval/mrqa_textbookqa_v001', 'em': textbook[0],
           'f1': textbook[1], **extra}]


@pytest.fixture
def mrqa_runs(tmp_path):
  train = {'step': 100, 'split': 'train', 'loss': 1.0}
  prompt = [
      _run(tmp_path / 'p0', [train, *_mrqa_eval(100, (10, 20), (1, 2)),
                             *_mrqa_eval(300, (80, 90), (50, 60))]),
      # A taskless run fills the same rows.
      _run(tmp_path / 'p1', [{'step': 300, 'split': 'eval/taskless_mrqa_squad_v001', 'em': 82,
                              'f1': 92},
                             {'step': 300, 'split': 'eval/taskless_mrqa_textbookqa_v001',
                              'em': 54, 'f1': 64}]),
  ]
  model = [_run(tmp_path / 'm0', _mrqa_eval(300, (85, 93), (40, 51)))]
  return prompt, model


def test_table_1_layout(mrqa_runs):
  prompt, model = mrqa_runs
  text = tables.report('mrqa', prompt, model)
  lines = text.splitlines()
  assert lines[0].startswith('Table 1: trained on SQuAD, evaluated zero-shot on MRQA 2019')
  assert lines[2] == ('| Dataset | Domain | Model EM | Model F1 | Prompt EM | Prompt F1 | '
                      'Δ EM | Δ F1 |')
  # Each run's last eval; two prompt runs: mean ± population std.
  assert lines[4] == '| SQuAD | Wiki | 85.0 | 93.0 | 81.0 ± 1.0 | 91.0 ± 1.0 | -4.0 | -2.0 |'
  assert lines[5] == ('| TextbookQA | Book | 40.0 | 51.0 | 52.0 ± 2.0 | 62.0 ± 2.0 | +12.0 | '
                      '+11.0 |')
  assert lines[6] == '| BioASQ | Bio | — | — | — | — | — | — |'
  assert [line.split(' | ')[0] for line in lines[4:11]] == [
      '| SQuAD', '| TextbookQA', '| BioASQ', '| RACE', '| RE', '| DuoRC', '| DROP']
  assert f'  prompt: {prompt[0]} (mrqa_squad_v001 step 300, mrqa_textbookqa_v001 step 300)' in (
      lines)


def test_a_step_is_chosen_and_prompt_runs_alone_have_no_difference(mrqa_runs):
  prompt, _ = mrqa_runs
  text = tables.report('mrqa', prompt[:1], step=100)
  assert '| Dataset | Domain | Prompt EM | Prompt F1 |' in text
  assert '| SQuAD | Wiki | 10.0 | 20.0 |' in text


def test_table_2_reads_rank_classification(tmp_path):
  qqp = _run(tmp_path / 'qqp', [
      {'step': 5, 'split': 'eval/glue_qqp_v002', 'rank_classification/accuracy': 80.0,
       'rank_classification/f1': 70.0, 'accuracy': 1.0, 'f1': 1.0},
      {'step': 5, 'split': 'eval/glue_mrpc_from_qqp_v002', 'rank_classification/accuracy': 60.0,
       'rank_classification/f1': 72.0, 'accuracy': 2.0, 'f1': 2.0}])
  text = tables.report('qqp_mrpc', [qqp], method='rank_classification')
  assert '(rank classification;' in text.splitlines()[0]
  assert '| QQP -> QQP | 80.0 | 70.0 |' in text
  assert '| QQP -> MRPC | 60.0 | 72.0 |' in text
  assert '| MRPC -> QQP | — | — |' in text
  assert '| QQP -> MRPC | 2.0 | 2.0 |' in tables.report('qqp_mrpc', [qqp])


def test_mistakes_are_one_line_errors(tmp_path, capsys):
  with pytest.raises(tables.UsageError, match='has no metrics.jsonl: not a run directory'):
    tables.report('mrqa', [str(tmp_path)])
  other = _run(tmp_path / 'sst2', [{'step': 1, 'split': 'eval/glue_sst2_v002', 'accuracy': 5}])
  with pytest.raises(tables.UsageError, match="None of the runs has an eval of the tasks of "
                     r"'mrqa' \(mrqa_squad_v001, "):
    tables.report('mrqa', [other])
  assert cli.main(['table', 'mrqa', '--prompt', other]) == 1
  assert 'ptj table: error: None of the runs' in capsys.readouterr().err


def test_ptj_table_prints_the_table(mrqa_runs, capsys):
  prompt, model = mrqa_runs
  assert cli.main(['table', 'mrqa', '--prompt', prompt[0], '--prompt', prompt[1],
                   '--model', model[0]]) == 0
  assert '| TextbookQA | Book | 40.0 | 51.0 | 52.0 ± 2.0 |' in capsys.readouterr().out


# ------------------------------------------------------------ the domain-shift driver


def test_driver_plan_and_flags():
  runs = domain_shift.plan([0, 1, 2])
  assert len(runs) == len(set(runs)) == 12
  sst2_prompt = domain_shift.train_flags(domain_shift.Run('sst2_to_smoke', 'prompt', 1), '/m')
  assert '--gin.MIXTURE_OR_TASK_NAME=glue_sst2_v002' in sst2_prompt
  assert '--gin.PROMPT_LENGTH=100' in sst2_prompt and '--gin.SEED=1' in sst2_prompt
  assert '--gin.optax.linear_schedule.init_value=0.03' in sst2_prompt
  smoke_model = domain_shift.train_flags(domain_shift.Run('smoke_to_sst2', 'model', 0), '/m')
  assert smoke_model[0] == '--gin_file=runs/model_finetune.gin'
  assert '--gin.MIXTURE_OR_TASK_NAME=smoke_sentiment_transfer' in smoke_model
  assert '--gin.optax.linear_schedule.init_value=0.001' in smoke_model
  assert domain_shift.train_flags(domain_shift.Run('smoke_to_sst2', 'prompt', 0), '/m')[0] == (
      '--gin_file=runs/smoke_pretrained.gin')
  assert ('--gin.MIXTURE_OR_TASK_NAME=glue_sst2_from_smoke_zeroshot_v002'
          in domain_shift.eval_flags(domain_shift.Run('smoke_to_sst2', 'model', 0), '/m'))


def test_driver_summary_and_claims():
  def result(direction, tuning, seed, in_domain, out_of_domain):
    return dict(direction=direction, tuning=tuning, seed=seed, in_domain=in_domain,
                out_of_domain=out_of_domain)

  results = [result('smoke_to_sst2', 'prompt', 0, 80, 60), result('smoke_to_sst2', 'prompt', 1,
                                                                  82, 58),
             result('smoke_to_sst2', 'model', 0, 90, 55), result('smoke_to_sst2', 'model', 1, 92,
                                                                 57),
             result('sst2_to_smoke', 'prompt', 0, 57, 60)]
  summary = domain_shift.summarise(results)
  cells = summary['smoke_to_sst2']
  assert cells['prompt']['drop'] == {'mean': 22.0, 'std': 2.0, 'n': 2}
  assert cells['model']['drop'] == {'mean': 35.0, 'std': 0.0, 'n': 2}
  # Drops 22 ± 2 (prompt) and 35 ± 0 (model): +13, s.e. sqrt(2^2 / (2 - 1) + 0) = 2.
  assert cells['drop_model_minus_prompt'] == (13.0, 2.0)
  # Out of domain 59 ± 1 against 56 ± 1: +3, s.e. sqrt(1 + 1).
  assert cells['out_of_domain_prompt_minus_model'] == (3.0, pytest.approx(np.sqrt(2.0)))
  assert 'model' not in summary['sst2_to_smoke']
  text = domain_shift.table(summary)
  assert '| smoke reviews -> SST-2 | prompt | 81.0 ± 1.0 (n=2) | 59.0 ± 1.0 (n=2) | 22.0 ± 2.0 (n=2) |' in text
  assert '| smoke reviews -> SST-2 | +3.0 ± 1.4 | +13.0 ± 2.0 | the prompt loses less |' in text
  assert '| SST-2 -> smoke reviews | prompt | 57.0 (n=1) | 60.0 (n=1) | -3.0 (n=1) |' in text
  assert domain_shift.verdict(1.0, 1.0) == 'the prompt loses less, within noise'
  assert domain_shift.verdict(-3.0, None) == (
      'the prompt loses as much or more (one run a side: no error bar)')

