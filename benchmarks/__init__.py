"""Benchmarks of prompt tuning: ours against Hugging Face PEFT and the machine's matmul limit.

Run from the repository root, e.g. `python -m benchmarks.train_step --sizes tiny --peer`.
See benchmarks/README.md for the commands and the latest results.
"""
