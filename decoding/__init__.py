"""sidrec.decoding."""
