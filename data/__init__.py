"""sidrec.data."""
