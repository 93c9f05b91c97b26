"""sidrec.seqmodel."""
