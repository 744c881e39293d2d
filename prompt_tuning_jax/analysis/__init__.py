"""Analysis tools: the nearest vocabulary pieces of a prompt's vectors (`ptj neighbors`), and
the paper's domain-shift tables from runs' eval metrics (`ptj table`)."""
