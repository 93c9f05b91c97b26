"""sidrec.tokenizer."""
