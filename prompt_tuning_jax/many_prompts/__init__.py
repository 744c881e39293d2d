"""One frozen model, many prompts: a bank of named prompts, mixed-task batches, ensembles.

`bank.PromptBank` holds named [P, H] prompts and gathers them per example;
`mixed` runs a batch whose examples use different prompts in one model call
(mixed-task inference is `inference.predict` with a bank); `ensemble` scores K
prompts of one task in one batched pass and combines them (`ptj ensemble`).
"""
