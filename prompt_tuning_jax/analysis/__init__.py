"""Analysis tools: the nearest vocabulary pieces of a prompt's vectors (`ptj neighbors`)."""
