"""sidrec.eval."""
