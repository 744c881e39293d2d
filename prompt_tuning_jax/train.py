"""`python -m prompt_tuning_jax.train`: the same as `ptj train` (see `cli.py`)."""
import sys

from prompt_tuning_jax import cli

if __name__ == '__main__':
  sys.exit(cli.main(command='train'))
