"""sidrec.decoding: catalog trie over semantic IDs and trie-constrained beam search."""

from sidrec.decoding.trie import CatalogTrie

__all__ = ["CatalogTrie"]
