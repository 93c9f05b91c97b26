"""sidrec.train."""
