"""Prompts that travel: recycling a prompt to another frozen model (`recycling`, `ptj recycle`)
and choosing a source prompt for a new task by task similarity (`spot`, `ptj spot`)."""
