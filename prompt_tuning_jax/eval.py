"""`python -m prompt_tuning_jax.eval`: the same as `ptj eval` (see `cli.py`)."""
import sys

from prompt_tuning_jax import cli

if __name__ == '__main__':
  sys.exit(cli.main(command='eval'))
