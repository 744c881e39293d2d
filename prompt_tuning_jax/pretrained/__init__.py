"""Models pre-trained by this project and shipped inside the package.

`t5_mini/` holds the mini T5 that `models/t5_mini.gin` configures: its
SentencePiece vocabulary (`spiece.model`, 8,000 pieces, T5's special ids) and
two T5X checkpoints, `lm_adapted/` (span corruption, then LM adaptation: the
frozen model prompt tuning uses) and `span_corruption/` (before LM
adaptation), stored in bfloat16. `launch/pretrain_mini.sh` made them; its log
and configuration are in `t5_mini/pretraining/`.

`decoder_mini/` holds the decoder-only mini LM that `models/decoder_mini.gin`
configures (t5_mini's vocabulary): `prefix_lm/`, bfloat16, the prefix-LM
pre-training of `launch/pretrain_decoder_mini.sh` cut at step 451 of 1800 for time
(no LM adaptation yet); its log and configuration are in `decoder_mini/pretraining/`.
"""
from __future__ import annotations

import os

DIRECTORY = os.path.dirname(os.path.abspath(__file__))


def path(relative: str) -> str:
  """The absolute path of a shipped file or directory, e.g. `path('t5_mini/lm_adapted')`."""
  full = os.path.join(DIRECTORY, relative)
  if not os.path.exists(full):
    raise FileNotFoundError(f'{relative!r} is not among the shipped pre-trained files '
                            f'({DIRECTORY}).')
  return full
